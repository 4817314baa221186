"""Retrieval over one domain's collection: hybrid (dense + BM25 fused with RRF in Qdrant), dense-only
or BM25-only, payload filters, and an optional cross-encoder rerank when a model path is configured
(none ships with the platform: no cross-encoder is available as a package here)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import bm25
from .store import Store

MODES = ("hybrid", "dense", "sparse")
MAX_K = 100
MAX_QUERY_CHARS = 4000


@dataclass
class Passage:
    id: str
    doc_id: str
    title: str
    text: str
    score: float
    payload: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "doc_id": self.doc_id, "title": self.title, "score": self.score, "text": self.text}


class Retriever:
    def __init__(self, store: Store, embedder, reranker_path: str | Path | None = None):
        self.store = store
        self.embedder = embedder
        self.reranker = None
        if reranker_path:
            from sentence_transformers import CrossEncoder
            self.reranker = CrossEncoder(str(reranker_path), device="cpu", local_files_only=True)
        self.last_ms = 0.0

    def retrieve(self, collection: str, query: str, k: int = 5, *, mode: str = "hybrid",
                 filter: dict | None = None, rerank: bool = True, query_vector=None) -> list[Passage]:
        """`query_vector`: the query's embedding when the caller already has it (saves one encode)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("empty query")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if not isinstance(k, int) or k <= 0 or k > MAX_K:
            raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        started = time.perf_counter()
        use_rerank = rerank and self.reranker is not None
        fetch = max(4 * k, 20) if use_rerank else k + 4  # spare rows so ties at the cut are ordered, not dropped
        dense = None
        if mode in ("hybrid", "dense"):
            dense = query_vector if query_vector is not None else self.embedder.embed_query(query)
        sparse = bm25.query_vector(query) if mode in ("hybrid", "sparse") else None
        hits = self.store.search(collection, dense=dense, sparse=sparse, k=fetch, filter=filter)
        passages = [Passage(id=h.id, doc_id=h.payload.get("doc_id", ""), title=h.payload.get("title", ""),
                            text=h.payload.get("text", ""), score=h.score, payload=h.payload) for h in hits]
        # RRF often gives equal scores (rank i in one list + rank j in the other); break ties by id so the
        # same question always shows the same passages in the same order.
        passages.sort(key=lambda p: (-p.score, p.id))
        if use_rerank and passages:
            scores = self.reranker.predict([(query, p.text) for p in passages])
            for p, s in zip(passages, scores):
                p.score = float(s)
            passages.sort(key=lambda p: p.score, reverse=True)
        self.last_ms = (time.perf_counter() - started) * 1000
        return passages[:k]
