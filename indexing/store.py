"""The vector store: one Qdrant collection per domain, dense + BM25 sparse vectors, hybrid search.

Two backends behind one interface:
- `EdgeStore` (default): Qdrant's embedded Rust engine (`qdrant-edge-py`), one shard directory per
  domain under the data directory. Fast enough on this CPU (brute force ~1-40 ms at 10k-100k chunks),
  no server. One process at a time per shard: a second opener gets `StoreBusyError` naming the holder.
- `QdrantStore`: `qdrant-client` against a Qdrant server or cluster by URL (sharding and replication
  are Qdrant's), or its local modes (`:memory:` / a path) for tests and small data.
Both build the same collection layout (vector "dense": cosine 384; sparse "bm25" with the IDF modifier;
keyword payload indexes), so an index moves to a server with `assistant index DOMAIN` against the URL,
or by copying points with `scan`/`upsert`.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DENSE = "dense"
SPARSE = "bm25"
KEYWORD_FIELDS = ("doc_id", "title", "source", "doc_type")
DATETIME_FIELDS = ("date",)
RRF_K = 60
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StoreError(RuntimeError):
    pass


class StoreBusyError(StoreError):
    """The embedded index is open in another process."""


@dataclass
class ChunkRecord:
    id: str
    dense: np.ndarray
    sparse: tuple[list[int], list[float]]
    payload: dict


@dataclass
class Hit:
    id: str
    score: float
    payload: dict = field(default_factory=dict)


def point_id(key: str) -> str:
    """Qdrant point ids are UUIDs or ints: a UUID derived from the stable chunk key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(f"invalid collection (domain) name {name!r}: letters, digits, '_', '-', '.'; max 64")
    return name


# --------------------------------------------------------------------------------------------------
# Filters: a neutral spec -> backend filter.  {"field": value | [values] | {"gte": .., "lte": ..}}
# --------------------------------------------------------------------------------------------------
def _parse_filter(spec: dict | None) -> list[tuple[str, str, object]]:
    conditions = []
    for key, value in (spec or {}).items():
        if isinstance(value, dict):
            unknown = set(value) - {"gte", "gt", "lte", "lt"}
            if unknown or not value:
                raise StoreError(f"filter {key}: range needs gte/gt/lte/lt, got {sorted(value)}")
            conditions.append((key, "range", value))
        elif isinstance(value, (list, tuple, set)):
            conditions.append((key, "any", list(value)))
        else:
            conditions.append((key, "eq", value))
    return conditions


class Store:
    """Interface every backend implements."""

    def ensure_collection(self, name: str, dim: int) -> None: raise NotImplementedError
    def has_collection(self, name: str) -> bool: raise NotImplementedError
    def drop_collection(self, name: str) -> None: raise NotImplementedError
    def upsert(self, name: str, records: list[ChunkRecord]) -> None: raise NotImplementedError
    def delete(self, name: str, ids: list[str]) -> None: raise NotImplementedError
    def count(self, name: str) -> int: raise NotImplementedError
    def scan(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict]]: raise NotImplementedError
    def flush(self, name: str) -> None: pass

    def search(self, name: str, *, dense: np.ndarray | None, sparse: tuple[list[int], list[float]] | None,
               k: int, filter: dict | None = None, prefetch_k: int | None = None) -> list[Hit]:
        """dense only, sparse only, or both fused with RRF inside Qdrant (query_points + prefetch)."""
        raise NotImplementedError

    def close(self) -> None: pass


# --------------------------------------------------------------------------------------------------
# Embedded: qdrant-edge-py
# --------------------------------------------------------------------------------------------------
class _HolderLock:
    """An exclusive flock on `<dir>/.lock`, with who holds it written inside for the error message."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ".lock"
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown process"
            self._fh.close()
            raise StoreBusyError(
                f"the embedded index {directory} is in use by {holder}. Stop that process, send the request "
                f"to it (e.g. `assistant serve` and the HTTP API), or run a Qdrant server (qdrant_url)."
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:200],
                                   "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        self._fh.flush()

    def release(self):
        if not self._fh.closed:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


class EdgeStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._shards: dict = {}
        self._locks: dict[str, _HolderLock] = {}
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
                raise StoreError(f"no index for domain {name!r} at {directory}; run `assistant index {name}`")
            lock = _HolderLock(directory)
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
                lock.release()
                raise
            self._shards[name] = shard
            self._locks[name] = lock
            return shard

    def ensure_collection(self, name: str, dim: int) -> None:
        self._shard(name, create_dim=dim)

    def has_collection(self, name: str) -> bool:
        shard_dir = self._dir(name) / "shard"
        return name in self._shards or (shard_dir.exists() and any(shard_dir.iterdir()))

    def drop_collection(self, name: str) -> None:
        import shutil
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
        import qdrant_edge as qe
        shard = self._shard(name)
        offset = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=2048, with_payload=fields,
                                                            with_vector=False))
            for rec in records:
                yield str(rec.id), rec.payload or {}
            if offset is None:
                break

    @staticmethod
    def _filter(spec: dict | None):
        import qdrant_edge as qe
        must = []
        for key, kind, value in _parse_filter(spec):
            if kind == "eq":
                must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
            elif kind == "any":
                must.append(qe.FieldCondition(key=key, match=qe.MatchAny(value)))
            else:
                rng = qe.RangeDateTime(**value) if key in DATETIME_FIELDS else qe.RangeFloat(**value)
                must.append(qe.FieldCondition(key=key, range=rng))
        return qe.Filter(must=must) if must else None

    def search(self, name, *, dense, sparse, k, filter=None, prefetch_k=None) -> list[Hit]:
        import qdrant_edge as qe
        flt = self._filter(filter)
        stages = []
        if dense is not None:
            stages.append(qe.Query.Nearest(np.asarray(dense, dtype=np.float32).tolist(), using=DENSE))
        if sparse is not None and sparse[0]:
            stages.append(qe.Query.Nearest(qe.SparseVector(indices=list(sparse[0]), values=list(sparse[1])),
                                           using=SPARSE))
        if not stages:
            return []
        if len(stages) == 1:
            request = qe.QueryRequest(limit=k, query=stages[0], filter=flt, with_payload=True)
        else:
            pk = prefetch_k or max(4 * k, 20)
            request = qe.QueryRequest(limit=k, query=qe.Fusion.Rrf(k=RRF_K),
                                      prefetches=[qe.Prefetch(limit=pk, query=s, filter=flt) for s in stages],
                                      with_payload=True)
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {})
                for p in self._shard(name).query(request)]

    def _close_one(self, name: str):
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.flush()
            shard.close()
        lock = self._locks.pop(name, None)
        if lock:
            lock.release()

    def close(self) -> None:
        with self._mutex:
            for name in list(self._shards):
                self._close_one(name)


# --------------------------------------------------------------------------------------------------
# Server / cluster (and qdrant-client local modes): qdrant-client
# --------------------------------------------------------------------------------------------------
class QdrantStore(Store):
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

    def _require(self, name: str):
        if not self.has_collection(name):
            raise StoreError(f"no index for domain {name!r} in Qdrant; run `assistant index {name}`")

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
        self._require(name)
        offset = None
        while True:
            points, offset = self.client.scroll(self._c(name), limit=2048, offset=offset, with_payload=fields,
                                                with_vectors=False)
            for p in points:
                yield str(p.id), p.payload or {}
            if offset is None:
                break

    @staticmethod
    def _filter(spec: dict | None):
        from qdrant_client import models as m
        must = []
        for key, kind, value in _parse_filter(spec):
            if kind == "eq":
                must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
            elif kind == "any":
                must.append(m.FieldCondition(key=key, match=m.MatchAny(any=value)))
            else:
                rng = m.DatetimeRange(**value) if key in DATETIME_FIELDS else m.Range(**value)
                must.append(m.FieldCondition(key=key, range=rng))
        return m.Filter(must=must) if must else None

    def search(self, name, *, dense, sparse, k, filter=None, prefetch_k=None) -> list[Hit]:
        from qdrant_client import models as m
        self._require(name)
        flt = self._filter(filter)
        stages = []
        if dense is not None:
            stages.append((np.asarray(dense, dtype=np.float32).tolist(), DENSE))
        if sparse is not None and sparse[0]:
            stages.append((m.SparseVector(indices=list(sparse[0]), values=list(sparse[1])), SPARSE))
        if not stages:
            return []
        if len(stages) == 1:
            res = self.client.query_points(self._c(name), query=stages[0][0], using=stages[0][1], limit=k,
                                           query_filter=flt, with_payload=True)
        else:
            pk = prefetch_k or max(4 * k, 20)
            res = self.client.query_points(
                self._c(name), prefetch=[m.Prefetch(query=q, using=u, limit=pk, filter=flt) for q, u in stages],
                query=m.RrfQuery(rrf=m.Rrf(k=RRF_K)), limit=k, with_payload=True)
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in res.points]

    def close(self) -> None:
        self.client.close()


def open_store(settings) -> Store:
    """The store the settings name: a Qdrant URL if set, else the embedded engine under the data dir."""
    if settings.qdrant_url:
        if settings.qdrant_url.startswith(("http://", "https://")):
            return QdrantStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        if settings.qdrant_url == ":memory:":
            return QdrantStore(location=":memory:")
        return QdrantStore(path=settings.qdrant_url.removeprefix("file://"))
    return EdgeStore(settings.index_dir)


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
