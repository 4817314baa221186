"""Build or update a domain's index from its packaged corpora or from any folder/file."""
from __future__ import annotations

from pathlib import Path

from assistant.domains import Domain
from assistant.errors import DomainError, InputError
from indexing.documents import read_corpus_jsonl, read_source
from indexing.ingest import IngestReport, ingest_documents


def index_domain(domain: Domain, store, embedder, source: str | Path | None = None, *, prune: bool | None = None,
                 progress: bool = True, chunk_size: int | None = None,
                 chunk_overlap: int | None = None) -> IngestReport:
    """Without `source`: sync the domain's packaged corpora (documents no longer there are removed).
    With `source`: add or update the documents found there, leaving the others in place (unless prune)."""
    documents, errors = [], []
    if source is None:
        if not domain.data:
            raise InputError(f"domain {domain.name} lists no data; pass --source PATH")
        for data in domain.data:
            if not data.corpus.is_file():
                raise DomainError(f"domain {domain.name}: corpus {data.corpus} is missing")
            read = read_corpus_jsonl(data.corpus, source=data.name)
            documents += read.documents
            errors += read.errors
        prune = True if prune is None else prune
    else:
        read = read_source(source)
        documents, errors = read.documents, read.errors
        prune = bool(prune)
    return ingest_into_domain(domain, store, embedder, documents, errors=errors, prune=prune, progress=progress,
                              chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def ingest_into_domain(domain: Domain, store, embedder, documents: list, *, errors: list | None = None,
                       prune: bool = False, progress: bool = True, chunk_size: int | None = None,
                       chunk_overlap: int | None = None) -> IngestReport:
    """Ingest documents into the domain's collection, chunked and embedded as its domain.toml says."""
    r = domain.retrieval
    return ingest_documents(
        store, domain.name, documents, embedder, errors=errors, prune=prune, progress=progress,
        chunk_size=chunk_size or r.chunk_size,
        chunk_overlap=chunk_overlap if chunk_overlap is not None else r.chunk_overlap,
        with_title=r.embed_title,
    )
