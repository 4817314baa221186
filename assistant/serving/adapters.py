"""LoRA adapters as the engine sees them: validation and a stable identity per version.

vLLM caches prefixes per adapter *name* and keys loaded weights by the int id, so every adapter
version gets its own name (`domain@version`) and its own int id (vLLM issues 30931, 42125).
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AdapterError

__all__ = ["Adapter", "AdapterError", "AdapterRegistry", "adapter_version", "read_adapter_config"]


@dataclass(frozen=True)
class Adapter:
    name: str        # domain / user-facing name
    version: str     # manifest version, else a content hash
    path: Path
    lora_id: int     # unique per (name, version) within one engine
    rank: int

    @property
    def served_name(self) -> str:
        return f"{self.name}@{self.version}"


def read_adapter_config(path: Path) -> dict:
    path = Path(path)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterError(f"adapter {path}: no adapter_config.json (not a peft LoRA directory)")
    weights = [p for p in (path / "adapter_model.safetensors", path / "adapter_model.bin") if p.is_file()]
    if not weights:
        raise AdapterError(f"adapter {path}: no adapter_model.safetensors")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"adapter {path}: adapter_config.json is not valid JSON ({exc})") from exc
    if cfg.get("peft_type") != "LORA":
        raise AdapterError(f"adapter {path}: peft_type {cfg.get('peft_type')!r}; vLLM serves only LORA")
    if cfg.get("use_dora"):
        raise AdapterError(f"adapter {path}: DoRA adapters are not servable by vLLM; train plain LoRA or rsLoRA")
    if cfg.get("modules_to_save"):
        raise AdapterError(f"adapter {path}: modules_to_save={cfg['modules_to_save']} is not servable by vLLM")
    return cfg


def read_manifest_if_any(path: Path) -> dict | None:
    """The adapter's manifest.json, or None when it has none."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"adapter {path}: manifest.json is not valid JSON ({exc})") from exc


def adapter_version(path: Path, manifest: dict | None = None) -> str:
    """Version from manifest.json when present, else the first 12 hex digits of the weights' sha256."""
    version = (manifest if manifest is not None else read_manifest_if_any(path) or {}).get("version")
    if version:
        return str(version)
    weights = Path(path) / "adapter_model.safetensors"
    if not weights.is_file():
        weights = Path(path) / "adapter_model.bin"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


class AdapterRegistry:
    """name -> current Adapter; hands out one unique LoRA int id per (name, version)."""

    def __init__(self, max_rank: int, base_config: dict | None = None):
        self.max_rank = max_rank
        self.base_config = base_config  # the base model's config.json: adapter shapes are checked against it
        self._current: dict[str, Adapter] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def prepare(self, name: str, path: str | Path, version: str | None = None) -> Adapter:
        """The Adapter a version would be served as (its own LoRA id), checked, without serving it yet: the
        engine loads it first and calls `activate` only once that worked, so a failed load changes nothing."""
        from assistant.serving.adapter_integrity import verify_weights

        if not name or "@" in name:
            raise AdapterError(f"adapter name {name!r}: must be non-empty and must not contain '@'")
        path = Path(path).expanduser().resolve()
        cfg = read_adapter_config(path)
        rank = int(cfg.get("r", 0))
        if rank > self.max_rank:
            raise AdapterError(f"adapter {name}: rank {rank} exceeds the engine's max_lora_rank {self.max_rank}")
        manifest = read_manifest_if_any(path)
        verify_weights(path, cfg, manifest, self.base_config)
        version = version or adapter_version(path, manifest or {})
        with self._lock:
            lora_id = self._ids.setdefault((name, version), len(self._ids) + 1)
        return Adapter(name=name, version=version, path=path, lora_id=lora_id, rank=rank)

    def activate(self, adapter: Adapter) -> Adapter:
        with self._lock:
            self._current[adapter.name] = adapter
        return adapter

    def register(self, name: str, path: str | Path, version: str | None = None) -> Adapter:
        """prepare + activate, for engines that load an adapter lazily."""
        return self.activate(self.prepare(name, path, version))

    def get(self, name: str) -> Adapter:
        try:
            return self._current[name]
        except KeyError:
            known = ", ".join(sorted(self._current)) or "none"
            raise AdapterError(f"no adapter named {name!r} is registered (registered: {known})") from None

    def __contains__(self, name: str) -> bool:
        return name in self._current

    def all(self) -> list[Adapter]:
        return list(self._current.values())
