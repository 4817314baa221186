"""The multi-turn eval suite (eval/multiturn.py): follow-ups built from the test split that name their topic only
by a pronoun, scored with and without the rewrite on the real engine and store."""
from __future__ import annotations

from assistant.config import Settings
from assistant.domains import get_domain
from eval.multiturn import build_suite, eval_multiturn, follow_up


def test_a_follow_up_replaces_the_shared_noun_phrase_with_it():
    assert follow_up("What is (are) Glaucoma ?", "What are the symptoms of Glaucoma ?") == \
        "What are the symptoms of it ?"
    assert follow_up("what is the theme of the pack?", "how many cards are in the pack?") == \
        "how many cards are in it?"
    assert follow_up("how tall are the dolls?", "what are the dolls made of?") is None  # "it made": not a phrase
    assert follow_up("What is glaucoma?", "How is asthma treated?") is None  # nothing shared
    assert follow_up("Do they use cookies?", "Do they share data with partners?") is None  # only function words


def test_the_suite_is_seeded_spread_over_topics_and_never_reuses_a_question():
    domain = get_domain("manufacturing", Settings.load())
    rows = domain.qa_rows("test")
    suite = build_suite(domain, rows, 40, seed=0)
    assert len(suite) == 40 and suite == build_suite(domain, rows, 40, seed=0)
    assert build_suite(domain, rows, 40, seed=1) != suite
    qids = [c[k]["qid"] for c in suite for k in ("first", "second")]
    assert len(qids) == len(set(qids))
    for c in suite:
        assert " it" in f" {c['follow_up'].lower()}" and c["follow_up"] != c["second"]["question"]
        assert c["second"]["gold_doc_ids"]


def test_follow_ups_are_scored_with_and_without_the_rewrite(platform):
    result = eval_multiturn(platform, "healthcare", n=4, progress=False)
    assert result["n"] == 4 and result["metric"] == "f1"  # MedQuAD follow-ups, scored in their own metric
    for way in ("as_asked", "rewritten", "original"):
        assert 0.0 <= result["recall@5"][way]["mean"] <= 1.0
    assert set(result["answer"]) == {"with_rewrite", "without_rewrite", "with_vs_without"}
    for item in result["items"]:
        assert item["rewrite_by"] in ("model", "concatenated"), item
        assert item["rewrite"] != item["follow_up"]
        assert item["first_reply"]  # the platform's own first answer is the assistant turn
