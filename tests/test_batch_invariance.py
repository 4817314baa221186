"""Batch-invariant mode (Settings.batch_invariant): an answer is the same alone and in any batch.

Kernel level: vLLM's CPU GEMMs (oneDNN and the packed AMX kernel) give rows different low bits for different row
counts; `tiled` removes that. End to end: the real engine on the real model (its served bf16 weights), mixed
adapters, each prompt alone vs in a batch in two orders, token for token."""
from __future__ import annotations

import pytest
import torch

from assistant.serving.vllm_plugin import TILE, tiled

ROWS = [1, 2, 3, 5, 8, 17, 31, 33, 64, 100, 257]
QUESTIONS = ["What are the symptoms of glaucoma?", "Can a landlord keep my deposit for normal wear and tear?",
             "What was the revenue growth in 2019?", "Does this charger work with a 2019 laptop?",
             "Which sensor detects bearing wear in an electric motor?", "How is high blood pressure treated?",
             "What does the privacy policy say about sharing e-mail addresses?", "Explain what EBITDA means."]


def _kernels(n: int, k: int):
    from vllm import _custom_ops as ops

    w = torch.randn(n, k, dtype=torch.bfloat16) * 0.05
    handler = ops.create_onednn_mm(w.t(), 32)
    packed = torch.ops._C.convert_weight_packed(w)
    return {"oneDNN": lambda x: ops.onednn_mm(handler, x, None),
            "packed AMX": lambda x: ops.weight_packed_linear_cpu(x, packed, n, None),
            "torch matmul": lambda x: x @ w.t()}


@pytest.mark.parametrize("n,k", [(960, 576), (576, 1536), (49152, 576)])  # qkv, down_proj, lm_head of SmolLM2
def test_tiled_gemm_rows_do_not_depend_on_the_row_count(n, k):
    torch.manual_seed(0)
    x = torch.randn(max(ROWS), k, dtype=torch.bfloat16)
    for name, kernel in _kernels(n, k).items():
        run = tiled(kernel)
        full = run(x)
        assert full.shape == (max(ROWS), n)
        for m in ROWS:
            assert torch.equal(run(x[:m].contiguous()), full[:m]), f"{name}: rows changed at M={m} (tile {TILE})"


@pytest.fixture(scope="module")
def invariant_engine(prepared, random_adapters):
    from assistant.config import Settings
    from assistant.serving.engine import Engine

    eng = Engine(prepared.base_model, Settings.load(batch_invariant=True, max_loras=2, max_model_len=1024,
                                                    kv_cache_gib=1))
    for name, path in random_adapters.items():
        eng.register_adapter(name, path)
    yield eng
    eng.shutdown()


def test_an_answer_is_the_same_alone_and_in_any_batch(invariant_engine):
    from assistant.serving.engine import GenerationRequest

    adapters = [None, "alpha", "beta"]
    requests = [GenerationRequest(messages=[{"role": "user", "content": f"Answer in two sentences. {q}"}],
                                  adapter=adapters[i % 3], max_tokens=48) for i, q in enumerate(QUESTIONS)]
    alone = [invariant_engine.generate([r])[0].token_ids for r in requests]
    batched = [r.token_ids for r in invariant_engine.generate(requests)]
    reversed_ = [r.token_ids for r in invariant_engine.generate(requests[::-1])][::-1]
    assert all(len(t) > 5 for t in alone)
    changed = [q for q, a, b, c in zip(QUESTIONS, alone, batched, reversed_, strict=True) if not a == b == c]
    assert not changed, f"answers changed with their batch: {changed}"
