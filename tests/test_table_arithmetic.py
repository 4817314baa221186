"""Arithmetic done by the platform over a retrieved table (assistant/table_arithmetic.py), without the engine."""
from __future__ import annotations

import pytest

from assistant.answer import Citation
from assistant.table_arithmetic import Table, calculate, cell_value, evaluate, operation_of
from eval.answer_metrics import tatqa_numeric_match
from indexing.retriever import Passage

SALES = (" |  | Years Ended September 30, | \n | 2019 | 2018 | 2017\nFixed Price | $  1,452.4 | $  1,146.2 | "
         "$  1,036.9\nOther | 44.1 | 56.7 | 70.8\nTotal sales | $1,496.5 | $1,202.9 | $1,107.7")


def shown(*texts: str) -> list[Citation]:
    return [Citation.of(i + 1, Passage(id=f"c{i}", doc_id=f"d{i}", title="table", text=t, score=0.5))
            for i, t in enumerate(texts)]


def test_the_evaluator_computes_arithmetic_and_refuses_everything_else():
    assert evaluate("(1568.6 - 1571.7) / 1571.7 * 100") == pytest.approx(-0.19724, rel=1e-4)
    assert evaluate("-9819 - 6639") == -16458
    for bad in ("__import__('os').system('true')", "2 ** 1000", "open('x')", "[1, 2]", "1 if 1 else 2", "x + 1"):
        with pytest.raises((ValueError, SyntaxError)):
            evaluate(bad)


def test_cells_and_tables_are_read_as_written():
    assert cell_value("$  1,452.4") == 1452.4 and cell_value("(56.7)") == -56.7 and cell_value("12%") == 12
    assert cell_value("Fixed Price") is None and cell_value("") is None
    table = Table.parse(SALES)
    assert table.columns[:3] == ("2019", "Years Ended September 30, 2018", "2017")
    assert [label for label, _ in table.rows] == ["Fixed Price", "Other", "Total sales"]


@pytest.mark.parametrize("question,gold,scale,expression", [
    ("What was the change in Other sales from 2018 to 2019?", "-12.6", "million", "44.1 - 56.7"),
    ("What was the percentage change in total sales between 2017 and 2018?", "8.59", "percent",
     "(1,202.9 - 1,107.7) / 1,107.7 * 100"),
    ("What was the average Fixed Price sales in 2018 and 2019?", "1299.3", "million", "(1,452.4 + 1,146.2) / 2"),
])
def test_a_calculation_is_the_reply_and_scores_under_tatqas_rule(question, gold, scale, expression):
    paragraph = "The table below presents total net sales disaggregated by contract type (in millions):"
    calc = calculate(question, shown(paragraph, SALES))
    assert calc is not None and calc.expression == expression and calc.n == 2
    reply = calc.reply()
    assert reply.endswith("[2]") and tatqa_numeric_match(reply, gold, scale) == 1.0, reply


def test_no_calculation_without_an_operation_a_table_or_the_row():
    assert operation_of("What method did the company use?") is None
    assert calculate("What was the change in revenue from 2018 to 2019?", shown("No table here.")) is None
    assert calculate("What was the change in headcount from 2018 to 2019?", shown(SALES)) is None
