"""Embedded backend: Qdrant's Rust engine in process (qdrant-edge-py), one shard directory per domain."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

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
    check_collection_name,
)
from .filters import SearchPlan, plan_search, to_hits
from .lock import HolderLock


def _filter(plan: SearchPlan):
    import qdrant_edge as qe

    must = []
    for c in plan.conditions:
        if c.kind == "eq":
            must.append(qe.FieldCondition(key=c.key, match=qe.MatchValue(c.value)))
        elif c.kind == "any":
            must.append(qe.FieldCondition(key=c.key, match=qe.MatchAny(c.value)))
        else:
            rng = qe.RangeDateTime(**c.value) if c.datetime else qe.RangeFloat(**c.value)
            must.append(qe.FieldCondition(key=c.key, range=rng))
    field, viewer = plan.hidden_owner  # someone else's: the owner is set and is not the viewer
    others = [qe.IsEmptyCondition(key=field)] + ([qe.FieldCondition(key=field, match=qe.MatchValue(viewer))]
                                                 if viewer else [])
    return qe.Filter(must=must or None, must_not=[qe.Filter(must_not=others)])


def _request(plan: SearchPlan):
    import qdrant_edge as qe

    flt = _filter(plan)
    queries = [qe.Query.Nearest(s.vector if s.using == DENSE
                                else qe.SparseVector(indices=s.vector[0], values=s.vector[1]), using=s.using)
               for s in plan.stages]
    if not plan.fused:
        return qe.QueryRequest(limit=plan.limit, query=queries[0], filter=flt, with_payload=True)
    return qe.QueryRequest(limit=plan.limit, query=qe.Fusion.Rrf(k=RRF_K), with_payload=True,
                           prefetches=[qe.Prefetch(limit=plan.prefetch_limit, query=q, filter=flt) for q in queries])


class EdgeStore(Store):
    """Shards under `root/<domain>/shard`. One process at a time per shard: a second opener gets
    `StoreBusyError` naming the holder. Thread-safe within the process."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._shards: dict = {}
        self._locks: dict[str, HolderLock] = {}
        self._mutex = threading.RLock()

    def _dir(self, name: str) -> Path:
        return self.root / check_collection_name(name)

    def _shard(self, name: str, create_dim: int | None = None):
        import qdrant_edge as qe

        with self._mutex:
            if name in self._shards:
                return self._shards[name]
            directory = self._dir(name)
            exists = (directory / "shard").exists() and any((directory / "shard").iterdir())
            if not exists and create_dim is None:
                raise MissingIndexError(f"no index for domain {name!r} at {directory}; run `assistant index {name}`")
            claimed = self._locks.get(name)
            lock = claimed or HolderLock(directory)
            try:
                if exists:
                    shard = qe.EdgeShard.load(str(directory / "shard"))
                else:
                    config = qe.EdgeConfig(
                        vectors={DENSE: qe.EdgeVectorParams(size=create_dim, distance=qe.Distance.Cosine)},
                        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                    )
                    shard = qe.EdgeShard.create(str(directory / "shard"), config)
                    for f in KEYWORD_FIELDS:
                        shard.update(qe.UpdateOperation.create_field_index(f, qe.PayloadSchemaType.Keyword))
                    for f in DATETIME_FIELDS:
                        shard.update(qe.UpdateOperation.create_field_index(f, qe.PayloadSchemaType.Datetime))
                    shard.flush()
            except BaseException:
                if claimed is None:
                    lock.release()
                raise
            self._shards[name] = shard
            self._locks[name] = lock
            return shard

    def ensure_collection(self, name: str, dim: int) -> None:
        self._shard(name, create_dim=dim)

    def claim(self, names: list[str]) -> None:
        """Take every named domain's lock now (a service does this at start-up, before its engine starts), so
        a second process on the same data directory fails at once, naming this one. All or none."""
        taken = []
        with self._mutex:
            try:
                for name in names:
                    if name not in self._locks:
                        self._locks[name] = HolderLock(self._dir(name))
                        taken.append(name)
            except BaseException:
                for name in taken:
                    self._locks.pop(name).release()
                raise

    def has_collection(self, name: str) -> bool:
        shard_dir = self._dir(name) / "shard"
        return name in self._shards or (shard_dir.exists() and any(shard_dir.iterdir()))

    def drop_collection(self, name: str) -> None:
        with self._mutex:
            self._close_one(name)
            shutil.rmtree(self._dir(name), ignore_errors=True)

    def upsert(self, name: str, records: list[ChunkRecord]) -> None:
        import qdrant_edge as qe

        if not records:
            return
        points = [qe.Point(id=r.id, vector={DENSE: r.dense.tolist(),
                                            SPARSE: qe.SparseVector(indices=list(r.sparse[0]),
                                                                    values=list(r.sparse[1]))},
                           payload=r.payload) for r in records]
        with self._mutex:
            self._shard(name).update(qe.UpdateOperation.upsert_points(points))

    def delete(self, name: str, ids: list[str]) -> None:
        import qdrant_edge as qe

        if ids:
            with self._mutex:
                self._shard(name).update(qe.UpdateOperation.delete_points(list(ids)))

    def flush(self, name: str) -> None:
        with self._mutex:
            if name in self._shards:
                self._shards[name].flush()

    def count(self, name: str) -> int:
        import qdrant_edge as qe

        return self._shard(name).count(qe.CountRequest(exact=True))

    def scan(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict]]:
        for rec in self._scroll(name, fields, with_vector=False):
            yield str(rec.id), rec.payload or {}

    def scan_vectors(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict, np.ndarray]]:
        for rec in self._scroll(name, fields, with_vector=[DENSE]):
            yield str(rec.id), rec.payload or {}, np.asarray(rec.vector[DENSE], dtype=np.float32)

    def _scroll(self, name: str, fields: list[str], with_vector):
        import qdrant_edge as qe

        shard = self._shard(name)
        offset = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=2048, with_payload=fields,
                                                            with_vector=with_vector))
            yield from records
            if offset is None:
                break

    def search(self, name: str, *, dense, sparse: Sparse | None, k: int, filter: dict | None = None,
               viewer: str | None = None) -> list[Hit]:
        plan = plan_search(dense=dense, sparse=sparse, k=k, filter=filter, viewer=viewer)
        if plan is None:
            return []
        return to_hits(self._shard(name).query(_request(plan)))

    def _close_one(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.flush()
            shard.close()
        lock = self._locks.pop(name, None)
        if lock:
            lock.release()

    def close(self) -> None:
        with self._mutex:
            for name in {*self._shards, *self._locks}:
                self._close_one(name)
