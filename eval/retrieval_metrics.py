"""Document-level retrieval metrics against `gold_doc_ids`: recall@k, hit@k, MRR@10, nDCG@10.

Chunks are collapsed to documents in rank order (a document counts at its best-ranked chunk), so a
document split into several chunks is not counted twice.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def ranked_docs(doc_ids: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for d in doc_ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def recall_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    return len(gold.intersection(ranked[:k])) / len(gold) if gold else 0.0


def hit_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    return 1.0 if gold.intersection(ranked[:k]) else 0.0


def mrr_at(ranked: Sequence[str], gold: set[str], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k], 1):
        if d in gold:
            return 1.0 / i
    return 0.0


def ndcg_at(ranked: Sequence[str], gold: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, d in enumerate(ranked[:k], 1) if d in gold)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


def score_query(retrieved_doc_ids: Iterable[str], gold_doc_ids: Iterable[str]) -> dict[str, float]:
    ranked = ranked_docs(retrieved_doc_ids)
    gold = set(gold_doc_ids)
    return {"recall@1": recall_at(ranked, gold, 1), "recall@5": recall_at(ranked, gold, 5),
            "recall@10": recall_at(ranked, gold, 10), "hit@5": hit_at(ranked, gold, 5),
            "mrr@10": mrr_at(ranked, gold, 10), "ndcg@10": ndcg_at(ranked, gold, 10)}


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0]}
