"""The vector store: one Qdrant collection per domain, dense + BM25 sparse vectors, hybrid search.

Two backends behind one interface (`base.Store`; the filter spec and query plan they share: `filters`):
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

from .base import (
    DATETIME_FIELDS,
    DENSE,
    KEYWORD_FIELDS,
    ORIGIN_FIELD,
    OWNER_FIELD,
    RRF_K,
    SPARSE,
    UPLOADED,
    ChunkRecord,
    FilterError,
    Hit,
    MissingIndexError,
    Sparse,
    Store,
    StoreBusyError,
    StoreError,
    batched,
    check_collection_name,
    point_id,
)
from .edge import EdgeStore
from .filters import parse_filter
from .qdrant import QdrantStore

__all__ = [
    "DATETIME_FIELDS", "DENSE", "KEYWORD_FIELDS", "ORIGIN_FIELD", "OWNER_FIELD", "RRF_K", "SPARSE", "UPLOADED",
    "ChunkRecord", "EdgeStore", "FilterError",
    "Hit", "MissingIndexError", "QdrantStore", "Sparse", "Store", "StoreBusyError", "StoreError", "batched",
    "check_collection_name", "open_store", "parse_filter", "point_id",
]


def open_store(settings) -> Store:
    """The store the settings name: a Qdrant URL if set, else the embedded engine under the data dir.

    `settings`: anything with `qdrant_url`, `qdrant_api_key` and `index_dir` (the platform's Settings)."""
    if settings.qdrant_url:
        if settings.qdrant_url.startswith(("http://", "https://")):
            return QdrantStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        if settings.qdrant_url == ":memory:":
            return QdrantStore(location=":memory:")
        return QdrantStore(path=settings.qdrant_url.removeprefix("file://"))
    return EdgeStore(settings.index_dir)
