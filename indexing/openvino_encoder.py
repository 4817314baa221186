"""The embedder's fast path: the same MiniLM weights compiled by OpenVINO for this CPU.

`assistant setup` converts the prepared sentence-transformers model once (`export`, from the checked local
weights: nothing is fetched) into OpenVINO IR next to it. At run time `OpenVinoEncoder` runs that graph and
does what sentence-transformers' Pooling and Normalize modules do (mean over the attention mask, L2 norm),
so its vectors are the torch model's within the chosen precision: f32 matches to cosine >= 0.99999; bf16
(OpenVINO's default on CPUs with AMX / AVX512-BF16, as here) measured cosine >= 0.99998 on MedQuAD chunks
and is what makes it fast (bench/embedding.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IR_FILE = "openvino_model.xml"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISIONS = ("auto", "f32", "bf16")


def export(model_dir: Path, out_dir: Path) -> Path:
    """Convert the transformer of a sentence-transformers directory (mean pooling) to OpenVINO IR in out_dir."""
    import warnings

    import openvino as ov
    import torch
    from transformers import AutoModel, AutoTokenizer

    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ValueError(f"{model_dir}: only mean-pooling models can use the OpenVINO runtime (set embed_runtime "
                         "= \"torch\")")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    example = tokenizer(["a short text", "a somewhat longer text, so that the batch is padded"], padding=True,
                        return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the mask checks it traces hold for every shape
        graph = ov.convert_model(LastHiddenState(model), example_input={k: example[k] for k in INPUTS})
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(graph, str(out_dir / IR_FILE), compress_to_fp16=False)  # weights stay f32; precision is a run choice
    return out_dir


class OpenVinoEncoder:
    """Normalised mean-pooled embeddings from an exported IR; one compiled model, length-sorted batches."""

    def __init__(self, ir_dir: Path, tokenizer, max_length: int, precision: str = "auto", threads: int | None = None):
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"embed_precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        config: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(Path(ir_dir) / IR_FILE), "CPU", config)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16" / "f32"
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        lengths = [len(t) for t in texts]
        order = np.argsort([-n for n in lengths], kind="stable")  # similar lengths together: little padding
        out = None
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="np")
            feeds = {k: enc[k].astype(np.int64) for k in INPUTS if k in enc}
            if "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            hidden = self.compiled(feeds)[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out
