"""The CLI beside a running service: `assistant serve` publishes `<data_dir>/service.json`, and `ask`, `retrieve`
and `index --source` on the same data directory send their work to it over HTTP instead of failing on its
index lock. One real `assistant serve` (its own data directory, the prepared models); the commands run as
subprocesses, as a user would type them. A local `ask` could not succeed while the service holds the index
(it exits 4 in a second), so a 0 exit with the service's note and a wall time far below an engine start
means the service answered."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from assistant.answer import Answer
from assistant.config import Settings
from assistant.entrypoints.service_file import ServiceInfo, find_running, publish, service_path
from helpers.data import qa_row
from helpers.services import running, service_env

pytestmark = pytest.mark.engine
ENGINE_START_S = 25  # the engine alone starts in ~27 s here (README figures); a forwarded command is far below
CORPUS = Path(__file__).resolve().parents[1] / "domains" / "manufacturing" / "data" / "corpus.jsonl"


def cli(env: dict, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "assistant", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.perf_counter() - started


@pytest.fixture(scope="module")
def service(tmp_path_factory, prepared, settings):
    tmp = tmp_path_factory.mktemp("cli_service")
    home = tmp / "home"
    shutil.copytree(settings.data_dir / "index" / "manufacturing", home / "index" / "manufacturing")
    env = service_env(home, prepared)
    log = tmp / "serve.log"
    with running(["-m", "assistant", "serve", "--domain", "manufacturing"], env, log, "/health") as (proc, url, _):
        yield SimpleNamespace(proc=proc, url=url, env=env, home=home, log=log, tmp=tmp)


def test_the_service_publishes_where_it_listens(service):
    info = find_running(Settings.load(data_dir=service.home))
    assert info is not None and (info.url, info.pid, info.domains) == (service.url, service.proc.pid, ["manufacturing"])
    assert json.loads(service_path(Settings.load(data_dir=service.home)).read_text())["url"] == service.url


def test_ask_is_answered_by_the_running_service(service):
    question = qa_row("manufacturing")["question"]
    note = f"answered by the running service at {service.url}"
    done, wall = cli(service.env, "ask", "manufacturing", question)
    assert done.returncode == 0, done.stderr[-3000:]
    assert note in done.stderr and wall < ENGINE_START_S, (wall, done.stderr[-2000:])
    assert done.stdout.strip() and "-- manufacturing@" in done.stderr  # the answer, then the adapter's status line

    done, wall = cli(service.env, "ask", "manufacturing", question, "--json")
    assert done.returncode == 0 and note in done.stderr and wall < ENGINE_START_S, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    local_shape = Answer("d", "q", "", [], None, None, False).to_dict(passages=False)
    assert set(answer) == set(local_shape) and answer["domain"] == "manufacturing" and answer["question"] == question
    assert answer["answer"].strip() and answer["adapter"].startswith("manufacturing@") and answer["usage"]


def test_retrieve_is_answered_by_the_running_service(service):
    done, wall = cli(service.env, "retrieve", "manufacturing", "Which sensor detects bearing faults in a motor?",
                     "--k", "3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"answered by the running service at {service.url}" in done.stderr and wall < ENGINE_START_S
    result = json.loads(done.stdout)
    corpus_ids = {json.loads(line)["doc_id"] for line in CORPUS.open()}
    assert len(result["passages"]) == 3 and {p["doc_id"] for p in result["passages"]} <= corpus_ids
    assert all(p["text"] and p["score"] > 0 for p in result["passages"])


def test_index_source_is_uploaded_to_the_running_service(service):
    docs = service.tmp / "docs"
    docs.mkdir()
    (docs / "pumps.md").write_text("# Pump cavitation\n\nA centrifugal pump cavitates when the suction pressure "
                                   "falls below the vapour pressure of the water.\n")
    (docs / "fans.rst").write_text("Fan belts\n=========\n\n.. note::\n\n   An over-tensioned belt wears the fan "
                                   "bearings out in weeks.\n")
    (docs / "empty.txt").write_text("")
    (docs / "photo.xyz").write_bytes(b"\x89PNG")
    done, wall = cli(service.env, "index", "manufacturing", "--source", str(docs))
    assert done.returncode == 1, done.stderr[-3000:]  # two files failed, as the local command reports them
    assert done.stdout.startswith("manufacturing: 2 documents, ") and wall < ENGINE_START_S, (wall, done.stdout)
    assert "empty.txt: empty file" in done.stderr and "photo.xyz: unsupported file type" in done.stderr
    assert f"indexed by the running service at {service.url}" in done.stderr

    done, _ = cli(service.env, "retrieve", "manufacturing", "why does a centrifugal pump cavitate?", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["passages"][0]["doc_id"] == "upload/_public/pumps.md"
    done, _ = cli(service.env, "index", "manufacturing")
    assert done.returncode == 4 and "only `--source PATH` is sent to it" in done.stderr


def test_a_clean_stop_removes_the_service_file_and_a_stale_one_is_ignored(service):
    path = service_path(Settings.load(data_dir=service.home))
    query = ["retrieve", "manufacturing", "Which sensor detects bearing faults in a motor?", "--k", "3", "--json"]
    done, _ = cli(service.env, *query)
    forwarded = json.loads(done.stdout)["passages"]
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=60) == 0
    assert not path.exists()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"url": service.url, "pid": gone.pid, "domains": ["manufacturing"], "started": "2026-01-01T00:00:00Z",
             "process_started": time.time()}
    path.write_text(json.dumps(stale))
    assert find_running(Settings.load(data_dir=service.home)) is None
    path.write_text(json.dumps({**stale, "pid": os.getpid()}))  # alive, but another process than the one named
    assert find_running(Settings.load(data_dir=service.home)) is None

    # the command runs locally now (the service's index is free): the same passages, no note
    done, _ = cli(service.env, *query)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running service" not in done.stderr
    local = json.loads(done.stdout)["passages"]
    assert [(p["id"], round(p["score"], 4)) for p in local] == [(p["id"], round(p["score"], 4)) for p in forwarded]


def test_publish_writes_atomically_and_removes_only_its_own_file(tmp_path):
    settings = Settings.load(data_dir=tmp_path)
    with publish(settings, "http://127.0.0.1:1", ["legal"]) as info:
        assert find_running(settings) == info and not list(tmp_path.glob(".service.json.*"))
    assert not service_path(settings).exists()
    with publish(settings, "http://127.0.0.1:1", ["legal"]):
        newer = ServiceInfo("http://127.0.0.1:2", os.getpid(), ["legal"], "now", find_running(settings).process_started)
        service_path(settings).write_text(json.dumps(newer.__dict__))  # another service took over the file
    assert find_running(settings) == newer  # left in place
