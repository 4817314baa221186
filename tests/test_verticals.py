"""Broad verticals (issue 16): healthcare answers PubMed research questions yes / no / maybe and consumer-health
questions in prose copied from a MedQuAD page, each in its own form, on the real engine, store and embedder."""
from __future__ import annotations

import re

import pytest

from eval.runner import data_set, primary_metric, report_name

CONSUMER = [("What are the symptoms of glaucoma?", "glaucoma"),
            ("What causes high blood pressure?", "high blood pressure"),
            ("How is psoriasis treated?", "psoriasis")]


@pytest.fixture(scope="module")
def medquad_ids(platform):
    from indexing.documents import read_corpus_jsonl

    [source] = [d for d in platform.domain("healthcare").data if d.name == "medquad"]
    return {d.doc_id for d in read_corpus_jsonl(source.corpus).documents}


@pytest.mark.parametrize("question,condition", CONSUMER)
def test_consumer_health_questions_get_prose_from_a_medquad_page_about_the_condition(platform, medquad_ids,
                                                                                   question, condition):
    a = platform.ask("healthcare", question)
    assert a.form == "evidence" and "open question" in a.form_reason, (a.form, a.form_reason)
    assert not a.abstained and len(a.citations) == 1, a.to_dict(passages=False)
    cited = a.citations[0]
    assert cited.doc_id in medquad_ids and condition in cited.title.lower(), (cited.doc_id, cited.title)
    reply = re.sub(r"\s*\[\d+\]$", "", a.text)
    assert reply in " ".join(cited.text.split()), (reply, cited.text)  # copied, not written
    assert len(reply.split()) >= 8, reply  # prose, not a label (a reply stops where its chunk ends: one sentence
    # can be all there is, e.g. high blood pressure's "Other causes of high blood pressure include ...")
    assert not a.text.lower().startswith(("yes.", "no.", "maybe."))


def test_a_pubmed_question_is_still_answered_yes_no_maybe(platform):
    a = platform.ask("healthcare", "Do mitochondria play a role in remodelling lace plant leaves during "
                                   "programmed cell death?")
    assert a.form == "yes/no/maybe" and "yes/no question" in a.form_reason
    assert a.text.split(".")[0].lower() in ("yes", "no", "maybe") and a.citations


def test_each_data_set_is_scored_on_its_own_in_its_own_metric(platform):
    health = platform.domain("healthcare")
    assert [d.name for d in health.data] == ["pubmedqa_pqal", "medquad"]
    assert data_set(health, None) == "pubmedqa_pqal" and primary_metric(health, "pubmedqa_pqal") == "accuracy"
    assert primary_metric(health, "medquad") == "f1" and report_name(health, "medquad") == "healthcare-medquad"
    assert report_name(health, "pubmedqa_pqal") == "healthcare"
    rows = health.qa_rows("test", "medquad")
    assert rows and all(r["data"] == "medquad" and r["answer_type"] == "long_text" for r in rows)
    with pytest.raises(ValueError, match="no data set 'nope'"):
        data_set(health, "nope")
    assert data_set(platform.domain("legal"), None) is None  # a one-set domain: every row
