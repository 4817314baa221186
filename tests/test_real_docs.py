"""A new domain from a folder of real documentation nobody here wrote (npm's command reference, 72 files), asked
factual questions answer-checked in the files (questions.json says which set was written blind).

The domain is built the way `assistant new-domain` builds it (scaffold, index, evidence gate calibrated on
out-of-domain questions) on the session's store; it has no adapter and no questions of its own, so its
answers are the base model choosing evidence spans with the default weights. Right = the answer contains the
expected words and cites the file that holds them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.building.calibration import calibrate
from assistant.building.indexer import index_domain
from assistant.building.scaffold import create_domain
from assistant.domains import load_domain

FIXTURE = Path(__file__).parent / "fixtures" / "npm_docs"
QUESTIONS = json.loads((FIXTURE / "questions.json").read_text())
# The goal is 7 of 10. Measured on 2026-12-02: set A 3, set B (blind) 2: the goal is missed; these
# floors only guard against regressions (retrieval finds the right file for 19 of 20, the span pick fails).
MEASURED_FLOOR = {"questions_a": 3, "questions_b": 2}


@pytest.fixture(scope="module")
def npm_domain(platform, tmp_path_factory):
    domains_dir = tmp_path_factory.mktemp("domains")
    root = create_domain("npm-docs", FIXTURE / "commands", domains_dir)
    report = index_domain(load_domain(root), platform.store, platform.embedder, progress=False)
    assert report.documents == len(list((FIXTURE / "commands").glob("*.md"))) and report.ok
    others = [platform.domain(name) for name in platform.domains]
    gate = calibrate(load_domain(root), others, platform.store, platform.embedder)
    assert gate["in_domain_pass"] is None and gate["out_of_domain_reject"] == 1.0
    platform.domains["npm-docs"] = load_domain(root)  # the gate threshold as written to domain.toml
    yield platform.domains["npm-docs"]
    del platform.domains["npm-docs"]
    platform.store.drop_collection("npm-docs")


def _is_right(item: dict, answer) -> bool:
    text = answer.text.lower()
    cited = {Path(c.doc_id).name for c in answer.citations} | {Path(c.title).name for c in answer.citations}
    return any(e.lower() in text for e in item["expect"]) and any(item["file"] in c for c in cited)


@pytest.mark.parametrize("question_set", ["questions_a", "questions_b"])
def test_new_domain_over_real_docs_answers_with_evidence_and_the_right_citation(platform, npm_domain, question_set):
    items = QUESTIONS[question_set]
    answers = platform.ask_many([(npm_domain.name, item["question"]) for item in items])
    report = [(item["question"], answer.text, [c.doc_id for c in answer.citations]) for item, answer in
              zip(items, answers, strict=True)]
    right = [_is_right(item, answer) for item, answer in zip(items, answers, strict=True)]
    assert sum(right) >= MEASURED_FLOOR[question_set], json.dumps(report, indent=1)
    for answer in answers:
        if not answer.abstained:  # every answer is a cited copy of a passage it was shown
            assert answer.form == "evidence" and len(answer.citations) == 1
            quoted = answer.text.rsplit(" [", 1)[0]
            assert quoted in " ".join(answer.citations[0].text.split())


NEIGHBOUR = "How do I install a package with pip in a Python virtual environment?"


@pytest.mark.parametrize("question", [pytest.param(q, marks=pytest.mark.xfail(
    reason="known limit: a neighbouring tool's question (pip) is as close to npm's docs (0.37) as the highest "
           "out-of-domain question the gate is calibrated on, so it may pass", strict=False))
    if q == NEIGHBOUR else q for q in QUESTIONS["out_of_scope"]])
def test_new_domain_gate_turns_away_questions_about_other_topics(platform, npm_domain, question):
    answer = platform.ask(npm_domain.name, question)
    assert answer.abstained and answer.abstained_by == "gate", (question, answer.evidence)
