"""TAT-QA arithmetic computed by the platform (assistant/table_arithmetic.py) over the passages the finance
domain really retrieves (hybrid, k from domain.toml), on the eval's seeded sample of the test split: how often a
calculation is made, and its exact match under TAT-QA's numeric rule (with scale), next to the same with the
gold table shown (the executor's ceiling) and the earlier free-text figure. No engine: the calculation needs none.
Retrieval is the platform's own, with finance's tuned query encoder when the package ships one.

usage: python -m bench.finance_calculation [--limit 300] [--out bench/results/finance_calculation.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from assistant.answer import Citation
from assistant.table_arithmetic import calculate
from eval.answer_metrics import score_answer
from eval.runner import sample_rows
from eval.statistics import mean_ci
from indexing.retriever import Passage

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "finance_calculation.json"))
    args = parser.parse_args(argv)

    from assistant.config import Settings
    from assistant.domains import get_domain
    from assistant.platform import Platform
    from assistant.serving.models import embed_model_sha256, open_embedder
    from indexing.documents import read_corpus_jsonl
    from indexing.store import open_store

    settings = Settings.load()
    domain = get_domain("finance", settings)
    platform = Platform(settings, None, open_store(settings), open_embedder(settings),
                        {"finance": domain}, owns_engine=False)
    platform.load_query_encoder(domain, embed_model_sha256(settings))
    docs = {d.doc_id: d for src in domain.data for d in read_corpus_jsonl(src.corpus).documents}
    rows = [r for r in sample_rows(domain, "test", args.limit) if r["answer_type"] == "arithmetic"]
    retrieved, oracle, made = [], [], 0
    for row in rows:
        passages = [Citation.of(i + 1, p) for i, p in enumerate(platform.retrieve("finance", row["question"]))]
        calc = calculate(row["question"], passages)
        made += calc is not None
        retrieved.append(score_answer(row, calc.reply() if calc else "", calc is None)["f1"])
        gold = sorted((docs[d] for d in row["gold_doc_ids"] if d in docs), key=lambda d: d.title != "table")
        shown = [Citation.of(i + 1, Passage(id=d.doc_id, doc_id=d.doc_id, title=d.title, text=d.text, score=1.0))
                 for i, d in enumerate(gold)]
        gold_calc = calculate(row["question"], shown)
        oracle.append(score_answer(row, gold_calc.reply() if gold_calc else "", gold_calc is None)["f1"])
    platform.store.close()
    result = {"n_sample": args.limit, "n_arithmetic": len(rows), "calculated": made,
              "retrieved_k": domain.retrieval.k, "query_encoder": platform.query_encoders.get("finance")}
    for name, values in (("retrieved", retrieved), ("gold_table_shown", oracle)):
        mean, low, high = mean_ci(values)
        result[name] = {"exact_match": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
    result["before"] = "free text of the model: arithmetic F1 0.008 on the test split (issue 16)"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
