"""Domain packages, LoRA training, manifests, new-domain and merged export, on the real stack."""
from __future__ import annotations

import json
import shutil

import pytest

from assistant.building.export import export_merged
from assistant.building.indexer import index_domain
from assistant.building.scaffold import ScaffoldError, create_domain, synthesize_qa
from assistant.building.training import (
    MixConfig,
    TrainConfig,
    build_examples,
    encode_examples,
    end_of_turn_ids,
    mix_rows,
    split_dev,
    train_adapter,
)
from assistant.domains import get_domain, list_domains, load_domain
from assistant.serving.adapter_manifest import check_adapter
from assistant.serving.adapters import AdapterError
from assistant.serving.engine import GenerationRequest
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
    by_question: dict[str, list[dict]] = {}
    for e in examples:
        by_question.setdefault(e["qid"], []).append(e)
    rotated = max(by_question.values(), key=len)  # one example per cyclic order of the options
    assert len(rotated) >= 4 and len({e["target"][0] for e in rotated}) == len(rotated)
    gold_text = rotated[0]["target"].split(". ", 1)[1].rsplit(" [", 1)[0]
    for e in rotated:  # the target's letter is where the gold text is shown in that order
        assert f"{e['target'][0]}. {gold_text}\n" in e["messages"][-1]["content"]
    config = TrainConfig(max_steps=8, batch_size=4, lr=1e-3, max_len=512, eval_every=4, patience=5)
    manifest = train_adapter(examples, prepared.base_model, tmp_path / "adapter", config, domain="manufacturing",
                             base_model_sha256=prepared.base_model_sha256, progress=False)
    assert manifest["steps"] == 8 and manifest["loss"]["dev_best"] < manifest["loss"]["dev_first"]
    check_adapter(tmp_path / "adapter", prepared.base_model_sha256)
    adapter = platform.engine.register_adapter("tiny-trained", tmp_path / "adapter")
    out = platform.engine.generate([GenerationRequest(messages=examples[0]["messages"], adapter="tiny-trained",
                                                      max_tokens=16)])[0]
    assert out.adapter.version == manifest["version"] == adapter.version and out.token_ids


def test_the_training_mix_caps_each_data_set_and_balances_yes_no_maybe(platform):
    import random
    from collections import Counter

    dom = platform.domains["healthcare"]  # PubMedQA (55% "yes" in train) + MedQuAD's long answers
    rows = dom.qa_rows("train")
    mixed = mix_rows(rows, MixConfig(per_set=120, balance_labels=True), random.Random(0))
    sets = Counter(r["data"] for r in mixed)
    assert sets["medquad"] == 120 and sets["pubmedqa_pqal"] > 120  # capped, then the rarer labels repeated
    labels = Counter(r["answer"][0] for r in mixed if r["data"] == "pubmedqa_pqal")
    assert len(labels) == 3 and len(set(labels.values())) == 1, labels
    plain = Counter(r["answer"][0] for r in mix_rows(rows, MixConfig(per_set=120), random.Random(0))
                    if r["data"] == "pubmedqa_pqal")  # the default keeps the split's shares
    assert plain["yes"] > plain["maybe"] and sum(plain.values()) == 120

    examples = build_examples(dom, platform.retriever, platform.engine.tokenizer,
                              mix=MixConfig(per_set=15, balance_labels=True), progress=False)
    assert {e["data"] for e in examples} == {"medquad", "pubmedqa_pqal"}
    assert {"yes", "no", "maybe"} <= {e["label"] for e in examples}
    assert all(e["label"] == "abstain" for e in examples if e["target"].startswith("I don't know"))
    groups = [e["qid"] for e in examples]
    train, dev = split_dev(list(range(len(examples))), 0.2, random.Random(0), groups=groups)
    assert dev and not {groups[i] for i in train} & {groups[i] for i in dev}  # a repeated question stays on one side
    assert sorted(train + dev) == list(range(len(examples)))


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
    manifest = train_adapter(examples, prepared.base_model, dom.adapter_path,
                             TrainConfig(max_steps=2, batch_size=2, max_len=384), domain=dom.name,
                             base_model_sha256=prepared.base_model_sha256, progress=False)
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


def test_cpu_recipe_upper_layers_bf16_and_a_time_budget(platform, prepared, engine, tmp_path):
    """The CPU recipe's knobs do what they say on the real model, and vLLM serves an upper-layers adapter exactly
    as HF + peft run it."""
    from safetensors import safe_open

    from assistant.errors import InputError
    from helpers.lora import make_random_adapter

    dom = platform.domains["manufacturing"]
    examples = build_examples(dom, platform.retriever, platform.engine.tokenizer, limit=30, progress=False)
    config = TrainConfig(max_steps=200, batch_size=2, max_len=1024, upper_layers=10, bf16_autocast=True,
                         time_budget_s=30, eval_every=1000, device="cpu")
    manifest = train_adapter(examples, prepared.base_model, tmp_path / "budget", config, domain="manufacturing",
                             base_model_sha256=prepared.base_model_sha256, progress=False)
    assert 2 <= manifest["steps"] < 200  # the budget cut the run short of max_steps
    slowest = max(manifest["history"]["step_s"])
    assert manifest["wall_time_s"] <= 30 + 2 * slowest + 15  # + the dev evaluations at the start and the end
    assert manifest["hyperparameters"]["upper_layers"] == 10 and manifest["hyperparameters"]["bf16_autocast"]
    assert len(manifest["history"]["step_s"]) == manifest["steps"]
    with safe_open(str(tmp_path / "budget" / "adapter_model.safetensors"), "pt") as fh:
        layers = {int(k.split(".layers.")[1].split(".")[0]) for k in fh.keys()}  # noqa: SIM118
    assert layers == set(range(20, 30))
    with pytest.raises(InputError, match="cuts every example before its answer"):
        train_adapter(examples[:4], prepared.base_model, tmp_path / "cut", TrainConfig(max_steps=1, max_len=16),
                      domain="manufacturing", base_model_sha256=prepared.base_model_sha256, progress=False)

    upper = make_random_adapter(prepared.base_model, tmp_path / "upper", seed=3,
                                layers_to_transform=list(range(20, 30)))
    engine.register_adapter("upper-layers", upper)  # float32 engine: token-exact against HF + peft
    prompt = engine.render(GenerationRequest(messages=examples[0]["messages"]))
    served = engine.generate([GenerationRequest(messages=examples[0]["messages"], adapter="upper-layers",
                                                max_tokens=12)])[0]
    assert served.token_ids == hf_greedy(prepared.base_model, [(prompt, upper)], 12)[0]


def test_qlora_without_cuda_is_refused_clearly(prepared, tmp_path):
    """QLoRA is a CUDA-only option; on a CPU machine it must fail before any training, with the reason."""
    import torch

    with pytest.raises(ValueError, match="QLoRA needs a CUDA GPU"):
        TrainConfig(qlora=True, device="cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPU machines")
    example = {"qid": "x", "messages": [{"role": "user", "content": "q"}], "target": "a [1]"}
    with pytest.raises(ValueError, match="QLoRA needs a CUDA GPU"):
        train_adapter([example], prepared.base_model, tmp_path / "out", TrainConfig(qlora=True, max_steps=1),
                      base_model_sha256=prepared.base_model_sha256, domain="healthcare")
    assert not (tmp_path / "out").exists()


def test_train_config_defaults_resolution_and_manifest_block():
    config = TrainConfig()
    assert (config.rank, config.alpha, config.rslora, config.epochs, config.max_steps, config.lr) == (8, None, False,
                                                                                                     2.0, 0, 2e-4)
    assert (config.batch_size, config.micro_batch, config.max_len, config.dev_fraction, config.patience,
            config.eval_every, config.seed, config.device, config.qlora, config.dropout) == (
        8, None, 1024, 0.1, 3, 25, 0, None, False, 0.05)
    cpu = TrainConfig(device="cpu", rank=4).resolved()
    assert (cpu.alpha, cpu.micro_batch) == (8, 2) and cpu.resolved() == cpu
    assert TrainConfig(device="cuda").resolved().micro_batch == 8
    assert TrainConfig(device="cpu", batch_size=4, micro_batch=16).resolved().micro_batch == 4
    block = TrainConfig(device="cpu", alpha=32, target_modules=["q_proj", "v_proj"]).to_manifest()
    assert list(block) == ["rank", "alpha", "rslora", "lr", "batch_size", "micro_batch", "epochs", "max_steps",
                           "max_len", "target_modules", "dropout", "seed", "qlora", "upper_layers", "bf16_autocast",
                           "time_budget_s"]
    assert (config.upper_layers, config.bf16_autocast, config.time_budget_s) == (0, False, 0.0)
    assert block["alpha"] == 32 and block["target_modules"] == ["q_proj", "v_proj"] and block["micro_batch"] == 2
    with pytest.raises(AttributeError):
        config.rank = 16  # frozen: a run's config does not change under it


@pytest.mark.parametrize("bad, field", [
    ({"rank": 0}, "rank"), ({"rank": 2.5}, "rank"), ({"alpha": 0}, "alpha"), ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"), ({"micro_batch": 0}, "micro_batch"),
    ({"dev_fraction": 1.0}, "dev_fraction"), ({"dev_fraction": -0.1}, "dev_fraction"), ({"epochs": -1}, "epochs"),
    ({"epochs": 0, "max_steps": 0}, "epochs or max_steps"), ({"max_steps": -1}, "max_steps"),
    ({"max_len": 0}, "max_len"), ({"patience": 0}, "patience"), ({"eval_every": 0}, "eval_every"),
    ({"device": "tpu"}, "device"), ({"dropout": 1.0}, "dropout"), ({"target_modules": []}, "target_modules"),
    ({"qlora": "yes"}, "qlora"), ({"upper_layers": -1}, "upper_layers"), ({"bf16_autocast": 1}, "bf16_autocast"),
    ({"time_budget_s": -5}, "time_budget_s"),
])
def test_train_config_refuses_bad_values(bad, field):
    with pytest.raises(ValueError, match=f"TrainConfig: {field}"):
        TrainConfig(**bad)


def test_training_end_of_turn_comes_from_the_chat_template(prepared):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(prepared.base_model))
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]  # ChatML, minus its "\n"
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
    for template in (plain, plain.replace("{% endfor %}", "\n{% endfor %}")):  # nothing (but a newline) after it
        tokenizer.chat_template = template
        assert end_of_turn_ids(tokenizer) == [tokenizer.eos_token_id]
    tokenizer.chat_template = plain.replace("{% endfor %}", "<|endoftext|>\n\n{% endfor %}")
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def test_training_examples_encode_as_before(prepared):
    """Same ids and labels as the encoder that hard-coded <|im_end|>: the prompt as served, the loss on the answer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(prepared.base_model))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    examples = [
        {"qid": "a", "messages": [{"role": "system", "content": "Answer from the passages; cite [n]."},
                                  {"role": "user", "content": "[1] Pumps cavitate at low suction pressure.\n"
                                                              "Question: why do pumps cavitate?"}],
         "target": "Low suction pressure [1]"},
        {"qid": "b", "messages": [{"role": "user", "content": "What is torque?"}],
         "target": "I don't know from these documents."},
    ]
    for max_len in (1024, 30):
        encoded = encode_examples(examples, tokenizer, max_len)
        for example, (ids, labels) in zip(examples, encoded, strict=True):
            prompt = tokenizer.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=True)
            if hasattr(prompt, "keys"):
                prompt = prompt["input_ids"]
            answer = tokenizer.encode(example["target"], add_special_tokens=False) + [im_end]
            assert ids == (list(prompt) + answer)[:max_len]
            assert labels == ([-100] * len(prompt) + answer)[:max_len]
            if max_len == 1024:
                assert labels[:len(prompt)] == [-100] * len(prompt) and labels[len(prompt):] == answer
                assert ids[-1] == labels[-1] == im_end


def test_tiny_training_run_writes_a_verifiable_manifest(prepared, tmp_path):
    """One CPU step on three examples (no dev set): the manifest's keys, version and weights' sha256."""
    import hashlib
    import re

    examples = [{"qid": f"q{i}", "messages": [{"role": "user", "content": f"Question {i}: what fails first?"}],
                 "target": f"Part {i} [1]"} for i in range(3)]
    out = tmp_path / "adapter"
    manifest = train_adapter(examples, prepared.base_model, out, TrainConfig(max_steps=1, batch_size=2, max_len=64),
                             base_model_sha256=prepared.base_model_sha256, domain="manufacturing", progress=False)
    assert set(manifest) == {"domain", "version", "base_model_sha256", "training_data_sha256", "examples",
                             "train_examples", "dev_examples", "hyperparameters", "steps", "wall_time_s", "hardware",
                             "loss", "history", "eval", "weights_sha256", "weights_dtype",
                             "examples_cut_before_answer", "training_mix"}
    assert manifest["examples_cut_before_answer"] == 0 and manifest["training_mix"]["by_label"] == {"": 3}
    weights = hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert manifest["weights_sha256"] == {"adapter_model.safetensors": weights}
    assert manifest["weights_dtype"] == "bfloat16"  # stored as the engines serve it
    assert re.fullmatch(r"\d{8}-[0-9a-f]{8}", manifest["version"]) and manifest["version"].endswith(weights[:8])
    assert (manifest["steps"], manifest["train_examples"], manifest["dev_examples"]) == (1, 3, 0)
    assert manifest["loss"]["dev_first"] is None and manifest["loss"]["dev_best"] is None
    assert manifest["hyperparameters"] == TrainConfig(max_steps=1, batch_size=2, max_len=64).to_manifest()
    assert check_adapter(out, prepared.base_model_sha256) == json.loads((out / "manifest.json").read_text())


def test_one_command_from_documents_to_a_trained_evaluated_domain(prepared, small_corpus, tmp_path):
    """`assistant new-domain --train --eval`: scaffold, index, train, calibrate, score, in one CLI run (own process,
    own store, an empty packaged-domains folder; the packaged models are shared). New domains land in the data
    directory, the packaged folder is only read."""
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
    assert not (home / "domains" / "plant-ops").exists()  # refused before anything was written

    train_only = tmp_path / "train-only.jsonl"
    train_only.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "train"))
    stopped = subprocess.run(cli + ["pumps", "--corpus", str(small_corpus), "--qa", str(train_only), "--eval"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 1 and "--eval needs held-out questions" in stopped.stderr
    assert (home / "domains" / "pumps" / "data" / "qa.jsonl").is_file()  # stopped before training; nothing lost

    proc = subprocess.run(cli + ["plant-ops", "--corpus", str(small_corpus), "--qa", str(qa), "--eval",
                                 "--max-steps", "2", "--eval-limit", "4"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = home / "domains" / "plant-ops"
    assert not any(domains.iterdir())  # the packaged folder (ASSISTANT_DOMAINS_DIR) got nothing
    manifest = json.loads((root / "adapter" / "manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["domain"] == "plant-ops"
    assert manifest["eval"]["split"] == "test" and manifest["eval"]["n"] == 4
    assert manifest["eval"]["report"] == str((root / "eval" / "plant-ops.md").resolve())
    toml = (root / "domain.toml").read_text()
    assert "calibrated on train" in toml and 'primary_metric = "accuracy"' in toml  # multiple-choice questions
    report = json.loads((root / "eval" / "plant-ops.json").read_text())
    assert set(report["answers"]) == {"base", "rag", "lora", "rag+lora"} and report["n"] == 4
    assert "plant-ops (test, n=4): accuracy: base " in proc.stdout and "nan" not in proc.stdout
