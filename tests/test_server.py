"""The HTTP API on the real stack: OpenAI-compatible chat, SSE streaming, 32 concurrent mixed-domain
requests each answered by its own adapter, clear 4xx errors, API keys."""
from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest

from assistant.domains import get_domain
from helpers.data import qa_row
from helpers.live_server import serve_in_thread

pytestmark = pytest.mark.engine
DOMAINS = ["healthcare", "legal", "finance", "retail", "manufacturing"]


@pytest.fixture(scope="module")
def server(platform):
    platform.settings.api_keys = json.dumps({"finance": ["fin-key"], "*": ["admin-key"]})
    try:
        with serve_in_thread(platform) as url:
            yield url
    finally:
        platform.settings.api_keys = ""


def auth(domain):
    return {"Authorization": f"Bearer {'fin-key' if domain == 'finance' else 'admin-key'}"}


def body(domain, question, **extra):
    return {"model": domain, "messages": [{"role": "user", "content": question}], **extra}


def test_health_and_models(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["engine"] == "alive"
    assert "domains" not in health  # keys are set: the health check names no domain
    models = {m["id"]: m for m in httpx.get(f"{server}/v1/models", headers=auth("legal")).json()["data"]}
    assert set(models) == set(DOMAINS)
    for name, m in models.items():
        assert m["adapter"] == f"{name}@{m['adapter_version']}"


def test_32_concurrent_requests_each_answered_by_its_own_adapter(server):
    jobs = []
    for i in range(32):
        domain = DOMAINS[i % 5]
        row = qa_row(domain, index=i // 5)
        scope = get_domain(domain).scope_filter(row)
        jobs.append((domain, body(domain, row["question"], filter=scope, max_tokens=48)))
    started = time.time()
    with httpx.Client(timeout=600) as client, cf.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda j: client.post(f"{server}/v1/chat/completions", json=j[1],
                                                        headers=auth(j[0])), jobs))
    elapsed = time.time() - started
    for (domain, _), resp in zip(jobs, responses):
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["model"] == domain and data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["content"]
        meta = data["assistant"]
        assert meta["abstained"] or meta["adapter"].startswith(domain + "@"), (domain, meta)
        if not meta["abstained"]:
            assert meta["adapter"] == f"{domain}@{get_domain(domain).adapter_manifest['version']}"
    assert elapsed < 300, f"32 concurrent requests took {elapsed:.0f} s"


def test_stream_is_server_sent_events_with_citations_at_the_end(server):
    row = qa_row("manufacturing")
    with httpx.stream("POST", f"{server}/v1/chat/completions", headers=auth("manufacturing"), timeout=300,
                      json=body("manufacturing", row["question"], stream=True)) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    last = events[-1]
    assert len(events) > 3 and text.strip() and last["choices"][0]["finish_reason"] == "stop"
    assert "citations" in last and "assistant" in last


@pytest.mark.parametrize("payload, status, message", [
    (body("legal", ""), 400, "empty"),
    (body("legal", "x" * 100_000), 413, "limit is"),
    (body("astrology", "Will I be rich?"), 404, "unknown model 'astrology'"),
    ({"model": "legal"}, 400, "messages"),
    (body("legal", "What data is collected?", max_tokens=100_000), 400, "max_tokens"),
])
def test_bad_requests_get_clear_4xx(server, payload, status, message):
    resp = httpx.post(f"{server}/v1/chat/completions", json=payload, headers=auth("legal"), timeout=60)
    assert resp.status_code == status and message in resp.json()["error"]["message"]


def test_invalid_json_and_api_keys(server):
    resp = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", timeout=60,
                      headers={"content-type": "application/json", **auth("legal")})
    assert resp.status_code == 400 and "invalid request body" in resp.json()["error"]["message"]
    q = body("finance", "What was the revenue in 2019?", max_tokens=8)
    assert httpx.post(f"{server}/v1/chat/completions", json=q, timeout=60).status_code == 401
    wrong = httpx.post(f"{server}/v1/chat/completions", json=q, headers={"Authorization": "Bearer nope"}, timeout=60)
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    ok = httpx.post(f"{server}/v1/chat/completions", json=q, headers={"Authorization": "Bearer fin-key"}, timeout=300)
    assert ok.status_code == 200
    other = httpx.post(f"{server}/v1/chat/completions", json=body("legal", "q?", max_tokens=8),
                       headers={"Authorization": "Bearer fin-key"}, timeout=60)
    assert other.status_code == 401  # a finance key does not open legal


def test_hot_reload_serves_a_new_adapter_version_without_restart(server, platform, tmp_path):
    import shutil

    dom = get_domain("manufacturing")
    new = tmp_path / "manufacturing-v2"
    shutil.copytree(dom.adapter_path, new)
    manifest = json.loads((new / "manifest.json").read_text())
    original = manifest["version"]
    manifest["version"] = "reload-test"
    (new / "manifest.json").write_text(json.dumps(manifest))
    admin = {"Authorization": "Bearer admin-key"}
    url = f"{server}/v1/adapters/manufacturing/reload"
    assert httpx.post(url, json={"path": str(new)}, headers={"Authorization": "Bearer fin-key"}).status_code == 401
    bad = httpx.post(url, json={"path": str(tmp_path / "missing")}, headers=admin)
    assert bad.status_code == 400 and "does not exist" in bad.json()["error"]["message"]
    wrong_base = tmp_path / "wrong-base"
    shutil.copytree(new, wrong_base)
    (wrong_base / "manifest.json").write_text(json.dumps(manifest | {"base_model_sha256": "0" * 64}))
    refused = httpx.post(url, json={"path": str(wrong_base)}, headers=admin)
    assert refused.status_code == 400 and "trained on base model" in refused.json()["error"]["message"]
    try:
        r = httpx.post(url, json={"path": str(new)}, headers=admin, timeout=120)
        assert r.status_code == 200 and r.json()["adapter"] == "manufacturing@reload-test"
        models = {m["id"]: m for m in httpx.get(f"{server}/v1/models", headers=admin).json()["data"]}
        assert models["manufacturing"]["adapter_version"] == "reload-test"
        row = qa_row("manufacturing")
        body = {"model": "manufacturing", "messages": [{"role": "user", "content": row["question"]}]}
        answer = httpx.post(f"{server}/v1/chat/completions", json=body, headers=admin, timeout=300).json()
        assert answer["assistant"]["adapter"] == "manufacturing@reload-test"
    finally:
        back = httpx.post(url, json={}, headers=admin, timeout=120)
        assert back.status_code == 200 and back.json()["adapter_version"] == original


def test_bad_adapter_reloads_are_refused_and_every_domain_keeps_serving(server, tmp_path):
    """A truncated, pickle-only or tampered adapter is refused with a 400 naming the reason; the old version stays
    current, and the engine keeps answering for that domain and the others (issue 17: one bad reload used to
    make vLLM's engine core die and take every domain down)."""
    import shutil

    admin = {"Authorization": "Bearer admin-key"}
    url = f"{server}/v1/adapters/legal/reload"
    before = {m["id"]: m["adapter_version"] for m in httpx.get(f"{server}/v1/models", headers=admin).json()["data"]}
    source = get_domain("legal").adapter_path
    broken = {}
    for kind in ("truncated", "pickle", "tampered"):
        path = tmp_path / kind
        shutil.copytree(source, path)
        manifest = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps(manifest | {"version": f"{kind}-1"}))
        weights = path / "adapter_model.safetensors"
        if kind == "truncated":
            weights.write_bytes(weights.read_bytes()[:100_000])
        elif kind == "pickle":
            weights.rename(path / "adapter_model.bin")
        else:
            data = bytearray(weights.read_bytes())
            data[-8:] = b"\x7f" * 8  # the last weights changed, the header and size kept
            weights.write_bytes(bytes(data))
        broken[kind] = path
    reasons = {"truncated": "sha256 differs", "pickle": "pickle", "tampered": "sha256 differs"}
    for kind, path in broken.items():
        resp = httpx.post(url, json={"path": str(path)}, headers=admin, timeout=120)
        assert resp.status_code == 400 and reasons[kind] in resp.json()["error"]["message"], (kind, resp.text)
    after = {m["id"]: m["adapter_version"] for m in httpx.get(f"{server}/v1/models", headers=admin).json()["data"]}
    assert after == before
    for domain in ("legal", "finance"):
        row = qa_row(domain)
        resp = httpx.post(f"{server}/v1/chat/completions", headers=admin, timeout=300,
                          json=body(domain, row["question"], filter=get_domain(domain).scope_filter(row),
                                    max_tokens=16))
        assert resp.status_code == 200, resp.text
        meta = resp.json()["assistant"]
        assert meta["abstained"] or meta["adapter"] == f"{domain}@{before[domain]}"
