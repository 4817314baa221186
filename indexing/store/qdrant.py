"""Server / cluster backend (and qdrant-client's local modes): qdrant-client."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import (
    DATETIME_FIELDS,
    DENSE,
    KEYWORD_FIELDS,
    RRF_K,
    SPARSE,
    ChunkRecord,
    Hit,
    MissingIndexError,
    Sparse,
    Store,
    StoreBusyError,
    check_collection_name,
)
from .filters import SearchPlan, Stage, plan_search, to_hits


def _filter(plan: SearchPlan):
    from qdrant_client import models as m

    must = []
    for c in plan.conditions:
        if c.kind == "eq":
            must.append(m.FieldCondition(key=c.key, match=m.MatchValue(value=c.value)))
        elif c.kind == "any":
            must.append(m.FieldCondition(key=c.key, match=m.MatchAny(any=c.value)))
        else:
            rng = m.DatetimeRange(**c.value) if c.datetime else m.Range(**c.value)
            must.append(m.FieldCondition(key=c.key, range=rng))
    field, viewer = plan.hidden_owner  # someone else's: the owner is set and is not the viewer
    others = [m.IsEmptyCondition(is_empty=m.PayloadField(key=field))] + (
        [m.FieldCondition(key=field, match=m.MatchValue(value=viewer))] if viewer else [])
    return m.Filter(must=must or None, must_not=[m.Filter(must_not=others)])


def _query(stage: Stage):
    from qdrant_client import models as m

    if stage.using == DENSE:
        return stage.vector
    return m.SparseVector(indices=stage.vector[0], values=stage.vector[1])


class QdrantStore(Store):
    """`url`: a Qdrant server or cluster (sharding and replication are Qdrant's); else local mode on `path`,
    else in memory (`location`, default ":memory:"). `prefix` namespaces the collection names."""

    def __init__(self, url: str | None = None, api_key: str | None = None, path: str | None = None,
                 location: str | None = None, prefix: str = ""):
        from qdrant_client import QdrantClient

        try:
            if url:
                self.client = QdrantClient(url=url, api_key=api_key or None, timeout=30)
            elif path:
                self.client = QdrantClient(path=str(path))
            else:
                self.client = QdrantClient(location=location or ":memory:")
        except RuntimeError as exc:  # local mode: "already accessed by another instance"
            raise StoreBusyError(f"Qdrant local storage {path}: {exc}") from exc
        self.prefix = prefix

    def _c(self, name: str) -> str:
        return self.prefix + check_collection_name(name)

    def ensure_collection(self, name: str, dim: int) -> None:
        from qdrant_client import models as m

        if self.client.collection_exists(self._c(name)):
            return
        self.client.create_collection(
            self._c(name),
            vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
        for f in KEYWORD_FIELDS:
            self.client.create_payload_index(self._c(name), f, m.PayloadSchemaType.KEYWORD)
        for f in DATETIME_FIELDS:
            self.client.create_payload_index(self._c(name), f, m.PayloadSchemaType.DATETIME)

    def has_collection(self, name: str) -> bool:
        return self.client.collection_exists(self._c(name))

    def _require(self, name: str) -> None:
        if not self.has_collection(name):
            raise MissingIndexError(f"no index for domain {name!r} in Qdrant; run `assistant index {name}`")

    def drop_collection(self, name: str) -> None:
        if self.has_collection(name):
            self.client.delete_collection(self._c(name))

    def upsert(self, name: str, records: list[ChunkRecord]) -> None:
        from qdrant_client import models as m

        if not records:
            return
        self.client.upsert(self._c(name), points=[
            m.PointStruct(id=r.id, vector={DENSE: r.dense.tolist(),
                                           SPARSE: m.SparseVector(indices=list(r.sparse[0]),
                                                                  values=list(r.sparse[1]))},
                          payload=r.payload) for r in records], wait=True)

    def delete(self, name: str, ids: list[str]) -> None:
        from qdrant_client import models as m

        if ids:
            self.client.delete(self._c(name), points_selector=m.PointIdsList(points=list(ids)), wait=True)

    def count(self, name: str) -> int:
        self._require(name)
        return self.client.count(self._c(name), exact=True).count

    def scan(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict]]:
        for p in self._scroll(name, fields, with_vectors=False):
            yield str(p.id), p.payload or {}

    def scan_vectors(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict, np.ndarray]]:
        for p in self._scroll(name, fields, with_vectors=[DENSE]):
            yield str(p.id), p.payload or {}, np.asarray(p.vector[DENSE], dtype=np.float32)

    def _scroll(self, name: str, fields: list[str], with_vectors):
        self._require(name)
        offset = None
        while True:
            points, offset = self.client.scroll(self._c(name), limit=2048, offset=offset, with_payload=fields,
                                                with_vectors=with_vectors)
            yield from points
            if offset is None:
                break

    def search(self, name: str, *, dense, sparse: Sparse | None, k: int, filter: dict | None = None,
               viewer: str | None = None) -> list[Hit]:
        from qdrant_client import models as m

        self._require(name)
        plan = plan_search(dense=dense, sparse=sparse, k=k, filter=filter, viewer=viewer)
        if plan is None:
            return []
        flt = _filter(plan)
        if not plan.fused:
            stage = plan.stages[0]
            res = self.client.query_points(self._c(name), query=_query(stage), using=stage.using, limit=plan.limit,
                                           query_filter=flt, with_payload=True)
        else:
            res = self.client.query_points(
                self._c(name), query=m.RrfQuery(rrf=m.Rrf(k=RRF_K)), limit=plan.limit, with_payload=True,
                prefetch=[m.Prefetch(query=_query(s), using=s.using, limit=plan.prefetch_limit, filter=flt)
                          for s in plan.stages])
        return to_hits(res.points)

    def close(self) -> None:
        self.client.close()
