"""The SDK: one Platform = one engine + one store + every domain package.

    from assistant import Platform
    with Platform.load() as p:
        a = p.ask("healthcare", "Do statins reduce mortality in elderly patients?")
        print(a.text, [c.doc_id for c in a.citations], a.adapter, a.abstained)
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from assistant.config import Settings
from assistant.domains import Domain, DomainError, get_domain, list_domains
from assistant.serving.engine import GenerationRequest, GenerationResult
from assistant.prompting import PromptPassage, build_messages, parse_citations
from assistant.redaction import redact

MAX_QUESTION_CHARS = Settings.max_question_chars  # default; a Platform uses its settings' value
_IDK = re.compile(r"\b(do not know|don't know|cannot answer|can't answer|not enough information|no information)\b",
                  re.IGNORECASE)


class QuestionError(ValueError):
    """The question itself is unusable (empty, too long, wrong type)."""


@dataclass
class Citation:
    n: int
    doc_id: str
    title: str
    score: float
    text: str


@dataclass
class Answer:
    domain: str
    question: str
    text: str
    citations: list[Citation]
    adapter: str | None            # served adapter name "domain@version", or None for the base model
    adapter_version: str | None
    abstained: bool
    passages: list[Citation] = field(default_factory=list)  # everything shown to the model
    flags: list[str] = field(default_factory=list)           # "uncited", "invalid_citation", "evidence_gate", ...
    evidence: float | None = None
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["answer"] = d.pop("text")
        return d


class Platform:
    def __init__(self, settings: Settings, engine, store, embedder, domains: dict[str, Domain],
                 owns_engine: bool = True, base_model_sha256: str | None = None):
        from indexing.retriever import Retriever

        self.settings = settings
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.retriever = Retriever(store, embedder)
        self.domains = domains
        self.owns_engine = owns_engine
        self.base_model_sha256 = base_model_sha256  # adapters must name it in their manifest (None: not checked)
        self._closed = False

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def load(cls, domains: list[str] | None = None, settings: Settings | None = None, *, engine=None,
             build_missing_indexes: bool = True, progress: bool = True) -> "Platform":
        """Load domain packages, open the store, start (or connect to) the engine, register adapters."""
        from indexing.embedder import Embedder
        from indexing.store import open_store

        from assistant.building.indexer import index_domain
        from assistant.serving.models import prepare

        settings = settings or Settings.load()
        owns_engine = engine is None
        names = domains or list_domains(settings)
        if not names:
            raise DomainError(f"no domain packages found in {settings.domains_dir}")
        loaded = {n: get_domain(n, settings) for n in names}
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
            raise DomainError(f"unknown domain {name!r}; loaded domains: {', '.join(sorted(self.domains))}")
        return self.domains[name]

    def retrieve(self, domain: str, question: str, k: int | None = None, *, filter: dict | None = None,
                 mode: str | None = None, query_vector=None):
        dom = self.domain(domain)
        self._check_question(question, self.settings.max_question_chars)
        return self.retriever.retrieve(dom.name, question, k or dom.k, mode=mode or dom.retrieval.get("mode", "hybrid"),
                                       filter=filter, query_vector=query_vector)

    def evidence(self, domain: str, question: str, filter: dict | None = None, query_vector=None) -> float:
        """Cosine similarity of the closest chunk (dense): the evidence gate's signal."""
        dense = query_vector if query_vector is not None else self.embedder.embed_query(question)
        hits = self.store.search(domain, dense=dense, sparse=None, k=1, filter=filter)
        return hits[0].score if hits else 0.0

    @staticmethod
    def _check_question(question, limit: int = MAX_QUESTION_CHARS) -> str:
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("empty question")
        if len(question) > limit:
            raise QuestionError(f"question is {len(question)} characters; the limit is {limit}")
        return question.strip()

    # ---- answering ---------------------------------------------------------------------------
    def _prepare(self, domain: str, question: str, rag: bool, lora: bool, k: int | None, filter: dict | None,
                 options: dict | None, max_tokens: int | None):
        dom = self.domain(domain)
        question = self._check_question(question, self.settings.max_question_chars)
        started = time.perf_counter()
        passages, evidence = [], None
        if rag:
            vector = self.embedder.embed_query(question)  # once, for both retrieval and the gate
            passages = self.retrieve(dom.name, question, k, filter=filter, query_vector=vector)
            evidence = self.evidence(dom.name, question, filter, query_vector=vector)
        retrieve_ms = (time.perf_counter() - started) * 1000
        adapter = self.engine.adapters.get(dom.name) if lora and dom.name in self.engine.adapters else None
        answer = Answer(domain=dom.name, question=question, text="", citations=[],
                        adapter=adapter.served_name if adapter else None,
                        adapter_version=adapter.version if adapter else None, abstained=False,
                        evidence=round(evidence, 4) if evidence is not None else None,
                        timings={"retrieve_ms": round(retrieve_ms, 1)})
        if rag and (not passages or evidence < dom.evidence_threshold):
            answer.abstained = True
            answer.flags.append("evidence_gate")
            answer.text = (f"I don't know from the {dom.title} documents: nothing retrieved is close enough to "
                           f"this question to answer it from evidence.")
            answer.timings["generate_ms"] = 0.0
            return answer, None, []
        max_new = int(max_tokens or dom.generation.get("max_tokens", 128))
        budget = self.settings.max_model_len - max_new - 8
        clean = redact if dom.redacts_identifiers else (lambda text: text)
        messages, shown = build_messages(
            dom.system_prompt, question,
            [PromptPassage(n=i + 1, doc_id=p.doc_id, title=p.title, text=clean(p.text), score=p.score)
             for i, p in enumerate(passages)],
            self.engine.tokenizer, answer_template=dom.answer_template, options=options, budget_tokens=budget,
            rag=rag)
        if rag and len(shown) < len(passages):
            answer.flags.append(f"trimmed_passages:{len(passages) - len(shown)}")
        answer.passages = [Citation(n=p.n, doc_id=p.doc_id, title=p.title, score=round(p.score, 4), text=p.text)
                           for p in shown]
        request = GenerationRequest(messages=messages, adapter=dom.name if adapter else None, max_tokens=max_new,
                                    temperature=float(dom.generation.get("temperature", 0.0)))
        return answer, request, shown

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
        requests = [req for (answer, req, _), _ in prepared if req is not None]
        results = iter(self.engine.generate(requests)) if requests else iter(())
        return [answer if req is None else self._finish(answer, next(results), r)
                for (answer, req, _), r in prepared]

    def stream(self, domain: str, question: str, *, rag: bool = True, lora: bool = True, k: int | None = None,
               filter: dict | None = None, options: dict | None = None,
               max_tokens: int | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the final Answer (citations checked)."""
        answer, request, _ = self._prepare(domain, question, rag, lora, k, filter, options, max_tokens)
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
        from pathlib import Path

        from assistant.serving.adapter_manifest import check_adapter

        dom = self.domain(domain)
        path = Path(path).expanduser().resolve() if path else dom.adapter_path
        if not path.is_dir():
            from assistant.serving.adapters import AdapterError
            raise AdapterError(f"adapter directory {path} does not exist")
        if self.base_model_sha256:
            check_adapter(path, self.base_model_sha256)
        return self.engine.register_adapter(dom.name, path)

    def info(self) -> list[dict]:
        out = []
        for dom in self.domains.values():
            adapter = self.engine.adapters.get(dom.name) if dom.name in self.engine.adapters else None
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
