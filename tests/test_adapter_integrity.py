"""Adapter weights are checked before vLLM sees them (issue 17): each kind of damage gets its own clear refusal."""
from __future__ import annotations

import json
import shutil

import pytest

from assistant.domains import get_domain
from assistant.errors import AdapterError
from assistant.serving.adapter_integrity import WEIGHTS_FILE, file_sha256, read_base_config, verify_weights
from assistant.serving.adapters import AdapterRegistry, read_adapter_config


@pytest.fixture
def adapter(tmp_path):
    out = tmp_path / "legal-adapter"
    shutil.copytree(get_domain("legal").adapter_path, out)
    return out


@pytest.fixture(scope="module")
def base_config(prepared):
    return read_base_config(prepared.base_model)


def check(path, base_config):
    verify_weights(path, read_adapter_config(path), json.loads((path / "manifest.json").read_text()), base_config)


def test_the_shipped_adapters_pass_and_record_their_weights(base_config):
    for name in ("healthcare", "legal", "finance", "retail", "manufacturing"):
        path = get_domain(name).adapter_path
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["weights_sha256"][WEIGHTS_FILE] == file_sha256(path / WEIGHTS_FILE)
        check(path, base_config)


def test_truncated_and_corrupt_files_are_refused(adapter, base_config):
    weights = adapter / WEIGHTS_FILE
    data = weights.read_bytes()
    manifest = json.loads((adapter / "manifest.json").read_text())
    del manifest["weights_sha256"]  # so the file itself is what is checked
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="damaged or truncated"):
        check(adapter, base_config)
    weights.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(AdapterError, match="damaged or truncated"):
        check(adapter, base_config)


def test_pickle_weights_are_refused(adapter, base_config):
    (adapter / WEIGHTS_FILE).rename(adapter / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        check(adapter, base_config)


def test_weights_changed_under_an_unchanged_version_are_refused(adapter, base_config):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: v * 40 for k, v in load_file(str(adapter / WEIGHTS_FILE)).items()}
    save_file(tensors, str(adapter / WEIGHTS_FILE))
    with pytest.raises(AdapterError, match="sha256 differs"):
        check(adapter, base_config)
    tensors[next(iter(tensors))][0, 0] = torch.nan  # and without the recorded hash, NaNs are caught
    save_file(tensors, str(adapter / WEIGHTS_FILE))
    manifest = json.loads((adapter / "manifest.json").read_text())
    del manifest["weights_sha256"]
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterError, match="NaN"):
        check(adapter, base_config)


def test_rank_and_shape_mismatches_are_refused(adapter, base_config):
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"r": 4}))
    with pytest.raises(AdapterError, match=r"expected \[4, "):
        check(adapter, base_config)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    other = dict(base_config, hidden_size=base_config["hidden_size"] * 2)
    with pytest.raises(AdapterError, match="has shape"):
        check(adapter, other)
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"target_modules": ["q_proj"]}))
    with pytest.raises(AdapterError, match="does not target"):
        check(adapter, base_config)


def test_a_refused_version_never_becomes_current(adapter, base_config, tmp_path):
    registry = AdapterRegistry(max_rank=8, base_config=base_config)
    good = registry.register("legal", get_domain("legal").adapter_path)
    (adapter / WEIGHTS_FILE).write_bytes(b"broken")
    with pytest.raises(AdapterError):
        registry.register("legal", adapter, version="broken-1")
    assert registry.get("legal") == good
