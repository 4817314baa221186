"""The answer form is decided from the question (assistant/question_form.py), with the reason."""
from __future__ import annotations

import pytest

from assistant.question_form import decide_form

HEALTHCARE = {"answer_form": "yes/no/maybe", "open_form": "evidence"}


@pytest.mark.parametrize("question", [
    "What are the symptoms of glaucoma?", "How is type 2 diabetes treated?", "who is at risk for Gout?",
    "Do you have information about Acupuncture", "List the treatments for asthma", "  Why does it hurt?"])
def test_open_questions_get_the_open_form(question):
    decision = decide_form(question, options=None, requested=None, **HEALTHCARE)
    assert decision.form == "evidence" and "open question" in decision.why


@pytest.mark.parametrize("question", [
    "Do statins reduce atrial fibrillation after CABG?", "Is Retinoblastoma inherited ?",
    "Syncope during bathing in infants, a pediatric form of water-induced urticaria?",
    "Does Whatman paper work?"])  # "What..." inside a word is not a question word
def test_polar_and_statement_questions_keep_the_domain_form(question):
    decision = decide_form(question, options=None, requested=None, **HEALTHCARE)
    assert decision.form == "yes/no/maybe" and "yes/no question" in decision.why


def test_options_and_a_requested_form_come_first_and_one_form_domains_are_unchanged():
    assert decide_form("What fails?", options={"A": "x", "B": "y"}, requested=None, **HEALTHCARE).form == \
        "multiple_choice"
    assert decide_form("What fails?", options=None, requested="yes/no/maybe", **HEALTHCARE).form == "yes/no/maybe"
    one = decide_form("What is the notice period?", options=None, requested=None, answer_form="evidence",
                      open_form=None)
    assert one.form == "evidence" and "every question" in one.why
