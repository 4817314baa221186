"""Retrieval over one domain's collection: hybrid (dense + BM25 fused with RRF in Qdrant), dense-only
or BM25-only, payload filters, and an optional rerank by an injected `Reranker` (e.g. a
sentence-transformers CrossEncoder; none ships with the platform, and the retriever loads no model)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import bm25
from .store import Store

MODES = ("hybrid", "dense", "sparse")
MAX_K = 100


class QueryError(ValueError):
    """The retrieval request is unusable: empty or over-long query, k out of range, unknown mode."""


class Reranker(Protocol):
    def predict(self, pairs: list[tuple[str, str]]) -> Sequence[float]:
        """One relevance score per (query, passage text) pair, higher is better."""
        ...


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
    """`max_query_chars`: the caller's limit on query length (the platform's settings own it)."""

    def __init__(self, store: Store, embedder, *, max_query_chars: int, reranker: Reranker | None = None):
        if not isinstance(max_query_chars, int) or isinstance(max_query_chars, bool) or max_query_chars <= 0:
            raise ValueError(f"max_query_chars must be a positive integer, got {max_query_chars!r}")
        self.store = store
        self.embedder = embedder
        self.max_query_chars = max_query_chars
        self.reranker = reranker

    def retrieve(self, collection: str, query: str, k: int = 5, *, mode: str = "hybrid",
                 filter: dict | None = None, rerank: bool = True, query_vector=None,
                 viewer: str | None = None) -> list[Passage]:
        """`query_vector`: the query's embedding when the caller already has it (saves one encode). `viewer`:
        the user asking, who also sees their private documents (the store's rule, `store.filters`).
        Raises QueryError for unusable input, StoreError (FilterError, MissingIndexError, ...) from the store."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("empty query")
        if len(query) > self.max_query_chars:
            raise QueryError(f"query is {len(query)} characters; the limit is {self.max_query_chars}")
        if not isinstance(k, int) or k <= 0 or k > MAX_K:
            raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        if mode not in MODES:
            raise QueryError(f"mode must be one of {MODES}, got {mode!r}")
        use_rerank = rerank and self.reranker is not None
        fetch = max(4 * k, 20) if use_rerank else k + 4  # spare rows so ties at the cut are ordered, not dropped
        dense = None
        if mode in ("hybrid", "dense"):
            dense = query_vector if query_vector is not None else self.embedder.embed_query(query)
        sparse = bm25.query_vector(query) if mode in ("hybrid", "sparse") else None
        hits = self.store.search(collection, dense=dense, sparse=sparse, k=fetch, filter=filter, viewer=viewer)
        passages = [Passage(id=h.id, doc_id=h.payload.get("doc_id", ""), title=h.payload.get("title", ""),
                            text=h.payload.get("text", ""), score=h.score, payload=h.payload) for h in hits]
        # RRF often gives equal scores (rank i in one list + rank j in the other); break ties by id so the
        # same question always shows the same passages in the same order.
        passages.sort(key=lambda p: (-p.score, p.id))
        if use_rerank and passages:
            scores = self.reranker.predict([(query, p.text) for p in passages])
            for p, s in zip(passages, scores, strict=True):
                p.score = float(s)
            passages.sort(key=lambda p: p.score, reverse=True)
        return passages[:k]
