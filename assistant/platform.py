"""The SDK: one Platform = one engine + one store + every domain package.

    from assistant import Platform
    with Platform.load() as p:
        a = p.ask("healthcare", "Do statins reduce mortality in elderly patients?")
        print(a.text, [c.doc_id for c in a.citations], a.adapter, a.abstained)
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from assistant.answer import Answer, Citation, check_question, condition_name
from assistant.choices import CALIBRATION_FILE, ChoiceForm, combine, decide, form_for, read_calibration
from assistant.config import Settings, configure_environment
from assistant.conversation import (
    CONDENSE_MAX_TOKENS,
    HISTORY_SHARE,
    Conversation,
    accept_rewrite,
    condense_messages,
    history_that_fits,
    parse_messages,
)
from assistant.domains import Domain, DomainError, UnknownDomainError, get_domain, list_domains
from assistant.errors import AdapterError, EngineUnavailableError, InputError
from assistant.evidence import EVIDENCE_FORM, EvidenceForm, pick_span
from assistant.library import DocumentLibrary
from assistant.prompting import build_messages, parse_citations
from assistant.question_form import FormDecision, decide_form
from assistant.redaction import redact
from assistant.sampling import Sampling
from assistant.serving.adapters import Adapter
from assistant.serving.engine import GenerationRequest, GenerationResult, ScoreRequest
from assistant.table_arithmetic import CALCULATION_FORM, Calculation, calculate
from assistant.users import Users

logger = logging.getLogger(__name__)

__all__ = ["Answer", "Citation", "Platform", "make_engine"]
CHOICE_EXPLANATION_TOKENS = 64  # after a scored label, the reply is one supporting sentence and its citation
_IDK = re.compile(r"\b(do not know|don't know|cannot answer|can't answer|not enough information|no information)\b",
                  re.IGNORECASE)


@dataclasses.dataclass
class _Draft:
    """An answer being made: what is known so far and the generation request that finishes it."""
    answer: Answer
    request: GenerationRequest | None          # None: the evidence gate answered
    rag: bool = True
    form: ChoiceForm | None = None             # a choice question: its label is scored before generation
    messages_for: Callable[[dict | None], list[dict]] | None = None  # options order -> chat messages
    prefix: str = ""                           # the reply's forced start (the chosen label)
    evidence: EvidenceForm | None = None       # an evidence answer: the reply copies one of these spans
    query_vector: object = None                # the question's embedding (retrieval, gate and span pick)


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
        self._calibrations: dict[str, tuple[int | None, dict]] = {}  # domain -> (file mtime, choice calibration)
        self.refused_adapters: dict[str, str] = {}  # domain -> why its adapter was refused at start-up
        self.query_encoders: dict[str, str] = {}    # domain -> version of its tuned query encoder (loaded)
        self.refused_query_encoders: dict[str, str] = {}  # domain -> why (it retrieves with the base embedder)
        self._users: tuple[tuple, Users] | None = None
        self.library = DocumentLibrary(settings, store, embedder, domains)  # uploads: add, list, remove, publish
        self._closed = False

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def load(cls, domains: list[str | Domain] | None = None, settings: Settings | None = None, *, engine=None,
             build_missing_indexes: bool = True, progress: bool = True) -> Platform:
        """Load domain packages (names, or already loaded `Domain`s), open the store, start (or connect to)
        the engine, register adapters."""
        from assistant.building.indexer import index_domain
        from assistant.serving.models import prepare
        from indexing.store import open_store

        configure_environment()
        settings = settings or Settings.load()
        owns_engine = engine is None
        names = domains or list_domains(settings)
        if not names:
            raise DomainError(f"no domain packages found in {settings.domains_dir} or {settings.user_domains_dir}")
        loaded = {d.name: d for d in (n if isinstance(n, Domain) else get_domain(n, settings) for n in names)}
        prepared = prepare(settings, progress=(print if progress else (lambda *_: None)))
        store = open_store(settings)
        try:
            store.claim(list(loaded))  # before the engine: a second process fails in a second, naming the holder
            embedder = prepared.open_embedder(settings)
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
                platform.load_query_encoder(dom, prepared.embed_model_sha256)
            for dom in loaded.values():
                if dom.has_adapter:
                    try:
                        platform.reload_adapter(dom.name)
                    except AdapterError as exc:  # one broken package must not keep the other domains down
                        platform.refused_adapters[dom.name] = str(exc)
                        logger.error("domain %s is unavailable until its adapter is fixed and reloaded: %s",
                                     dom.name, exc)
        except BaseException:
            platform.close()
            raise
        return platform

    @property
    def users(self) -> Users:
        """Who may log in and which key is whom (the app and the API), re-read when the settings change."""
        import os

        source = (self.settings.users, self.settings.api_keys, os.environ.get("ASSISTANT_APP_PASSWORD"),
                  os.environ.get("ASSISTANT_APP_USER"))
        if self._users is None or self._users[0] != source:
            self._users = (source, Users.from_settings(self.settings))
        return self._users[1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.library.close()  # an upload being embedded finishes first; queued ones are dropped
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
                 mode: str | None = None, query_vector=None, user: str | None = None):
        """`user`: who asks; their private uploads are searched too (None: only the documents every user sees)."""
        dom = self.domain(domain)
        question = check_question(question, self.settings.max_question_chars)
        mode = mode or dom.retrieval.mode
        if query_vector is None and mode != "sparse" and dom.name in self.query_encoders:
            query_vector = self.search_vector(dom.name, question)
        return self.retriever.retrieve(dom.name, question, k or dom.k, mode=mode,
                                       filter=filter, query_vector=query_vector, viewer=user)

    def load_query_encoder(self, dom: Domain, embed_model_sha256: str) -> None:
        """Load the package's tuned query encoder, if it has one; a broken one is refused with a logged reason
        and the domain retrieves with the base embedder (still grounded, only less tuned)."""
        from assistant.serving.adapter_manifest import check_query_encoder

        path = dom.query_encoder_path
        if path is None:
            return
        try:
            manifest = check_query_encoder(path, embed_model_sha256)
            self.embedder.add_query_encoder(dom.name, path)
        except Exception as exc:  # noqa: BLE001 - any unusable encoder: refuse it, keep the domain up
            self.refused_query_encoders[dom.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            logger.error("domain %s retrieves with the base embedder: its query encoder %s was refused: %s",
                         dom.name, path, exc)
            return
        self.query_encoders[dom.name] = manifest.get("version", "")

    def search_vector(self, domain: str, question: str):
        """The question's embedding for retrieval: by the domain's tuned query encoder when it has one (the
        gate and the span pick compare with base-embedded text, so they keep the base embedding)."""
        return self.embedder.embed_query(question, domain if domain in self.query_encoders else None)

    def evidence(self, domain: str, question: str, filter: dict | None = None, query_vector=None,
                 user: str | None = None) -> float:
        """Cosine similarity of the closest chunk (dense) this user may see: the evidence gate's signal."""
        dense = query_vector if query_vector is not None else self.embedder.embed_query(question)
        hits = self.store.search(domain, dense=dense, sparse=None, k=1, filter=filter, viewer=user)
        return hits[0].score if hits else 0.0

    def adapter_for(self, domain: str, lora: bool = True) -> Adapter | None:
        """The adapter that serves this domain now, or None (no adapter, or lora=False: the base model).
        A domain whose adapter was refused at start-up is unavailable (never silently the base model)."""
        if lora and domain in self.refused_adapters:
            raise EngineUnavailableError(
                f"domain {domain!r} is unavailable: its adapter was refused at start-up "
                f"({self.refused_adapters[domain]}); fix it and reload it (POST /v1/adapters/{domain}/reload)")
        adapters = self.engine.adapters
        return adapters.get(domain) if lora and domain in adapters else None

    # ---- answering ---------------------------------------------------------------------------
    def _prepare(self, domain: str, question: str, rag: bool, lora: bool, k: int | None, filter: dict | None,
                 options: dict | None, max_tokens: int | None, form: str | None = None, *,
                 conversation: Conversation | None = None, standalone: str | None = None,
                 sampling: Sampling | None = None, user: str | None = None) -> _Draft:
        """The answer so far and the request that finishes it. Chat turns also pass the conversation (earlier
        turns go into the prompt) and the standalone question, which retrieval and the gate use instead."""
        dom = self.domain(domain)
        question = check_question(question, self.settings.max_question_chars)
        searched = standalone or question
        started = time.perf_counter()
        passages, evidence, vector = [], None, None
        if rag:
            vector = self.embedder.embed_query(searched)  # the base embedding: the gate and the span pick
            tuned = self.search_vector(dom.name, searched) if dom.name in self.query_encoders else vector
            passages = self.retrieve(dom.name, searched, k, filter=filter, query_vector=tuned, user=user)
            evidence = self.evidence(dom.name, searched, filter, query_vector=vector, user=user)
        retrieve_ms = (time.perf_counter() - started) * 1000
        adapter = self.adapter_for(dom.name, lora)
        answer = Answer(domain=dom.name, question=question, text="", citations=[],
                        adapter=adapter.served_name if adapter else None,
                        adapter_version=adapter.version if adapter else None, abstained=False,
                        evidence=round(evidence, 4) if evidence is not None else None, standalone_question=standalone,
                        timings={"retrieve_ms": round(retrieve_ms, 1), "generate_ms": 0.0, "first_token_ms": None})
        if rag and (not passages or evidence < dom.evidence_threshold):
            answer.abstained = True
            answer.flags.append("evidence_gate")
            answer.text = (f"I don't know from the {dom.title} documents: nothing retrieved is close enough to "
                           f"this question to answer it from evidence.")
            answer.abstained_by = "gate"
            return _Draft(answer, None, rag)
        max_new = int(max_tokens or dom.generation.max_tokens)
        budget = self.settings.max_model_len - max_new - 8
        clean = redact if dom.redacts_identifiers else (lambda text: text)
        cleaned = [dataclasses.replace(p, text=clean(p.text)) for p in passages]
        history: list[dict] = []
        if conversation is not None and conversation.history:
            history, dropped = history_that_fits(conversation.history, self._count_tokens,
                                                 int(budget * HISTORY_SHARE))
            if dropped:
                answer.flags.append(f"history_dropped:{dropped}")
        user_system = conversation.system if conversation is not None else ""

        def messages_for(shown_options):
            return build_messages(dom.system_prompt, question, cleaned, self.engine.tokenizer,
                                  answer_template=dom.answer_template, options=shown_options, budget_tokens=budget,
                                  rag=rag, history=history, user_system=user_system)

        messages, shown = messages_for(options)
        if rag and len(shown) < len(passages):
            answer.flags.append(f"trimmed_passages:{len(passages) - len(shown)}")
        answer.passages = shown
        sampling = sampling or Sampling()
        request = GenerationRequest(
            messages=messages, adapter=dom.name if adapter else None, max_tokens=max_new,
            temperature=dom.generation.temperature if sampling.temperature is None else sampling.temperature,
            top_p=sampling.top_p, stop=list(sampling.stop), seed=sampling.seed,
            presence_penalty=sampling.presence_penalty, frequency_penalty=sampling.frequency_penalty)
        gen = dom.generation
        decision = decide_form(question, options=options, requested=form, answer_form=gen.answer_form,
                               open_form=None if gen.open_form == "same" else gen.open_form,
                               calculates=gen.calculate)
        if decision.form == CALCULATION_FORM:
            calculation = calculate(searched, shown) if rag else None
            if calculation is not None:
                return self._calculated(_Draft(answer, None, rag), calculation, decision.why)
            decision = FormDecision(gen.answer_form, f"{decision.why}; no shown table has the row and the columns "
                                                     "it needs, so the domain's usual answer is written")
        choice = form_for(options, decision.form)
        copies = rag and choice is None and decision.form == EVIDENCE_FORM
        evidence = self._evidence_form(searched, shown, max_new, gen.evidence_sentences - 1) if copies else None
        answer.form = str(choice.kind) if choice else EVIDENCE_FORM if evidence else "free"
        answer.form_reason = decision.why
        if decision.form == EVIDENCE_FORM and not evidence:
            answer.form_reason += "; no shown passage had a sentence to copy, so the model writes the reply"
        return _Draft(answer, request, rag, choice, lambda o: messages_for(o)[0], evidence=evidence,
                      query_vector=vector)

    @staticmethod
    def _calculated(draft: _Draft, calculation: Calculation, why: str) -> _Draft:
        """A calculation is the reply: the result, the expression over the cells, the table's citation."""
        answer = draft.answer
        answer.text = calculation.reply()
        answer.citations = [answer.passages[calculation.n - 1]]
        answer.form, answer.form_reason = CALCULATION_FORM, why
        answer.choice = {"form": CALCULATION_FORM, "operation": calculation.operation,
                         "expression": calculation.expression, "value": calculation.value,
                         "scale": calculation.scale, "row": calculation.row, "columns": list(calculation.columns)}
        return draft

    def _evidence_form(self, question: str, shown: list[Citation], max_tokens: int,
                       follow: int = 0) -> EvidenceForm | None:
        """The spans an evidence answer may copy: those that fit in the reply's token budget."""
        form = EvidenceForm.of(question, shown, follow)
        return form.within(max_tokens, self._count_tokens) if form else None

    def _count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text, add_special_tokens=False))

    # ---- choice questions: the label is scored, then the reply starts with it ---------------------
    def _calibration(self, dom: Domain) -> dict:
        """The domain's choice_calibration.json, read again only when the file changed (`assistant calibrate`)."""
        path = dom.root / CALIBRATION_FILE
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        cached = self._calibrations.get(dom.name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_calibration(dom.root) if stamp is not None else {})
            self._calibrations[dom.name] = cached
        return cached[1]

    def _choice_bias(self, answer: Answer, form: ChoiceForm, rag: bool) -> dict | None:
        """The domain's prior correction for this form and condition, if it was calibrated for this adapter."""
        calibration = self._calibration(self.domains[answer.domain]).get(form.kind, {})
        entry = calibration.get(condition_name(rag, answer.adapter is not None))
        if not entry:
            return None
        if entry.get("adapter") != answer.adapter:  # calibrated for another adapter version: do not apply
            answer.flags.append("choice_calibration_stale")
            return None
        return entry.get("bias")

    def _choose(self, drafts: list[_Draft]) -> None:
        """Score every allowed answer of the choice drafts in one engine batch; start each reply with its label."""
        todo = [d for d in drafts if d.request is not None and d.form is not None]
        if not todo:
            return
        requests, orders = [], []
        for d in todo:
            shown = d.form.orders()
            orders.append(len(shown))
            for order in shown:
                messages = d.request.messages if order is None else d.messages_for(order)
                requests.append(ScoreRequest(messages=messages, continuations=d.form.continuations(),
                                             adapter=d.request.adapter))
        started = time.perf_counter()
        scores = iter(self.engine.score(requests))
        score_ms = (time.perf_counter() - started) * 1000
        for d, count in zip(todo, orders, strict=True):
            per_label = combine(d.form, [next(scores) for _ in range(count)])
            bias = self._choice_bias(d.answer, d.form, d.rag)
            label = decide(per_label, bias)
            d.answer.choice = {"form": str(d.form.kind), "label": label, "calibrated": bias is not None,
                               "scores": {k: round(v, 4) for k, v in per_label.items()}}
            d.prefix = d.form.reply_prefix(label)
            d.answer.timings["score_ms"] = round(score_ms, 1)
            prompt = self.engine.render(d.request) + self.engine.tokenizer.encode(d.prefix, add_special_tokens=False)
            d.request = dataclasses.replace(d.request, messages=None, prompt_token_ids=prompt,
                                            max_tokens=min(d.request.max_tokens, CHOICE_EXPLANATION_TOKENS))

    # ---- evidence answers: the span closest to the question is the reply, cited by construction ----------
    def _quote(self, drafts: list[_Draft]) -> None:
        """Answer the evidence drafts: embed every candidate span (one batch for all drafts), reply with the span
        closest to the question and cite the passage it was copied from (no generation step)."""
        todo = [d for d in drafts if d.request is not None and d.evidence is not None]
        if not todo:
            return
        started = time.perf_counter()
        vectors = self.embedder.embed([text for d in todo for text in d.evidence.texts()])
        pick_ms = round((time.perf_counter() - started) * 1000, 1)
        offset = 0
        for d in todo:
            count = len(d.evidence.spans)
            best, similarity = pick_span(d.query_vector, vectors[offset:offset + count])
            offset += count
            span, answer = d.evidence.spans[best], d.answer
            answer.text = f"{span.copied} [{span.n}]"
            answer.citations = [answer.passages[span.n - 1]]
            answer.choice = {"form": EVIDENCE_FORM, "candidates": count, "picked": best,
                             "whole_sentence": span.whole, "similarity": round(similarity, 4)}
            answer.timings.update(pick_ms=pick_ms, generate_ms=pick_ms, first_token_ms=pick_ms)
            d.request = None

    def _finish(self, draft: _Draft, result: GenerationResult) -> Answer:
        answer, rag = draft.answer, draft.rag
        answer.finish_reason = result.finish_reason or "stop"
        answer.usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids)}
        answer.timings["generate_ms"] = round(result.total_s * 1000, 1)
        answer.timings["first_token_ms"] = round(result.first_token_s * 1000, 1)
        answer.text = (draft.prefix + result.text).strip()
        if self.domains[answer.domain].redacts_identifiers:
            answer.text = redact(answer.text)
        if rag:
            valid, invalid = parse_citations(answer.text, len(answer.passages))
            if not valid and draft.form is not None and answer.passages:
                # a choice reply the model left uncited cites retrieval's best passage: measured on 60
                # FailureSensorIQ questions, that is the gold card 67% of the time (recall@1), the passage
                # sharing most words with the question and the option only 51%
                valid = [answer.passages[0].n]
                answer.text = f"{answer.text} [{valid[0]}]"
                answer.flags.append("cited_top_passage")
            answer.citations = [answer.passages[n - 1] for n in valid]
            if invalid:
                answer.flags.append("invalid_citation")
            if not valid:
                answer.flags.append("uncited")
        if _IDK.search(answer.text) and not answer.citations and answer.choice is None:
            answer.abstained = True
            answer.abstained_by = "model"
        return answer

    def ask(self, domain: str, question: str, *, rag: bool = True, lora: bool = True, k: int | None = None,
            filter: dict | None = None, options: dict | None = None, max_tokens: int | None = None,
            form: str | None = None, user: str | None = None) -> Answer:
        """One grounded answer. `options` (letter -> text) or `form="yes/no/maybe"` make it a choice question:
        the label is picked by scoring every allowed one, and the reply starts with it. `user`: who asks (their
        private documents are searched too)."""
        return self.ask_many([(domain, question)], rag=rag, lora=lora, k=k, filter=filter, options=options,
                             max_tokens=max_tokens, form=form, user=user)[0]

    def _drafts(self, items, *, rag, lora, k, filter, options, max_tokens, form, user=None) -> list[_Draft]:
        """items: (domain, question) pairs or dicts whose keys override the call's defaults."""
        drafts = []
        for item in items:
            spec = dict(item) if isinstance(item, dict) else {"domain": item[0], "question": item[1]}
            drafts.append(self._prepare(spec["domain"], spec["question"], spec.get("rag", rag),
                                        spec.get("lora", lora), spec.get("k", k), spec.get("filter", filter),
                                        spec.get("options", options), max_tokens, spec.get("form", form),
                                        user=user))
        return drafts

    def ask_many(self, items, *, rag: bool = True, lora: bool = True, k: int | None = None,
                 filter: dict | None = None, options: dict | None = None,
                 max_tokens: int | None = None, form: str | None = None, user: str | None = None) -> list[Answer]:
        """Many questions, mixed domains, one vLLM batch (each prompt with its own domain's adapter).

        items: (domain, question) pairs, or dicts with domain, question and optional rag, lora, k, filter,
        options, form. `user` asks them all (not an item key: one caller, one set of visible documents)."""
        return self._answer(self._drafts(items, rag=rag, lora=lora, k=k, filter=filter, options=options,
                                         max_tokens=max_tokens, form=form, user=user))

    def _answer(self, drafts: list[_Draft]) -> list[Answer]:
        """Finish drafts: choice labels scored, evidence spans picked, the rest generated as one batch."""
        self._choose(drafts)
        self._quote(drafts)
        requests = [d.request for d in drafts if d.request is not None]
        results = iter(self.engine.generate(requests)) if requests else iter(())
        return [self._without_generation(d.answer) if d.request is None else self._finish(d, next(results))
                for d in drafts]

    def choice_scores(self, items, *, rag: bool = True, lora: bool = True) -> list[dict | None]:
        """The scores every allowed answer gets (before any prior correction), without writing the replies:
        what `assistant calibrate` fits the prior correction on. None where the gate answered."""
        drafts = self._drafts(items, rag=rag, lora=lora, k=None, filter=None, options=None, max_tokens=1, form=None)
        self._choose(drafts)
        return [d.answer.choice | {"adapter": d.answer.adapter} if d.answer.choice else None for d in drafts]

    def stream(self, domain: str, question: str, *, rag: bool = True, lora: bool = True, k: int | None = None,
               filter: dict | None = None, options: dict | None = None,
               max_tokens: int | None = None, form: str | None = None,
               cancel: threading.Event | None = None, user: str | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the final Answer (citations checked). Closing the
        iterator, or setting `cancel` from another thread, aborts the generation."""
        yield from self._stream(self._prepare(domain, question, rag, lora, k, filter, options, max_tokens, form,
                                              user=user), cancel)

    def _stream(self, draft: _Draft, cancel: threading.Event | None) -> Iterator[str | Answer]:
        self._quote([draft])
        if draft.request is None:
            yield draft.answer.text
            yield self._without_generation(draft.answer)
            return
        self._choose([draft])
        sent = draft.prefix
        if draft.prefix:
            yield draft.prefix  # a scored label: one of the form's allowed answers, nothing to redact
        # A domain that redacts identifiers gets its reply in one piece, once redacted: an identifier can span
        # pieces ("Patient: John" + " Smith"), so no streamed prefix can be known to be safe before the end.
        held = self.domains[draft.answer.domain].redacts_identifiers
        with contextlib.closing(self.engine.stream(draft.request, cancel=cancel)) as pieces:
            for item in pieces:
                if isinstance(item, str):
                    if not held:
                        sent += item
                        yield item
                else:
                    answer = self._finish(draft, item)
                    if answer.text.startswith(sent.strip()) and len(answer.text) > len(sent.strip()):
                        yield answer.text[len(sent.strip()):]  # what _finish added (a choice reply's citation)
                    yield answer

    @staticmethod
    def _without_generation(answer: Answer) -> Answer:
        """An answer no generation produced (the gate's abstention, an evidence quote)."""
        answer.finish_reason = "stop"
        answer.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        return answer

    # ---- conversations -----------------------------------------------------------------------
    def chat(self, domain: str, messages: list[dict], *, rag: bool = True, lora: bool = True, k: int | None = None,
             filter: dict | None = None, options: dict | None = None, max_tokens: int | None = None,
             form: str | None = None, condense: bool = True, user: str | None = None, **sampling) -> Answer:
        """One grounded turn of a conversation: OpenAI-style `messages` (system, user, assistant; the last one
        the user's), the rules of `assistant.conversation`. `sampling`: temperature, top_p, stop, seed,
        presence_penalty, frequency_penalty (`assistant.sampling`). The answer says how a follow-up was
        rewritten (`standalone_question`, `rewrite`)."""
        return self.chat_many([{"domain": domain, "messages": messages, "rag": rag, "lora": lora, "k": k,
                                "filter": filter, "options": options, "max_tokens": max_tokens, "form": form,
                                "condense": condense, "sampling": sampling}], user=user)[0]

    def chat_many(self, items: list[dict], *, user: str | None = None) -> list[Answer]:
        """Many conversation turns, mixed domains: the follow-ups' rewrites go to the engine as one batch, then
        the answers as another. items: dicts with domain and messages, and optionally rag, lora, k, filter,
        options, max_tokens, form, condense and sampling (a dict, as `chat`'s keywords)."""
        return self._answer(self._chat_drafts(items, user))

    def chat_stream(self, domain: str, messages: list[dict], *, rag: bool = True, lora: bool = True,
                    k: int | None = None, filter: dict | None = None, options: dict | None = None,
                    max_tokens: int | None = None, form: str | None = None, condense: bool = True,
                    cancel: threading.Event | None = None, user: str | None = None,
                    **sampling) -> Iterator[str | Answer]:
        """`chat`, streamed: text pieces, then the final Answer (as `stream`)."""
        [draft] = self._chat_drafts([{"domain": domain, "messages": messages, "rag": rag, "lora": lora, "k": k,
                                      "filter": filter, "options": options, "max_tokens": max_tokens, "form": form,
                                      "condense": condense, "sampling": sampling}], user)
        yield from self._stream(draft, cancel)

    def _chat_drafts(self, items: list[dict], user: str | None = None) -> list[_Draft]:
        parsed = []
        for item in items:
            conversation = parse_messages(item.get("messages"), self.settings.max_question_chars)
            try:
                sampling = Sampling.of(**(item.get("sampling") or {}))
            except TypeError as exc:  # an unknown keyword
                raise InputError(f"unknown chat option: {exc}") from None
            self.domain(item["domain"])  # unknown: 404 before any model work
            rag = item.get("rag", True)
            parsed.append((item, conversation, sampling,
                           rag and item.get("condense", True) and conversation.is_follow_up))
        started = time.perf_counter()
        todo = [conversation for _, conversation, _, rewrites in parsed if rewrites]
        rewrites = iter(self.engine.generate([GenerationRequest(
            messages=condense_messages(c), adapter=None, max_tokens=CONDENSE_MAX_TOKENS, temperature=0.0,
            stop=["\n"]) for c in todo]) if todo else ())
        condense_ms = round((time.perf_counter() - started) * 1000, 1)
        drafts = []
        for item, conversation, sampling, rewritten in parsed:
            standalone, how = accept_rewrite(conversation, next(rewrites).text) if rewritten else (None, None)
            draft = self._prepare(item["domain"], conversation.question, item.get("rag", True), item.get("lora", True),
                                  item.get("k"), item.get("filter"), item.get("options"), item.get("max_tokens"),
                                  item.get("form"), conversation=conversation, standalone=standalone,
                                  sampling=sampling, user=user)
            draft.answer.rewrite = how
            if how:
                draft.answer.timings["condense_ms"] = condense_ms
            drafts.append(draft)
        return drafts

    def reload_adapter(self, domain: str, path=None):
        """Serve an adapter version (a directory, or the domain's own adapter/) from the next request on,
        without restarting the engine: used at start-up and for hot reload. Refused when the manifest names
        another base model or vLLM cannot serve it; the old version keeps serving in that case."""
        from assistant.serving.adapter_manifest import check_adapter

        dom = self.domain(domain)
        if path is not None and (not isinstance(path, (str, Path)) or "\x00" in str(path)):
            raise AdapterError(f"adapter path must be a directory path without NUL bytes, got {str(path)[:80]!r}")
        path = Path(path).expanduser().resolve() if path else dom.adapter_path
        if not path.is_dir():
            raise AdapterError(f"adapter directory {path} does not exist")
        if self.base_model_sha256:
            check_adapter(path, self.base_model_sha256)
        adapter = self.engine.register_adapter(dom.name, path)
        self.refused_adapters.pop(dom.name, None)
        return adapter

    def info(self) -> list[dict]:
        out = []
        for dom in self.domains.values():
            refused = self.refused_adapters.get(dom.name)
            adapter = None if refused else self.adapter_for(dom.name)
            out.append({"domain": dom.name, "title": dom.title, "description": dom.description,
                        "adapter": adapter.served_name if adapter else None,
                        "adapter_version": adapter.version if adapter else None,
                        "query_encoder": self.query_encoders.get(dom.name),
                        **({"unavailable": refused} if refused else {}),
                        **({"query_encoder_refused": self.refused_query_encoders[dom.name]}
                           if dom.name in self.refused_query_encoders else {})})
        return out


def make_engine(settings: Settings, base_model):
    """In-process vLLM by default; a remote vLLM OpenAI server when `vllm_url` is set."""
    if settings.vllm_url:
        from assistant.serving.remote_engine import RemoteEngine
        return RemoteEngine(settings.vllm_url, base_model, settings)
    from assistant.serving.engine import Engine
    return Engine(base_model, settings)
