"""`assistant serve`: an OpenAI-compatible HTTP API over the Platform.

FastAPI over our own Platform rather than vLLM's server, because every request needs what vLLM's server
does not do: retrieval in the domain's index, the evidence gate, the grounded prompt and citation checks.
vLLM stays underneath (in-process, or remote by URL). `model` is a domain name; citations come back in
the response body (and in the last streamed chunk). Blocking SDK calls run in the thread pool, so
concurrent requests reach vLLM together and are batched there.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
import uuid

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant import (
    Answer,
    AuthenticationError,
    InputError,
    NotFoundError,
    Platform,
    check_question,
    configure_environment,
    error_info,
    mapped_error_types,
)

logger = logging.getLogger(__name__)


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = None
    rag: bool = True
    lora: bool = True
    filter: dict | None = None


class ReloadRequest(BaseModel):
    path: str | None = None  # a new adapter version's directory; empty = re-read the domain's adapter/


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str = "invalid_request"):
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": code}})


def error_response(exc: BaseException) -> JSONResponse:
    """Any exception as the OpenAI error body, its status from the one error map (assistant.errors)."""
    info = error_info(exc)
    if info.status >= 500:
        logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse(status_code=info.status, content=info.body())


def _response_extras(answer: Answer) -> dict:
    """What the API adds to an OpenAI response: the checked citations and the answer's metadata."""
    return {"citations": [c.to_dict() for c in answer.citations], "assistant": answer.meta()}


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="Domain assistant", version="0.1.0")
    settings = platform.settings
    keys: dict = json.loads(settings.api_keys) if settings.api_keys else {}

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(400, f"invalid request body: {where or 'body'}: {first.get('msg', 'malformed JSON')}")

    @app.exception_handler(StarletteHTTPException)  # the framework's own (unknown route, wrong method)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), kind, code=str(exc.status_code))

    for handled in (*mapped_error_types(), Exception):
        app.add_exception_handler(handled, lambda request, exc: error_response(exc))

    def authorize(domain: str, authorization: str | None, admin: bool = False):
        """A domain's keys or an admin ('*') key; admin=True: admin keys only."""
        if not keys:
            return
        allowed = set(keys.get("*", [])) | (set() if admin else set(keys.get(domain, [])))
        token = (authorization or "").removeprefix("Bearer ").strip()
        if token not in allowed:
            raise AuthenticationError("reloading adapters needs an admin ('*') API key" if admin
                                      else f"missing or invalid API key for domain {domain!r}")

    def validate(req: ChatRequest) -> str:
        if req.model not in platform.domains:
            raise NotFoundError(f"unknown model {req.model!r}: models are domain names "
                                f"({', '.join(sorted(platform.domains))})")
        users = [m.content for m in req.messages if m.role == "user"]
        question = check_question(users[-1] if users else "", settings.max_question_chars)
        if req.max_tokens is not None and not 1 <= req.max_tokens <= settings.max_tokens_limit:
            raise InputError(f"max_tokens must be between 1 and {settings.max_tokens_limit}")
        return question

    @app.get("/health")
    def health():
        return {"status": "ok", "domains": sorted(platform.domains)}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [
            {"id": d["domain"], "object": "model", "created": 0, "owned_by": "domain-assistant",
             "description": d["description"], "adapter": d["adapter"], "adapter_version": d["adapter_version"]}
            for d in platform.info()]}

    @app.post("/v1/adapters/{domain}/reload")
    async def reload_adapter(domain: str, req: ReloadRequest | None = None,
                             authorization: str | None = Header(default=None)):
        """Hot reload a domain's adapter (a new version directory, or its own adapter/ re-read). Admin keys only."""
        authorize(domain, authorization, admin=True)
        platform.domain(domain)  # unknown: 404
        adapter = await run_in_threadpool(platform.reload_adapter, domain, (req.path if req else None))
        return {"domain": domain, "adapter": adapter.served_name, "adapter_version": adapter.version,
                "path": str(adapter.path)}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, authorization: str | None = Header(default=None)):
        question = validate(req)
        authorize(req.model, authorization)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        kwargs = dict(rag=req.rag, lora=req.lora, filter=req.filter, max_tokens=req.max_tokens)
        if not req.stream:
            answer = await run_in_threadpool(platform.ask, req.model, question, **kwargs)
            return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                                 "finish_reason": "stop"}],
                    **_response_extras(answer)}
        pieces = platform.stream(req.model, question, **kwargs)
        first = await run_in_threadpool(next, pieces)  # input errors become 4xx before the stream starts

        def events():
            def chunk(delta: dict, finish=None, **extra):
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
                return f"data: {json.dumps(body)}\n\n"
            yield chunk({"role": "assistant"})
            for piece in itertools.chain([first], pieces):
                if isinstance(piece, str):
                    yield chunk({"content": piece})
                else:
                    yield chunk({}, "stop", **_response_extras(piece))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, domains: list[str] | None = None) -> None:
    import uvicorn

    configure_environment()
    platform = Platform.load(domains)
    try:
        uvicorn.run(create_app(platform), host=host, port=port, log_level="info")
    finally:
        platform.close()
