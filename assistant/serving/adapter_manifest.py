"""Adapter manifests: what an adapter was trained on and from, checked before it is served."""
from __future__ import annotations

import json
from pathlib import Path

from assistant.serving.adapters import AdapterError, read_adapter_config

MANIFEST = "manifest.json"


def read_manifest(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / MANIFEST
    if not path.is_file():
        raise AdapterError(f"adapter {adapter_dir}: no {MANIFEST}; train it with `assistant train` "
                           f"or write one with base_model_sha256 and version")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"adapter {adapter_dir}: {MANIFEST} is not valid JSON ({exc})") from exc


def check_adapter(adapter_dir: str | Path, base_model_sha256: str) -> dict:
    """Refuse an adapter vLLM cannot serve or one trained on a different base model."""
    read_adapter_config(Path(adapter_dir))
    manifest = read_manifest(adapter_dir)
    trained_on = manifest.get("base_model_sha256")
    if trained_on != base_model_sha256:
        raise AdapterError(
            f"adapter {adapter_dir} was trained on base model sha256 {trained_on or '(unknown)'}, but the "
            f"platform runs {base_model_sha256}; retrain it with `assistant train` or configure its base model")
    return manifest


def check_query_encoder(path: str | Path, base_embedder_sha256: str) -> dict:
    """The manifest of a query encoder that may be loaded over this base embedder; raises AdapterError if not."""
    manifest = read_manifest(path)
    if manifest.get("kind") != "query_encoder":
        raise AdapterError(f"{path} is not a query encoder (manifest kind {manifest.get('kind')!r})")
    if manifest.get("base_embedder_sha256") != base_embedder_sha256:
        raise AdapterError(f"query encoder {path} was tuned on embedder {manifest.get('base_embedder_sha256')}, "
                           f"but the platform embeds with {base_embedder_sha256}; re-run `assistant tune-retrieval`")
    return manifest


def write_manifest(adapter_dir: str | Path, manifest: dict) -> Path:
    path = Path(adapter_dir) / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return path
