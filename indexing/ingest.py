"""Ingest: read -> chunk -> diff against the store -> embed only what is new -> upsert -> delete stale.

The store itself is the ledger: chunk ids are stable, so the set of ids already stored tells what is
done. Re-running after a crash or kill embeds and upserts only the chunks that are missing, and
deletes the chunks of edited documents that are no longer produced. New chunks are written before
stale ones are removed, so a document is never absent from the index mid-update.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import bm25
from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, Chunk, chunk_document
from .documents import ReadError, ReadReport, SourceDocument, read_source
from .store import ORIGIN_FIELD, UPLOADED, ChunkRecord, Store, batched


@dataclass
class IngestReport:
    collection: str
    documents: int = 0
    chunks: int = 0
    added: int = 0
    unchanged: int = 0
    removed: int = 0
    documents_removed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return asdict(self)


def ingest_documents(store: Store, collection: str, documents: list[SourceDocument], embedder, *,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                     with_title: bool = True, prune: bool = False, batch_size: int = 256, progress: bool = True,
                     errors: list[ReadError] | None = None) -> IngestReport:
    """Bring `collection` in line with `documents`. prune=True also removes documents not in the list, except
    those users uploaded (they go only when removed one by one: `delete_documents`)."""
    report = IngestReport(collection=collection, documents=len(documents),
                          errors=[str(e) for e in (errors or [])])
    t0 = time.perf_counter()
    chunks: list[Chunk] = []
    failed: set[str] = set()  # documents that could not be chunked: reported, and their stored chunks kept
    for doc in tqdm(documents, desc=f"chunk {collection}", unit="doc", disable=not progress, leave=False):
        try:
            chunks.extend(chunk_document(doc, chunk_size, chunk_overlap, with_title))
        except Exception as exc:  # noqa: BLE001 - one bad document must not end the ingest of the others
            failed.add(doc.doc_id)
            report.errors.append(f"{doc.source or doc.doc_id}: could not be chunked "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); skipped, the others were indexed")
    report.chunks = len(chunks)
    report.seconds["chunk"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store.ensure_collection(collection, embedder.dim)
    stored_by_doc: dict[str, set[str]] = defaultdict(set)
    uploaded: set[str] = set()  # documents users added: a prune (re-syncing the package's corpus) keeps them
    for pid, payload in store.scan(collection, ["doc_id", ORIGIN_FIELD]):
        stored_by_doc[payload.get("doc_id", "")].add(pid)
        if payload.get(ORIGIN_FIELD) == UPLOADED:
            uploaded.add(payload.get("doc_id", ""))
    stored = set().union(*stored_by_doc.values()) if stored_by_doc else set()
    report.seconds["scan"] = time.perf_counter() - t0

    todo = [c for c in chunks if c.id not in stored]
    report.unchanged = len(chunks) - len(todo)
    wanted_by_doc: dict[str, set[str]] = defaultdict(set)
    for c in chunks:
        wanted_by_doc[c.doc_id].add(c.id)
    stale = [pid for doc_id, ids in stored_by_doc.items() if doc_id in wanted_by_doc
             for pid in ids - wanted_by_doc[doc_id]]
    gone_docs = [doc_id for doc_id in stored_by_doc
                 if doc_id not in wanted_by_doc and doc_id not in failed and doc_id not in uploaded] if prune else []
    stale += [pid for doc_id in gone_docs for pid in stored_by_doc[doc_id]]

    embed_s = store_s = 0.0
    bar = tqdm(total=len(todo), desc=f"index {collection}", unit="chunk", disable=not progress or not todo)
    for batch in batched(todo, batch_size):
        t = time.perf_counter()
        texts = [c.embed_text for c in batch]
        dense = embedder.embed(texts)
        sparse = [bm25.document_vector(t) for t in texts]
        embed_s += time.perf_counter() - t
        t = time.perf_counter()
        store.upsert(collection, [ChunkRecord(id=c.id, dense=v, sparse=s, payload=c.payload())
                                  for c, v, s in zip(batch, dense, sparse, strict=True)])
        store_s += time.perf_counter() - t
        report.added += len(batch)
        bar.update(len(batch))
    bar.close()
    t = time.perf_counter()
    store.flush(collection)  # new chunks durable before stale ones go
    for ids in batched(stale, 1024):
        store.delete(collection, ids)
    store.flush(collection)
    store_s += time.perf_counter() - t
    report.removed = len(stale)
    report.documents_removed = len(gone_docs)
    report.seconds.update(embed=embed_s, store=store_s)
    report.seconds = {k: round(v, 3) for k, v in report.seconds.items()}
    return report


def ingest_path(store: Store, collection: str, source: str | Path, embedder, **kwargs) -> IngestReport:
    read: ReadReport = read_source(source)
    return ingest_documents(store, collection, read.documents, embedder, errors=read.errors, **kwargs)


def delete_documents(store: Store, collection: str, doc_ids: list[str]) -> int:
    wanted = set(doc_ids)
    ids = [pid for pid, payload in store.scan(collection, ["doc_id"]) if payload.get("doc_id") in wanted]
    store.delete(collection, ids)
    store.flush(collection)
    return len(ids)
