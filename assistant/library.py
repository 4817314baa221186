"""Documents users add to a domain (the app's uploads, `POST /v1/domains/{d}/documents`): checked, kept under
the data directory, read by the CLI's readers, indexed in the background, listed, removed, published.

- Each upload is a job (`IngestJob`) run by one background worker, so answers keep flowing while it embeds;
  its files are checked first (name, type, size, empty) and every file gets its own result, so one bad
  file never loses the others. A job's files are read from a staging copy and moved into
  `<data_dir>/uploads/<domain>/<space>/` only once they read cleanly: a corrupt re-upload leaves the
  earlier good version (its file and its chunks) in place.
- `space` is the owner's name for a private upload, `_public` for one every user sees. The document id is
  `upload/<space>/<file name>`; uploading the same name again to the same space replaces that document.
- Private uploads carry their owner in every chunk's payload and the store excludes other users' private
  chunks from every search (`indexing.store.filters`), so isolation does not depend on the doors.
- A domain package's own corpus is listed as a summary and cannot be removed from here (it is the
  package's data: edit it and run `assistant index DOMAIN`).
Jobs live in memory: after a restart their results are gone, the indexed documents and files stay.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from assistant.domains import Domain, UnknownDomainError
from assistant.errors import InputError, NotFoundError, PermissionDeniedError
from assistant.users import User, is_admin

logger = logging.getLogger(__name__)
PUBLIC_SPACE = "_public"
UPLOAD_PREFIX = "upload/"
INGEST_BATCH = 32  # documents per ingest call: the job's progress moves at least this often
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


@dataclasses.dataclass
class FileResult:
    name: str
    status: str = "queued"       # queued | indexed | error
    doc_id: str | None = None
    chunks: int = 0
    error: str | None = None


@dataclasses.dataclass
class IngestJob:
    id: str
    domain: str
    owner: str | None
    files: list[FileResult]
    status: str = "queued"       # queued | running | done | failed
    created: float = dataclasses.field(default_factory=time.time)
    finished: float | None = None
    added: int = 0               # chunks embedded and stored
    error: str | None = None

    @property
    def done_files(self) -> int:
        return sum(f.status != "queued" for f in self.files)

    def to_dict(self) -> dict:
        errors = [f"{f.name}: {f.error}" for f in self.files if f.error]
        return {"id": self.id, "domain": self.domain, "status": self.status, "private": self.owner is not None,
                "files_total": len(self.files), "files_done": self.done_files, "added": self.added,
                "errors": errors, "error": self.error, "created": self.created, "finished": self.finished,
                "files": [dataclasses.asdict(f) for f in self.files]}


@dataclasses.dataclass
class DocumentInfo:
    doc_id: str
    title: str
    chunks: int
    owner: str | None
    uploaded: bool = True

    def to_dict(self) -> dict:
        return {"doc_id": self.doc_id, "title": self.title, "chunks": self.chunks, "private": self.owner is not None,
                "owner": self.owner}


def _space(owner: str | None) -> str:
    return owner if owner else PUBLIC_SPACE


def _clean_name(name: str) -> str:
    """The file's own name, without folders, and safe as a file name (a browser or client may send a path)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    base = _SAFE_NAME.sub("_", base)
    if not base or base in (".", "..") or base.startswith("."):
        raise ValueError("the file has no usable name")
    return base[:200]


class DocumentLibrary:
    def __init__(self, settings, store, embedder, domains: dict[str, Domain]):
        self.settings, self.store, self.embedder, self.domains = settings, store, embedder, domains
        self.root = settings.data_dir / "uploads"
        self._jobs: dict[str, IngestJob] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assistant-ingest")

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _domain(self, name: str) -> Domain:
        if name not in self.domains:
            raise UnknownDomainError(f"unknown domain {name!r}; loaded domains: {', '.join(sorted(self.domains))}")
        return self.domains[name]

    # ---- adding ----------------------------------------------------------------------------------
    def add(self, domain: str, files: list[tuple[str, bytes]], *, user: User | None = None,
            public: bool = False, after: Callable[[], object] | None = None) -> IngestJob:
        """Queue an upload of (file name, content) pairs. Private to `user` unless `public` (admins only) or
        there are no users at all. Per-file problems are results of the job, not errors of the call. `after`
        runs in the worker once every file is indexed, before the job says done (publish: drop the private copy)."""
        from indexing.documents import SUPPORTED_SUFFIXES

        dom = self._domain(domain)
        if not files:
            raise InputError("no files in the upload")
        if len(files) > self.settings.max_upload_files:
            raise InputError(f"{len(files)} files in one upload; the limit is {self.settings.max_upload_files}")
        if public and not is_admin(user):
            raise PermissionDeniedError("only an admin can add a document for every user of a domain")
        owner = None if public or user is None else user.name
        job = IngestJob(id=f"job-{uuid.uuid4().hex[:12]}", domain=dom.name, owner=owner, files=[])
        staging = self.root / ".staging" / job.id
        staging.mkdir(parents=True, exist_ok=True)
        accepted: list[tuple[FileResult, Path]] = []
        for name, content in files:
            result = FileResult(name=str(name)[:200])
            job.files.append(result)
            try:
                clean = _clean_name(name)
                suffix = Path(clean).suffix.lower()
                if suffix not in SUPPORTED_SUFFIXES:
                    raise ValueError(f"unsupported file type {suffix or '(none)'}; supported: "
                                     f"{', '.join(SUPPORTED_SUFFIXES)}")
                if not content:
                    raise ValueError("empty file")
                if len(content) > self.settings.max_upload_bytes:
                    raise ValueError(f"file is {len(content) / 1e6:.1f} MB, over the "
                                     f"{self.settings.max_upload_bytes / 1e6:.0f} MB limit")
                if any(clean == r.doc_id for r, _ in accepted):
                    raise ValueError("the same file name twice in one upload (the first one is kept)")
                path = staging / clean
                path.write_bytes(content)
                result.doc_id = clean  # the name until it is read; its document id once indexed
                accepted.append((result, path))
            except ValueError as exc:
                result.status, result.error = "error", str(exc)
        with self._lock:
            self._jobs[job.id] = job
        if accepted:
            self._worker.submit(self._run, job, dom, accepted, staging, after)
        else:
            job.status, job.finished = "done", time.time()
            shutil.rmtree(staging, ignore_errors=True)
        return job

    def _run(self, job: IngestJob, dom: Domain, accepted: list[tuple[FileResult, Path]], staging: Path,
             after: Callable[[], object] | None = None) -> None:
        from assistant.building.indexer import ingest_into_domain
        from indexing.documents import read_file
        from indexing.store import batched

        job.status = "running"
        space = _space(job.owner)
        target = self.root / dom.name / space
        try:
            for batch in batched(accepted, INGEST_BATCH):
                documents, by_doc = [], {}
                for result, path in batch:
                    try:
                        docs = read_file(path, staging, self.settings.max_upload_bytes)
                    except (ValueError, OSError) as exc:
                        result.status, result.error = "error", str(exc)
                        continue
                    doc_id = f"{UPLOAD_PREFIX}{space}/{path.name}"
                    for doc in docs:  # a corpus .jsonl holds many documents: one id each
                        documents.append(dataclasses.replace(
                            doc, doc_id=doc_id if len(docs) == 1 else f"{doc_id}#{doc.doc_id}",
                            source=f"{doc_id}", owner=job.owner, uploaded=True))
                        by_doc[documents[-1].doc_id] = result
                    result.doc_id = doc_id
                if not documents:
                    continue
                report = ingest_into_domain(dom, self.store, self.embedder, documents, prune=False, progress=False)
                job.added += report.added
                counts = self._chunk_counts(dom.name, set(by_doc))  # stored chunks, unchanged ones included
                for doc_id, result in by_doc.items():
                    result.chunks += counts.get(doc_id, 0)
                for problem in report.errors:  # a document that could not be chunked: its file failed
                    for doc in documents:
                        if problem.startswith(doc.source):
                            by_doc[doc.doc_id].status, by_doc[doc.doc_id].error = "error", problem
                target.mkdir(parents=True, exist_ok=True)
                for result, path in batch:
                    if result.status == "queued":
                        result.status = "indexed"
                        shutil.move(path, target / path.name)  # kept: a later publish re-reads it
            if after is not None and all(f.status == "indexed" for f in job.files):
                after()
            job.status = "done"
        except Exception as exc:  # noqa: BLE001 - the worker must survive; the job says what went wrong
            logger.exception("upload job %s (%s) failed", job.id, dom.name)
            job.status, job.error = "failed", f"{type(exc).__name__}: {str(exc)[:300]}"
            for result, _ in accepted:
                if result.status == "queued":
                    result.status, result.error = "error", "not indexed: the job failed (see its error)"
        finally:
            job.finished = time.time()
            shutil.rmtree(staging, ignore_errors=True)

    def job(self, domain: str, job_id: str, *, user: User | None = None) -> IngestJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.domain != domain or (job.owner is not None and not self._may_see(job.owner, user)):
            raise NotFoundError(f"no upload job {job_id!r} in domain {domain!r}")
        return job

    # ---- listing, removing, publishing -----------------------------------------------------------
    def _points(self, domain: str) -> dict[str, dict]:
        """doc_id -> {title, owner, uploaded, ids} of every document in the domain's collection."""
        from indexing.store import ORIGIN_FIELD, OWNER_FIELD, UPLOADED

        docs: dict[str, dict] = {}
        for pid, payload in self.store.scan(domain, ["doc_id", "title", OWNER_FIELD, ORIGIN_FIELD]):
            entry = docs.setdefault(payload.get("doc_id", ""), {
                "title": payload.get("title", ""), "owner": payload.get(OWNER_FIELD) or None,
                "uploaded": payload.get(ORIGIN_FIELD) == UPLOADED, "ids": []})
            entry["ids"].append(pid)
        return docs

    def _chunk_counts(self, domain: str, doc_ids: set[str]) -> dict[str, int]:
        return {d: len(e["ids"]) for d, e in self._points(domain).items() if d in doc_ids}

    @staticmethod
    def _may_see(owner: str | None, user: User | None) -> bool:
        return owner is None or is_admin(user) or (user is not None and user.name == owner)

    def list(self, domain: str, *, user: User | None = None) -> dict:
        """The uploads this user may see (an admin: all) with their chunk counts, and the package's corpus
        as a summary (it can hold tens of thousands of documents)."""
        dom = self._domain(domain)
        docs = self._points(dom.name)
        uploads = [DocumentInfo(d, e["title"], len(e["ids"]), e["owner"]) for d, e in sorted(docs.items())
                   if e["uploaded"] and self._may_see(e["owner"], user)]
        corpus = [e for e in docs.values() if not e["uploaded"]]
        return {"domain": dom.name, "documents": [u.to_dict() for u in uploads],
                "corpus": {"documents": len(corpus), "chunks": sum(len(e["ids"]) for e in corpus)}}

    def _find(self, domain: str, doc_id: str, user: User | None) -> tuple[Domain, dict, dict[str, dict]]:
        """The domain, the upload's entry and every document's (one scan), or 404 / 403."""
        dom = self._domain(domain)
        docs = self._points(dom.name)
        entry = docs.get(doc_id)
        if entry is None or not self._may_see(entry["owner"], user):  # someone else's: as if it did not exist
            raise NotFoundError(f"no document {doc_id!r} in domain {domain!r}")
        if not entry["uploaded"]:
            raise PermissionDeniedError(f"{doc_id!r} is part of the {dom.name} package's corpus; edit the package's "
                                        f"data and run `assistant index {dom.name}` to change it")
        return dom, entry, docs

    def _file_of(self, domain: str, doc_id: str) -> Path:
        space_and_name = doc_id.removeprefix(UPLOAD_PREFIX).split("#", 1)[0]
        return self.root / domain / space_and_name

    def remove(self, domain: str, doc_id: str, *, user: User | None = None) -> dict:
        """Remove an upload: its owner or an admin (a public upload: an admin)."""
        from indexing.ingest import delete_documents

        dom, entry, docs = self._find(domain, doc_id, user)
        if not is_admin(user) and (entry["owner"] is None or user is None or entry["owner"] != user.name):
            raise PermissionDeniedError("only its owner or an admin can remove this document")
        siblings = [d for d in docs if d.split("#", 1)[0] == doc_id.split("#", 1)[0]]
        removed = delete_documents(self.store, dom.name, siblings)
        self._file_of(dom.name, doc_id).unlink(missing_ok=True)
        return {"doc_id": doc_id, "removed_chunks": removed}

    def publish(self, domain: str, doc_id: str, *, user: User | None = None) -> IngestJob:
        """Make a private upload visible to every user of the domain (admins only): re-indexed from its kept
        file under the public space; the private copy is removed before the job says done."""
        dom, entry, _ = self._find(domain, doc_id, user)
        if not is_admin(user):
            raise PermissionDeniedError("only an admin can publish a document to every user of a domain")
        if entry["owner"] is None:
            raise InputError(f"{doc_id!r} is already visible to every user")
        path = self._file_of(dom.name, doc_id)
        if not path.is_file():
            raise NotFoundError(f"the uploaded file of {doc_id!r} is missing from {path.parent}; upload it again")
        owner = User(entry["owner"], admin=True)
        return self.add(dom.name, [(path.name, path.read_bytes())], user=user, public=True,
                        after=lambda: self.remove(dom.name, doc_id, user=owner))
