"""Which form a question is answered in, decided from the question, in one place.

A domain names its usual form (`answer_form`) and, optionally, the form of its open questions (`open_form`).
A broad vertical needs both: healthcare's PubMed questions are yes/no/maybe ("Do statins reduce ...?"), its
consumer-health questions are open ("What are the symptoms of glaucoma?") and want prose copied from the
evidence, not a forced "No.". The rule is the question's shape: lettered options make a choice; a question that
opens with a question word or a request ("What", "How", "Do you have information about") is open; any other
question (an auxiliary verb first, or a PubMed-style statement with a "?") is polar. The decision and the reason
travel in the answer's metadata (`Answer.form`, `Answer.form_reason`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.data_format import AnswerType
from assistant.table_arithmetic import CALCULATION_FORM, operation_of

_OPEN = re.compile(r"^\W*(what|which|who|whom|whose|when|where|why|how|list|describe|explain|tell|give|name|define|"
                   r"summari[sz]e|do you (have|know) (any )?(information|anything) (about|on))\b", re.IGNORECASE)


@dataclass(frozen=True)
class FormDecision:
    form: str   # "" (free text), "yes/no/maybe", "multiple_choice", "evidence" or "calculation"
    why: str


def is_open_question(question: str) -> bool:
    return bool(_OPEN.match(question))


def decide_form(question: str, *, options: dict | None, requested: str | None, answer_form: str,
                open_form: str | None, calculates: bool = False) -> FormDecision:
    """The form for one question. `requested`: what the caller asked for (an eval row's answer type, the API's
    `form`); `open_form` None means the domain answers every question in `answer_form`; `calculates`: the
    domain's questions that name an operation over a table are computed (assistant/table_arithmetic.py)."""
    if options:
        return FormDecision(AnswerType.MULTIPLE_CHOICE, "the question came with lettered options")
    if requested:
        return FormDecision(requested, "the caller asked for this form")
    operation = operation_of(question) if calculates else None
    if operation:
        return FormDecision(CALCULATION_FORM, f"it asks for a {operation.replace('_', ' ')}: computed by the "
                                              "platform over a retrieved table")
    if open_form is not None and is_open_question(question):
        first = question.split()[0] if question.split() else ""
        return FormDecision(open_form, f"an open question (it starts with {first!r}): the domain's open form")
    if open_form is not None:
        return FormDecision(answer_form, "a yes/no question (no question word first): the domain's form")
    return FormDecision(answer_form, "the domain answers every question in this form")
