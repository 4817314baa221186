"""Fault injection on the real stack: a bad request, file, stream, process or signal never takes the service
down or loses data. One test (or a few) per finding of the fail-safe issue; the bad-adapter findings are in
test_adapter_integrity.py and test_server.py.

In-process tests use the session's engine and store behind a real uvicorn server; the process tests start
`assistant serve` and `app.py` as a user would (their own data directory, the prepared models) and kill or
signal them for real.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from helpers.data import qa_row
from helpers.files import make_mixed_folder
from helpers.live_server import free_port, serve_in_thread
from helpers.services import running, service_env

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]
KEYS = {"finance": ["fin-key"], "*": ["admin-key"]}
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture(scope="module")
def server(platform):
    platform.settings.api_keys = json.dumps(KEYS)
    try:
        with serve_in_thread(platform) as url:
            yield url
    finally:
        platform.settings.api_keys = ""


def chat_body(domain: str, question: str, **extra) -> dict:
    return {"model": domain, "messages": [{"role": "user", "content": question}], **extra}


def is_openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "code"} and error["message"]
    return error


# --- 5. bad text and filters: 400s in the OpenAI shape, and the keep-alive connection stays usable -------------

BAD_PAYLOADS = [
    ("lone surrogate", chat_body("legal", "What is collected? \ud800"), "not valid Unicode"),
    ("NUL in question", chat_body("legal", "What\x00 is collected?"), "NUL"),
    ("null filter value", chat_body("legal", "What is collected?", filter={"title": None}), "filter title"),
    ("object filter value", chat_body("legal", "What is collected?", filter={"title": {"foo": 1}}), "filter title"),
    ("list of objects", chat_body("legal", "What is collected?", filter={"title": [{"a": 1}]}), "filter title"),
]


def test_bad_text_and_filters_are_400_and_the_connection_survives(server):
    with httpx.Client(base_url=server, headers=ADMIN, timeout=120) as client:
        for name, payload, fragment in BAD_PAYLOADS:
            # json.dumps escapes the surrogate as \ud800, which is valid JSON (httpx's own encoder would refuse it)
            resp = client.post("/v1/chat/completions", content=json.dumps(payload).encode(),
                               headers={"content-type": "application/json"})
            error = is_openai_error(resp, 400)
            assert fragment in error["message"], (name, error)
        resp = client.post("/v1/adapters/legal/reload", json={"path": "/tmp/adapter\x00evil"})
        assert "NUL" in is_openai_error(resp, 400)["message"]
        ok = client.post("/v1/chat/completions", json=chat_body("manufacturing", qa_row("manufacturing")["question"],
                                                                 max_tokens=8))
        assert ok.status_code == 200  # the same pooled connection, after six errors


def test_an_unexpected_error_is_a_json_500_and_the_connection_survives(server, platform, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(platform, "chat", broken)
    with httpx.Client(base_url=server, headers=ADMIN, timeout=120) as client:
        error = is_openai_error(client.post("/v1/chat/completions", json=chat_body("legal", "What is collected?")),
                                500)
        assert error["type"] == "server_error" and "injected fault" not in error["message"]  # no internals leaked
        monkeypatch.undo()
        assert client.get("/health").status_code == 200  # same connection, still usable


# --- 8. keys before anything that names a domain; docs and schema need a key; a body limit ---------------------

def test_api_keys_are_checked_before_anything_reveals_a_domain(server):
    unknown = httpx.post(f"{server}/v1/chat/completions", json=chat_body("astrology", "Will I be rich?"))
    assert "legal" not in is_openai_error(unknown, 401)["message"]  # not a 404 listing the domains
    too_long = httpx.post(f"{server}/v1/chat/completions", json=chat_body("legal", "x" * 100_000))
    is_openai_error(too_long, 401)
    for path in ("/v1/models", "/docs", "/openapi.json"):
        is_openai_error(httpx.get(f"{server}{path}"), 401)
    assert httpx.get(f"{server}/openapi.json", headers=ADMIN).status_code == 200
    finance_only = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer fin-key"}).json()["data"]
    assert [m["id"] for m in finance_only] == ["finance"]
    assert len(httpx.get(f"{server}/v1/models", headers=ADMIN).json()["data"]) == 5
    unknown_for_admin = httpx.post(f"{server}/v1/chat/completions", headers=ADMIN,
                                   json=chat_body("astrology", "Will I be rich?"))
    assert "unknown model" in is_openai_error(unknown_for_admin, 404)["message"]


def test_request_body_limit_and_invalid_utf8(server, platform):
    limit = platform.settings.max_request_bytes
    big = json.dumps(chat_body("legal", "y" * (limit + 10))).encode()
    assert "limit" in is_openai_error(httpx.post(f"{server}/v1/chat/completions", content=big, headers=ADMIN,
                                                 timeout=60), 413)["message"]

    def chunked():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    is_openai_error(httpx.post(f"{server}/v1/chat/completions", content=chunked(), headers=ADMIN, timeout=60), 413)
    bad_utf8 = b'{"model": "legal", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    is_openai_error(httpx.post(f"{server}/v1/chat/completions", content=bad_utf8, timeout=60,
                               headers={"content-type": "application/json", **ADMIN}), 400)


# --- 7. a dropped stream stops generating ---------------------------------------------------------------------

def test_a_dropped_stream_aborts_its_generation(server, platform):
    engine = platform.engine
    body = chat_body("retail", "Describe this product in as much detail as you can, feature by feature.",
                     stream=True, max_tokens=400, rag=False)
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{server}/v1/chat/completions", json=body,
                                                            headers=ADMIN) as resp:
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                seen += 1
                if seen == 3:
                    break
        at_disconnect = engine.deltas_generated
    # the response is closed: the server sees the disconnect and aborts the vLLM request
    deadline = time.time() + 20
    while engine.in_flight and time.time() < deadline:
        time.sleep(0.05)
    after = engine.deltas_generated - at_disconnect
    print(f"pieces generated after the disconnect: {after} (max_tokens 400)")
    assert engine.in_flight == 0 and after < 40


# --- 4. ingest: a big document, a document that fails, and new-domain's skipped files --------------------------

def test_a_large_document_is_chunked_in_sections(embedder):
    from indexing.chunking import SECTION_CHARS, chunk_document, sections
    from indexing.documents import SourceDocument

    words = (ROOT / "domains" / "healthcare" / "data" / "corpus.jsonl").read_text().split()
    text = " ".join(words[i % len(words)] for i in range(900_000))  # ~6 MB, one paragraph
    pieces = sections(text)
    assert len(pieces) > 1 and all(len(p) <= SECTION_CHARS for p in pieces)
    assert " ".join(pieces).split() == text.split()  # nothing lost at the cuts
    started = time.time()
    chunks = chunk_document(SourceDocument(doc_id="big", title="big", text=text, source="big.txt", doc_type="txt"))
    print(f"{len(text) / 1e6:.1f} MB -> {len(chunks)} chunks in {time.time() - started:.1f} s")
    assert len(chunks) > 1000
    small = "A short note. It has two sentences."
    assert sections(small) == [small]  # documents under the limit chunk exactly as before


def test_a_document_that_cannot_be_chunked_is_reported_and_the_rest_indexed(tmp_path, embedder):
    from indexing.documents import SourceDocument
    from indexing.ingest import ingest_documents
    from indexing.store import EdgeStore

    store = EdgeStore(tmp_path / "index")
    good = SourceDocument(doc_id="good", title="Pumps", text="Pumps cavitate when suction pressure drops.",
                          source="good.txt", doc_type="txt")
    kept = SourceDocument(doc_id="kept", title="Fans", text="Fan imbalance raises 1x vibration.", source="kept.txt",
                          doc_type="txt")
    try:
        ingest_documents(store, "docs", [good, kept], embedder, progress=False)
        # injected: what a reader bug would hand over
        broken = SourceDocument(doc_id="kept", title="Fans", text=None, source="kept.txt", doc_type="txt")
        report = ingest_documents(store, "docs", [good, broken], embedder, prune=True, progress=False)
        assert len(report.errors) == 1 and "could not be chunked" in report.errors[0]
        assert {p["doc_id"] for _, p in store.scan("docs", ["doc_id"])} == {"good", "kept"}  # nothing lost
    finally:
        store.close()


def test_new_domain_reports_every_skipped_file_and_fails_when_none_is_readable(tmp_path, prepared):
    from assistant.building.workflows import new_domain
    from assistant.config import Settings
    from assistant.errors import ScaffoldError

    settings = Settings.load(data_dir=tmp_path / "data", domains_dir=tmp_path / "domains",
                             base_model=str(prepared.base_model), embed_model=str(prepared.embed_model))
    expected = make_mixed_folder(tmp_path / "docs")
    lines: list[str] = []
    report = new_domain("plant-notes", tmp_path / "docs", settings, progress=lines.append)
    bad = {rel for rel, want in expected.items() if want != "ok"}
    assert len(report.skipped) == len(bad) and report.documents == len(expected) - len(bad)
    for rel in bad:
        assert any(rel in s and expected[rel] in s for s in report.skipped), rel
        assert any(rel in line for line in lines if "skipped" in line)  # shown while it runs
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "empty.txt").write_text("")
    (only_bad / "binary.txt").write_bytes(b"\x00\x01")
    with pytest.raises(ScaffoldError) as refused:
        new_domain("nothing-here", only_bad, settings)
    assert "empty.txt" in str(refused.value) and "binary.txt" in str(refused.value)
    assert not (settings.user_domains_dir / "nothing-here").exists()
    assert report.root == settings.user_domains_dir / "plant-notes"  # the data directory, not domains_dir


# --- 3, 6 and the dead engine: real processes ------------------------------------------------------------------

def assert_all_gone(procs: list[psutil.Process], timeout: float = 30) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    names = [f"{p.pid} {p.name()}" for p in alive if p.is_running()]
    for p in alive:
        p.kill()
    assert not names, f"left running: {names}"


@pytest.fixture()
def service_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return home


SERVE = ["-m", "assistant", "serve", "--domain", "manufacturing"]


def test_one_process_per_data_dir_and_sigterm_leaves_no_engine_process(service_home, prepared, tmp_path):
    env = service_env(service_home, prepared)
    log = tmp_path / "serve.log"
    with running(SERVE, env, log, "/health") as (server, _, children):
        assert any("VLLM" in p.name() or "VLLM" in " ".join(p.cmdline()) for p in children)
        # a question is sent to the running service (tests/test_cli_service.py); a second service is refused
        asked = subprocess.run([sys.executable, "-m", "assistant", "ask", "manufacturing",
                                "Which sensor detects rotor winding faults?"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
        assert asked.returncode == 0 and "answered by the running service" in asked.stderr, asked.stderr[-2000:]
        started = time.time()
        other = subprocess.run([sys.executable, "-m", "assistant", "serve", "--port", str(free_port()),
                                "--domain", "manufacturing"], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)
        elapsed = time.time() - started
        print(f"a second `assistant serve` on a held data directory failed in {elapsed:.1f} s")
        assert other.returncode == 4, other.stderr[-2000:]
        assert f'"pid": {server.pid}' in other.stderr and "serve" in other.stderr
        assert "Traceback" not in other.stderr and elapsed < 20  # refused before any vLLM start (60+ s)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert_all_gone(children)


def test_a_dead_engine_is_503_and_the_service_exits_for_its_supervisor(service_home, prepared, tmp_path):
    from assistant.entrypoints.lifecycle import EXIT_ENGINE_DEAD

    log = tmp_path / "serve.log"
    with running(SERVE, service_env(service_home, prepared), log, "/health") as (server, base, children):
        core = next(p for p in children if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline()))
        core.kill()  # the engine-core process dies (OOM killer, a crash)
        statuses = []
        deadline = time.time() + 30
        while time.time() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"{base}/health", timeout=5)
                statuses.append(health.status_code)
                if health.status_code == 503:
                    assert health.json()["engine"] == "dead"
                    chat = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                                      json=chat_body("manufacturing", "Which sensor detects bearing wear?"))
                    statuses.append(chat.status_code)
                    assert chat.status_code == 503 and chat.json()["error"]["type"] == "service_unavailable"
                    break
            except httpx.HTTPError:
                break  # already exiting
            time.sleep(0.2)
        assert server.wait(timeout=60) == EXIT_ENGINE_DEAD, log.read_text()[-3000:]
        print(f"after the engine died: {statuses}, exit {server.returncode}")
        assert_all_gone(children)


def test_app_sigterm_leaves_no_engine_process(service_home, prepared, tmp_path):
    app_args = ["app.py", "--domain", "manufacturing"]
    with running(app_args, service_env(service_home, prepared), tmp_path / "app.log", "/") as (app, _, children):
        assert children
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
        assert_all_gone(children)


# --- 2. a broken adapter at start-up takes down its domain only -----------------------------------------------

def test_a_broken_adapter_at_start_up_makes_only_its_domain_unavailable(engine, prepared, settings, tmp_path):
    import dataclasses
    import shutil

    from assistant.domains import load_domain
    from assistant.errors import EngineUnavailableError
    from assistant.platform import Platform

    package = tmp_path / "domains" / "manufacturing"
    shutil.copytree(ROOT / "domains" / "manufacturing", package)
    weights = package / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    own = dataclasses.replace(settings, data_dir=tmp_path / "data", base_model=str(prepared.base_model),
                              embed_model=str(prepared.embed_model))
    platform = Platform.load([load_domain(package)], own, engine=engine, progress=False)
    try:
        assert "manufacturing" in platform.refused_adapters
        with pytest.raises(EngineUnavailableError, match="refused at start-up"):
            platform.ask("manufacturing", "Which sensor detects bearing wear?")
        assert platform.info()[0]["unavailable"]
        base = platform.ask("manufacturing", "Which sensor detects bearing wear?", lora=False, max_tokens=8)
        assert base.adapter is None  # the base model still answers when asked for explicitly
        fixed = platform.reload_adapter("manufacturing", ROOT / "domains" / "manufacturing" / "adapter")
        assert fixed.version and "manufacturing" not in platform.refused_adapters
    finally:
        platform.close()
