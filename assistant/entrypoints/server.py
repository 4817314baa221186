"""`assistant serve`: an OpenAI-compatible HTTP API over the Platform.

FastAPI over our own Platform rather than vLLM's server, because every request needs what vLLM's server
does not do: retrieval in the domain's index, the evidence gate, the grounded prompt and citation checks.
vLLM stays underneath (in-process, or remote by URL). `model` is a domain name; citations come back in
the response body (and in the last streamed chunk). Blocking SDK calls run in the thread pool, so
concurrent requests reach vLLM together and are batched there.

Fail-safe rules (README "Operations"): every error is an OpenAI error body, a 500 too, and the connection
stays usable; bodies over `max_request_bytes` get 413 before they are read; with API keys set, the key is
checked before anything that names a domain, and the model list, docs and schema need one; `/health` is
vLLM's own liveness (503 once its engine process is gone, and `serve` then exits non-zero for its
supervisor); a client that drops a stream aborts its vLLM request.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant import (
    EXIT_ENGINE_DEAD,
    Answer,
    AuthenticationError,
    EngineWatchdog,
    FeedbackLog,
    InputError,
    NotFoundError,
    Platform,
    User,
    configure_environment,
    error_info,
    install_shutdown_rules,
    mapped_error_types,
    parse_messages,
    reap_children,
    viewer,
)
from assistant.entrypoints.documents_api import add_document_routes, is_upload

logger = logging.getLogger(__name__)


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, plus `rag`, `lora`, `filter` and `condense`. Fields a client may send
    that change nothing here (`user`, `metadata`, `store`) are accepted; those that would change the answer and
    are not supported (`tools`, `functions`, non-text `response_format`, `logprobs`, `n` > 1) are refused."""
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict] = Field(min_length=1)  # checked by assistant.conversation.parse_messages
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None
    response_format: dict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    rag: bool = True
    lora: bool = True
    filter: dict | None = None
    condense: bool = True

    def unsupported(self) -> str | None:
        if self.n != 1:
            return "n must be 1: one answer per request (ask again with a seed and temperature > 0 for another)"
        for name in ("tools", "functions", "tool_choice", "function_call"):
            if getattr(self, name):
                return f"{name} is not supported: domain assistants answer from their documents, they call no tools"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format must be {\"type\": \"text\"}: structured output is not supported"
        if self.logprobs or self.top_logprobs:
            return "logprobs are not returned by this API"
        return None

    def sampling(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "stop": self.stop, "seed": self.seed,
                "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty}


class ReloadRequest(BaseModel):
    path: str | None = None  # a new adapter version's directory; empty = re-read the domain's adapter/


class RetrieveRequest(BaseModel):
    """`POST /v1/domains/{domain}/retrieve`: passages only (`assistant retrieve` sends it to a running service).
    k, mode: the domain's own when left out; the retriever checks their values."""
    model_config = ConfigDict(extra="forbid")

    query: str
    k: int | None = None
    mode: str | None = None
    filter: dict | None = None


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str = "invalid_request"):
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": code}})


def error_response(exc: BaseException) -> JSONResponse:
    """Any exception as the OpenAI error body, its status from the one error map (assistant.errors)."""
    info = error_info(exc)
    if info.status >= 500:
        logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse(status_code=info.status, content=info.body())


class Guard:
    """Outermost ASGI layer: a body limit, keys on the schema and docs, and any exception as a JSON 500.

    Starlette's own last-resort handler answers a 500 in plain text and re-raises, and uvicorn then drops
    the keep-alive connection; here the error is answered and the connection stays usable."""

    def __init__(self, app, max_body: int, key_ok, max_upload_body: int | None = None):
        self.app, self.max_body, self.key_ok = app, max_body, key_ok
        self.max_upload_body = max_upload_body or max_body  # uploads (POST .../documents) get their own limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["path"] in PROTECTED_DOCS and not self.key_ok(headers.get("authorization")):
            return await _send(scope, receive, send, 401, "an API key is needed for the schema and docs",
                               "authentication_error", "invalid_api_key")
        limit = self.max_upload_body if is_upload(scope) else self.max_body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await _send(scope, receive, send, 413,
                               f"request body of {length} bytes; the limit is {limit}",
                               code="request_too_large")
        seen = 0
        started = too_large = False

        async def limited_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _BodyTooLargeError()
            return message

        async def tracking_send(message):
            nonlocal started
            if too_large:  # the framework turned our exception into its own 400: answer 413 instead, once
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send(scope, receive, send, 413, f"request body over the limit of {limit} bytes",
                                code="request_too_large")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await _send(scope, receive, send, 413, f"request body over the limit of {limit} bytes",
                            code="request_too_large")
        except Exception as exc:  # noqa: BLE001 - the last resort: answered as JSON, logged with its traceback
            logger.error("request failed: %s", exc, exc_info=exc)
            if not started:
                info = error_info(exc)
                await _send(scope, receive, send, info.status, info.message, info.type, info.code)


class _BodyTooLargeError(Exception):
    pass


PROTECTED_DOCS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


async def _send(scope, receive, send, status: int, message: str, kind: str = "invalid_request_error",
                code: str = "invalid_request") -> None:
    """An OpenAI error body sent from the ASGI layer (the same response `_error` makes for the routes)."""
    await _error(status, message, kind, code)(scope, receive, send)


def _usage(answer: Answer) -> dict:
    usage = answer.usage or {"prompt_tokens": 0, "completion_tokens": 0}
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


def _response_extras(answer: Answer) -> dict:
    """What the API adds to an OpenAI response: the checked citations and the answer's metadata."""
    return {"citations": [c.to_dict() for c in answer.citations], "assistant": answer.meta()}


def _token(authorization: str | None) -> str:
    return (authorization or "").removeprefix("Bearer ").strip()


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="Domain assistant", version="0.1.0")
    settings = platform.settings
    keys: dict = json.loads(settings.api_keys) if settings.api_keys else {}
    users = platform.users  # which key is whom (assistant/users.py); keys are required once any is configured
    named_keys = users.named_keys()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(400, f"invalid request body: {where or 'body'}: {first.get('msg', 'malformed JSON')}")

    @app.exception_handler(StarletteHTTPException)  # the framework's own (unknown route, wrong method)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), kind, code=str(exc.status_code))

    for handled in mapped_error_types():
        app.add_exception_handler(handled, lambda request, exc: error_response(exc))
    app.add_middleware(Guard, max_body=settings.max_request_bytes, max_upload_body=settings.max_upload_request_bytes,
                       key_ok=lambda header: not users.keys_required or caller(header) is not None)

    def caller(authorization: str | None) -> User | None:
        """The user a request acts as: None for a service without keys (the local user) or an unknown key."""
        return users.key_user(_token(authorization)) if users.keys_required else None

    def opens(domain: str, authorization: str | None, admin: bool = False) -> bool:
        """Admin keys open everything; a named user's keys every domain; a domain's keys that domain."""
        if not users.keys_required:
            return True
        user, token = caller(authorization), _token(authorization)
        if user is None or admin:
            return user is not None and user.admin
        return user.admin or token in named_keys or token in set(keys.get(domain, []))

    def authorize(domain: str, authorization: str | None, admin: bool = False):
        """A domain's keys or an admin ('*') key; admin=True: admin keys only. Checked before the domain is
        looked up, so a wrong key learns nothing about which domains exist."""
        if not opens(domain, authorization, admin):
            raise AuthenticationError("reloading adapters needs an admin ('*') API key" if admin
                                      else f"missing or invalid API key for model {domain!r}")

    def validate(req: ChatRequest) -> int | None:
        """The request's max_tokens, once the model, the messages and the options are known to be usable."""
        if req.model not in platform.domains:
            raise NotFoundError(f"unknown model {req.model!r}: models are domain names "
                                f"({', '.join(sorted(platform.domains))})")
        refused = req.unsupported()
        if refused:
            raise InputError(refused)
        parse_messages(req.messages, settings.max_question_chars)  # 400/413 before any model work
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if max_tokens is not None and not 1 <= max_tokens <= settings.max_tokens_limit:
            raise InputError(f"max_tokens must be between 1 and {settings.max_tokens_limit}")
        return max_tokens

    @app.get("/health")
    async def health():
        """vLLM's liveness: 200 while its engine process answers, 503 once it is gone. Domain names only
        without API keys (the health check needs no key)."""
        alive = await run_in_threadpool(platform.engine.healthy)
        body = {"status": "ok" if alive else "unavailable", "engine": "alive" if alive else "dead",
                "in_flight": platform.engine.in_flight, "domains_unavailable": len(platform.refused_adapters)}
        if not users.keys_required:
            body["domains"] = sorted(platform.domains)
        return JSONResponse(status_code=200 if alive else 503, content=body)

    @app.get("/v1/models")
    def models(authorization: str | None = Header(default=None)):
        """The domains this key opens (every domain without API keys); 401 for a key that opens none."""
        listed = [d for d in platform.info() if opens(d["domain"], authorization)]
        if users.keys_required and not listed:
            raise AuthenticationError("missing or invalid API key")
        return {"object": "list", "data": [
            {"id": d["domain"], "object": "model", "created": 0, "owned_by": "domain-assistant",
             "description": d["description"], "adapter": d["adapter"], "adapter_version": d["adapter_version"],
             "query_encoder": d["query_encoder"],
             **({"query_encoder_refused": d["query_encoder_refused"]} if "query_encoder_refused" in d else {})}
            for d in listed]}

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
    async def chat(req: ChatRequest, request: Request, authorization: str | None = Header(default=None)):
        authorize(req.model, authorization)
        max_tokens = validate(req)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        kwargs = dict(rag=req.rag, lora=req.lora, filter=req.filter, max_tokens=max_tokens, condense=req.condense,
                      user=viewer(caller(authorization)), **req.sampling())
        if not req.stream:
            answer = await run_in_threadpool(platform.chat, req.model, req.messages, **kwargs)
            return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                                 "finish_reason": answer.finish_reason or "stop"}],
                    "usage": _usage(answer), **_response_extras(answer)}
        cancel = threading.Event()  # set when the client goes away: the engine aborts the vLLM request
        pieces = platform.chat_stream(req.model, req.messages, cancel=cancel, **kwargs)
        first = await run_in_threadpool(next, pieces)  # input errors become 4xx before the stream starts
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        def chunk(delta: dict | None, finish=None, **extra):
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        async def events():
            try:
                yield chunk({"role": "assistant"})
                async for piece in iterate_in_threadpool(itertools.chain([first], pieces)):
                    if isinstance(piece, str):
                        yield chunk({"content": piece})
                    else:
                        yield chunk({}, piece.finish_reason or "stop", **_response_extras(piece))
                        if include_usage:  # OpenAI's shape: a last chunk with no choices and the usage
                            yield chunk(None, usage=_usage(piece))
                yield "data: [DONE]\n\n"
            finally:  # also on a client disconnect, which cancels this generator: stop generating now
                cancel.set()
                pieces.close()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/domains/{domain}/retrieve")
    async def retrieve(domain: str, req: RetrieveRequest, authorization: str | None = Header(default=None)):
        """The domain's passages for a query (what the model would be shown, without generating)."""
        authorize(domain, authorization)
        passages = await run_in_threadpool(platform.retrieve, domain, req.query, req.k, filter=req.filter,
                                           mode=req.mode, user=viewer(caller(authorization)))
        return {"domain": domain, "passages": [p.to_dict() for p in passages]}

    add_document_routes(app, platform, caller, authorize)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, domains: list[str] | None = None, app: bool = True) -> None:
    """Run the API, and the chat app at `/` (app=True), until SIGTERM/SIGINT (exit 0 after a clean stop) or
    until the engine dies (exit EXIT_ENGINE_DEAD, for a supervisor to restart it). One process, one engine,
    one store: the browser and the API see the same documents and adapters. No engine process is left
    behind either way."""
    import signal
    import sys

    import uvicorn

    from assistant.entrypoints.service_file import client_url, publish

    configure_environment()
    install_shutdown_rules()  # while loading too: vLLM's start takes a minute
    platform = None
    watchdog = None
    try:
        platform = Platform.load(domains)
        api = create_app(platform)
        if app:  # mounted last: the API's routes (/v1, /health, /docs) win over the app's catch-all
            from assistant.entrypoints.web import mount

            mount(api, platform, FeedbackLog(platform.settings.data_dir / "feedback"))
        server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="info",
                                               timeout_graceful_shutdown=10))
        watchdog = EngineWatchdog(platform.engine.healthy, lambda: setattr(server, "should_exit", True))
        watchdog.start()
        try:
            with publish(platform.settings, client_url(host, port), list(platform.domains)):  # for the CLI
                server.run()  # handles SIGTERM/SIGINT: stops accepting, gives requests 10 s, returns
        except SystemExit as exc:  # uvicorn re-raises the signal it caught once it has stopped: a clean stop
            if exc.code != 128 + signal.SIGTERM:
                raise
    finally:
        if watchdog is not None:
            watchdog.stop()
        if platform is not None:
            platform.close()
        reap_children()
    if watchdog is not None and watchdog.dead:
        sys.exit(EXIT_ENGINE_DEAD)
