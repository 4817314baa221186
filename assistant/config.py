"""Settings: where data lives, which models and backends to use.

Resolution order for every field: explicit argument > environment variable (ASSISTANT_*) >
`assistant.toml` in the data directory or repo root > default. The defaults are the embedded
stack: in-process CPU vLLM, the packaged SmolLM2-135M-Instruct, the packaged MiniLM embedder and
Qdrant's embedded engine.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from assistant.errors import SettingsError

REPO_ROOT = Path(__file__).resolve().parent.parent

# Nothing in this project may reach a model hub at run time.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    # vLLM logs to stdout by default, which would corrupt `--json` output and SSE streams.
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    "VLLM_LOGGING_LEVEL": "WARNING",
}


def configure_environment() -> None:
    """Set the offline, no-telemetry environment (values the user already set win). Called by every entry
    point (CLI, server, app, `Platform.load`, tests) before transformers, vLLM or Gradio are imported."""
    for var, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(var, value)


def default_data_dir() -> Path:
    env = os.environ.get("ASSISTANT_HOME")
    if env:
        return Path(env).expanduser().resolve()
    # A source checkout keeps its data next to the code; an installed package uses the user cache.
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "domain-assistant"


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    domains_dir: Path = REPO_ROOT / "domains"
    # A local Hugging Face model directory; empty = the packaged SmolLM2 prepared by `assistant setup`.
    base_model: str = ""
    embed_model: str = ""
    # How documents and untuned queries are embedded: "openvino" (the IR `assistant setup` exports; 2-3x torch
    # here, bench/embedding.py) or "torch" (sentence-transformers as loaded). Query encoders always run on torch.
    embed_runtime: str = "openvino"
    embed_precision: str = "auto"  # openvino only: "auto" (bf16 on CPUs with AMX/AVX512-BF16, else f32), "f32", "bf16"
    # Engine: empty = in-process vLLM; a URL = a remote vLLM OpenAI server started with --enable-lora.
    vllm_url: str = ""
    vllm_api_key: str = ""
    dtype: str = "auto"
    max_model_len: int = 2048
    max_loras: int = 8
    max_lora_rank: int = 16
    max_cpu_loras: int = 32
    max_num_seqs: int = 64
    kv_cache_gib: int = 2  # CPU only: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool = True
    # Answers that do not depend on what else is in the batch (assistant/serving/vllm_plugin.py): fixed-tile GEMMs
    # on CPU, vLLM's batch-invariant kernels on CUDA; no chunked prefill. Costs speed (README, Operations).
    batch_invariant: bool = False
    # Store: empty = embedded Qdrant engine under data_dir; a URL = Qdrant server/cluster.
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    # HTTP API keys: JSON {"legal": ["key1"], "*": ["admin-key"]}; empty = no keys required.
    api_keys: str = ""
    # Named users (app logins and HTTP keys, private uploads): JSON
    # {"alice": {"password": "...", "api_keys": ["..."], "admin": false}}; empty = none (assistant/users.py).
    users: str = ""
    max_upload_bytes: int = 50_000_000          # one uploaded file
    max_upload_files: int = 2000                # files in one upload
    max_upload_request_bytes: int = 500_000_000  # the body of one upload request (the other routes: max_request_bytes)
    max_question_chars: int = 4000
    max_tokens_limit: int = 512
    max_request_bytes: int = 1_000_000  # HTTP request bodies over this get 413 before they are read

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def user_domains_dir(self) -> Path:
        """Where `new-domain` writes new packages: the data directory, never the source checkout, whose packaged
        domains stay in `domains_dir`. Lookup searches both (assistant/domains.py)."""
        return self.data_dir / "domains"

    @classmethod
    def load(cls, **overrides) -> Settings:
        values: dict = {}
        for candidate in (REPO_ROOT / "assistant.toml", default_data_dir() / "assistant.toml"):
            if candidate.exists():
                with candidate.open("rb") as fh:
                    values.update(tomllib.load(fh))
        for f in fields(cls):
            env = os.environ.get(f"ASSISTANT_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings = cls()
        for f in fields(cls):
            if f.name in values:
                setattr(settings, f.name, _coerce(getattr(settings, f.name), values[f.name], f.name))
        return settings


def _coerce(default, value, name):
    if isinstance(default, Path):
        return Path(value).expanduser().resolve()
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"setting {name}: expected a boolean, got {value!r}")
    try:
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: expected {type(default).__name__}, got {value!r}") from exc
