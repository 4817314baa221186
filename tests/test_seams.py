"""The platform's seams, without the engine: the typed domain spec, the one question rule, the one error map,
and the one answer serialisation."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant import (
    AdapterError,
    AssistantError,
    ConflictError,
    DomainError,
    InputError,
    QuestionError,
    QuestionTooLongError,
    UnknownDomainError,
    check_question,
    error_info,
)
from assistant.answer import Answer, Citation
from assistant.domains import get_domain, load_domain

ROOT = Path(__file__).resolve().parents[1]


def package_with(tmp_path, toml_edit) -> Path:
    root = tmp_path / "manufacturing"
    shutil.copytree(ROOT / "domains" / "manufacturing", root, ignore=shutil.ignore_patterns("*.jsonl", "adapter"))
    toml = root / "domain.toml"
    toml.write_text(toml_edit(toml.read_text()))
    return root


def test_domain_toml_is_read_into_typed_specs_with_documented_defaults():
    dom = get_domain("retail")
    assert dom.retrieval.mode == "dense" and dom.retrieval.k == 4 and dom.retrieval.scope_qa_meta == "asin"
    assert isinstance(dom.retrieval.evidence_threshold, float) and dom.generation.max_tokens == 128
    assert dom.eval.primary_metric == "f1" and dom.privacy.redact_identifiers is False
    assert get_domain("healthcare").redacts_identifiers and get_domain("healthcare").eval.pii_suite


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("k = 4", "kk = 4"), r"domain.toml:\d+: unknown key 'kk' in \[retrieval\]"),
    (lambda t: t.replace("k = 4", 'k = "four"'), r"domain.toml:\d+: k in \[retrieval\] must be an integer"),
    (lambda t: t.replace("embed_title = true", "embed_title = 1"), r"embed_title in \[retrieval\] must be a boolean"),
    (lambda t: t.replace('mode = "hybrid"', 'mode = "fuzzy"'), r"mode in \[retrieval\] must be one of"),
    (lambda t: t.replace('primary_metric = "accuracy"', 'primary_metric = "bleu"'), r"primary_metric in \[eval\]"),
    (lambda t: "colour = 'red'\n" + t, r"domain.toml:1: unknown key 'colour' in top level"),
    (lambda t: t + "\n[sampling]\nx = 1\n", r"unknown key 'sampling' in top level"),
    (lambda t: t.replace("[generation]", "[generation"), r"invalid TOML"),
])
def test_typos_and_wrong_types_in_domain_toml_are_refused_with_file_key_and_line(tmp_path, edit, message):
    with pytest.raises(DomainError, match=message):
        load_domain(package_with(tmp_path, edit))


def test_question_rule_is_one_function_driven_by_the_limit():
    assert check_question("  Why?  ", 10) == "Why?"
    for bad in ("", "  \n", None, 42):
        with pytest.raises(QuestionError, match="empty question"):
            check_question(bad, 10)
    with pytest.raises(QuestionTooLongError, match="question is 11 characters; the limit is 10"):
        check_question("x" * 11, 10)


def test_the_retriever_takes_its_limit_from_its_caller(prepared, tmp_path):
    from indexing.embedder import Embedder
    from indexing.retriever import QueryError, Retriever
    from indexing.store import QdrantStore

    store = QdrantStore(location=":memory:")
    long_question = "pump cavitation " * 300  # 4,800 characters
    with pytest.raises(QueryError, match="limit is 4000"):
        Retriever(store, Embedder(prepared.embed_model), max_query_chars=4000).retrieve("x", long_question)
    wide = Retriever(store, Embedder(prepared.embed_model), max_query_chars=6000)
    with pytest.raises(Exception) as err:  # passes the length rule; fails only because the collection is missing
        wide.retrieve("x", long_question)
    assert "limit" not in str(err.value)


def test_one_error_map_gives_status_body_and_exit_code():
    from indexing.store import FilterError, MissingIndexError, StoreBusyError

    cases = [(QuestionError("empty question"), 400, "invalid_request_error"),
             (QuestionTooLongError("too long"), 413, "invalid_request_error"),
             (UnknownDomainError("unknown domain 'x'"), 404, "not_found_error"),
             (AdapterError("refused"), 400, "invalid_request_error"),
             (ConflictError("exists"), 409, "conflict_error"),
             (StoreBusyError("held by pid 1"), 409, "conflict_error"),
             (FilterError("filter title: bad"), 400, "invalid_request_error"),
             (MissingIndexError("no index for domain 'x'"), 404, "not_found_error"),
             (DomainError("bad domain.toml"), 500, "server_error"),
             (KeyError("bug"), 500, "server_error")]
    for exc, status, kind in cases:
        info = error_info(exc)
        assert (info.status, info.type) == (status, kind), exc
        assert set(info.body()["error"]) == {"message", "type", "code"}
    assert error_info(KeyError("secret")).message.startswith("internal error (KeyError)")
    assert "secret" not in error_info(KeyError("secret")).message
    assert isinstance(QuestionError("x"), (InputError, ValueError, AssistantError))
    assert {error_info(e).exit_code for e, _, _ in cases[:3]} == {1, 3}


def test_answer_to_dict_is_the_one_serialisation():
    from indexing.retriever import Passage

    shown = Citation.of(1, Passage(id="p1", doc_id="d1", title="T", text="full text", score=0.123456), text="trimmed")
    answer = Answer(domain="legal", question="q?", text="It says so [1].", citations=[shown], adapter="legal@v1",
                    adapter_version="v1", abstained=False, passages=[shown], flags=[],
                    timings={"retrieve_ms": 1.0, "generate_ms": 2.0, "first_token_ms": 0.5})
    d = answer.to_dict()
    assert {"domain", "answer", "citations", "adapter", "abstained", "timings"} <= set(d)
    assert d["citations"] == [{"n": 1, "doc_id": "d1", "title": "T", "score": 0.1235, "text": "trimmed"}]
    assert "passages" not in answer.to_dict(passages=False) and d["passages"] == d["citations"]
    assert answer.meta()["adapter_version"] == "v1" and shown.id == "p1"


def test_synthetic_pairs_must_be_supported_and_must_not_restate_the_question():
    from assistant.building.scaffold import check_synthetic_pair

    chunk = "Cavitation happens when the pump's inlet pressure drops below the vapour pressure of the liquid."
    question = "Why do pumps cavitate?"
    assert check_synthetic_pair(question, "inlet pressure drops below the vapour pressure", chunk) is None
    assert check_synthetic_pair("Why do pumps cavitate?", "Pumps cavitate.", chunk) == "answer restates the question"
    assert check_synthetic_pair("Why do pumps cavitate?", "worn impeller bearings", chunk) == \
        "answer not supported by its passage"
    assert check_synthetic_pair("Tell me about pumps", "inlet pressure", chunk) == "not a question"


def test_choice_scores_are_debiased_over_option_orders_and_prior_corrected():
    from assistant.choices import combine, decide, fit_bias, form_for

    form = form_for({"A": "oil", "B": "noise", "C": "heat"})
    assert form.orders()[1] == {"A": "noise", "B": "heat", "C": "oil"}
    # a model that always prefers position A, but gives "heat" a real edge wherever it is shown
    position_bias = [2.0, 0.0, 0.0]
    per_order = []
    for order in form.orders():
        per_order.append([position_bias[i] + (1.0 if text == "heat" else 0.0) for i, text in enumerate(order.values())])
    scores = combine(form, per_order)
    assert decide(scores) == "C"  # without the rotations, position A's bias would have won every time
    ynm = form_for(answer_type="yes/no/maybe")
    rows = [{"yes": -0.1, "no": -2.5, "maybe": -3.0}] * 6 + [{"yes": -0.2, "no": -1.8, "maybe": -3.0}] * 4
    golds = ["yes"] * 6 + ["no"] * 4
    bias, accuracy = fit_bias(rows, golds, ynm.labels)
    assert accuracy == 1.0 and bias["yes"] == 0.0 and decide(rows[-1], bias) == "no"


def test_cli_maps_errors_to_one_line_and_exit_codes():
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, timeout=120)

    unknown = run("ask", "astrology", "Will I be rich?")
    assert unknown.returncode == 3 and unknown.stderr.strip().startswith("Error: unknown domain 'astrology'")
    assert "Traceback" not in unknown.stderr
    empty = run("ask", "legal", "   ")
    assert empty.returncode == 1 and "Error: empty question" in empty.stderr and "Traceback" not in empty.stderr
    usage = run("eval", "legal", "--conditions", "nope")
    assert usage.returncode == 2  # click's own usage errors
