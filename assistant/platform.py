"""The SDK: one Platform = one engine + one store + every domain package.

    from assistant import Platform
    with Platform.load() as p:
        a = p.ask("healthcare", "Do statins reduce mortality in elderly patients?")
        print(a.text, [c.doc_id for c in a.citations], a.adapter, a.abstained)
"""
from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

from assistant.answer import Answer, Citation, check_question
from assistant.config import Settings, configure_environment
from assistant.domains import Domain, DomainError, UnknownDomainError, get_domain, list_domains
from assistant.errors import AdapterError
from assistant.prompting import build_messages, parse_citations
from assistant.redaction import redact
from assistant.serving.adapters import Adapter
from assistant.serving.engine import GenerationRequest, GenerationResult

__all__ = ["Answer", "Citation", "Platform", "make_engine"]
_IDK = re.compile(r"\b(do not know|don't know|cannot answer|can't answer|not enough information|no information)\b",
                  re.IGNORECASE)


class Platform:
    def __init__(self, settings: Settings, engine, store, embedder, domains: dict[str, Domain],
                 owns_engine: bool = True, base_model_sha256: str | None = None):
        from indexing.retriever import Retriever

        self.settings = settings
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.retriever = Retriever(store, embedder, max_query_chars=settings.max_question_chars)
        self.domains = domains
        self.owns_engine = owns_engine
        self.base_model_sha256 = base_model_sha256  # adapters must name it in their manifest (None: not checked)
        self._closed = False

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def load(cls, domains: list[str | Domain] | None = None, settings: Settings | None = None, *, engine=None,
             build_missing_indexes: bool = True, progress: bool = True) -> Platform:
        """Load domain packages (names, or already loaded `Domain`s), open the store, start (or connect to)
        the engine, register adapters."""
        from assistant.building.indexer import index_domain
        from assistant.serving.models import prepare
        from indexing.embedder import Embedder
        from indexing.store import open_store

        configure_environment()
        settings = settings or Settings.load()
        owns_engine = engine is None
        names = domains or list_domains(settings)
        if not names:
            raise DomainError(f"no domain packages found in {settings.domains_dir}")
        loaded = {d.name: d for d in (n if isinstance(n, Domain) else get_domain(n, settings) for n in names)}
        prepared = prepare(settings, progress=(print if progress else (lambda *_: None)))
        store = open_store(settings)
        try:
            embedder = Embedder(prepared.embed_model)
            embedder.embed_query("warm-up")  # first call pays one-off set-up; not the user's first question
            for dom in loaded.values():
                if not store.has_collection(dom.name):
                    if not build_missing_indexes:
                        raise DomainError(f"domain {dom.name} has no index; run `assistant index {dom.name}`")
                    index_domain(dom, store, embedder, progress=progress)
            if engine is None:
                engine = make_engine(settings, prepared.base_model)
        except BaseException:
            store.close()
            raise
        platform = cls(settings, engine, store, embedder, loaded, owns_engine, prepared.base_model_sha256)
        try:
            for dom in loaded.values():
                if dom.has_adapter:
                    platform.reload_adapter(dom.name)
        except BaseException:
            platform.close()
            raise
        return platform

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.owns_engine:
                self.engine.shutdown()
        finally:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- retrieval ---------------------------------------------------------------------------
    def domain(self, name: str) -> Domain:
        if not isinstance(name, str) or name not in self.domains:
            raise UnknownDomainError(f"unknown domain {name!r}; loaded domains: {', '.join(sorted(self.domains))}")
        return self.domains[name]

    def retrieve(self, domain: str, question: str, k: int | None = None, *, filter: dict | None = None,
                 mode: str | None = None, query_vector=None):
        dom = self.domain(domain)
        question = check_question(question, self.settings.max_question_chars)
        return self.retriever.retrieve(dom.name, question, k or dom.k, mode=mode or dom.retrieval.mode,
                                       filter=filter, query_vector=query_vector)

    def evidence(self, domain: str, question: str, filter: dict | None = None, query_vector=None) -> float:
        """Cosine similarity of the closest chunk (dense): the evidence gate's signal."""
        dense = query_vector if query_vector is not None else self.embedder.embed_query(question)
        hits = self.store.search(domain, dense=dense, sparse=None, k=1, filter=filter)
        return hits[0].score if hits else 0.0

    def adapter_for(self, domain: str, lora: bool = True) -> Adapter | None:
        """The adapter that serves this domain now, or None (no adapter, or lora=False: the base model)."""
        adapters = self.engine.adapters
        return adapters.get(domain) if lora and domain in adapters else None

    # ---- answering ---------------------------------------------------------------------------
    def _prepare(self, domain: str, question: str, rag: bool, lora: bool, k: int | None, filter: dict | None,
                 options: dict | None, max_tokens: int | None) -> tuple[Answer, GenerationRequest | None]:
        """The answer so far and the request that finishes it (None: the evidence gate answered)."""
        dom = self.domain(domain)
        question = check_question(question, self.settings.max_question_chars)
        started = time.perf_counter()
        passages, evidence = [], None
        if rag:
            vector = self.embedder.embed_query(question)  # once, for both retrieval and the gate
            passages = self.retrieve(dom.name, question, k, filter=filter, query_vector=vector)
            evidence = self.evidence(dom.name, question, filter, query_vector=vector)
        retrieve_ms = (time.perf_counter() - started) * 1000
        adapter = self.adapter_for(dom.name, lora)
        answer = Answer(domain=dom.name, question=question, text="", citations=[],
                        adapter=adapter.served_name if adapter else None,
                        adapter_version=adapter.version if adapter else None, abstained=False,
                        evidence=round(evidence, 4) if evidence is not None else None,
                        timings={"retrieve_ms": round(retrieve_ms, 1), "generate_ms": 0.0, "first_token_ms": None})
        if rag and (not passages or evidence < dom.evidence_threshold):
            answer.abstained = True
            answer.flags.append("evidence_gate")
            answer.text = (f"I don't know from the {dom.title} documents: nothing retrieved is close enough to "
                           f"this question to answer it from evidence.")
            return answer, None
        max_new = int(max_tokens or dom.generation.max_tokens)
        budget = self.settings.max_model_len - max_new - 8
        clean = redact if dom.redacts_identifiers else (lambda text: text)
        messages, shown = build_messages(
            dom.system_prompt, question,
            [dataclasses.replace(p, text=clean(p.text)) for p in passages],
            self.engine.tokenizer, answer_template=dom.answer_template, options=options, budget_tokens=budget,
            rag=rag)
        if rag and len(shown) < len(passages):
            answer.flags.append(f"trimmed_passages:{len(passages) - len(shown)}")
        answer.passages = shown
        request = GenerationRequest(messages=messages, adapter=dom.name if adapter else None, max_tokens=max_new,
                                    temperature=dom.generation.temperature)
        return answer, request

    def _finish(self, answer: Answer, result: GenerationResult, rag: bool) -> Answer:
        answer.text = result.text.strip()
        if self.domains[answer.domain].redacts_identifiers:
            answer.text = redact(answer.text)
        answer.timings["generate_ms"] = round(result.total_s * 1000, 1)
        answer.timings["first_token_ms"] = round(result.first_token_s * 1000, 1)
        if rag:
            valid, invalid = parse_citations(answer.text, len(answer.passages))
            answer.citations = [answer.passages[n - 1] for n in valid]
            if invalid:
                answer.flags.append("invalid_citation")
            if not valid:
                answer.flags.append("uncited")
        if _IDK.search(answer.text) and not answer.citations:
            answer.abstained = True
        return answer

    def ask(self, domain: str, question: str, *, rag: bool = True, lora: bool = True, k: int | None = None,
            filter: dict | None = None, options: dict | None = None, max_tokens: int | None = None) -> Answer:
        return self.ask_many([(domain, question)], rag=rag, lora=lora, k=k, filter=filter, options=options,
                             max_tokens=max_tokens)[0]

    def ask_many(self, items, *, rag: bool = True, lora: bool = True, k: int | None = None,
                 filter: dict | None = None, options: dict | None = None,
                 max_tokens: int | None = None) -> list[Answer]:
        """Many questions, mixed domains, one vLLM batch (each prompt with its own domain's adapter).

        items: (domain, question) pairs, or dicts with domain, question and optional rag, lora, filter, options."""
        prepared = []
        for item in items:
            spec = dict(item) if isinstance(item, dict) else {"domain": item[0], "question": item[1]}
            r, lo = spec.get("rag", rag), spec.get("lora", lora)
            prepared.append((self._prepare(spec["domain"], spec["question"], r, lo, spec.get("k", k),
                                           spec.get("filter", filter), spec.get("options", options), max_tokens), r))
        requests = [req for (_, req), _ in prepared if req is not None]
        results = iter(self.engine.generate(requests)) if requests else iter(())
        return [answer if req is None else self._finish(answer, next(results), r)
                for (answer, req), r in prepared]

    def stream(self, domain: str, question: str, *, rag: bool = True, lora: bool = True, k: int | None = None,
               filter: dict | None = None, options: dict | None = None,
               max_tokens: int | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the final Answer (citations checked)."""
        answer, request = self._prepare(domain, question, rag, lora, k, filter, options, max_tokens)
        if request is None:
            yield answer.text
            yield answer
            return
        for item in self.engine.stream(request):
            if isinstance(item, str):
                yield item
            else:
                yield self._finish(answer, item, rag)

    def reload_adapter(self, domain: str, path=None):
        """Serve an adapter version (a directory, or the domain's own adapter/) from the next request on,
        without restarting the engine: used at start-up and for hot reload. Refused when the manifest names
        another base model or vLLM cannot serve it; the old version keeps serving in that case."""
        from assistant.serving.adapter_manifest import check_adapter

        dom = self.domain(domain)
        path = Path(path).expanduser().resolve() if path else dom.adapter_path
        if not path.is_dir():
            raise AdapterError(f"adapter directory {path} does not exist")
        if self.base_model_sha256:
            check_adapter(path, self.base_model_sha256)
        return self.engine.register_adapter(dom.name, path)

    def info(self) -> list[dict]:
        out = []
        for dom in self.domains.values():
            adapter = self.adapter_for(dom.name)
            out.append({"domain": dom.name, "title": dom.title, "description": dom.description,
                        "adapter": adapter.served_name if adapter else None,
                        "adapter_version": adapter.version if adapter else None})
        return out


def make_engine(settings: Settings, base_model):
    """In-process vLLM by default; a remote vLLM OpenAI server when `vllm_url` is set."""
    if settings.vllm_url:
        from assistant.serving.remote_engine import RemoteEngine
        return RemoteEngine(settings.vllm_url, base_model, settings)
    from assistant.serving.engine import Engine
    return Engine(base_model, settings)
