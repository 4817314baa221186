"""Where the multi-LoRA decode time goes, kernel by kernel, and tuned LoRA kernel configs for vLLM.

For each LoRA-wrapped projection of a Llama-3-8B layer (qkv_proj, o_proj, gate_up_proj, down_proj) this
times, inside CUDA graphs as the engine runs them, the base bf16 GEMM against vLLM's punica path (buffer
+ lora_shrink + lora_expand Triton kernels) at decode batch sizes and a prefill chunk, for max_loras slots,
active adapter counts and ranks. The sum over the 32 layers estimates the LoRA share of a step.

--tune searches a small grid of Triton configs per (op, slices, batch, shape), keeping the one that is best
over 1, 5 and 16 active adapters together (the files cannot tell them apart), and writes them in the
layout vLLM reads from VLLM_TUNED_CONFIG_FOLDER (`{GPU}_SHRINK.json`, `{GPU}_EXPAND_{TRUE|FALSE}.json`,
nested max_loras -> num_slices -> m -> k -> n), then times the projections again with the tuned configs.

usage (GPU host): python -m bench.lora_kernels --out DIR [--tune] [--ranks 8,16]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

# Llama-3-8B, per layer: input size and the output slices vLLM packs into one LoRA layer
PROJECTIONS = {"qkv_proj": (4096, (4096, 1024, 1024)), "o_proj": (4096, (4096,)),
               "gate_up_proj": (4096, (14336, 14336)), "down_proj": (14336, (4096,))}
LAYERS = 32

# small grids: every config is a Triton compile (~1 s), and the device time is short
SHRINK_GRID = dict(block_m=(16, 32), block_n=(16,), block_k=(64, 128, 256), split_k=(2, 4, 8, 16),
                   num_warps=(4,), num_stages=(2,))
EXPAND_GRID = dict(block_m=(16, 32, 64), block_n=(64, 128, 256), block_k=(16,), num_warps=(4, 8),
                   num_stages=(2,))


def nested_set(tree: dict, keys: list, value) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(str(key), {})
    tree[str(keys[-1])] = value


def config_files(gpu_name: str, tuned: dict[str, dict]) -> dict[str, dict]:
    """File name -> JSON content in vLLM's VLLM_TUNED_CONFIG_FOLDER layout. `tuned` maps op ("shrink" or
    "expand") to {max_loras: {num_slices: {m: {k: {n: config}}}}}; expand is written for add_inputs
    True (the fused path) and False (dual-stream path), which share the kernel."""
    name = gpu_name.replace(" ", "_").replace("-", "_")
    files = {}
    if tuned.get("shrink"):
        files[f"{name}_SHRINK.json"] = tuned["shrink"]
    if tuned.get("expand"):
        files[f"{name}_EXPAND_TRUE.json"] = tuned["expand"]
        files[f"{name}_EXPAND_FALSE.json"] = tuned["expand"]
    return files


def graph_time_us(fn, reps: int = 20, trials: int = 7) -> float:
    """Median microseconds per call of fn replayed from a CUDA graph (no launch overhead from Python)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / reps)
    return statistics.median(times)


class Projection:
    """One LoRA-wrapped projection: base weight, stacked adapters in vLLM's layout, kernel metadata."""

    def __init__(self, name: str, m: int, rank: int, max_loras: int, active: int, specialize: bool):
        import torch
        from vllm.lora.ops.triton_ops import LoRAKernelMeta

        k, slices = PROJECTIONS[name]
        dev, bf16 = "cuda", torch.bfloat16
        self.name, self.m, self.rank, self.slices, self.k = name, m, rank, slices, k
        self.x = torch.randn(m, k, device=dev, dtype=bf16)
        self.weight = torch.randn(sum(slices), k, device=dev, dtype=bf16) * 0.01
        self.y = torch.zeros(m, sum(slices), device=dev, dtype=bf16)
        self.lora_a = tuple(torch.randn(max_loras, 1, rank, k, device=dev, dtype=bf16) * 0.01 for _ in slices)
        self.lora_b = tuple(torch.randn(max_loras, 1, n, rank, device=dev, dtype=bf16) * 0.01 for n in slices)
        self.meta = LoRAKernelMeta.make(max_loras, m, dev)
        self.meta.prepare_tensors(torch.tensor([i % active for i in range(m)], dtype=torch.int32, device=dev))
        self.specialize = specialize

    def base(self):
        import torch

        torch.mm(self.x, self.weight.t(), out=self.y)  # the cuBLAS GEMM of UnquantizedLinearMethod

    def lora(self):
        """What PunicaWrapperGPU.add_lora_linear launches: a float32 buffer, shrink, expand."""
        import torch

        buffer = torch.empty((len(self.slices), self.m, self.rank), dtype=torch.float32, device="cuda")
        self.shrink_only(buffer)
        self.expand_only(buffer)

    def shrink_only(self, buffer):
        from vllm.lora.ops.triton_ops.lora_shrink_op import _lora_shrink

        _lora_shrink(self.x, self.lora_a, buffer, *self.meta.meta_args(self.m, self.specialize), 1.0)

    def expand_only(self, buffer):
        from vllm.lora.ops.triton_ops.lora_expand_op import _lora_expand

        _lora_expand(buffer, self.lora_b, self.y, *self.meta.meta_args(self.m, self.specialize),
                     offset_start=0, add_inputs=True)


def forced_config(op: str, config: dict):
    """Context manager: vLLM's shrink or expand op uses `config` instead of looking one up."""
    from unittest import mock

    from vllm.lora.ops.triton_ops import lora_expand_op, lora_shrink_op

    module = lora_shrink_op if op == "shrink" else lora_expand_op
    return mock.patch.object(module, "get_lora_op_configs", lambda *a, **k: config)


def grid(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values)) | {"num_ctas": 1, "max_nreg": None, "group_size_m": 8}
            for values in itertools.product(*space.values())]


def tune(ms: list[int], rank: int, max_loras: int, actives: list[int], log) -> dict:
    """Per (op, slices, m, k, n) the config over SHRINK_GRID / EXPAND_GRID with the least time relative to
    vLLM's default, summed over the active-adapter counts: vLLM's config files have no such dimension, so
    one config must serve 1 adapter as well as many (run 3 tuned for 5 only)."""
    import torch

    tuned: dict = {"shrink": {}, "expand": {}}
    picks = []
    for name in PROJECTIONS:
        for m in ms:
            projs = [Projection(name, m, rank, max_loras, a, specialize=False) for a in actives]
            slices, k_in = projs[0].slices, projs[0].k
            buffer = torch.zeros((len(slices), m, rank), dtype=torch.float32, device="cuda")
            for op, space in (("shrink", SHRINK_GRID), ("expand", EXPAND_GRID)):
                def times(config):
                    out = []
                    for proj in projs:
                        fn = proj.shrink_only if op == "shrink" else proj.expand_only
                        if config is None:
                            out.append(graph_time_us(lambda: fn(buffer)))
                        else:
                            with forced_config(op, config):
                                out.append(graph_time_us(lambda: fn(buffer)))
                    return out

                default = times(None)
                best, best_cost, best_us = None, float("inf"), None
                for config in grid(space):
                    try:
                        us = times(config)
                    except Exception as exc:  # a config Triton cannot build (shared memory, registers)
                        log(f"  skip {op} {config}: {type(exc).__name__}")
                        continue
                    cost = sum(u / d for u, d in zip(us, default))
                    if cost < best_cost:
                        best, best_cost, best_us = config, cost, us
                if best is None:
                    raise RuntimeError(f"no {op} config ran for {name} m={m}")
                k, n = (k_in, rank) if op == "shrink" else (rank, max(slices))
                nested_set(tuned[op], [max_loras + 1, len(slices), m, k, n], best)
                picks.append(dict(op=op, projection=name, m=m, actives=actives,
                                  default_us=[round(u, 2) for u in default], tuned_us=[round(u, 2) for u in best_us],
                                  config=best))
                log(f"{op:6} {name:12} m={m:4} actives {actives}: default {[round(u, 1) for u in default]} us, "
                    f"tuned {[round(u, 1) for u in best_us]} us {best}")
    return {"tuned": tuned, "picks": picks}


def profile_projections(ms, ranks, slots, actives, specialize_options, log) -> list[dict]:
    rows = []
    for rank, max_loras, active, specialize, m in itertools.product(ranks, slots, actives, specialize_options, ms):
        if active > max_loras:
            continue
        row = dict(rank=rank, max_loras=max_loras, active=active, specialize=specialize, m=m, projections={})
        base_total = lora_total = 0.0
        for name in PROJECTIONS:
            proj = Projection(name, m, rank, max_loras, active, specialize)
            base_us, lora_us = graph_time_us(proj.base), graph_time_us(proj.lora)
            row["projections"][name] = dict(base_us=round(base_us, 2), lora_us=round(lora_us, 2))
            base_total += base_us
            lora_total += lora_us
        row |= dict(base_layer_us=round(base_total, 1), lora_layer_us=round(lora_total, 1),
                    lora_step_ms=round(lora_total * LAYERS / 1000, 3),
                    base_gemm_step_ms=round(base_total * LAYERS / 1000, 3),
                    lora_over_gemm=round(lora_total / base_total, 3))
        log(f"rank {rank:2} slots {max_loras:3} active {active:3} spec {int(specialize)} m {m:4}: GEMMs "
            f"{base_total:7.1f} us/layer, LoRA {lora_total:7.1f} us/layer ({lora_total / base_total:.2f}x of GEMMs)")
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ms", default="64,128,256,512,2048", help="tokens per step: decode batches, a prefill chunk")
    ap.add_argument("--ranks", default="8,16")
    ap.add_argument("--slots", default="5,16", help="max_loras values")
    ap.add_argument("--actives", default="1,5,16")
    ap.add_argument("--tune", action="store_true", help="search kernel configs; write them to OUT/tuned_configs")
    ap.add_argument("--tune-ms", default="64,256,1024,2048", help="batch sizes to tune (vLLM takes the nearest)")
    ap.add_argument("--tune-actives", default="1,5,16", help="active-adapter counts a config must serve")
    ap.add_argument("--tune-rank", type=int, default=8)
    ap.add_argument("--tune-slots", type=int, default=16)
    args = ap.parse_args(argv)
    import torch

    with torch.inference_mode():  # as vLLM's ops run; tensors made here may then be updated in place there
        bench(args)


def bench(args) -> None:
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    log_path = args.out / "lora_kernels.log"

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as fh:
            fh.write(msg + "\n")

    import vllm

    gpu = torch.cuda.get_device_name()
    result = {"benchmark": "lora_kernels", "gpu": gpu, "vllm": vllm.__version__, "torch": torch.__version__,
              "model_shapes": "Llama-3-8B (hidden 4096, intermediate 14336, 8 KV heads)", "layers": LAYERS,
              "config": {k: str(v) for k, v in vars(args).items()}}
    path = args.out / "lora_kernels.json"
    started = time.perf_counter()
    result["default_configs"] = profile_projections(ints(args.ms), ints(args.ranks), ints(args.slots),
                                                    ints(args.actives), [False, True], log)
    path.write_text(json.dumps(result, indent=2) + "\n")
    if args.tune:
        found = tune(ints(args.tune_ms), args.tune_rank, args.tune_slots, ints(args.tune_actives), log)
        result["tuning"] = {"rank": args.tune_rank, "max_loras": args.tune_slots, "actives": ints(args.tune_actives),
                            "picks": found["picks"]}
        folder = args.out / "tuned_configs"
        folder.mkdir(exist_ok=True)
        for fname, content in config_files(gpu, found["tuned"]).items():
            (folder / fname).write_text(json.dumps(content, indent=1) + "\n")
        # the same projections again, now through vLLM's own lookup of the tuned files
        import os

        from vllm.lora.ops.triton_ops import utils as lora_utils

        os.environ["VLLM_TUNED_CONFIG_FOLDER"] = str(folder)
        lora_utils.load_lora_op_config.cache_clear()
        lora_utils.get_lora_op_configs.cache_clear()
        result["tuned_configs"] = profile_projections(ints(args.ms), [args.tune_rank], [args.tune_slots],
                                                      ints(args.actives), [False], log)
    result["seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
