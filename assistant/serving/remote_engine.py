"""A remote vLLM OpenAI-compatible server as the engine (scale-out: a GPU box, a fleet behind a balancer).

The server is started with `--enable-lora --lora-modules NAME=PATH ...` (adapters as model names), and
optionally `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` so new adapter versions can be loaded at run time.
Prompts are rendered here with the base model's chat template and sent as token ids to
`/v1/completions`, so local and remote engines see byte-identical prompts. Requests go out concurrently:
the server's scheduler batches them, one adapter per request.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from assistant.config import Settings
from assistant.errors import EngineUnavailableError
from assistant.serving.adapters import Adapter, AdapterError
from assistant.serving.engine import GenerationRequest, GenerationResult, LoopEngine


class RemoteEngineError(EngineUnavailableError):
    pass


class RemoteEngine(LoopEngine):
    def __init__(self, url: str, base_model: str | Path, settings: Settings | None = None, timeout: float = 300):
        super().__init__(base_model, settings)
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.settings.vllm_api_key}"} if self.settings.vllm_api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._ahttp = None
        self._headers = headers
        self._timeout = timeout
        try:
            models = self.served_models()
        except httpx.HTTPError as exc:
            self._stop_loop()
            raise RemoteEngineError(f"vLLM server at {self.url} is not reachable: {exc}") from exc
        self.base_name = models[0] if models else ""
        self._model_for: dict[str, str] = {}

    def served_models(self) -> list[str]:
        resp = self._http.get("/v1/models")
        resp.raise_for_status()
        return [m["id"] for m in resp.json()["data"]]

    def register_adapter(self, name: str, path: str | Path, version: str | None = None) -> Adapter:
        adapter = self.adapters.prepare(name, path, version)
        served = self.served_models()
        if adapter.served_name in served:
            self._model_for[name] = adapter.served_name
        elif name in served:  # started with --lora-modules NAME=PATH: the server's copy is what it serves
            self._model_for[name] = name
        else:
            resp = self._http.post("/v1/load_lora_adapter",
                                   json={"lora_name": adapter.served_name, "lora_path": str(adapter.path)})
            if resp.status_code >= 400:
                raise AdapterError(
                    f"vLLM server at {self.url} does not serve adapter {name!r} and refused to load it "
                    f"({resp.status_code}: {resp.text[:200]}). Start it with --lora-modules {name}={adapter.path} "
                    f"or with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.")
            self._model_for[name] = adapter.served_name
        return self.adapters.activate(adapter)

    def _client(self) -> httpx.AsyncClient:
        if self._ahttp is None:  # created on the loop thread, used only there
            self._ahttp = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self._timeout,
                                            limits=httpx.Limits(max_connections=256))
        return self._ahttp

    async def agenerate_stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, object]]:
        adapter = self.adapters.get(request.adapter) if request.adapter else None
        prompt_ids = self.render(request)
        self._check_fits(prompt_ids, request.max_tokens)
        body = {"model": self._model_for[adapter.name] if adapter else self.base_name, "prompt": prompt_ids,
                "max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                "presence_penalty": request.presence_penalty, "frequency_penalty": request.frequency_penalty,
                "stream": True, "return_token_ids": True}
        if request.stop:
            body["stop"] = request.stop
        if request.seed is not None:
            body["seed"] = request.seed
        started = time.perf_counter()
        first, parts, token_ids, finish = None, [], [], None
        async with self._client().stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code >= 400:
                detail = (await resp.aread()).decode(errors="replace")[:300]
                raise RemoteEngineError(f"vLLM server answered {resp.status_code}: {detail}")
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"][0]
                if first is None:
                    first = time.perf_counter() - started
                token_ids.extend(choice.get("token_ids") or [])
                if choice.get("text"):
                    parts.append(choice["text"])
                    yield "delta", choice["text"]
                finish = choice.get("finish_reason") or finish
        total = time.perf_counter() - started
        yield "done", GenerationResult(text="".join(parts), token_ids=token_ids, adapter=adapter,
                                       prompt_tokens=len(prompt_ids), finish_reason=finish,
                                       first_token_s=first if first is not None else total, total_s=total)

    async def _completion(self, prompt_ids: list[int], adapter, **extra) -> dict:
        body = {"model": self._model_for[adapter.name] if adapter else self.base_name, "prompt": prompt_ids,
                "max_tokens": 1, "temperature": 0.0, "return_tokens_as_token_ids": True, **extra}
        resp = await self._client().post("/v1/completions", json=body)
        if resp.status_code >= 400:
            raise RemoteEngineError(f"vLLM server answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["choices"][0]

    async def _next_token_logprobs(self, prompt_ids, adapter, k):
        choice = await self._completion(prompt_ids, adapter, logprobs=k)
        top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
        # with return_tokens_as_token_ids the keys read "token_id:<id>"
        return {int(key.rsplit(":", 1)[1]): float(lp) for key, lp in top[0].items()}

    async def _continuation_logprob(self, prompt_ids, continuation, adapter):
        ids = list(prompt_ids) + list(continuation)
        choice = await self._completion(ids, adapter, prompt_logprobs=0)
        positions = choice.get("prompt_logprobs")
        if not positions:
            raise RemoteEngineError(f"vLLM server at {self.url} returned no prompt_logprobs (needs vLLM >= 0.6)")
        return float(sum(positions[i][str(ids[i])]["logprob"] for i in range(len(prompt_ids), len(ids))))

    async def _check_health(self) -> None:
        response = await self._client().get("/health")  # vLLM's server: 200 while its engine is alive
        if response.status_code != 200:
            raise RemoteEngineError(f"vLLM server at {self.url} is unhealthy: HTTP {response.status_code}")

    def _close(self) -> None:
        self._http.close()
        if self._ahttp is not None:
            self._run(self._ahttp.aclose())
