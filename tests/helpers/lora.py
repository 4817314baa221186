"""Test adapters: seeded random non-zero LoRA weights, and HF + peft reference generation."""
from __future__ import annotations

from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_random_adapter(base_model: Path, out: Path, seed: int, rank: int = 8, b_scale: float = 0.5, **extra) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, init_lora_weights=False, **extra)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)
    peft_model.save_pretrained(str(out))
    return out


def hf_greedy(base_model: Path, rows: list[tuple[list[int], Path | None]], max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens from HF transformers (+ peft for rows with an adapter), one row at a time, float32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    results = []
    cache: dict = {}
    for prompt_ids, adapter in rows:
        key = str(adapter)
        if key not in cache:
            model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
            cache[key] = PeftModel.from_pretrained(model, str(adapter)) if adapter else model
        model = cache[key]
        ids = torch.tensor([prompt_ids])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=model.config.eos_token_id)
        results.append(out[0, len(prompt_ids):].tolist())
    return results
