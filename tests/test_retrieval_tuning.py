"""Domain-tuned retrieval on the real stack: the shipped finance query encoder (a LoRA on MiniLM's query side),
the training recipe on real questions and the real index, and a broken encoder refused without taking the
domain down."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from assistant.building.retrieval_tuning import QueryTuneConfig, tune_query_encoder
from assistant.serving.adapter_manifest import check_query_encoder
from assistant.serving.adapters import AdapterError
from assistant.serving.models import embed_model_sha256

pytestmark = pytest.mark.engine
QUESTION = "What was the change in total revenue between 2018 and 2019?"


def test_finance_retrieves_with_its_tuned_encoder_and_gates_with_the_base_one(platform):
    info = {d["domain"]: d for d in platform.info()}
    assert info["finance"]["query_encoder"], "the finance package ships a query encoder"
    assert info["healthcare"]["query_encoder"] is None  # untuned domains keep the base embedder
    base = platform.embedder.embed_query(QUESTION)
    tuned = platform.search_vector("finance", QUESTION)
    assert 0.5 < float(base @ tuned) < 0.9999  # tuned, not replaced: still close to the base embedding
    expected = platform.retriever.retrieve("finance", QUESTION, 4, query_vector=tuned)
    assert [p.id for p in platform.retrieve("finance", QUESTION)] == [p.id for p in expected]
    answer = platform.ask("finance", QUESTION)
    assert answer.evidence == pytest.approx(platform.evidence("finance", QUESTION, query_vector=base), abs=1e-4)


def test_documents_keep_the_base_embedding_once_an_encoder_is_loaded(platform):
    """The index is not rebuilt: a stored chunk's vector is still what the (base) embedder gives its text."""
    _, payload, stored = next(platform.store.scan_vectors("finance", ["text"]))
    assert "finance" in platform.embedder.query_encoders
    again = platform.embedder.embed([payload["text"]])[0]
    assert float(stored @ again) > 0.999


def test_a_broken_or_foreign_encoder_is_refused_and_the_domain_still_answers(platform, tmp_path):
    dom = platform.domain("finance")
    broken = tmp_path / "broken"
    shutil.copytree(dom.query_encoder_path, broken / "query_encoder")
    (broken / "query_encoder" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    foreign = tmp_path / "foreign"
    shutil.copytree(dom.query_encoder_path, foreign / "query_encoder")
    manifest = json.loads((foreign / "query_encoder" / "manifest.json").read_text())
    (foreign / "query_encoder" / "manifest.json").write_text(json.dumps(manifest | {"base_embedder_sha256": "0" * 64}))
    with pytest.raises(AdapterError, match="tuned on embedder"):
        check_query_encoder(foreign / "query_encoder", embed_model_sha256(platform.settings))
    for root in (broken, foreign):
        copy = dataclasses.replace(dom, name=f"finance-{root.name}", root=root)
        try:
            platform.load_query_encoder(copy, embed_model_sha256(platform.settings))
            assert copy.name in platform.refused_query_encoders and copy.name not in platform.query_encoders
        finally:
            platform.refused_query_encoders.pop(copy.name, None)
    assert platform.ask("finance", QUESTION).text  # the real finance domain is untouched


def test_the_recipe_scores_every_candidate_and_writes_only_an_improvement(platform, tmp_path):
    dom = platform.domain("finance")
    result = tune_query_encoder(dom, platform.store, platform.embedder.model_path, tmp_path / "qe",
                                QueryTuneConfig(epochs=1, batch_size=16), limit=120,
                                base_embedder_sha256=embed_model_sha256(platform.settings), progress=False)
    assert 0 < result["candidate_chunks"] <= platform.store.count("finance")  # uploads are not candidates
    assert result["train_questions"] + result["dev_questions"] == 120
    base, tuned = result["dev_recall@5"]["base"], result["dev_recall@5"]["tuned"]
    assert 0 <= base <= 1 and tuned >= base and len(result["history"]) == 2
    assert result["written"] == (tuned > base)
    if result["written"]:
        assert check_query_encoder(tmp_path / "qe", embed_model_sha256(platform.settings))["kind"] == "query_encoder"
    else:
        assert not (tmp_path / "qe").exists() and "no epoch" in result["why"]
    assert np.isfinite(result["history"][1]["train_loss"])


def test_the_held_out_slice_never_shares_a_document_with_training():
    import random

    from assistant.building.retrieval_tuning import Example, split_by_group

    examples = [Example(f"q{i}", np.array([i % 7]), None, f"doc{i % 7}") for i in range(70)]
    dev, train = split_by_group(examples, 0.2, random.Random(0))
    assert dev and train and len(dev) + len(train) == 70
    assert not {e.group for e in dev} & {e.group for e in train}
    assert len(dev) >= 14  # whole documents until the fraction is reached
