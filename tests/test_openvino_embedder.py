"""The embedder's OpenVINO runtime: exported once by `assistant setup` from the checked weights, the torch
model's vectors within its precision, and a clear error for a runtime that does not exist."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from assistant.config import Settings
from assistant.serving import models
from assistant.serving.models import ModelError
from indexing.embedder import Embedder
from indexing.openvino_encoder import IR_FILE

# Lengths from a few words to past the 256-token limit, so batches are padded and one text is truncated.
TEXTS = ["glaucoma", "What are the symptoms of glaucoma?",
         "Open-angle glaucoma is the most common form. It damages the optic nerve slowly and without pain. " * 3,
         "The policy says the site may share your e-mail address with partners for marketing purposes. " * 40,
         "Revenue rose 12% to $4.2 million in 2019; cost of sales was $1.1 million.", "", "  "]


@pytest.fixture(scope="module")
def torch_vectors(prepared):
    return Embedder(prepared.embed_model).embed(TEXTS)


def test_setup_exports_the_openvino_model_once(prepared, settings):
    assert prepared.embed_openvino is not None and (prepared.embed_openvino / IR_FILE).is_file()
    marker = json.loads((prepared.embed_openvino / models.MARKER).read_text())
    assert marker["source_sha256"] == prepared.embed_model_sha256
    mtime = (prepared.embed_openvino / IR_FILE).stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "assistant", "setup", "--json"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ASSISTANT_HOME": str(settings.data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["embed_openvino"] == str(prepared.embed_openvino)
    assert "exporting" not in proc.stderr and (prepared.embed_openvino / IR_FILE).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("precision,floor", [("f32", 0.99999), ("bf16", 0.999)])
def test_openvino_vectors_match_the_torch_model(prepared, torch_vectors, precision, floor):
    fast = Embedder(prepared.embed_model, openvino_dir=prepared.embed_openvino, precision=precision)
    assert fast.runtime == f"openvino-{precision}"
    vectors = fast.embed(TEXTS)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= floor, dict(zip(TEXTS, cosine.round(6).tolist(), strict=True))
    # one text at a time (how questions are embedded) gives the batch's vectors
    alone = np.stack([fast.embed_query(t) for t in TEXTS])
    assert (alone * vectors).sum(axis=1).min() >= floor


def test_a_stale_export_is_made_again(prepared, tmp_path):
    settings = Settings.load(data_dir=tmp_path, embed_model=str(prepared.embed_model))
    first = models.prepare_embed_runtime(settings, prepared.embed_model, progress=lambda *_: None)
    marker = first / models.MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "source_sha256": "0" * 64}))
    said = []
    again = models.prepare_embed_runtime(settings, prepared.embed_model, progress=said.append)
    assert again == first and any("exporting" in s for s in said)
    assert json.loads(marker.read_text())["source_sha256"] == models.embed_model_sha256(settings)


def test_torch_runtime_and_bad_settings(prepared, tmp_path):
    assert models.prepare_embed_runtime(Settings.load(data_dir=tmp_path, embed_runtime="torch"),
                                        prepared.embed_model) is None
    with pytest.raises(ModelError, match="embed_runtime must be one of openvino, torch"):
        models.prepare_embed_runtime(Settings.load(data_dir=tmp_path, embed_runtime="onnx"), prepared.embed_model)
    with pytest.raises(ModelError, match="embed_precision must be one of auto, f32, bf16"):
        models.prepare_embed_runtime(Settings.load(data_dir=tmp_path, embed_precision="int4"), prepared.embed_model)
    with pytest.raises(ValueError, match="embed_precision must be one of"):
        Embedder(prepared.embed_model, openvino_dir=prepared.embed_openvino, precision="int4")


def test_a_model_the_openvino_path_cannot_reproduce_is_refused_clearly(prepared, tmp_path):
    local = tmp_path / "cls-model"
    shutil.copytree(prepared.embed_model, local)
    pooling = local / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode_mean_tokens": False,
                                   "pooling_mode_cls_token": True}))
    settings = Settings.load(data_dir=tmp_path / "data", embed_model=str(local))
    with pytest.raises(ModelError, match="only mean-pooling models can use the OpenVINO runtime"):
        models.prepare_embed_runtime(settings, local, progress=lambda *_: None)
    assert not list((tmp_path / "data" / "models").glob("*openvino*"))  # nothing half-made is left
