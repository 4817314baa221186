"""`assistant setup`: packaged models verified by sha256, converted once, idempotent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from assistant.config import Settings
from assistant.serving import models
from assistant.serving.models import ModelError, prepare


def test_setup_cli_prints_paths_and_is_idempotent(prepared, settings):
    weights = prepared.base_model / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "assistant", "setup", "--json"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ASSISTANT_HOME": str(settings.data_dir)})
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["base_model"] == str(prepared.base_model)
    assert info["embed_model"] == str(prepared.embed_model)
    assert info["base_model_sha256"] == models.BASE_GGUF_SHA256
    assert "converting" not in proc.stderr and weights.stat().st_mtime_ns == mtime  # nothing redone
    assert elapsed < 60


def test_converted_checkpoint_keeps_chat_template_and_rope_theta(prepared):
    cfg = json.loads((prepared.base_model / "config.json").read_text())
    assert cfg["rope_theta"] == 100000.0
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(prepared.base_model))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_corrupt_gguf_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / models.BASE_GGUF
    shutil.copy(models.packaged_gguf(), bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\xff\x00\xff")
    monkeypatch.setattr(models, "packaged_gguf", lambda: bad)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        prepare(Settings.load(data_dir=tmp_path / "data"), progress=lambda *_: None)
    assert not (tmp_path / "data" / "models" / models.BASE_NAME).exists()


def test_missing_embedder_file_is_refused(tmp_path, monkeypatch, prepared):
    fake_pkg = tmp_path / "pkg"
    shutil.copytree(prepared.embed_model, fake_pkg / "model")
    (fake_pkg / "model" / "vocab.txt").unlink()
    monkeypatch.setattr(models, "_package_dir", lambda package, pip_name: fake_pkg)
    with pytest.raises(ModelError, match="file missing: .*vocab.txt"):
        models.prepare_embedder(Settings.load(data_dir=tmp_path / "data"), progress=lambda *_: None)


def test_local_model_directory_replaces_the_default(prepared, tmp_path):
    settings = Settings.load(base_model=str(prepared.base_model), data_dir=tmp_path)
    path, digest = models.prepare_base_model(settings)
    assert path == prepared.base_model and len(digest) == 64
    with pytest.raises(ModelError, match="no config.json"):
        models.prepare_base_model(Settings.load(base_model=str(tmp_path), data_dir=tmp_path))
