"""Adapter weights checked before vLLM ever sees them.

A broken adapter handed to vLLM does not fail alone: the engine core dies on the first request that uses it and
every domain goes down with it. So before an adapter is registered (start-up and hot reload) its weights are
checked here: safetensors only (a pickle `.bin` can run code when loaded), the file readable to the end, the
sha256 recorded in `manifest.json` at training time (a file changed under an unchanged version is refused,
since vLLM would keep serving its cached copy of the old one), every tensor a LoRA A or B matrix of a module
named in `adapter_config.json`, shapes that fit the rank and the base model's layer sizes, and finite values.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from assistant.errors import AdapterError

WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
_TENSOR = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:[\w.]+\.)?(\w+)\.lora_([AB])(?:\.default)?\.weight$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _module_shapes(base_config: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer a LoRA may target, from the base model's config.json."""
    hidden = int(base_config["hidden_size"])
    heads = int(base_config["num_attention_heads"])
    head_dim = int(base_config.get("head_dim") or hidden // heads)
    kv = int(base_config.get("num_key_value_heads") or heads) * head_dim
    inter = int(base_config.get("intermediate_size", 4 * hidden))
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
            "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}


def verify_weights(path: str | Path, adapter_config: dict, manifest: dict | None = None,
                   base_config: dict | None = None) -> None:
    """Raise AdapterError (saying which adapter and why) unless the weights are safe and fit to serve."""
    path = Path(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        if (path / PICKLE_FILE).is_file():
            raise AdapterError(f"adapter {path}: {PICKLE_FILE} is a pickle file, which can run code when loaded; "
                               f"only {WEIGHTS_FILE} is served (convert it with safetensors.torch.save_file)")
        raise AdapterError(f"adapter {path}: no {WEIGHTS_FILE}")
    recorded = ((manifest or {}).get("weights_sha256") or {}).get(WEIGHTS_FILE)
    if recorded and file_sha256(weights) != recorded:
        raise AdapterError(f"adapter {path}: {WEIGHTS_FILE} is not the file manifest.json version "
                           f"{(manifest or {}).get('version')!r} was written for (sha256 differs); a changed "
                           f"adapter needs a new version: retrain it or write a new manifest")
    _check_tensors(path, weights, adapter_config, base_config)


def _check_tensors(path: Path, weights: Path, adapter_config: dict, base_config: dict | None) -> None:
    import torch
    from safetensors import safe_open

    rank = int(adapter_config.get("r", 0))
    targets = set(adapter_config.get("target_modules") or [])
    shapes = _module_shapes(base_config) if base_config else {}
    layers = int(base_config["num_hidden_layers"]) if base_config else None
    try:
        with safe_open(str(weights), framework="pt") as fh:
            names = list(fh.keys())
            if not names:
                raise AdapterError(f"adapter {path}: {WEIGHTS_FILE} holds no tensors")
            for name in names:
                match = _TENSOR.search(name)
                if not match:
                    raise AdapterError(f"adapter {path}: tensor {name!r} is not a LoRA A/B matrix of a layer")
                layer, module, side = int(match.group(1)), match.group(2), match.group(3)
                if targets and module not in targets:
                    raise AdapterError(f"adapter {path}: tensor {name!r} is for {module}, which adapter_config.json "
                                       f"does not target ({sorted(targets)})")
                if layers is not None and layer >= layers:
                    raise AdapterError(f"adapter {path}: tensor {name!r} is for layer {layer}; the base model has "
                                       f"{layers}")
                tensor = fh.get_tensor(name)
                want = _want_shape(side, rank, shapes.get(module))
                if tensor.dim() != 2 or any(w is not None and w != got for w, got in zip(want, tensor.shape)):
                    raise AdapterError(f"adapter {path}: tensor {name!r} has shape {list(tensor.shape)}, expected "
                                       f"{[w if w is not None else '*' for w in want]} (rank {rank})")
                if not bool(torch.isfinite(tensor).all()):
                    raise AdapterError(f"adapter {path}: tensor {name!r} holds NaN or infinite values")
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors for damaged files
        raise AdapterError(f"adapter {path}: {WEIGHTS_FILE} cannot be read ({type(exc).__name__}: {exc}); "
                           f"the file is damaged or truncated") from exc


def _want_shape(side: str, rank: int, module_shape: tuple[int, int] | None) -> tuple[int | None, int | None]:
    features_in, features_out = module_shape or (None, None)
    return (rank or None, features_in) if side == "A" else (features_out, rank or None)


def read_base_config(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
