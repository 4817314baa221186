"""The README's Python snippets, run verbatim as plain scripts (no main guard), as a new user would paste them:
each in its own process, on its own data directory (a copy of the indexes; the prepared models)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(python_snippets()) >= 2  # the SDK and the openai client


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_a_readme_snippet_runs_as_a_plain_script(index, tmp_path, prepared, settings):
    code = python_snippets()[index]
    home = tmp_path / "home"
    shutil.copytree(settings.data_dir / "index", home / "index")
    script = tmp_path / f"snippet_{index}.py"
    script.write_text(code)
    env = {**os.environ, "ASSISTANT_HOME": str(home), "ASSISTANT_BASE_MODEL": str(prepared.base_model),
           "ASSISTANT_EMBED_MODEL": str(prepared.embed_model), "ASSISTANT_KV_CACHE_GIB": "1"}
    if "from openai import OpenAI" in code:
        pytest.skip("needs a running service: test_the_openai_snippet_against_the_service runs it")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "bootstrapping phase" not in done.stderr and done.stdout.strip()


def test_the_openai_snippet_against_the_service(tmp_path, prepared, settings):
    """Verbatim but for the port: the service runs on a free one here."""
    from helpers.services import running, service_env

    code = next(c for c in python_snippets() if "from openai import OpenAI" in c)
    home = tmp_path / "home"
    shutil.copytree(settings.data_dir / "index" / "manufacturing", home / "index" / "manufacturing")
    env = service_env(home, prepared)
    with running(["-m", "assistant", "serve", "--domain", "manufacturing"], env, tmp_path / "serve.log",
                 "/health") as (_, base, _children):
        script = tmp_path / "openai_snippet.py"
        script.write_text(code.replace("http://127.0.0.1:8000", base))
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "completion_tokens" in done.stdout
