"""The store interface every backend implements, and the types and constants they share.

One interface (`Store`), one backend per module (`edge.EdgeStore`, `qdrant.QdrantStore`), in the manner of
LlamaIndex's `vector_stores/types.py`. Backends import their client lazily, so importing the package needs
neither qdrant-edge-py nor qdrant-client.
"""
from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

DENSE = "dense"
SPARSE = "bm25"
OWNER_FIELD = "owner"  # set on a private document (its user); absent on the documents every user sees
ORIGIN_FIELD = "origin"  # UPLOADED on documents users added; absent on a domain package's own corpus
UPLOADED = "upload"
KEYWORD_FIELDS = ("doc_id", "title", "source", "doc_type", OWNER_FIELD, ORIGIN_FIELD)
DATETIME_FIELDS = ("date",)
RRF_K = 60
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Sparse = tuple[list[int], list[float]]
"""A BM25 sparse vector: (token ids, weights)."""


class StoreError(RuntimeError):
    """A store operation failed. Subclasses say why when the caller can act on it."""

    missing_index = False


class StoreBusyError(StoreError):
    """The embedded index is open in another process."""


class MissingIndexError(StoreError):
    """The domain has no collection yet (`assistant index DOMAIN` builds it)."""

    missing_index = True


class FilterError(StoreError):
    """The filter spec is malformed: the caller's input, not a store failure."""


@dataclass
class ChunkRecord:
    id: str
    dense: np.ndarray
    sparse: Sparse
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


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Store(ABC):
    """One collection per domain: dense vector `DENSE` (cosine) + sparse `SPARSE` (IDF modifier), keyword
    payload indexes on `KEYWORD_FIELDS` and datetime indexes on `DATETIME_FIELDS`."""

    @abstractmethod
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection with the shared layout if it does not exist."""

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def drop_collection(self, name: str) -> None: ...

    @abstractmethod
    def upsert(self, name: str, records: list[ChunkRecord]) -> None: ...

    @abstractmethod
    def delete(self, name: str, ids: list[str]) -> None: ...

    @abstractmethod
    def count(self, name: str) -> int: ...

    @abstractmethod
    def scan(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict]]:
        """Every point as (id, payload restricted to `fields`)."""

    @abstractmethod
    def scan_vectors(self, name: str, fields: list[str]) -> Iterator[tuple[str, dict, np.ndarray]]:
        """Every point as (id, payload restricted to `fields`, its dense vector as float32)."""

    @abstractmethod
    def search(self, name: str, *, dense: np.ndarray | None, sparse: Sparse | None, k: int,
               filter: dict | None = None, viewer: str | None = None) -> list[Hit]:
        """Dense only, sparse only, or both fused with RRF inside Qdrant (query + prefetch); see `filters`
        for the filter spec and the `viewer` rule (private documents). Neither vector (or an empty sparse
        one): no hits."""

    def flush(self, name: str) -> None:  # noqa: B027 - an optional hook, a no-op unless overridden
        """Make writes so far durable (a no-op where the backend writes through)."""

    def claim(self, names: list[str]) -> None:  # noqa: B027 - an optional hook, a no-op unless overridden
        """Hold these collections for this process from now on (the embedded engine's one-process rule);
        raises StoreBusyError naming the holder. Servers and clusters share collections: nothing to do."""

    def close(self) -> None:  # noqa: B027 - an optional hook, a no-op unless overridden
        """Release the backend (files, locks, connections)."""
