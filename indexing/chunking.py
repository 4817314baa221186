"""Chunking with llama-index's SentenceSplitter, and stable chunk ids.

A chunk's id is a UUID derived from sha256(doc_id + chunk text): the same document always gives the
same ids (re-ingesting changes nothing), an edited document gives new ids for its edited chunks (the
old ones are deleted by the ingest diff).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from .documents import SourceDocument
from .store import ORIGIN_FIELD, OWNER_FIELD, UPLOADED, point_id

DEFAULT_CHUNK_SIZE = 128     # tokens: all-MiniLM-L6-v2 was trained on 128-token inputs (and truncates at 256);
                             # 128 retrieved as well as or better than 256 on all verticals (eval/reports/retrieval.md)
DEFAULT_CHUNK_OVERLAP = 16
SECTION_CHARS = 20_000       # the sentence splitter sees at most this much at once: nltk's punkt runs its regexes
                             # under a 5 s guard that a 50 MB text trips (TimeoutError); no shipped document is longer


@dataclass
class Chunk:
    id: str
    doc_id: str
    index: int
    text: str
    document: SourceDocument
    with_title: bool = True

    @property
    def embed_text(self) -> str:
        """What gets embedded and BM25-indexed: a meaningful title gives short chunks their context."""
        if self.with_title and self.document.title and self.document.title != self.doc_id:
            return f"{self.document.title}\n{self.text}"
        return self.text

    def payload(self) -> dict:
        d = self.document
        payload = {"doc_id": d.doc_id, "title": d.title, "text": self.text, "chunk": self.index,
                   "source": d.source, "doc_type": d.doc_type, "meta": d.meta}
        if d.date:
            payload["date"] = d.date
        if d.owner:
            payload[OWNER_FIELD] = d.owner
        if d.uploaded:
            payload[ORIGIN_FIELD] = UPLOADED
        return payload


def chunk_key(doc_id: str, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\x00{text}".encode()).hexdigest()


@lru_cache(maxsize=8)
def _splitter(chunk_size: int, chunk_overlap: int):
    from llama_index.core.node_parser import SentenceSplitter
    if chunk_size < 32:
        raise ValueError(f"chunk_size {chunk_size} is too small (minimum 32 tokens)")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be >= 0 and < chunk_size, got {chunk_overlap}")
    return SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def sections(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """`text` cut into pieces of at most `limit` characters: at paragraph breaks where it can, else at the
    last whitespace (a text with none is cut hard). A text under the limit is one piece, unchanged."""
    out: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n\n", 0, limit)
        if cut <= 0:
            cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
        if cut <= 0:
            cut = limit
        out.append(text[:cut])
        text = text[cut:].lstrip()
    out.append(text)
    return out


def chunk_document(doc: SourceDocument, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, with_title: bool = True) -> list[Chunk]:
    splitter = _splitter(chunk_size, chunk_overlap)
    pieces = [p for section in sections(doc.text) for p in splitter.split_text(section) if p.strip()]
    chunks, seen = [], set()
    for i, text in enumerate(pieces):
        cid = point_id(chunk_key(doc.doc_id, text))
        if cid in seen:  # identical repeated passage inside one document: keep one
            continue
        seen.add(cid)
        chunks.append(Chunk(id=cid, doc_id=doc.doc_id, index=i, text=text, document=doc,
                            with_title=with_title))
    return chunks
