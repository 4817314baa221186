"""Engine behaviour beyond parity: streaming, adapter registry, hot reload, clear errors."""
from __future__ import annotations

import json
import shutil

import pytest

from assistant.serving.adapters import AdapterError
from assistant.serving.engine import GenerationRequest
from helpers.lora import make_random_adapter

pytestmark = pytest.mark.engine
QUESTION = [{"role": "user", "content": "Give one tip for sleeping well."}]


def test_stream_yields_deltas_then_the_same_text_as_batch(engine):
    request = GenerationRequest(messages=QUESTION, adapter="alpha", max_tokens=20)
    pieces = list(engine.stream(request))
    final = pieces[-1]
    deltas = pieces[:-1]
    assert len(deltas) >= 2 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == final.text
    assert final.adapter.name == "alpha" and final.first_token_s <= final.total_s
    assert final.token_ids == engine.generate([request])[0].token_ids


def test_unknown_adapter_is_a_clear_error(engine):
    with pytest.raises(AdapterError, match="no adapter named 'nope'.*alpha"):
        engine.generate([GenerationRequest(messages=QUESTION, adapter="nope")])


def test_prompt_longer_than_context_is_refused(engine):
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ValueError, match="exceeds the model context"):
        engine.generate([GenerationRequest(messages=long, max_tokens=8)])


def test_unservable_adapters_are_refused(engine, prepared, tmp_path):
    dora = make_random_adapter(prepared.base_model, tmp_path / "dora", seed=3, use_dora=True)
    with pytest.raises(AdapterError, match="DoRA"):
        engine.register_adapter("dora", dora)
    big = make_random_adapter(prepared.base_model, tmp_path / "big", seed=3, rank=32)
    with pytest.raises(AdapterError, match="rank 32 exceeds"):
        engine.register_adapter("big", big)
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        engine.register_adapter("empty", tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(dora, broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        engine.register_adapter("broken", broken)


def test_hot_reload_new_version_gets_new_id_and_new_output(engine, prepared, random_adapters, tmp_path):
    request = GenerationRequest(messages=QUESTION, adapter="gamma", max_tokens=16)
    v1 = engine.register_adapter("gamma", random_adapters["alpha"], version="v1")
    out_v1 = engine.generate([request])[0]
    v2_path = make_random_adapter(prepared.base_model, tmp_path / "gamma-v2", seed=7)
    (v2_path / "manifest.json").write_text(json.dumps({"version": "v2"}))
    v2 = engine.register_adapter("gamma", v2_path)
    out_v2 = engine.generate([request])[0]
    assert (v1.version, v2.version) == ("v1", "v2")
    assert v1.lora_id != v2.lora_id and v2.served_name == "gamma@v2"
    assert out_v2.adapter.version == "v2"
    assert out_v1.token_ids != out_v2.token_ids
    # Re-registering the same version keeps its id (no duplicate slots).
    assert engine.register_adapter("gamma", v2_path).lora_id == v2.lora_id


def test_scoring_matches_hf_log_probabilities(engine, prepared, random_adapters):
    """Engine.score: the log-probability of each continuation after the prompt, for single-token continuations
    (read from the next token's top 20) and multi-token ones (prompt logprobs, the prompt read from the prefix
    cache), with and without an adapter, equals HF transformers (+ peft) in float32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.serving.engine import GenerationRequest, ScoreRequest

    messages = [{"role": "user", "content": "Is the sky blue on a clear day? Answer yes or no."}]
    # the last two share their start: the second may read the first's tokens from the prefix cache
    continuations = ["Yes", "No", "Maybe", "Yes, it is blue.", "Yes, it is blue and clear on most days."]
    requests = [ScoreRequest(messages=messages, continuations=continuations),
                ScoreRequest(messages=messages, continuations=continuations, adapter="alpha")]
    scores = engine.score(requests)
    prompt = engine.render(GenerationRequest(messages=messages))
    for (adapter, got) in ((None, scores[0]), (random_adapters["alpha"], scores[1])):
        model = AutoModelForCausalLM.from_pretrained(str(prepared.base_model), dtype=torch.float32)
        if adapter:
            model = PeftModel.from_pretrained(model, str(adapter))
        for text, value in zip(continuations, got, strict=True):
            cont = engine.tokenizer.encode(text, add_special_tokens=False)
            ids = torch.tensor([prompt + cont])
            with torch.no_grad():
                logits = model(input_ids=ids).logits.log_softmax(-1)[0]
            want = sum(float(logits[len(prompt) + i - 1, t]) for i, t in enumerate(cont))
            assert abs(value - want) < 0.05, (adapter, text, value, want)


def test_scoring_inside_a_busy_mixed_batch_keeps_the_engine_alive(engine):
    """A prompt-logprobs request scheduled beside many LoRA generations: vLLM hands the LoRA logits op that
    request's few prompt rows with the whole batch's sampler indices. The stock CPU op (and the grouped op
    before its fix) raised IndexError in the engine core, which died and took every domain with it (seen in
    an eval: 'index 9 is out of bounds for dimension 0 with size 9'). Scores must equal the quiet ones."""
    import concurrent.futures as cf

    from assistant.serving.engine import ScoreRequest

    # The prompt cache works in blocks (128 tokens on CPU): a prompt 2 tokens past two full blocks leaves a
    # prompt-logprobs request only its last prompt tokens and the continuation to compute, fewer rows than
    # the 16 requests beside it.
    words = "Bearings wear and vibrate; oil debris and temperature rise follow.".split()
    text = "Which sensor detects bearing wear? Answer with a letter."
    n = 0
    while len(engine.render(GenerationRequest(messages=[{"role": "user", "content": text}]))) % 128 != 2 or n < 200:
        text = f"{words[n % len(words)]} {text}"
        n += 1
    messages = [{"role": "user", "content": text}]
    continuations = ["A. vibration", "B. oil debris", "C. current"]  # multi-token: prompt logprobs
    quiet = engine.score([ScoreRequest(messages=messages, continuations=continuations, adapter="alpha")])[0]
    busy = [GenerationRequest(messages=[{"role": "user", "content": f"Count to {n}."}], max_tokens=24,
                              adapter=("alpha", "beta", None)[n % 3]) for n in range(16)]
    with cf.ThreadPoolExecutor(2) as pool:
        generations = pool.submit(engine.generate, busy)
        scored = [pool.submit(engine.score, [ScoreRequest(messages=messages, continuations=continuations,
                                                          adapter="alpha")]) for _ in range(6)]
        results = [f.result(timeout=300)[0] for f in scored]
        assert len(generations.result(timeout=300)) == 16
    assert engine.healthy()
    for got in results:
        assert all(abs(a - b) < 0.05 for a, b in zip(got, quiet, strict=True)), (got, quiet)
