"""Readers: a domain corpus.jsonl or a folder of files -> SourceDocuments, with per-file errors.

File formats go through llama-index's readers (PDF via pypdf, DOCX, CSV via pandas, HTML by tag,
Markdown and text) and reStructuredText through docutils (indexing/rst_text.py); nothing here parses
those formats by hand. A bad file (empty, binary, corrupt, not UTF-8, over the size limit, unsupported)
becomes an entry in `ReadReport.errors` and the rest are still read.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .rst_text import rst_to_text

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf", ".docx", ".csv", ".jsonl")
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".csv", ".jsonl")


@dataclass
class SourceDocument:
    doc_id: str
    title: str
    text: str
    source: str               # file path or corpus name the document came from
    doc_type: str             # "corpus", "pdf", "md", ...
    date: str | None = None   # ISO 8601, when known (file mtime for files)
    meta: dict = field(default_factory=dict)
    owner: str | None = None  # a private upload's user (store.OWNER_FIELD); None: every user sees it
    uploaded: bool = False    # added by a user (app / HTTP), not part of the domain package's corpus


@dataclass
class ReadError:
    where: str
    reason: str

    def __str__(self):
        return f"{self.where}: {self.reason}"


@dataclass
class ReadReport:
    documents: list[SourceDocument] = field(default_factory=list)
    errors: list[ReadError] = field(default_factory=list)


def _corpus_line(obj, where: str, source: str) -> SourceDocument:
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    doc_id, text = obj.get("doc_id"), obj.get("text")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise ValueError("missing or empty 'doc_id'")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"document {doc_id!r}: missing or empty 'text'")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return SourceDocument(doc_id=doc_id, title=str(obj.get("title") or doc_id), text=text, source=source,
                          doc_type=str(meta.get("doc_type") or "corpus"), date=meta.get("date"), meta=meta)


def open_jsonl(path: str | Path):
    """A data file for reading as text: `.jsonl`, or `.jsonl.gz` (how a package ships a big corpus compactly)."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def read_corpus_jsonl(path: str | Path, source: str | None = None) -> ReadReport:
    """The shared data schema: one {"doc_id", "title", "text", "meta"} object a line (`.jsonl` or `.jsonl.gz`)."""
    path = Path(path)
    report = ReadReport()
    source = source or path.parent.name
    seen: set[str] = set()
    with open_jsonl(path) as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    doc = _corpus_line(json.loads(line), where, source)
                except (json.JSONDecodeError, ValueError) as exc:
                    report.errors.append(ReadError(where, str(exc)))
                    continue
                if doc.doc_id in seen:
                    report.errors.append(ReadError(where, f"duplicate doc_id {doc.doc_id!r} (first one kept)"))
                    continue
                seen.add(doc.doc_id)
                report.documents.append(doc)
        except UnicodeDecodeError as exc:
            report.errors.append(ReadError(str(path), f"not UTF-8 ({exc.reason} at byte {exc.start})"))
        except (OSError, EOFError) as exc:  # a corrupt or truncated .jsonl.gz
            report.errors.append(ReadError(str(path), f"cannot be read: {exc}"))
    return report


def _file_reader(suffix: str):
    from llama_index.readers.file import DocxReader, HTMLTagReader, PandasCSVReader, PDFReader
    return {".pdf": PDFReader(return_full_document=True), ".docx": DocxReader(),
            ".csv": PandasCSVReader(concat_rows=True), ".html": HTMLTagReader(tag="body"),
            ".htm": HTMLTagReader(tag="body")}.get(suffix)


def _check_text_file(path: Path) -> None:
    head = path.read_bytes()[: 1 << 20]
    if b"\x00" in head:
        raise ValueError("binary content (NUL bytes) in a text file")
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start}); convert it to UTF-8") from None


def read_file(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[SourceDocument]:
    """One file -> documents (a .jsonl in the corpus schema may hold many). Raises ValueError on bad input."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unsupported file type {suffix or '(none)'}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file")
    if size > max_bytes:
        raise ValueError(f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    if suffix in TEXT_SUFFIXES:
        _check_text_file(path)
    rel = path.relative_to(root).as_posix() if path != root else path.name
    date = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if suffix == ".jsonl":
        report = read_corpus_jsonl(path, source=rel)
        if report.errors and not report.documents:
            raise ValueError(f"no valid corpus lines; first error: {report.errors[0]}")
        return report.documents
    reader = _file_reader(suffix)
    title = path.stem
    try:
        if suffix == ".rst":
            text, doc_title = rst_to_text(path.read_text(encoding="utf-8"))
            title = doc_title or title
        elif reader is None:
            text = path.read_text(encoding="utf-8")
        else:
            docs = reader.load_data(path)
            text = "\n\n".join(d.text for d in docs)
    except Exception as exc:  # readers raise many types on corrupt input; report, don't crash the run
        raise ValueError(f"could not be read as {suffix[1:].upper()}: {type(exc).__name__}: {exc}"[:400]) from None
    if not text.strip():
        raise ValueError("no extractable text (scanned PDF or empty document?)")
    return [SourceDocument(doc_id=rel, title=title, text=text, source=rel, doc_type=suffix[1:], date=date)]


def iter_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def read_source(path: str | Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ReadReport:
    """A corpus.jsonl file, any single supported file, or a folder of them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"source {path} does not exist")
    if path.is_file():
        if path.suffix.lower() == ".jsonl":
            return read_corpus_jsonl(path)
        root, files = path.parent, [path]
    else:
        root, files = path, list(iter_files(path))
    report = ReadReport()
    for file in files:
        try:
            report.documents.extend(read_file(file, root, max_bytes))
        except (ValueError, OSError) as exc:
            report.errors.append(ReadError(str(file), str(exc)))
    if not files:
        report.errors.append(ReadError(str(path), "folder holds no files"))
    return report
