"""The package graph, read from the code (every import statement, at module level or inside a function):
`indexing` imports nothing of `assistant` or `eval`; `assistant` imports nothing of `eval`; no package cycles;
the app and the HTTP server talk to the SDK face (`assistant/__init__.py`) only. Also: the linter is clean.

Run the same check by hand: `.venv/bin/python -m pytest tests/test_architecture.py -q`."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assistant", "indexing", "eval")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module this file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in imported_modules(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != pkg:
                    edges[pkg].add(top)
    return edges


def test_layering_has_no_upward_imports_and_no_cycles():
    edges = package_edges()
    assert "assistant" not in edges["indexing"] and "eval" not in edges["indexing"], edges
    assert "eval" not in edges["assistant"], edges
    for a in PACKAGES:
        for b in edges[a]:
            assert a not in edges[b], f"package cycle {a} <-> {b}"


DOORS = [ROOT / "app.py"] + [ROOT / "assistant" / "entrypoints" / f"{name}.py"
                              for name in ("server", "web", "documents_api")]


def test_app_and_server_use_only_the_sdk_face():
    """The app, the HTTP API and its routes reach the platform through the SDK face (or the other doors'
    modules in assistant/entrypoints)."""
    for path in DOORS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in modules if m.split(".")[0] in PACKAGES}
        past = {m for m in ours if m != "assistant" and not m.startswith("assistant.entrypoints.")}
        assert not past, f"{path.name} reaches past the SDK face: {sorted(past)}"


def test_importing_the_package_sets_no_environment():
    code = ("import os; before = dict(os.environ); import assistant, assistant.config, assistant.platform; "
            "changed = {k for k in os.environ if os.environ.get(k) != before.get(k)}; print(sorted(changed))")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_LOGGING_STREAM", "GRADIO_ANALYTICS_ENABLED")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.fail("ruff is not installed in the project's environment (it is in the [test] extra)")
    out = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
