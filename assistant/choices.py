"""Choice answers picked by scoring, never by parsing free text.

For a yes/no/maybe question or lettered options the model is asked how likely each allowed answer is as
the start of its reply (log-probabilities from vLLM); the reply then starts with the chosen label, so it is
parseable by construction and the explanation the model writes after it follows that label.

- yes/no/maybe: the score of "Yes", "No", "Maybe" as the first word, plus a per-domain prior correction
  (an additive bias per label, fitted on the train split by `assistant calibrate`), since a small model's
  label frequencies are far from the data's.
- lettered options: the letter's score, averaged over every cyclic order of the options (each option is
  shown once at each position), which removes the model's preference for a position ("never picks C").
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.data_format import YES_NO_MAYBE_LABELS, AnswerType

YES_NO_MAYBE = YES_NO_MAYBE_LABELS
CALIBRATION_FILE = "choice_calibration.json"


@dataclass(frozen=True)
class ChoiceForm:
    """The allowed answers of one question."""
    kind: str                                # AnswerType.YES_NO_MAYBE or AnswerType.MULTIPLE_CHOICE
    labels: tuple[str, ...]                  # "yes", "no", "maybe" or the option letters
    options: tuple[tuple[str, str], ...] = ()  # (letter, text) for lettered options

    def orders(self) -> list[dict[str, str] | None]:
        """The option lists to show: every cyclic rotation of the texts under fixed letters (None: no options)."""
        if self.kind != AnswerType.MULTIPLE_CHOICE:
            return [None]
        letters = [k for k, _ in self.options]
        texts = [v for _, v in self.options]
        return [dict(zip(letters, texts[r:] + texts[:r], strict=True)) for r in range(len(texts))]

    def continuations(self) -> list[str]:
        """What the reply starts with for each label, as the adapters were trained to write it."""
        if self.kind == AnswerType.MULTIPLE_CHOICE:
            return list(self.labels)
        return [label.capitalize() for label in self.labels]

    def reply_prefix(self, label: str) -> str:
        if self.kind == AnswerType.MULTIPLE_CHOICE:
            return f"{label}. {dict(self.options)[label]}"
        return f"{label.capitalize()}."


def form_for(options: dict | None = None, answer_type: str | None = None) -> ChoiceForm | None:
    """The choice form a question has: lettered options when given, yes/no/maybe by its answer type."""
    if options:
        letters = tuple(str(k).strip().upper() for k in options)
        if len(set(letters)) != len(letters) or not all(len(k) == 1 and k.isalpha() for k in letters):
            return None
        return ChoiceForm(AnswerType.MULTIPLE_CHOICE, letters,
                          tuple((str(k).strip().upper(), str(v)) for k, v in options.items()))
    if answer_type == AnswerType.YES_NO_MAYBE:
        return ChoiceForm(AnswerType.YES_NO_MAYBE, YES_NO_MAYBE)
    return None


def normalise(logprobs: Sequence[float]) -> list[float]:
    """Log-softmax over the allowed answers only."""
    top = max(logprobs)
    total = top + math.log(sum(math.exp(x - top) for x in logprobs))
    return [x - total for x in logprobs]


def combine(form: ChoiceForm, per_order: list[list[float]]) -> dict[str, float]:
    """Each label's score: for lettered options, the mean over the rotations of the letter that showed its
    text (so every text is scored at every position); else the one order's normalised log-probabilities."""
    if form.kind != AnswerType.MULTIPLE_CHOICE:
        return dict(zip(form.labels, normalise(per_order[0]), strict=True))
    texts = [v for _, v in form.options]
    n = len(texts)
    by_text = {letter: 0.0 for letter in form.labels}
    for r, scores in enumerate(per_order):
        norm = normalise(scores)
        for position in range(n):  # rotation r shows text (position + r) % n at letter `position`
            original = form.labels[(position + r) % n]
            by_text[original] += norm[position] / len(per_order)
    return by_text


def decide(scores: dict[str, float], bias: dict[str, float] | None = None) -> str:
    bias = bias or {}
    return max(scores, key=lambda label: (scores[label] + bias.get(label, 0.0), -list(scores).index(label)))


def fit_bias(rows: list[dict[str, float]], golds: list[str], labels: Sequence[str], *, span: float = 6.0,
             step: float = 0.1) -> tuple[dict[str, float], float]:
    """Additive per-label biases (the first label's fixed at 0) that maximise accuracy on the given scored
    questions; ties go to the smallest correction. Returns (bias, accuracy reached)."""
    import numpy as np

    scores = np.array([[r[label] for label in labels] for r in rows])
    gold = np.array([list(labels).index(g) for g in golds])
    grid = np.arange(-span, span + step / 2, step)
    best, best_key = {label: 0.0 for label in labels}, (-1.0, 0.0)
    for combo in itertools.product(grid, repeat=len(labels) - 1):
        bias = np.array((0.0, *combo))
        accuracy = float(((scores + bias).argmax(axis=1) == gold).mean())
        key = (accuracy, -float(np.abs(bias).sum()))
        if key > best_key:
            best_key, best = key, {label: round(float(b), 3) for label, b in zip(labels, bias, strict=True)}
    return best, best_key[0]


def read_calibration(domain_root: Path) -> dict:
    path = Path(domain_root) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_calibration(domain_root: Path, calibration: dict) -> Path:
    path = Path(domain_root) / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration, indent=2) + "\n")
    tmp.replace(path)
    return path
