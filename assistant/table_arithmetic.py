"""Arithmetic over a retrieved table, done by the platform, not the model.

A 135M model cannot subtract two six-digit numbers (TAT-QA arithmetic questions scored F1 0.008 with its free
text), and TAT-LLM's results come from an external executor. Here the platform writes the expression itself,
over the cells of a table the retriever showed: the operation comes from the question's words (change,
percentage change, average, total), the row from the row label that shares the most words with the question,
the columns from the years the question names (later minus earlier, as TAT-QA's derivations are written), and
a safe evaluator (an `ast` walk that allows numbers, + - * / and brackets, nothing else) computes it. The reply
starts with the result and its scale (TAT-QA's scoring reads that number), then shows the expression over the
cells as written and cites the table, so a reader can check every step. When the question names no operation
this module knows, or no shown table has the row and the columns, there is no calculation and the domain's
usual answer is written instead.
"""
from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.answer import Citation
from assistant.evidence import content_words

CALCULATION_FORM = "calculation"
_OPS = (  # first match wins: "percentage change" before "change"
    ("percentage_change", re.compile(r"\b(percentage|percent|%)\s+(change|increase|decrease|growth)|growth rate|"
                                     r"\bchange in percentage\b", re.IGNORECASE)),
    ("change", re.compile(r"\b(change|difference|increase|decrease)\b", re.IGNORECASE)),
    ("average", re.compile(r"\b(average|mean)\b", re.IGNORECASE)),
    ("total", re.compile(r"\b(total|sum|combined)\b.*\b(19|20)\d\d\b.*\b(19|20)\d\d\b", re.IGNORECASE)),
)
_OP_WORDS = frozenset("percentage percent change increase decrease growth rate difference average mean total sum "
                      "combined between from value amount years year fiscal both respectively".split())
_YEAR = re.compile(r"\b((?:19|20)\d\d)\b")
_CELL_NUMBER = re.compile(r"^\(?-?\$?\s*\(?\s*[\d,]*\.?\d+\s*\)?\s*%?\)?$")
_SCALE = (("million", re.compile(r"\bin millions\b|\$\s*millions?\b|\(millions?\)|\bmillions of\b|[$€£]\s?m\b|"
                                 r"\bin \$m\b|\bRMB ?m\b", re.IGNORECASE)),
          ("thousand", re.compile(r"\bin thousands\b|\$\s*thousands?\b|\(thousands?\)|['’]000|\$000|"
                                  r"\bthousands of\b|[$€£]\s?k\b", re.IGNORECASE)),
          ("billion", re.compile(r"\bin billions\b|\$\s*billions?\b|\(billions?\)", re.IGNORECASE)))


def operation_of(question: str) -> str | None:
    for name, pattern in _OPS:
        if pattern.search(question):
            return name
    return None


# ---- the safe evaluator ---------------------------------------------------------------------------------
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression of numbers, + - * / and brackets; anything else is refused."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value,
                                                                                                       bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError(f"not allowed in an expression: {ast.dump(node)[:60]}")

    if len(expression) > 500:
        raise ValueError("expression too long")
    return walk(ast.parse(expression, mode="eval"))


# ---- tables ---------------------------------------------------------------------------------------------
def cell_value(cell: str) -> float | None:
    """A table cell as a number: "$ 1,452.4" -> 1452.4, "(56.7)" -> -56.7, "12%" -> 12; None for text."""
    text = cell.strip()
    if not text or not _CELL_NUMBER.match(text):
        return None
    negative = "(" in text or text.lstrip("($ ").startswith("-")
    digits = re.sub(r"[^\d.]", "", text)
    try:
        value = float(digits)
    except ValueError:
        return None
    return -value if negative else value


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]                     # each value column's header text (years included)
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (label, cells as written, aligned with columns)

    @classmethod
    def parse(cls, text: str) -> Table | None:
        lines = [[c.strip() for c in line.split("|")] for line in text.split("\n") if "|" in line]
        if len(lines) < 2:
            return None
        width = max(len(cells) for cells in lines)
        lines = [cells + [""] * (width - len(cells)) for cells in lines]
        first_data = next((i for i, cells in enumerate(lines)
                           if cells[0] and any(cell_value(c) is not None for c in cells[1:])
                           and not all(_YEAR.fullmatch(c) or not c for c in cells[1:])), None)
        if first_data is None:
            return None
        headers = lines[:first_data]
        columns = tuple(" ".join(h[i] for h in headers if h[i]).strip() for i in range(1, width))
        rows = tuple((cells[0], tuple(cells[1:])) for cells in lines[first_data:] if cells[0])
        return cls(columns, rows) if rows else None


@dataclass(frozen=True)
class Calculation:
    operation: str
    expression: str          # over the cells as written: "6,332 - 6,059"
    value: float
    scale: str               # "percent", "thousand", "million", "billion" or ""
    row: str
    columns: tuple[str, ...]
    n: int                   # the passage [n] that holds the table

    def reply(self) -> str:
        number = f"{round(self.value, 2):,.2f}".rstrip("0").rstrip(".")
        scale = {"percent": "%", "": ""}.get(self.scale, f" {self.scale}")
        where = f"{self.row}, {' and '.join(self.columns)}" if self.columns else self.row
        return f"{number}{scale}: {self.expression} ({where}) [{self.n}]"


def _scale_of(table_text: str, passages: Sequence[Citation], cells: Sequence[str], operation: str) -> str:
    if operation == "percentage_change" or any("%" in c for c in cells):
        return "percent"
    for text in (table_text, *(p.text for p in passages)):
        for name, pattern in _SCALE:
            if pattern.search(text):
                return name
    return ""


def _best_row(table: Table, question_words: set[str],
              wanted_columns: list[int]) -> tuple[tuple, str, tuple[str, ...]] | None:
    """(how well it matches, label, cells) of the row sharing the most words with the question."""
    best, best_key = None, (0, 0.0)
    for label, cells in table.rows:
        if any(cell_value(cells[i]) is None for i in wanted_columns if i < len(cells)):
            continue
        words = content_words(label)
        shared = len(words & question_words)
        key = (shared, shared / len(words) if words else 0.0)
        if shared and key > best_key:
            best, best_key = (key, label, cells), key
    return best


_RANGE = re.compile(r"\b((?:19|20)\d\d)\s*(?:-|–|to|and)\s*((?:19|20)\d\d)\b")


def _columns_for(table: Table, question: str, operation: str) -> list[int]:
    years = _YEAR.findall(question)
    span = _RANGE.search(question)
    if operation == "average" and span:  # "the average ... from 2017 to 2019": every year of the range
        low, high = sorted(int(y) for y in span.groups())
        years = [str(y) for y in range(high, low - 1, -1)]
    by_year = []
    for year in dict.fromkeys(years):
        hit = next((i for i, label in enumerate(table.columns) if year in label), None)
        if hit is not None:
            by_year.append(hit)
    numeric = [i for i in range(len(table.columns))
               if any(i < len(cells) and cell_value(cells[i]) is not None for _, cells in table.rows)]
    if len(by_year) == 1 and operation in ("change", "percentage_change", "average"):
        # "the change in 2019", "the 2019 average": that year and the one before it (TAT-QA's convention)
        before = [i for i in numeric if _year_of(table.columns[i]) == _year_of(table.columns[by_year[0]]) - 1]
        by_year = by_year + before[:1]
    if operation in ("change", "percentage_change"):
        chosen = by_year if len(by_year) >= 2 else numeric[:2]
        return chosen[:2] if len(chosen) >= 2 else []
    if operation == "average":
        return by_year if len(by_year) >= 2 else numeric
    return by_year if len(by_year) >= 2 else []


def _year_of(label: str) -> int:
    found = _YEAR.findall(label)
    return int(found[0]) if found else 0


def calculate(question: str, passages: Sequence[Citation]) -> Calculation | None:
    """The calculation a question asks for, over the shown table whose row matches the question best (the earlier
    passage on a tie)."""
    operation = operation_of(question)
    if operation is None:
        return None
    words = content_words(question) - _OP_WORDS - set(_YEAR.findall(question))
    best, best_key = None, None
    for p in passages:
        table = Table.parse(p.text)
        if table is None:
            continue
        columns = _columns_for(table, question, operation)
        if not columns:
            continue
        found = _best_row(table, words, columns)
        if found is None:
            continue
        key, label, cells = found
        if any(i >= len(cells) for i in columns) or (best_key is not None and key <= best_key):
            continue
        if operation in ("change", "percentage_change"):
            # later minus earlier (TAT-QA's derivations); tables list the latest year first when none is named
            later, earlier = sorted(columns, key=lambda i: (_year_of(table.columns[i]), -i), reverse=True)
            a, b = _number_text(cells[later]), _number_text(cells[earlier])
            expression = f"({a} - {b}) / {b} * 100" if operation == "percentage_change" else f"{a} - {b}"
            used = (table.columns[later], table.columns[earlier])
        else:
            terms = [_number_text(cells[i]) for i in columns]
            expression = " + ".join(terms) if operation == "total" else f"({' + '.join(terms)}) / {len(terms)}"
            used = tuple(table.columns[i] for i in columns)
        try:
            value = evaluate(expression.replace(",", ""))
        except (ValueError, ZeroDivisionError, SyntaxError):
            continue
        best_key = key
        best = Calculation(operation, expression, value, _scale_of(p.text, passages, [cells[i] for i in columns],
                                                                  operation),
                           label, tuple(c for c in used if c), p.n)
    return best


def _number_text(cell: str) -> str:
    """The cell's number as written, without currency or percent signs; brackets mean negative."""
    value = cell_value(cell)
    text = re.sub(r"[^\d.,]", "", cell)
    return f"-{text}" if value is not None and value < 0 else text
