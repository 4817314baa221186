"""Evidence answers without the engine: the candidate spans and the pick."""
from __future__ import annotations

import numpy as np

from assistant.answer import Citation
from assistant.evidence import EvidenceForm, content_words, pick_span
from indexing.retriever import Passage


def passage(n: int, text: str) -> Citation:
    return Citation.of(n, Passage(id=f"c{n}", doc_id=f"d{n}", title=f"t{n}", text=text, score=0.5))


POLICY = ("We collect your name and email address. We share data with advertisers, for marketing purposes, "
          "only with your consent. Cookies expire after 30 days.")


def test_candidates_are_the_best_sentences_and_their_clause_runs():
    form = EvidenceForm.of("Do you share data with advertisers?", [passage(1, POLICY), passage(2, "Unrelated.")])
    texts = form.texts()
    assert texts[0] == "We collect your name and email address."  # document order
    whole = "We share data with advertisers, for marketing purposes, only with your consent."
    assert whole in texts and next(s for s in form.spans if s.text == whole).whole
    for run in ("for marketing purposes, only with your consent.", "only with your consent.",
                "We share data with advertisers, for marketing purposes"):
        span = next(s for s in form.spans if s.text == run)
        assert span.n == 1 and not span.whole
    assert "We share data with advertisers" not in texts  # restates the question: adds no word
    assert "for marketing purposes" not in texts  # under four words
    assert len(texts) == len(set(texts))


def test_markup_is_not_part_of_a_span():
    form = EvidenceForm.of("What does prune remove?", [passage(1, "### Description\n* This command removes "
                                                                 "extraneous packages.\n```bash\nnpm prune\n```")])
    assert form.texts() == ["This command removes extraneous packages."]


def test_at_most_four_sentences_by_shared_words():
    text = " ".join(f"Sentence number {i} is here." for i in range(10)) + " Advertisers get your data every week."
    form = EvidenceForm.of("Which advertisers get data?", [passage(1, text)])
    assert "Advertisers get your data every week." in form.texts() and sum(s.whole for s in form.spans) == 4


def test_no_candidates_from_empty_passages_or_without_budget():
    assert EvidenceForm.of("anything?", [passage(1, "  \n ")]) is None
    assert EvidenceForm.of("q?", [passage(1, POLICY)]).within(1, len) is None
    short = EvidenceForm.of("q?", [passage(1, POLICY)]).within(30, len)
    assert short and all(len(s.text) < 30 for s in short.spans)


def test_pick_is_the_closest_span():
    spans = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert pick_span(np.array([0.0, 1.0]), spans) == (2, 1.0)
    assert pick_span(np.array([0.8, 0.6]), spans)[0] == 1  # 0.96 beats 0.8 and 0.6


def test_content_words_drop_stop_words_and_case():
    assert content_words("What DATA do you share with Advertisers?") == {"data", "share", "advertisers"}


GLAUCOMA = ("At first, open-angle glaucoma has no symptoms. It causes no pain. Vision seems normal. "
            "Without treatment, people with glaucoma will slowly lose their peripheral, or side vision.")


def test_a_prose_reply_copies_the_sentences_after_the_picked_one_within_the_budget():
    form = EvidenceForm.of("What are the symptoms of glaucoma?", [passage(1, GLAUCOMA)], follow=2)
    first = next(s for s in form.spans if s.text == "At first, open-angle glaucoma has no symptoms.")
    assert first.copied == "At first, open-angle glaucoma has no symptoms. It causes no pain. Vision seems normal."
    clause = next(s for s in form.spans if not s.whole)
    assert clause.copied == clause.text  # a clause run is copied alone
    short = form.within(14, lambda text: len(text.split()))  # 13 words fit: the last sentence is dropped
    assert next(s for s in short.spans if s.text == first.text).copied == \
        "At first, open-angle glaucoma has no symptoms. It causes no pain."
    assert EvidenceForm.of("What are the symptoms of glaucoma?", [passage(1, GLAUCOMA)]).spans[0].copied == \
        "At first, open-angle glaucoma has no symptoms."  # follow=0: one sentence, as before
