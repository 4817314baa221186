"""The project's segmented LoRA shrink + expand against vLLM's own kernels, op for op, on one GPU.

For each LoRA-wrapped projection of a Llama-3-8B layer (bench/lora_kernels.py's `Projection`: vLLM's own
stacked-adapter layout and LoRAKernelMeta), at decode batch 256 and a 2,048-token prefill chunk, 1 / 5 / 16
active adapters, 17 and 101 slots scanned (max_loras 16 and 100, as vLLM runs without
specialize_active_lora): time inside CUDA graphs the base bf16 GEMM, vLLM's shrink and expand (default
configs), and assistant/serving/segmented_lora.py's shrink and expand on the same tensors. Checks first that
both produce the same output (max |ours - vLLM's| of the shrink buffer and of the projection's output after
shrink + expand) and that each is close to a float32 PyTorch reference.

usage (GPU host, vLLM installed): python -m bench.lora_segmented --out DIR
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lora_kernels import LAYERS, PROJECTIONS, Projection, graph_time_us  # noqa: E402


class Case(Projection):
    """A projection with both implementations of the punica path over the same inputs and metadata."""

    def __init__(self, name: str, m: int, rank: int, slots: int, active: int):
        import torch

        super().__init__(name, m, rank, slots - 1, active, False)
        self.buffer = torch.zeros((len(self.slices), m, rank), dtype=torch.float32, device="cuda")

    def args(self):
        return self.meta.meta_args(self.m, self.specialize)

    def vllm_shrink(self):
        self.shrink_only(self.buffer)

    def vllm_expand(self):
        self.expand_only(self.buffer)

    def ours_shrink(self):
        from assistant.serving.segmented_lora import lora_shrink

        lora_shrink(self.x, self.lora_a, self.buffer, *self.args(), 1.0)

    def ours_expand(self):
        from assistant.serving.segmented_lora import lora_expand

        lora_expand(self.buffer, self.lora_b, self.y, *self.args(), offset_start=0, add_inputs=True)

    def compare(self) -> dict:
        """Both implementations from the same start: shrink buffers and outputs after shrink + expand."""
        import torch

        from assistant.serving.segmented_lora import reference_expand, reference_shrink

        start = torch.randn_like(self.y)
        mapping = self.meta.token_lora_mapping[: self.m]
        outs = {}
        for who, (shrink, expand) in {"vllm": (self.vllm_shrink, self.vllm_expand),
                                      "ours": (self.ours_shrink, self.ours_expand)}.items():
            self.buffer.fill_(float("nan"))
            self.y.copy_(start)
            shrink()
            buffer = self.buffer.clone()
            expand()
            outs[who] = (buffer, self.y.float().clone())
        torch.cuda.synchronize()
        ref_buffer = reference_shrink(self.x, self.lora_a, mapping, 1.0)
        ref_out = reference_expand(outs["vllm"][0], self.lora_b, start, mapping, 0, True)
        diff = lambda a, b: float((a.float() - b.float()).abs().max())  # noqa: E731
        return dict(shrink_ours_vs_vllm=diff(outs["ours"][0], outs["vllm"][0]),
                    out_ours_vs_vllm=diff(outs["ours"][1], outs["vllm"][1]),
                    shrink_ours_vs_fp32=diff(outs["ours"][0], ref_buffer),
                    shrink_vllm_vs_fp32=diff(outs["vllm"][0], ref_buffer),
                    out_ours_vs_fp32=diff(outs["ours"][1], ref_out), out_vllm_vs_fp32=diff(outs["vllm"][1], ref_out),
                    out_scale=float(ref_out.abs().max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ms", default="256,2048")
    ap.add_argument("--actives", default="1,5,16")
    ap.add_argument("--slots", default="17,101")
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args(argv)
    import torch

    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "lora_segmented.json"
    started = time.perf_counter()
    result = {"benchmark": "lora_segmented", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "config": {k: str(v) for k, v in vars(args).items()}, "checks": [], "rows": []}
    try:
        import vllm

        result["vllm"] = vllm.__version__
    except ImportError:
        raise SystemExit("bench.lora_segmented compares against vLLM's kernels: install vLLM") from None

    def log(obj):
        print(json.dumps(obj), flush=True)

    with torch.inference_mode():
        for name, m, slots in itertools.product(PROJECTIONS, ints(args.ms), (17, 101)):
            check = dict(projection=name, m=m, slots=slots, active=5) | Case(name, m, args.rank, slots, 5).compare()
            result["checks"].append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in check.items()})
            log(result["checks"][-1])
        path.write_text(json.dumps(result, indent=2) + "\n")
        for m, slots, active in itertools.product(ints(args.ms), ints(args.slots), ints(args.actives)):
            totals = dict(base=0.0, vllm_shrink=0.0, vllm_expand=0.0, ours_shrink=0.0, ours_expand=0.0)
            projections = {}
            for name in PROJECTIONS:
                case = Case(name, m, args.rank, slots, active)
                t = dict(base=graph_time_us(case.base), vllm_shrink=graph_time_us(case.vllm_shrink),
                         vllm_expand=graph_time_us(case.vllm_expand), ours_shrink=graph_time_us(case.ours_shrink),
                         ours_expand=graph_time_us(case.ours_expand))
                projections[name] = {k: round(v, 2) for k, v in t.items()}
                for k, v in t.items():
                    totals[k] += v
            vllm_lora = totals["vllm_shrink"] + totals["vllm_expand"]
            ours_lora = totals["ours_shrink"] + totals["ours_expand"]
            row = dict(m=m, slots=slots, active=active, layer_us={k: round(v, 1) for k, v in totals.items()},
                       lora_layer_us=dict(vllm=round(vllm_lora, 1), ours=round(ours_lora, 1)),
                       lora_over_gemm=dict(vllm=round(vllm_lora / totals["base"], 3),
                                           ours=round(ours_lora / totals["base"], 3)),
                       speedup=dict(shrink=round(totals["vllm_shrink"] / totals["ours_shrink"], 2),
                                    expand=round(totals["vllm_expand"] / totals["ours_expand"], 2),
                                    lora=round(vllm_lora / ours_lora, 2)),
                       step_ms=dict(base=round(totals["base"] * LAYERS / 1000, 3),
                                    vllm_lora=round(vllm_lora * LAYERS / 1000, 3),
                                    ours_lora=round(ours_lora * LAYERS / 1000, 3)),
                       projections=projections)
            result["rows"].append(row)
            log({k: v for k, v in row.items() if k != "projections"})
            path.write_text(json.dumps(result, indent=2) + "\n")
    result["seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
