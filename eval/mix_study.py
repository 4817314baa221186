"""Mix study: each vertical's adapter retrained on its mix (`assistant train`'s MixConfig: every data set capped,
abstain examples, yes/no/maybe balanced with --balance) against the shipped adapter, +RAG+LoRA on the same seeded
questions.

Both runs come from `assistant eval D --limit 300 --conditions rag+lora [--adapter DIR] --json FILE`; this reads
their answer caches (eval/runner.py), scores each question again and runs the paired test (new - shipped), and
carries each run's own test against the strongest trivial baseline. Writes mix_study.{json,md}; the sections of an
existing mix_study.md from its first "## " heading on (the written findings) are kept under the new table.

usage: python -m eval.mix_study --results DIR [--domains healthcare,retail,finance] [--variant mix]
       (DIR holds <domain>-<variant>.json and <domain>-shipped.json)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def per_question(result: dict) -> list[float]:
    """The primary metric of every question of a saved run, from its answer cache, in the run's order."""
    from assistant.config import Settings
    from assistant.domains import get_domain
    from eval.runner import AnswerCache, sample_rows, summarise

    domain = get_domain(result["domain"])
    limit_q = Settings.load().max_question_chars
    rows = [r for r in sample_rows(domain, result["split"], result["limit"], result["sample_seed"],
                                   result.get("data")) if len(r["question"]) <= limit_q]
    assert len(rows) == result["n"], (len(rows), result["n"])
    _, scores = summarise(domain, rows, AnswerCache(Path(result["cache"])), ["rag+lora"], result["primary_metric"])
    return scores["rag+lora"]


def compare(results: Path, domain: str, variant: str) -> dict:
    from eval.statistics import paired_comparison

    new = json.loads((results / f"{domain}-{variant}.json").read_text())
    old = json.loads((results / f"{domain}-shipped.json").read_text())
    row = {"domain": domain, "data": new.get("data"), "metric": new["primary_metric"], "n": new["n"],
           "shipped": old["adapter"], "new": new["adapter"],
           "shipped_score": old["answers"]["rag+lora"][new["primary_metric"]],
           "new_score": new["answers"]["rag+lora"][new["primary_metric"]],
           "shipped_ci95": old["answers"]["rag+lora"]["ci95"][new["primary_metric"]],
           "new_ci95": new["answers"]["rag+lora"]["ci95"][new["primary_metric"]],
           "new_abstain_rate": new["answers"]["rag+lora"]["abstain_rate"],
           "shipped_abstain_rate": old["answers"]["rag+lora"]["abstain_rate"],
           "new_vs_shipped": paired_comparison(per_question(new), per_question(old))}
    for name, run in (("new", new), ("shipped", old)):
        best = run.get("comparison", {}).get("rag+lora_vs_best_baseline")
        if best:
            row[f"{name}_vs_best_baseline"] = best
    row["baselines"] = new.get("baselines", {})
    return row


def write(rows: list[dict], out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Mix study: adapters retrained on each vertical's mix vs the shipped ones", "",
             "+RAG+LoRA on the eval's seeded 300 test questions, the real engine on the CPU; paired permutation tests "
             "on the same questions (`python -m eval.mix_study`). Adapters trained on one H200 "
             "(`bench/h200_session.sh train-mixes`), the recipe and the mix in each manifest.", "",
             "| vertical (data) | metric | shipped [95% CI] | mix [95% CI] | mix - shipped [95% CI], p | "
             "mix vs best baseline (diff, p) | abstain shipped -> mix |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["new_vs_shipped"]
        b = r.get("new_vs_best_baseline")
        base = f"{b['baseline']}: {b['diff']:+.3f}, p {b['p_value']}" if b else "-"
        lines.append(f"| {r['domain']} ({r['data'] or 'all'}) | {r['metric']} | {r['shipped_score']:.3f} "
                     f"{r['shipped_ci95']} | {r['new_score']:.3f} {r['new_ci95']} | {c['diff']:+.3f} "
                     f"{c['ci95']}, p {c['p_value']} | {base} | {r['shipped_abstain_rate']:.2f} -> "
                     f"{r['new_abstain_rate']:.2f} |")
    md = out.with_suffix(".md")
    kept = md.read_text().partition("\n## ") if md.is_file() else ("", "", "")
    md.write_text("\n".join(lines) + "\n" + (f"\n## {kept[2]}" if kept[1] else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--domains", default="healthcare,retail,finance")
    ap.add_argument("--variant", default="mix")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "mix_study")
    args = ap.parse_args(argv)
    rows = [compare(args.results, d.strip(), args.variant) for d in args.domains.split(",") if d.strip()]
    write(rows, args.out)
    for r in rows:
        print(r["domain"], r["shipped_score"], "->", r["new_score"], r["new_vs_shipped"])


if __name__ == "__main__":
    main()
