"""Seconds per training step and peak memory of the CPU recipes, side by side in one run (JSON to --out).

Each variant trains a few steps in its own process (so each peak RSS is its own) on the same examples, batch 8:
    python -m bench.cpu_training --data examples.jsonl --steps 3
`examples.jsonl` comes from `assistant train DOMAIN --export-data FILE` (the platform's prompts, retrieval included).
The first step is reported apart (it holds one-off set-up); the figure is the median of the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {  # name -> TrainConfig fields (besides batch 8 and the step count)
    "fp32 all layers (shipped CPU default)": {},
    "bf16 autocast": {"bf16_autocast": True},
    "upper 10 of 30 layers": {"upper_layers": 10},
    "bf16 + upper 10": {"bf16_autocast": True, "upper_layers": 10},
}


def one(data: Path, fields: dict, steps: int, n: int) -> dict:
    import random

    from assistant.building.training import TrainConfig, peak_memory_gb, train_adapter
    from assistant.config import Settings
    from assistant.serving.models import prepare_base_model

    examples = [json.loads(line) for line in data.open(encoding="utf-8") if line.strip()]
    random.Random(0).shuffle(examples)
    examples = examples[:n]
    base, sha = prepare_base_model(Settings.load())
    config = TrainConfig(max_steps=steps, batch_size=8, eval_every=10_000, dev_fraction=0.0, device="cpu", **fields)
    started = time.time()
    with tempfile.TemporaryDirectory() as out:
        manifest = train_adapter(examples, base, out, config, base_model_sha256=sha, domain="bench", progress=False)
    step_s = manifest["history"]["step_s"]
    return {"fields": fields, "steps": len(step_s), "first_step_s": step_s[0],
            "median_step_s": statistics.median(step_s[1:] or step_s), "step_s": step_s,
            "train_loss": manifest["history"]["train_loss"], "wall_s": round(time.time() - started, 1),
            "peak_rss_gb": round(peak_memory_gb("cpu"), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_training.json"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.data, VARIANTS[args.one], args.steps, args.examples)))
        return
    rows = {}
    for name in args.variants.split(","):
        proc = subprocess.run([sys.executable, "-m", "bench.cpu_training", "--data", str(args.data), "--steps",
                               str(args.steps), "--examples", str(args.examples), "--one", name],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            rows[name] = {"error": proc.stderr[-2000:]}
        else:
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, {k: rows[name].get(k) for k in ("median_step_s", "first_step_s", "peak_rss_gb", "error")},
              flush=True)
    base = rows.get(next(iter(VARIANTS)), {}).get("median_step_s")
    for row in rows.values():
        if base and "median_step_s" in row:
            row["speedup_vs_fp32_all_layers"] = round(base / row["median_step_s"], 2)
    result = {"machine": f"{os.cpu_count()} cores, {os.uname().machine}", "batch_size": 8, "examples": args.examples,
              "data": str(args.data), "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
              "variants": rows, "when": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
