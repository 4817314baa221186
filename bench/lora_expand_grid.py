"""Does the grid of vLLM's LoRA expand kernel explain its cost? Segmented grid vs vLLM's grid, same inner loop.

assistant/serving/segmented_lora.py runs one Triton expand kernel with two grids: vLLM 0.26's (a program per
LoRA slot x block of the whole batch; most exit at once) and a segmented one (programs only over the
blocks of each slot's own tokens). Timed inside CUDA graphs at the Llama-3-8B projections for decode
batch 256 and a 2,048-token prefill chunk, 1/5/16 active adapters, max_loras 16 and 100 (17 and 101
slots scanned, as vLLM does without specialize_active_lora), with the base bf16 GEMMs of the layer
for scale. Also checks both grids against a float32 PyTorch reference, and searches tile sizes for
the segmented grid. Needs only torch + triton (no vLLM): the device image has both.

usage (GPU host): python -m bench.lora_expand_grid --out DIR
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lora_kernels import LAYERS, PROJECTIONS, graph_time_us  # noqa: E402


def vllm_default(slices: int) -> dict:
    """vLLM 0.26's default expand config (its block_k of 32 is 16 here: rank 8 fits one 16-wide step)."""
    return dict(block_m=64, block_n=64 if slices > 1 else 128, block_k=16, num_warps=4, num_stages=2)


class Case:
    """One projection's expand at m tokens: shrink-output buffer, stacked lora_b per slice, metadata."""

    def __init__(self, name: str, m: int, rank: int, slots: int, active: int):
        import torch

        from assistant.serving.segmented_lora import token_metadata

        k, outs = PROJECTIONS[name]
        dev = "cuda"
        self.name, self.m, self.outs, self.k = name, m, outs, k
        self.x = torch.randn(len(outs), m, rank, device=dev, dtype=torch.float32)
        self.w = [torch.randn(slots - 1, 1, n, rank, device=dev, dtype=torch.bfloat16) * 0.05 for n in outs]
        self.y = torch.zeros(m, sum(outs), device=dev, dtype=torch.bfloat16)
        # requests of 1 token (decode) or contiguous runs (prefill of several prompts), round-robin over adapters
        run = 1 if m <= 512 else max(1, m // 8)
        self.mapping = torch.tensor([(i // run) % active for i in range(m)], dtype=torch.int32, device=dev)
        self.meta = token_metadata(self.mapping, slots - 1)
        self.no_lora = torch.tensor([False])
        self.slots = torch.tensor([slots], dtype=torch.int32)
        self.base_in = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        self.base_w = torch.randn(sum(outs), k, device=dev, dtype=torch.bfloat16) * 0.01

    def expand(self, segmented: bool, config: dict | None):
        from assistant.serving.segmented_lora import lora_expand

        return lambda: lora_expand(self.x, self.w, self.y, self.mapping, *self.meta, self.no_lora, self.slots,
                                   offset_start=0, add_inputs=True, segmented=segmented, config=config)

    def base(self):
        import torch

        return lambda: torch.mm(self.base_in, self.base_w.t())

    def max_error(self, segmented: bool, config: dict | None) -> float:
        """Largest |kernel - float32 reference| of one expand with add_inputs=True over a random output."""
        import torch

        from assistant.serving.segmented_lora import reference_expand

        self.y.copy_(torch.randn_like(self.y))
        ref = reference_expand(self.x, self.w, self.y, self.mapping, 0, True)
        self.expand(segmented, config)()
        return float((self.y.float() - ref).abs().max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ms", default="256,2048")
    ap.add_argument("--actives", default="1,5,16")
    ap.add_argument("--slots", default="17,101", help="slots the kernel scans: max_loras + 1")
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args(argv)
    import torch

    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"benchmark": "lora_expand_grid", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "config": {k: str(v) for k, v in vars(args).items()}, "checks": [], "rows": [], "search": []}
    path = args.out / "lora_expand_grid.json"

    def log(obj):
        print(json.dumps(obj), flush=True)

    with torch.inference_mode():
        for name in PROJECTIONS:  # correctness of both grids, bf16 on the GPU, 100 slots, 5 adapters
            case = Case(name, 2048, args.rank, 101, 5)
            check = dict(projection=name, m=2048, segmented_err=case.max_error(True, None),
                         vllm_grid_err=case.max_error(False, None))
            result["checks"].append(check)
            log(check)
        for m, slots, active in itertools.product(ints(args.ms), ints(args.slots), ints(args.actives)):
            row = dict(m=m, slots=slots, active=active, projections={})
            totals = dict(base=0.0, vllm_grid_vllm_cfg=0.0, vllm_grid=0.0, segmented=0.0)
            for name in PROJECTIONS:
                case = Case(name, m, args.rank, slots, active)
                t = dict(base=graph_time_us(case.base()),
                         vllm_grid_vllm_cfg=graph_time_us(case.expand(False, vllm_default(len(case.outs)))),
                         vllm_grid=graph_time_us(case.expand(False, None)),
                         segmented=graph_time_us(case.expand(True, None)))
                row["projections"][name] = {k: round(v, 2) for k, v in t.items()}
                for k, v in t.items():
                    totals[k] += v
            row["layer_us"] = {k: round(v, 1) for k, v in totals.items()}
            row["step_ms"] = {k: round(v * LAYERS / 1000, 3) for k, v in totals.items()}
            row["speedup_vs_vllm_grid"] = round(totals["vllm_grid"] / totals["segmented"], 2)
            row["speedup_vs_vllm_cfg"] = round(totals["vllm_grid_vllm_cfg"] / totals["segmented"], 2)
            row["expand_over_gemm"] = {k: round(totals[k] / totals["base"], 3) for k in totals if k != "base"}
            result["rows"].append(row)
            log({k: v for k, v in row.items() if k != "projections"})
            path.write_text(json.dumps(result, indent=2) + "\n")
        # tile search for the segmented grid at 5 adapters, 17 slots
        for m in ints(args.ms):
            for name in PROJECTIONS:
                case = Case(name, m, args.rank, 17, 5)
                best = None
                for bm, bn, warps in itertools.product((16, 32, 64), (64, 128, 256), (4,)):
                    cfg = dict(block_m=bm, block_n=bn, block_k=16, num_warps=warps, num_stages=2)
                    try:
                        us = graph_time_us(case.expand(True, cfg))
                    except Exception as exc:  # a config Triton cannot build
                        log({"skip": cfg, "error": type(exc).__name__})
                        continue
                    if best is None or us < best[0]:
                        best = (us, cfg)
                found = dict(m=m, projection=name, default_us=round(graph_time_us(case.expand(True, None)), 2),
                             best_us=round(best[0], 2), best=best[1])
                result["search"].append(found)
                log(found)
                path.write_text(json.dumps(result, indent=2) + "\n")
    result["seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
