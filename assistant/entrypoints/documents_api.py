"""The HTTP face of a domain's documents (assistant/library.py), mounted by `create_app`:

    POST   /v1/domains/{domain}/documents            multipart `files` (one or more), optional `public=true`
                                                     (admins) -> 202 {"job": ...}; ingest runs in the background
    GET    /v1/domains/{domain}/documents/jobs/{id}  the job: status, files done, per-file errors, chunks added
    GET    /v1/domains/{domain}/documents            the uploads this key may see, and the corpus as a summary
    DELETE /v1/domains/{domain}/documents/{doc_id}   remove an upload (its owner or an admin)
    POST   /v1/domains/{domain}/publish              {"doc_id"}: make a private upload public (admins)
    GET    /v1/domains/{domain}/feedback             the domain's feedback log as JSONL (admins)

Same keys as the chat (`authorize`), checked before the domain is looked up; the user a key acts as owns
what it uploads. Upload bodies have their own size limit (`max_upload_request_bytes`, the Guard).
"""
from __future__ import annotations

import re

from fastapi import FastAPI, File, Form, Header, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from assistant import FeedbackLog, PermissionDeniedError, is_admin

_UPLOAD_PATH = re.compile(r"^(/v1/domains/[^/]+/documents/?|(/.*)?/gradio_api/upload)$")


def is_upload(scope) -> bool:
    """An upload request, from HTTP or the mounted app (its body may be as large as `max_upload_request_bytes`)."""
    return scope.get("method") == "POST" and bool(_UPLOAD_PATH.match(scope.get("path", "")))


class PublishRequest(BaseModel):
    doc_id: str


def add_document_routes(app: FastAPI, platform, caller, authorize) -> None:
    library = platform.library

    @app.post("/v1/domains/{domain}/documents", status_code=202)
    async def upload(domain: str, files: list[UploadFile] = File(...), public: bool = Form(False),
                     authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        platform.domain(domain)  # unknown: 404 before the files are read into memory
        contents = [(f.filename or "", await f.read()) for f in files]
        job = await run_in_threadpool(library.add, domain, contents, user=caller(authorization), public=public)
        return JSONResponse(status_code=202, content={"job": job.to_dict()})

    @app.get("/v1/domains/{domain}/documents/jobs/{job_id}")
    def job(domain: str, job_id: str, authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        return {"job": library.job(domain, job_id, user=caller(authorization)).to_dict()}

    @app.get("/v1/domains/{domain}/documents")
    def documents(domain: str, authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        return library.list(domain, user=caller(authorization))

    @app.delete("/v1/domains/{domain}/documents/{doc_id:path}")
    def remove(domain: str, doc_id: str, authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        return library.remove(domain, doc_id, user=caller(authorization))

    @app.post("/v1/domains/{domain}/publish", status_code=202)
    def publish(domain: str, req: PublishRequest, authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        job = library.publish(domain, req.doc_id, user=caller(authorization))
        return JSONResponse(status_code=202, content={"job": job.to_dict()})

    @app.get("/v1/domains/{domain}/feedback")
    def feedback(domain: str, authorization: str | None = Header(default=None)):
        authorize(domain, authorization)
        if not is_admin(caller(authorization)):
            raise PermissionDeniedError("the feedback log is for admins")
        platform.domain(domain)
        return Response(FeedbackLog(platform.settings.data_dir / "feedback").export(domain),
                        media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{domain}-feedback.jsonl"'})
