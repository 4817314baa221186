"""Trivial baselines every eval report shows next to base / +RAG / +LoRA / +RAG+LoRA.

A pipeline is only worth its cost if it beats what needs no model at all:
- majority: always the label most frequent in the domain's *train* split (for yes/no/maybe and options);
  `majority (test)` is the same with the test split's own majority, the strongest constant answer there is.
- chance: the expected accuracy of a uniform random pick among the allowed answers.
- extractive: the sentence of the retrieved passages (same retrieval, same scope as +RAG) that shares the
  most content words with the question, scored like any answer (span, number, free text).
- abstain: always "I don't know" (the right answer only to unanswerable questions).

Each baseline gives per-question scores on the same questions, so it enters the same paired test.
"""
from __future__ import annotations

from collections import Counter

from assistant.data_format import CHOICE_TYPES, UNANSWERABLE, YES_NO_MAYBE_LABELS, AnswerType
from assistant.evidence import content_words, sentences

from .answer_metrics import score_answer
from .statistics import mean_ci


def _gold_label(row: dict) -> str | None:
    answers = [str(a) for a in row.get("answer", []) if str(a).strip()]
    if not answers:
        return None
    return answers[0].lower() if row.get("answer_type") == AnswerType.YES_NO_MAYBE else answers[0].upper()


def majority_label(rows: list[dict]) -> str | None:
    labels = [lab for r in rows if r.get("answer_type") in CHOICE_TYPES and (lab := _gold_label(r))]
    return Counter(labels).most_common(1)[0][0] if labels else None


def _choice_text(row: dict, label: str) -> str:
    return label.capitalize() + "." if row.get("answer_type") == AnswerType.YES_NO_MAYBE else f"{label}."


def best_sentence(question: str, passages: list[str]) -> str:
    """The passage sentence sharing the most content words with the question (ties: the earlier one)."""
    wanted = content_words(question)
    best, best_overlap = "", -1
    for text in passages:
        for sentence in sentences(text):
            overlap = len(wanted & content_words(sentence))
            if overlap > best_overlap:
                best, best_overlap = sentence, overlap
    return best


def baseline_scores(platform, domain, rows: list[dict], metric: str, data: str | None = None) -> dict[str, dict]:
    """{baseline name: {"per_question": [...], metric: mean, "ci95": [low, high]}} for the applicable ones."""
    out: dict[str, list[float]] = {}
    choice_rows = [r for r in rows if r.get("answer_type") in CHOICE_TYPES]
    if choice_rows and len(choice_rows) == len(rows):
        train_majority = majority_label(domain.qa_rows("train", data))
        test_majority = majority_label(rows)
        if train_majority:
            out[f"majority (train: {train_majority})"] = [
                score_answer(r, _choice_text(r, train_majority), False).get(metric, 0.0) for r in rows]
        if test_majority and test_majority != train_majority:
            out[f"majority (test: {test_majority})"] = [
                score_answer(r, _choice_text(r, test_majority), False).get(metric, 0.0) for r in rows]
        out["chance"] = [1.0 / (len(r.get("options") or {}) or len(YES_NO_MAYBE_LABELS)) for r in rows]
    else:
        scores = []
        for r in rows:
            passages = platform.retrieve(domain.name, r["question"], filter=domain.scope_filter(r))
            text = best_sentence(r["question"], [p.text for p in passages])
            scores.append(score_answer(r, text, not text).get(metric, 0.0))
        out["extractive (best-overlap sentence)"] = scores
    if any(r.get("answer_type") == UNANSWERABLE for r in rows):
        out["always abstain"] = [score_answer(r, "I don't know.", True).get(metric, 0.0) for r in rows]
    result = {}
    for name, values in out.items():
        mean, low, high = mean_ci(values)
        result[name] = {metric: round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "per_question": values}
    return result


def strongest(baselines: dict[str, dict], metric: str) -> tuple[str, dict] | None:
    """The baseline with the highest mean (the one a pipeline has to beat)."""
    if not baselines:
        return None
    name = max(baselines, key=lambda n: baselines[n][metric])
    return name, baselines[name]
