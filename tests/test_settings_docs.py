"""The README's Settings tables cannot go stale: every `Settings` field and every `ASSISTANT_*` variable named in
the code (found by scanning the source) has a row, with the field's real default, and no row names a variable
that nothing reads."""
from __future__ import annotations

import json
import re
from dataclasses import MISSING, fields
from pathlib import Path

from assistant.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("assistant", "indexing", "eval", "bench", "scripts", "app.py")
VARIABLE = re.compile(r"\bASSISTANT_[A-Z][A-Z0-9_]*\b")


def settings_rows() -> dict[str, str]:
    """Variable -> its row's default cell, from the tables of the README's "## Settings" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Settings\n" in text, "README.md has no '## Settings' section"
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and VARIABLE.fullmatch(cells[0].strip("`")):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def variables_in_code() -> dict[str, str]:
    """Every ASSISTANT_* name in the source (code, comments and docstrings alike), with one place it appears."""
    found: dict[str, str] = {}
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.is_file() else [*path.rglob("*.py"), *path.rglob("*.sh")]
        for file in files:
            for name in VARIABLE.findall(file.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(name, str(file.relative_to(ROOT)))
    return found


def field_variables() -> dict[str, object]:
    return {f"ASSISTANT_{f.name.upper()}": (f.default if f.default is not MISSING else None) for f in fields(Settings)}


def written(default) -> str:
    """How a default is written in the table: `2048`, `0.85`, `true`, `""`, `"auto"`."""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f"`{json.dumps(default)}`"
    return f"`{default}`"


def test_every_settings_field_has_a_row_with_its_default():
    rows = settings_rows()
    missing = sorted(set(field_variables()) - set(rows))
    assert not missing, f"Settings fields missing from README.md's Settings table: {missing}"
    for name, default in field_variables().items():
        if isinstance(default, (bool, int, float, str)):  # paths are described in words
            assert written(default) in rows[name], f"{name}: default {written(default)}, README says {rows[name]}"


def test_every_assistant_variable_in_the_code_has_a_row():
    rows = settings_rows()
    missing = {name: where for name, where in variables_in_code().items() if name not in rows}
    assert not missing, f"ASSISTANT_* variables in the code missing from README.md's Settings tables: {missing}"


def test_no_row_names_a_variable_nothing_reads():
    stale = set(settings_rows()) - set(field_variables()) - set(variables_in_code())
    assert not stale, f"README.md's Settings tables name variables the code does not read: {sorted(stale)}"
