"""Dense embeddings with the packaged all-MiniLM-L6-v2 (384 dims, cosine), loaded by path, offline.

Speed matters on this CPU: texts are encoded in length-sorted batches (sentence-transformers sorts
within a call, so one call per large block keeps padding low), normalised, as float32 numpy. Batches of
16 measured ~15% faster than 64 here (2 cores, 128-token chunks).

A domain may tune how its *questions* are embedded with a query encoder: a peft LoRA on this model, applied to
queries only. Documents always get the base embedding, so a tuned domain needs no re-index and the other
domains are unaffected (`assistant tune-retrieval`, assistant/building/retrieval_tuning.py).

With `openvino_dir` (the IR `assistant setup` exports, indexing/openvino_encoder.py) documents and untuned
queries run on OpenVINO: 2-3x the torch model's speed here at the same vectors within bf16 rounding
(bench/embedding.py). Query encoders stay on torch, where peft is.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class Embedder:
    def __init__(self, model_path: str | Path, batch_size: int = 16, max_seq_length: int = 256,
                 threads: int | None = None, openvino_dir: str | Path | None = None, precision: str = "auto"):
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
        self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length or max_seq_length)
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()
        self.name = Path(model_path).name
        self.model_path = Path(model_path)
        self._lock = threading.Lock()  # one encode at a time; torch already uses every core
        self.query_encoders: set[str] = set()
        self.fast = None
        if openvino_dir is not None:
            from .openvino_encoder import OpenVinoEncoder

            self.fast = OpenVinoEncoder(Path(openvino_dir), self.model.tokenizer, self.model.max_seq_length,
                                        precision, threads)
        self.runtime = f"openvino-{self.fast.precision}" if self.fast else "torch-fp32"

    def add_query_encoder(self, name: str, path: str | Path) -> None:
        """Load a query encoder (a peft LoRA directory on this model) under `name`, or replace the one loaded
        under it. Raises ValueError/OSError when the directory does not hold a usable adapter."""
        with self._lock:
            if name in self.query_encoders:
                self.model.delete_adapter(name)
                self.query_encoders.discard(name)
            self.model.load_adapter(str(path), adapter_name=name)
            self.query_encoders.add(name)
            self.model.disable_adapters()  # documents and untuned queries: the base model

    def embed(self, texts: list[str], show_progress: bool = False, *, query_encoder: str | None = None) -> np.ndarray:
        """Normalised float32 vectors; `query_encoder`: a loaded encoder's name (queries only), None = base."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if query_encoder is not None and query_encoder not in self.query_encoders:
            raise KeyError(f"no query encoder {query_encoder!r} is loaded")
        with self._lock:
            if query_encoder is None and self.fast is not None:
                return self.fast.encode(texts, self.batch_size)
            if query_encoder is not None:
                self.model.set_adapter(query_encoder)
                self.model.enable_adapters()
            try:
                vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=show_progress)
            finally:
                if query_encoder is not None:
                    self.model.disable_adapters()
        return vectors.astype(np.float32, copy=False)

    def embed_query(self, text: str, query_encoder: str | None = None) -> np.ndarray:
        return self.embed([text], query_encoder=query_encoder)[0]
