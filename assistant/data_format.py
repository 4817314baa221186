"""The domain data format, defined once: `corpus.jsonl` documents and `qa.jsonl` questions.

corpus.jsonl: one document a line, `{"doc_id", "title", "text", "meta"}`.
qa.jsonl: one question a line, `{"qid", "split", "question", "answer": [str, ...], "answer_type", "gold_doc_ids",
"options"?, "meta"}`. `answer_type` says how a question is answered and scored; scaffolding, training and eval
all read the kinds below from here.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class AnswerType(StrEnum):
    YES_NO_MAYBE = "yes/no/maybe"           # accuracy
    MULTIPLE_CHOICE = "multiple_choice"     # accuracy; `options` maps letters to text
    SPAN = "span"                           # exact match and token F1
    MULTI_SPAN = "multi-span"
    EXTRACTIVE_SPAN = "extractive_span"
    ARITHMETIC = "arithmetic"               # numeric match with scale (TAT-QA rule)
    COUNT = "count"
    LONG_TEXT = "long_text"                 # token F1 / ROUGE-L
    FREE_TEXT = "free_text"
    EVIDENCE_TEXT = "evidence_text"         # retrieval only
    UNANSWERABLE = "unanswerable_in_candidates"  # the right reply is to abstain


CHOICE_TYPES: tuple[str, ...] = (AnswerType.YES_NO_MAYBE, AnswerType.MULTIPLE_CHOICE)
SPAN_TYPES: tuple[str, ...] = (AnswerType.SPAN, AnswerType.MULTI_SPAN, AnswerType.EXTRACTIVE_SPAN)
NUMERIC_TYPES: tuple[str, ...] = (AnswerType.ARITHMETIC, AnswerType.COUNT)
TEXT_TYPES: tuple[str, ...] = (AnswerType.LONG_TEXT, AnswerType.FREE_TEXT)
UNANSWERABLE: str = AnswerType.UNANSWERABLE
YES_NO_MAYBE_LABELS = ("yes", "no", "maybe")
SPLITS = ("train", "dev", "test")
PRIMARY_METRICS = ("accuracy", "f1", "exact_match", "rouge_l")


def primary_metric_for(answer_types: Iterable[str]) -> str:
    """Accuracy when every question has choices (yes/no/maybe, multiple choice); token F1 otherwise."""
    kinds = list(answer_types)
    return "accuracy" if kinds and all(k in CHOICE_TYPES for k in kinds) else "f1"
