"""The CLI's way to a running `assistant serve` (found through service_file): the same work over HTTP.

Errors the service answers with (the OpenAI error body) become the platform's own error kinds again, so a
command exits with the code it would have had locally (assistant.errors).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from assistant.errors import AssistantError, EngineUnavailableError, InputError, NotFoundError

CONNECT_RETRY_S = 3.0  # a service that has just published its file may take a moment to accept connections
UPLOAD_FILES = 100  # files per upload request (the service's own limits are far higher)
UPLOAD_BYTES = 32 * 1024 * 1024  # bytes per upload request
POLL_EVERY_S = 0.5


class ServiceUnreachableError(EngineUnavailableError):
    """The service file names a live process, but nothing answers at its URL."""


def _kinds(base: type[AssistantError] = AssistantError) -> Iterator[type[AssistantError]]:
    yield base
    for sub in base.__subclasses__():
        yield from _kinds(sub)


def service_error(resp: httpx.Response, url: str) -> AssistantError:
    """The platform error kind the service's status and code stand for (exit codes as if it ran here)."""
    try:
        error = resp.json()["error"]
        message, code = str(error["message"]), str(error.get("code", ""))
    except (ValueError, KeyError, TypeError):
        message, code = resp.text[:300] or resp.reason_phrase, ""
    kinds = [k for k in _kinds() if k.status == resp.status_code and k.__module__ == AssistantError.__module__]
    fallback = kinds[0] if kinds else InputError if resp.status_code < 500 else AssistantError
    kind = next((k for k in kinds if k.code == code), fallback)
    return kind(f"{message} (answered by the running service at {url})")


def _framework_error(resp: httpx.Response) -> bool:
    """Starlette's own "Not Found" / "Method Not Allowed" (no such route), not a platform error of the route."""
    try:
        return resp.json()["error"]["code"] in ("404", "405")
    except (ValueError, KeyError, TypeError):
        return True


class ServiceClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                return self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnreachableError(f"nothing answers at {self.url}: {exc}") from None
                time.sleep(0.3)

    def _json(self, method: str, path: str, **kwargs) -> dict:
        resp = self._send(method, path, **kwargs)
        if resp.status_code in (404, 405) and _framework_error(resp):  # the route itself is not there
            raise NotFoundError(f"the running service at {self.url} has no route for {method} {path} (an older "
                                "version?): restart it, or stop it and run the command without it")
        if resp.status_code >= 400:
            raise service_error(resp, self.url)
        return resp.json()

    # ---- ask ---------------------------------------------------------------------------------
    @staticmethod
    def _chat_body(domain: str, question: str, *, rag: bool, lora: bool, filter: dict | None) -> dict:
        return {"model": domain, "messages": [{"role": "user", "content": question}], "rag": rag, "lora": lora,
                "filter": filter}

    def ask(self, domain: str, question: str, *, rag: bool = True, lora: bool = True,
            filter: dict | None = None) -> dict:
        """The answer as `Answer.to_dict(passages=False)` writes it."""
        body = self._json("POST", "/v1/chat/completions",
                          json=self._chat_body(domain, question, rag=rag, lora=lora, filter=filter))
        return {"domain": domain, "question": question, "answer": body["choices"][0]["message"]["content"],
                "citations": body["citations"], **body["assistant"]}

    def stream(self, domain: str, question: str, *, rag: bool = True, lora: bool = True,
               filter: dict | None = None) -> Iterator[str | dict]:
        """Pieces of text as they are generated, then the answer dict (as `ask` returns it)."""
        body = {**self._chat_body(domain, question, rag=rag, lora=lora, filter=filter), "stream": True}
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                with self.http.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise service_error(resp, self.url)
                    text = []
                    for line in resp.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[len("data: "):])
                        if not chunk.get("choices"):
                            continue
                        delta = chunk["choices"][0]["delta"]
                        if delta.get("content"):
                            text.append(delta["content"])
                            yield delta["content"]
                        if "assistant" in chunk:  # the last chunk: citations and the answer's metadata
                            yield {"domain": domain, "question": question, "answer": "".join(text),
                                   "citations": chunk["citations"], **chunk["assistant"]}
                return
            except httpx.ConnectError as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnreachableError(f"nothing answers at {self.url}: {exc}") from None
                time.sleep(0.3)

    # ---- retrieve ----------------------------------------------------------------------------
    def retrieve(self, domain: str, query: str, *, k: int, mode: str, filter: dict | None) -> list[dict]:
        """Passages as `Passage.to_dict()` writes them."""
        body = self._json("POST", f"/v1/domains/{domain}/retrieve",
                          json={"query": query, "k": k, "mode": mode, "filter": filter})
        return body["passages"]

    # ---- index -------------------------------------------------------------------------------
    def upload(self, domain: str, files: list[Path]) -> list[str]:
        """Send the files in batches (every user of the domain sees them: `public`); returns the job ids."""
        jobs = []
        for batch in _batches(files):
            payload = [("files", (path.name, path.read_bytes())) for path in batch]
            body = self._json("POST", f"/v1/domains/{domain}/documents", files=payload, data={"public": "true"})
            jobs.append(body["job"]["id"])
        return jobs

    def wait(self, domain: str, job_ids: list[str], on_progress: Callable[[int], None] | None = None) -> list[dict]:
        """Poll the jobs until each is done or failed; `on_progress(files done so far)` after every poll."""
        finished: dict[str, dict] = {}
        while True:
            done = 0
            for job_id in job_ids:
                job = finished.get(job_id) or self._json("GET", f"/v1/domains/{domain}/documents/jobs/{job_id}")["job"]
                if job["status"] in ("done", "failed"):
                    finished[job_id] = job
                done += sum(f["status"] != "queued" for f in job["files"])
            if on_progress:
                on_progress(done)
            if len(finished) == len(job_ids):
                return [finished[j] for j in job_ids]
            time.sleep(POLL_EVERY_S)


def _batches(files: list[Path]) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if batch and (len(batch) >= UPLOAD_FILES or size + length > UPLOAD_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch
