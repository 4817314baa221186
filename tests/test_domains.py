"""Domain packages, LoRA training, manifests, new-domain and merged export, on the real stack."""
from __future__ import annotations

import json
import shutil

import pytest

from assistant.serving.adapter_manifest import check_adapter
from assistant.serving.adapters import AdapterError
from assistant.domains import get_domain, list_domains, load_domain
from assistant.serving.engine import GenerationRequest
from assistant.building.export import export_merged
from assistant.building.indexer import index_domain
from assistant.building.scaffold import ScaffoldError, create_domain, synthesize_qa
from assistant.building.training import build_examples, train_adapter
from helpers.files import make_mixed_folder
from helpers.lora import hf_greedy

pytestmark = pytest.mark.engine


def test_five_packages_with_trained_adapters_and_manifests(prepared):
    assert set(list_domains()) >= {"healthcare", "legal", "finance", "retail", "manufacturing"}
    for name in ("healthcare", "legal", "finance", "retail", "manufacturing"):
        dom = get_domain(name)
        assert dom.system_prompt and dom.examples and dom.data[0].corpus.is_file() and dom.data[0].license
        assert (dom.root / "data" / "DATA.md").is_file()
        manifest = check_adapter(dom.adapter_path, prepared.base_model_sha256)
        assert manifest["domain"] == name and manifest["steps"] > 0
        assert manifest["loss"]["dev_best"] < manifest["loss"]["dev_first"]
        assert len(manifest["training_data_sha256"]) == 64 and manifest["hyperparameters"]["rank"] == 8
        scores = manifest["eval"]  # written by `assistant eval` for the shipped version (eval/reports/<name>.md)
        assert scores["split"] == "test" and scores["n"] >= 100 and 0 <= scores["rag+lora"] <= 1


def test_manifest_mismatch_and_missing_manifest_are_refused(prepared, tmp_path):
    src = get_domain("legal").adapter_path
    copy = shutil.copytree(src, tmp_path / "adapter")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["base_model_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterError, match="trained on base model sha256 0000"):
        check_adapter(copy, prepared.base_model_sha256)
    (copy / "manifest.json").unlink()
    with pytest.raises(AdapterError, match="no manifest.json"):
        check_adapter(copy, prepared.base_model_sha256)


def test_short_training_run_lowers_loss_and_vllm_serves_the_adapter(platform, prepared, tmp_path):
    dom = platform.domains["manufacturing"]
    examples = build_examples(dom, platform.retriever, platform.engine.tokenizer, limit=40, progress=False)
    assert len(examples) >= 30 and all(e["target"] for e in examples)
    assert any(e["target"].startswith("I don't know") for e in examples) or len(examples) < 40
    manifest = train_adapter(examples, prepared.base_model, tmp_path / "adapter", domain="manufacturing",
                             base_model_sha256=prepared.base_model_sha256, max_steps=8, batch_size=4, lr=1e-3,
                             max_len=512, eval_every=4, patience=5, progress=False)
    assert manifest["steps"] == 8 and manifest["loss"]["dev_best"] < manifest["loss"]["dev_first"]
    check_adapter(tmp_path / "adapter", prepared.base_model_sha256)
    adapter = platform.engine.register_adapter("tiny-trained", tmp_path / "adapter")
    out = platform.engine.generate([GenerationRequest(messages=examples[0]["messages"], adapter="tiny-trained",
                                                      max_tokens=16)])[0]
    assert out.adapter.version == manifest["version"] == adapter.version and out.token_ids


def test_new_domain_end_to_end_on_a_tiny_corpus(platform, prepared, tmp_path):
    make_mixed_folder(tmp_path / "docs")
    for bad in ("empty.txt", "binary.txt", "corrupt.pdf", "latin1.txt", "image.xyz"):
        (tmp_path / "docs" / bad).unlink()
    domains_dir = tmp_path / "domains"
    domains_dir.mkdir()
    root = create_domain("plant-ops", tmp_path / "docs", domains_dir)
    with pytest.raises(ScaffoldError, match="already exists"):
        create_domain("plant-ops", tmp_path / "docs", domains_dir)
    with pytest.raises(ScaffoldError, match="use 2-40 lowercase"):
        create_domain("Bad Name!", tmp_path / "docs", domains_dir)
    dom = load_domain(root)
    report = index_domain(dom, platform.store, platform.embedder, progress=False)
    assert report.documents == 7 and report.ok
    rows = synthesize_qa(root, platform.engine, n=12)
    assert rows and {r["split"] for r in rows} <= {"train", "dev"}  # never test data
    assert all(r["question"].endswith("?") and r["meta"]["synthetic"] for r in rows)
    dom = load_domain(root)
    assert len(dom.qa_rows("train")) + len(dom.qa_rows("dev")) == len(rows)
    examples = build_examples(dom, platform.retriever, platform.engine.tokenizer, progress=False)
    manifest = train_adapter(examples, prepared.base_model, dom.adapter_path, domain=dom.name,
                             base_model_sha256=prepared.base_model_sha256, max_steps=2, batch_size=2,
                             max_len=384, progress=False)
    platform.domains[dom.name] = dom
    try:
        platform.engine.register_adapter(dom.name, dom.adapter_path)
        answer = platform.ask(dom.name, "Why do pumps cavitate?")
        assert answer.adapter == f"plant-ops@{manifest['version']}" and answer.passages
    finally:
        del platform.domains[dom.name]
        platform.store.drop_collection(dom.name)


def test_merged_export_generates_the_same_tokens_as_base_plus_adapter(prepared, tmp_path, engine):
    adapter = get_domain("finance").adapter_path
    out = export_merged(prepared.base_model, prepared.base_model_sha256, adapter, tmp_path / "merged", "float32")
    assert json.loads((out / "merged.json").read_text())["domain"] == "finance"
    prompts = [engine.render(GenerationRequest(messages=[{"role": "user", "content": q}]))
               for q in ("What was the total revenue in 2019?", "How much cash did the company hold?")]
    with_adapter = hf_greedy(prepared.base_model, [(p, adapter) for p in prompts], 24)
    merged = hf_greedy(out, [(p, None) for p in prompts], 24)
    assert merged == with_adapter
    with pytest.raises(FileExistsError):
        export_merged(prepared.base_model, prepared.base_model_sha256, adapter, out, "float32")


def test_qlora_without_cuda_is_refused_clearly(prepared, tmp_path):
    """QLoRA is a CUDA-only option; on a CPU machine it must fail before any training, with the reason."""
    import torch

    from assistant.building.training import train_adapter

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPU machines")
    example = {"qid": "x", "messages": [{"role": "user", "content": "q"}], "target": "a [1]"}
    with pytest.raises(ValueError, match="QLoRA needs a CUDA GPU"):
        train_adapter([example], prepared.base_model, tmp_path / "out", base_model_sha256=prepared.base_model_sha256,
                      domain="healthcare", qlora=True, max_steps=1)
    assert not (tmp_path / "out").exists()


def test_one_command_from_documents_to_a_trained_evaluated_domain(prepared, small_corpus, tmp_path):
    """`assistant new-domain --train --eval`: scaffold, index, train, calibrate, score, in one CLI run (own process,
    own store and domains folder; the packaged models are shared)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home, domains = tmp_path / "home", tmp_path / "domains"
    home.mkdir()
    domains.mkdir()
    (home / "models").symlink_to(prepared.base_model.parent.resolve())
    rows = [json.loads(line) for line in
            (Path(__file__).resolve().parents[1] / "domains" / "manufacturing" / "data" / "qa.jsonl").open()]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in [r for r in rows if r["split"] == "train"][:24]
                          + [r for r in rows if r["split"] == "test"][:6]))
    env = dict(os.environ, ASSISTANT_HOME=str(home), ASSISTANT_DOMAINS_DIR=str(domains),
               ASSISTANT_MAX_MODEL_LEN="1024", ASSISTANT_KV_CACHE_GIB="1")
    cli = [sys.executable, "-m", "assistant", "new-domain"]

    refused = subprocess.run(cli + ["plant-ops", "--corpus", str(small_corpus), "--train"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--qa FILE or --synthetic N" in refused.stderr
    assert not (domains / "plant-ops").exists()  # refused before anything was written

    train_only = tmp_path / "train-only.jsonl"
    train_only.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "train"))
    stopped = subprocess.run(cli + ["pumps", "--corpus", str(small_corpus), "--qa", str(train_only), "--eval"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 1 and "--eval needs held-out questions" in stopped.stderr
    assert (domains / "pumps" / "data" / "qa.jsonl").is_file()  # stopped before training; nothing lost

    proc = subprocess.run(cli + ["plant-ops", "--corpus", str(small_corpus), "--qa", str(qa), "--eval",
                                 "--max-steps", "2", "--eval-limit", "4"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = domains / "plant-ops"
    manifest = json.loads((root / "adapter" / "manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["domain"] == "plant-ops"
    assert manifest["eval"]["split"] == "test" and manifest["eval"]["n"] == 4
    assert manifest["eval"]["report"] == str((root / "eval" / "plant-ops.md").resolve())
    toml = (root / "domain.toml").read_text()
    assert "calibrated on train" in toml and 'primary_metric = "accuracy"' in toml  # multiple-choice questions
    report = json.loads((root / "eval" / "plant-ops.json").read_text())
    assert set(report["answers"]) == {"base", "rag", "lora", "rag+lora"} and report["n"] == 4
    assert "plant-ops (test, n=4): accuracy: base " in proc.stdout and "nan" not in proc.stdout
