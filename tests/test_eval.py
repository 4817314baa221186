"""Eval suites: metric functions on hand-checked cases, statistics, and a tiny end-to-end eval on the real stack."""
from __future__ import annotations

import json

import pytest

from eval.answer_metrics import (
    exact_match,
    parse_choice,
    parse_yes_no_maybe,
    read_number,
    rouge_l,
    score_answer,
    tatqa_numeric_match,
    token_f1,
)
from eval.statistics import mean_ci, paired_comparison

OPTIONS = {"A": "vibration", "B": "oil debris", "C": "current", "D": "partial discharge"}


@pytest.mark.parametrize("text, expected", [
    ("Yes. The trial showed lower mortality [1]", "yes"),
    ("no, it did not [2]", "no"),
    ("Maybe: the evidence is mixed.", "maybe"),
    ("The results suggest that, yes, there is an effect; no harm was seen.", "yes"),  # first one wins
    ("The study was inconclusive.", None),
])
def test_yes_no_maybe_parsing(text, expected):
    assert parse_yes_no_maybe(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("B. oil debris [1]", "B"),
    ("(C) current", "C"),
    ("D) partial discharge", "D"),
    ("Answer: A", "A"),
    ("The correct answer is D.", "D"),
    ("The most relevant sensor is oil debris [3]", "B"),   # option text only
    ("partial discharge and vibration both matter", None),  # two options named: unparseable
    ("I would check the temperature.", None),
    ("E. torque", None),                                     # not an offered letter
])
def test_multiple_choice_parsing(text, expected):
    assert parse_choice(text, OPTIONS) == expected


def test_unparseable_choice_is_wrong_and_counted():
    row = {"answer_type": "multiple_choice", "answer": ["B"], "options": OPTIONS}
    assert score_answer(row, "I would check the temperature.", False) == {"accuracy": 0.0, "parsed": 0.0}
    assert score_answer(row, "B. oil debris [1]", False) == {"accuracy": 1.0, "parsed": 1.0}
    assert score_answer(row, "B. oil debris", True) == {"accuracy": 0.0, "parsed": 0.0}  # abstained


def test_squad_exact_match_and_f1_by_hand():
    assert exact_match("The modified retrospective method. [2]", ["the modified retrospective method"]) == 1.0
    # pred tokens: modified retrospective approach (3); gold: modified retrospective method (3); overlap 2
    assert token_f1("the modified retrospective approach", ["modified retrospective method"]) == pytest.approx(2 / 3)
    assert token_f1("nothing alike", ["modified retrospective method"]) == 0.0
    # best over the acceptable answers
    assert token_f1("third party", ["The third party site", "third party"]) == 1.0


@pytest.mark.parametrize("pred, gold, scale, expected", [
    ("17.7% [1]", "17.7", "percent", 1.0),
    ("17.70 percent", "17.7", "percent", 1.0),
    ("17.7", "17.7", "percent", 1.0),               # bare number read as-is (official add_percent_pred)
    ("0.177", "17.7", "percent", 0.0),
    ("1,568.6 million [2]", "1568.6", "million", 1.0),
    ("1568.6", "1568.6", "million", 0.0),           # a number without its scale is a different number
    ("1.5686 billion", "1568.6", "million", 0.0),   # rounded to 2 decimals before scaling: 1.57e9 != 1.5686e9
    ("$(2,304) thousand", "-2304", "thousand", 1.0),  # parentheses = negative, as in the filings
    ("1 year [2]", "1", "", 1.0),
    ("It rose sharply.", "12", "", 0.0),
])
def test_tatqa_numeric_rule_with_scale(pred, gold, scale, expected):
    assert tatqa_numeric_match(pred, gold, scale) == expected


def test_read_number_and_score_types():
    assert read_number("about 3.5 million dollars [1]") == (3.5, "million")
    arith = {"answer_type": "arithmetic", "answer": ["17.7"], "meta": {"scale": "percent"}}
    assert score_answer(arith, "17.7% [1]", False) == {"exact_match": 1.0, "f1": 1.0}
    multi = {"answer_type": "multi-span", "answer": ["1,568.6", "690.5"]}
    assert score_answer(multi, "690.5, 1,568.6 [1]", False)["exact_match"] == 1.0
    free = {"answer_type": "free_text", "answer": ["the ride involves pushing the foot bar back and forth."]}
    s = score_answer(free, "The ride involves pushing the foot bar back and forth [1]", False)
    assert s["f1"] == 1.0 and s["rouge_l"] == pytest.approx(1.0)
    assert score_answer(free, "anything", True) == {"f1": 0.0, "rouge_l": 0.0}
    assert rouge_l("pushing the bar", ["the ride involves pushing the foot bar"]) > 0
    assert score_answer({"answer_type": "unanswerable_in_candidates", "answer": []}, "I don't know", True) == \
        {"correct_abstention": 1.0}


def test_statistics():
    assert mean_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    mean, low, high = mean_ci([0, 1] * 50)
    assert mean == 0.5 and low < 0.5 < high and high - low < 0.25
    same = paired_comparison([1, 0, 1, 0], [1, 0, 1, 0])
    assert same["diff"] == 0 and same["p_value"] == 1.0
    better = paired_comparison([1] * 40 + [0] * 10, [0] * 40 + [1] * 10)
    assert better["diff"] == pytest.approx(0.6) and better["p_value"] < 0.01 and better["ratio"] == 4.0


@pytest.mark.engine
def test_tiny_end_to_end_eval_is_resumable_and_cleans_up(platform, tmp_path):
    from eval.report import write_report
    from eval.runner import eval_domain

    before = platform.store.count("manufacturing")
    result = eval_domain(platform, "manufacturing", limit=4, cache_dir=tmp_path / "cache", progress=False)
    assert platform.store.count("manufacturing") == before  # planted risk documents removed again
    assert result["n"] == 4 and set(result["answers"]) == {"base", "rag", "lora", "rag+lora"}
    assert {"recall@1", "recall@5", "mrr@10", "ndcg@10"} <= set(result["retrieval"])
    for _cond, entry in result["answers"].items():
        assert 0 <= entry["accuracy"] <= 1 and "abstain_rate" in entry and entry["ci95"]["accuracy"]
    assert result["answers"]["rag"]["groundedness"] is None or 0 <= result["answers"]["rag"]["groundedness"] <= 1
    assert result["comparison"]["rag+lora_vs_base"]["n"] == 4
    risk = result["risk"]
    assert risk["out_of_domain"]["n"] == 30 and risk["injection"]["planted_shown"] >= 1
    assert risk["injection"]["resisted_rate"] == 1.0
    cache = tmp_path / "cache" / "manufacturing"
    lines = sum(len(p.read_text().splitlines()) for p in cache.glob("*.jsonl"))
    assert lines == 16
    again = eval_domain(platform, "manufacturing", limit=4, cache_dir=tmp_path / "cache", progress=False, risk=False)
    assert sum(len(p.read_text().splitlines()) for p in cache.glob("*.jsonl")) == lines  # all from the cache
    assert again["answers"] == result["answers"]
    paths = write_report(result, tmp_path / "reports", "assistant eval manufacturing --limit 4")
    assert json.loads(paths["json"].read_text())["n"] == 4
    assert "--limit 4" in paths["md"].read_text() and paths["png"].stat().st_size > 1000


def test_a_partial_eval_run_leaves_the_shipped_manifest_scores_alone(platform):
    """`assistant eval D --conditions rag+lora --no-report` is a check, not a new result: it once replaced the
    manifest's eval block (the four conditions, the report's path) with a partial one."""
    from eval.workflow import evaluate

    manifest = platform.domain("manufacturing").adapter_path / "manifest.json"
    before = manifest.read_bytes()
    results = evaluate(["manufacturing"], limit=3, conditions=["rag+lora"], write_reports=False, risk=False,
                       platform=platform, progress=lambda *_: None)
    assert results[0]["n"] == 3 and set(results[0]["answers"]) == {"rag+lora"}
    assert manifest.read_bytes() == before
