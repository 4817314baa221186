"""What a grounded answer is, in one place: the question rule, the citation shape, the answer and its dict.

A passage has one shape from retrieval to the response: `indexing.retriever.Passage`. A `Citation` is that
passage as it was shown to the model, with its number `[n]`. `Answer.to_dict` is the one serialisation that
the CLI (`assistant ask --json`), the HTTP API, the app and the feedback log all use.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from assistant.errors import QuestionError, QuestionTooLongError
from indexing.retriever import Passage

# The comparison conditions: (use retrieval, use the domain adapter).
CONDITIONS: dict[str, tuple[bool, bool]] = {"base": (False, False), "rag": (True, False), "lora": (False, True),
                                            "rag+lora": (True, True)}


def condition_name(rag: bool, lora: bool) -> str:
    return next(name for name, flags in CONDITIONS.items() if flags == (rag, lora))


def check_question(question, limit: int) -> str:
    """The question rule: a non-empty string of at most `limit` characters (Settings.max_question_chars).
    Returns it stripped."""
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("empty question")
    if len(question) > limit:
        raise QuestionTooLongError(f"question is {len(question)} characters; the limit is {limit}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") is valid JSON but not text
        raise QuestionError(f"question is not valid Unicode text (a lone surrogate at character {exc.start})") from None
    if "\x00" in question:
        raise QuestionError("question contains a NUL character")
    return question.strip()


@dataclass
class Citation(Passage):
    """A retrieved passage as shown to the model, numbered [n] (its text may be trimmed or redacted)."""
    n: int = 0

    @classmethod
    def of(cls, n: int, passage: Passage, text: str | None = None) -> Citation:
        values = {f.name: getattr(passage, f.name) for f in fields(Passage)}
        return cls(**(values | {"text": passage.text if text is None else text}), n=n)

    def to_dict(self) -> dict:
        return {"n": self.n, "doc_id": self.doc_id, "title": self.title, "score": round(self.score, 4),
                "text": self.text}


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
    timings: dict = field(default_factory=lambda: {"retrieve_ms": 0.0, "generate_ms": 0.0, "first_token_ms": None})
    abstained_by: str | None = None  # "gate": too little evidence retrieved; "model": the model said it cannot tell
    choice: dict | None = None       # choice questions: {"form", "label", "calibrated", "scores"}
    form: str | None = None          # how it was answered: "yes/no/maybe", "multiple_choice", "evidence" or "free"
    form_reason: str | None = None   # why that form (assistant/question_form.py)
    standalone_question: str | None = None  # chat: the follow-up rewritten for retrieval (None: not a follow-up)
    rewrite: str | None = None       # chat: how it was rewritten, "model" or "concatenated" (the fallback)
    finish_reason: str | None = None  # "stop", or "length" when the reply was cut at max_tokens
    usage: dict | None = None        # {"prompt_tokens", "completion_tokens"} of the generation (0 when none ran)

    def meta(self) -> dict:
        """Everything about the answer but its text and citations (the API's `assistant` block)."""
        return {"adapter": self.adapter, "adapter_version": self.adapter_version, "abstained": self.abstained,
                "abstained_by": self.abstained_by, "form": self.form, "form_reason": self.form_reason,
                "choice": self.choice, "flags": list(self.flags),
                "evidence": self.evidence, "timings": dict(self.timings),
                "standalone_question": self.standalone_question, "rewrite": self.rewrite,
                "finish_reason": self.finish_reason, "usage": dict(self.usage) if self.usage else None}

    def to_dict(self, *, passages: bool = True) -> dict:
        """The answer contract of DESIGN.md (`domain`, `answer`, `citations`, `adapter`, `abstained`, `timings`)
        plus the question, adapter version, flags, evidence and, unless `passages=False`, every passage shown."""
        out = {"domain": self.domain, "question": self.question, "answer": self.text,
               "citations": [c.to_dict() for c in self.citations], **self.meta()}
        if passages:
            out["passages"] = [p.to_dict() for p in self.passages]
        return out


__all__ = ["CONDITIONS", "Answer", "Citation", "Passage", "check_question"]
