"""Engine benchmark: CPU tokens/s for 32 prompts x 64 tokens, base-only vs the same batch spread over
5 adapters, on the same engine in one run (median of 3), plus engine start-up seconds and peak RSS.

usage: python bench/engine.py [--out bench/results/engine.json] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROMPTS = 32
MAX_TOKENS = 64
N_ADAPTERS = 5


def children_peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux; the engine core runs in child processes.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from assistant.config import Settings
    from assistant.serving.engine import Engine, GenerationRequest
    from assistant.serving.models import prepare
    from helpers.lora import make_random_adapter

    settings = Settings.load(max_loras=N_ADAPTERS, max_model_len=1024)
    prepared = prepare(settings)
    tmp = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    adapter_paths = [make_random_adapter(prepared.base_model, tmp / f"d{i}", seed=100 + i) for i in range(N_ADAPTERS)]

    started = time.perf_counter()
    engine = Engine(prepared.base_model, settings)
    startup_s = time.perf_counter() - started
    names = [f"domain{i}" for i in range(N_ADAPTERS)]
    for name, path in zip(names, adapter_paths):
        engine.register_adapter(name, path)

    def requests(adapters):
        # ignore_eos is not exposed; prompts that ask for long output keep most rows generating 64 tokens.
        return [GenerationRequest(messages=[{"role": "user", "content": f"Write a long story about city number {i}."}],
                                  adapter=adapters[i % len(adapters)], max_tokens=MAX_TOKENS) for i in range(PROMPTS)]

    configs = {"base_only": [None], "five_adapters": names}
    engine.generate(requests(names))  # warm-up: loads every adapter into its slot
    runs: dict[str, list[float]] = {k: [] for k in configs}
    tokens: dict[str, list[int]] = {k: [] for k in configs}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        for key, adapters in configs.items():
            t0 = time.perf_counter()
            out = engine.generate(requests(adapters))
            dt = time.perf_counter() - t0
            n = sum(len(r.token_ids) for r in out)
            runs[key].append(n / dt)
            tokens[key].append(n)
    engine.shutdown()

    result = {
        "benchmark": "engine",
        "model": str(prepared.base_model.name),
        "device": "cpu",
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "workload": {"prompts": PROMPTS, "max_tokens": MAX_TOKENS, "adapters": N_ADAPTERS, "repeats": args.repeats},
        "startup_s": round(startup_s, 2),
        "tokens_per_s": {k: {"median": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
                         for k, v in runs.items()},
        "generated_tokens": tokens,
        "ratio_five_adapters_to_base": round(statistics.median(runs["five_adapters"]) /
                                             statistics.median(runs["base_only"]), 3),
        "peak_rss_mib": {"main_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                         "engine_processes": round(children_peak_rss_mib(), 1)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
