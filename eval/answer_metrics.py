"""Answer metrics by answer type (the `answer_type` of `../shared/data` rows).

- yes/no/maybe, multiple_choice: accuracy of the parsed choice. An answer with no parseable choice is
  wrong and counted (`parsed` = 0), never skipped.
- span, multi-span, extractive_span: exact match and token F1 with SQuAD normalisation, best over the
  acceptable answers (multi-span: all spans joined, order-free bag of tokens).
- arithmetic, count: TAT-QA's official rule: numbers compared after rounding to 2 decimals and
  multiplying by the scale (thousand, million, billion; percent counts as 1), so "1.5 million" matches
  1,500,000 but a bare "1.5" does not match a gold answer in millions; F1 = exact match for these types.
- long_text, free_text: token F1 and ROUGE-L (the `rouge-score` package, stemmed).
- unanswerable_in_candidates: correct = abstained.

Citations like "[2]" and the abstention phrase are stripped before scoring.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

from assistant.data_format import CHOICE_TYPES, NUMERIC_TYPES, SPAN_TYPES, TEXT_TYPES, UNANSWERABLE

__all__ = ["CHOICE_TYPES", "NUMERIC_TYPES", "SPAN_TYPES", "TEXT_TYPES", "UNANSWERABLE", "score_answer"]

CITATION = re.compile(r"\s*\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]")
SCALES = {"": 1.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "percent": 1.0}
_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?\(?\d[\d,]*(?:\.\d+)?\)?")
_SCALE_WORD = re.compile(r"^\s*(%|percent|per cent|thousands?|millions?|billions?|bn|m\b|k\b)", re.IGNORECASE)
_YNM = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def strip_citations(text: str) -> str:
    return CITATION.sub("", text or "").strip()


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    pred = normalize(strip_citations(prediction))
    return float(any(pred == normalize(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: list[str]) -> float:
    pred = normalize(strip_citations(prediction)).split()
    return max((_f1(pred, normalize(g).split()) for g in golds), default=0.0)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, golds: list[str]) -> float:
    pred = strip_citations(prediction)
    return max((_rouge().score(g, pred)["rougeL"].fmeasure for g in golds), default=0.0)


def parse_yes_no_maybe(text: str) -> str | None:
    """The first yes / no / maybe in the answer (models lead with it; later ones are in the reasoning)."""
    m = _YNM.search(strip_citations(text))
    return m.group(1).lower() if m else None


def parse_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter the answer picks: a leading letter ("B.", "(B)", "B)"), "answer is B", or else
    the one option whose full text the answer contains. None when no single option can be read."""
    body = strip_citations(text)
    letters = "".join(sorted(options))
    if not letters:
        return None
    lead = re.match(rf"^\s*(?:answer\s*[:\-]?\s*|option\s+)?\(?([{letters}])(?:[\).:,\s]|$)", body, re.IGNORECASE)
    if lead and lead.group(1).upper() in options:
        return lead.group(1).upper()
    said = re.search(rf"\b(?:answer|option|choice)\s+(?:is\s+)?\(?([{letters}])\b\)?", body, re.IGNORECASE)
    if said and said.group(1).upper() in options:
        return said.group(1).upper()
    norm = normalize(body)
    hits = [k for k, v in options.items() if normalize(v) and normalize(v) in norm]
    if len(hits) > 1:  # "oil" inside "oil debris": the longer option wins; two separate options: ambiguous
        texts = {k: normalize(options[k]) for k in hits}
        hits = [k for k in hits if not any(o != k and texts[k] in texts[o] for o in hits)]
    return hits[0] if len(hits) == 1 else None


def _to_float(token: str) -> float | None:
    token = token.replace("$", "")
    neg = token.startswith(("-", "−")) or (token.startswith("(") and token.endswith(")"))
    digits = re.sub(r"[^\d.]", "", token)
    if not digits or digits.count(".") > 1:
        return None
    try:
        value = float(digits)
    except ValueError:
        return None
    return -value if neg else value


def _scale_of(word: str) -> str:
    w = word.lower().strip()
    if w in ("%", "percent", "per cent"):
        return "percent"
    if w.startswith("thousand") or w == "k":
        return "thousand"
    if w.startswith("million") or w == "m":
        return "million"
    if w.startswith("billion") or w == "bn":
        return "billion"
    return ""


def read_number(text: str) -> tuple[float, str] | None:
    """The first number in the answer and the scale word right after it ("" when none)."""
    body = strip_citations(text)
    for m in _NUMBER.finditer(body):
        value = _to_float(m.group(0))
        if value is None:
            continue
        after = _SCALE_WORD.match(body[m.end():])
        return value, _scale_of(after.group(1)) if after else ""
    return None


def _scaled(value: float, scale: str) -> str:
    return "%.4f" % (round(value, 2) * SCALES.get(scale, 1.0))


def tatqa_numeric_match(prediction: str, gold: str, gold_scale: str) -> float:
    """TAT-QA's rule for arithmetic and count answers: equal after scaling; a bare number with no scale
    word is also read as-is (the official `add_percent_pred` case)."""
    read = read_number(prediction)
    gold_value = _to_float(str(gold))
    if read is None or gold_value is None:
        return 0.0
    value, scale = read
    target = _scaled(gold_value, gold_scale)
    candidates = {_scaled(value, scale)}
    if not scale:
        candidates.add(f"{value:.4f}")
    return float(target in candidates)


def score_answer(row: dict, text: str, abstained: bool) -> dict[str, float]:
    """Metrics for one answer to one qa row. An abstention on an answerable question scores 0."""
    kind = row.get("answer_type", "")
    golds = [str(a) for a in row.get("answer", []) if str(a).strip()]
    if kind == UNANSWERABLE or not golds:
        return {"correct_abstention": float(abstained)}
    if kind == "yes/no/maybe":
        choice = None if abstained else parse_yes_no_maybe(text)
        return {"accuracy": float(choice is not None and choice == golds[0].lower()),
                "parsed": float(choice is not None)}
    if kind == "multiple_choice":
        choice = None if abstained else parse_choice(text, row.get("options") or {})
        return {"accuracy": float(choice is not None and choice == golds[0].upper()),
                "parsed": float(choice is not None)}
    if abstained:
        return {"f1": 0.0, "rouge_l": 0.0} if kind in TEXT_TYPES else {"exact_match": 0.0, "f1": 0.0}
    if kind in NUMERIC_TYPES:
        em = tatqa_numeric_match(text, golds[0], (row.get("meta") or {}).get("scale", ""))
        return {"exact_match": em, "f1": em}
    if kind == "multi-span":
        joined = " ".join(golds)
        same_tokens = sorted(normalize(strip_citations(text)).split()) == sorted(normalize(joined).split())
        return {"exact_match": float(same_tokens), "f1": token_f1(text, [joined])}
    if kind in TEXT_TYPES:
        return {"f1": token_f1(text, golds), "rouge_l": rouge_l(text, golds)}
    return {"exact_match": exact_match(text, golds), "f1": token_f1(text, golds)}
