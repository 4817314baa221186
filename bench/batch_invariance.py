"""Batch invariance benchmark (JSON): does an answer depend on what else is in the batch?

The eval's own requests (seeded test questions of every vertical, all four conditions, `eval.runner.answer_specs`)
are answered four ways on one engine: each alone (one request at a time), alone again (run-to-run
determinism), and in the eval's mixed batches of 64, in two different orders (so each request has different
neighbours). Reported: the share of answers whose text or chosen label differs from the alone answer, per
answer form (scored choices, copied evidence, generated text) and per domain, with 95% CIs, and the time of
each way. All of it twice, in one run: the default engine and the batch-invariant one (Settings.batch_invariant),
whose time over the default's is the mode's cost.

usage: python bench/batch_invariance.py [--per-domain 8] [--batch 64] [--out bench/results/batch_invariance.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform as host
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def signature(answer) -> dict:
    return {"text": answer.text, "label": (answer.choice or {}).get("label"), "form": answer.form,
            "abstained": answer.abstained, "generated": bool((answer.usage or {}).get("completion_tokens"))}


def ask_each(platform, specs) -> tuple[list[dict], float]:
    t = time.perf_counter()
    out = [signature(platform.ask_many([spec])[0]) for spec in specs]
    return out, time.perf_counter() - t


def ask_batched(platform, specs, batch: int, order: list[int]) -> tuple[list[dict], float]:
    out: list[dict | None] = [None] * len(specs)
    t = time.perf_counter()
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        for i, answer in zip(idx, platform.ask_many([specs[i] for i in idx]), strict=True):
            out[i] = signature(answer)
    return out, time.perf_counter() - t


def changed_share(ref: list[dict], other: list[dict], keys: list[str], groups: list[str]) -> dict:
    from eval.statistics import mean_ci

    flags = [any(a[k] != b[k] for k in keys) for a, b in zip(ref, other, strict=True)]
    by_group = defaultdict(list)
    for flag, g in zip(flags, groups, strict=True):
        by_group[g].append(float(flag))
    def summary(values):
        mean, low, high = mean_ci(values)
        return {"n": len(values), "changed": int(sum(values)), "share": round(mean, 4),
                "ci95": [round(low, 4), round(high, 4)]}
    return {"all": summary([float(f) for f in flags])} | {g: summary(v) for g, v in sorted(by_group.items())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-domain", type=int, default=8, help="seeded test questions per vertical (x4 conditions)")
    parser.add_argument("--batch", type=int, default=64, help="the eval's batch size")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch_invariance.json"))
    args = parser.parse_args()

    from assistant.config import Settings
    from assistant.platform import Platform
    from eval.runner import CONDITIONS, answer_specs, sample_rows

    result = {"benchmark": "batch_invariance", "machine": {"cpus": os.cpu_count(), "platform": host.platform()},
              "per_domain": args.per_domain, "batch": args.batch, "modes": {}}
    for invariant in (False, True):
        platform = Platform.load(settings=Settings.load(batch_invariant=invariant), progress=False)
        specs, domains = [], []
        for name in platform.domains:
            domain = platform.domain(name)
            for _, spec in answer_specs(domain, sample_rows(domain, "test", args.per_domain, seed=0),
                                        list(CONDITIONS)):
                specs.append(spec)
                domains.append(name)
        try:
            alone, alone_s = ask_each(platform, specs)
            again, again_s = ask_each(platform, specs)
            in_order, batch_s = ask_batched(platform, specs, args.batch, list(range(len(specs))))
            shuffled_order = list(range(len(specs)))
            random.Random(1).shuffle(shuffled_order)
            shuffled, shuffled_s = ask_batched(platform, specs, args.batch, shuffled_order)
        finally:
            platform.close()
        kinds = ["choice" if a["label"] else "abstained" if a["abstained"] else
                 "generated" if a["generated"] else "copied evidence" for a in alone]
        mode = {"requests": len(specs),
                "seconds": {"alone": round(alone_s, 1), "alone_again": round(again_s, 1),
                            "batched": round(batch_s, 1), "batched_shuffled": round(shuffled_s, 1)},
                "changed": {}}
        for label, other in (("alone_again", again), ("batched", in_order), ("batched_shuffled", shuffled)):
            mode["changed"][label] = {
                "text_or_label_by_form": changed_share(alone, other, ["text", "label"], kinds),
                "text_or_label_by_domain": changed_share(alone, other, ["text", "label"], domains),
                "label_only": changed_share(alone, other, ["label"], kinds),
            }
        mode["examples"] = [{"domain": d, "question": sp["question"][:200], "alone": a["text"][:300],
                             "batched": b["text"][:300]}
                            for sp, d, a, b in zip(specs, domains, alone, in_order, strict=True)
                            if a["text"] != b["text"]][:6]
        result["modes"]["batch_invariant" if invariant else "default"] = mode
        print(json.dumps({"batch_invariant": invariant, "seconds": mode["seconds"],
                          "changed": {k: v["text_or_label_by_form"]["all"] for k, v in mode["changed"].items()}},
                         indent=2), flush=True)
    base, inv = result["modes"]["default"]["seconds"], result["modes"]["batch_invariant"]["seconds"]
    result["cost"] = {"batched_time_ratio": round(inv["batched"] / base["batched"], 2),
                      "alone_time_ratio": round(inv["alone"] / base["alone"], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cost"], indent=2))


if __name__ == "__main__":
    main()
