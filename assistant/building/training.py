"""LoRA training for a domain, in the exact prompt format the platform uses at run time.

Examples: each train-split question with the passages retrieval finds for it (the gold passage made sure
to be among them), target = the answer in the vertical's style, citing the gold passage as [n]. Some
examples show only unrelated passages, with the target "I don't know from these documents." so the
adapter learns to abstain rather than invent. Loss is on the answer tokens only.

Plain LoRA or rsLoRA (what vLLM serves), seeded, dev-split early stopping, progress bar; CPU or CUDA.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform as host
import random
import re
import time
from pathlib import Path

from assistant.serving.adapter_manifest import write_manifest
from assistant.domains import Domain
from assistant.prompting import PromptPassage, build_messages

IDK = "I don't know from these documents."
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def target_text(row: dict, n: int) -> str | None:
    """The answer in the vertical's style, citing passage n."""
    answers = [a for a in row.get("answer", []) if str(a).strip()]
    kind = row.get("answer_type")
    if kind == "unanswerable_in_candidates" or not answers:
        return IDK
    meta = row.get("meta") or {}
    if kind == "yes/no/maybe":
        reason = re.split(r"(?<=[.!?])\s", (meta.get("long_answer") or "").strip())[0]
        return f"{answers[0].capitalize()}. {reason} [{n}]".replace("  ", " ")
    if kind == "multiple_choice":
        letter = answers[0]
        return f"{letter}. {row.get('options', {}).get(letter, '')} [{n}]"
    if kind == "multi-span":
        return f"{', '.join(answers)} [{n}]"
    if kind in ("arithmetic", "count"):
        scale = meta.get("scale") or ""
        return f"{answers[0]}{' ' + scale if scale else ''} [{n}]"
    return f"{answers[0]} [{n}]"


def build_examples(domain: Domain, retriever, tokenizer, *, split: str = "train", limit: int = 0,
                   negatives: float = 0.1, seed: int = 0, budget_tokens: int = 900, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    rows = [r for r in domain.qa_rows(split) if r.get("gold_doc_ids") or r.get("answer_type") == "unanswerable_in_candidates"]
    rng.shuffle(rows)
    if limit:
        rows = rows[:limit]
    k = domain.k
    examples = []
    for row in tqdm(rows, desc=f"examples {domain.name}", disable=not progress):
        scope = domain.scope_filter(row)
        passages = retriever.retrieve(domain.name, row["question"], k, filter=scope)
        gold = set(row.get("gold_doc_ids", []))
        negative = rng.random() < negatives and len(rows) > 1
        if negative:  # passages retrieved for a different question, none of them gold
            other = rows[rng.randrange(len(rows))]
            passages = [p for p in retriever.retrieve(domain.name, other["question"], k + 2,
                                                      filter=domain.scope_filter(other)) if p.doc_id not in gold][:k]
            target = IDK
        else:
            if gold and not any(p.doc_id in gold for p in passages):
                best = retriever.retrieve(domain.name, row["question"], 1, filter={"doc_id": sorted(gold)})
                if not best:
                    continue
                passages = passages[: k - 1]
                passages.insert(rng.randrange(len(passages) + 1), best[0])
            shown_gold = next((i + 1 for i, p in enumerate(passages) if p.doc_id in gold), None)
            target = target_text(row, shown_gold or 1)
            if shown_gold is None and target != IDK:
                continue
        messages, shown = build_messages(
            domain.system_prompt, row["question"],
            [PromptPassage(i + 1, p.doc_id, p.title, p.text, p.score) for i, p in enumerate(passages)],
            tokenizer, answer_template=domain.answer_template, options=row.get("options"),
            budget_tokens=budget_tokens)
        cited = re.findall(r"\[(\d+)\]", target)
        if cited and int(cited[-1]) > len(shown):  # the gold passage was trimmed away: skip
            continue
        examples.append({"qid": row["qid"], "messages": messages, "target": target})
    return examples


def _encode(example: dict, tokenizer, max_len: int) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=True)
    if hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    answer = tokenizer.encode(example["target"], add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    ids = (list(prompt) + answer)[:max_len]
    labels = ([-100] * len(prompt) + answer)[:max_len]
    return ids, labels


def _load_4bit(base_model, device: str):
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if device != "cuda":
        raise ValueError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); train plain LoRA on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("QLoRA needs the bitsandbytes package: pip install 'domain-assistant[gpu]' or bitsandbytes")
    from peft import prepare_model_for_kbit_training

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), quantization_config=quant, device_map={"": 0})
    return prepare_model_for_kbit_training(model)


def train_adapter(examples: list[dict], base_model: str | Path, out_dir: str | Path, *, base_model_sha256: str,
                  domain: str, rank: int = 8, alpha: int | None = None, rslora: bool = False, epochs: float = 2.0,
                  max_steps: int = 0, lr: float = 2e-4, batch_size: int = 8, max_len: int = 1024,
                  dev_fraction: float = 0.1, patience: int = 3, eval_every: int = 25, seed: int = 0,
                  device: str | None = None, qlora: bool = False, progress: bool = True,
                  micro_batch: int | None = None) -> dict:
    """qlora=True: the frozen base in 4-bit NF4 (bitsandbytes, CUDA only); the adapter itself is the same
    plain LoRA, so vLLM serves it on the full-precision base like any other.

    micro_batch: examples per forward pass; a batch is accumulated from micro-batches (same step, same
    effective batch). Default: the whole batch on CUDA, 2 on CPU, where a batch of 8 x 1,024 tokens held
    14 GB of activations and logits (measured: `assistant train` was OOM-killed on the 24 GB CI machine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError(f"no training examples for {domain}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    micro = max(1, min(batch_size, micro_batch or (batch_size if device == "cuda" else 2)))
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    if qlora:
        model = _load_4bit(base_model, device)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        model.to(device)
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=TARGET_MODULES, lora_dropout=0.05,
                        use_rslora=rslora, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)

    data = [_encode(e, tokenizer, max_len) for e in examples]
    rng.shuffle(data)
    n_dev = max(1, int(len(data) * dev_fraction)) if len(data) > 10 else 0
    dev, train = data[:n_dev], data[n_dev:]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max_steps or max(1, int(steps_per_epoch * epochs))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / total))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batch_tensors(items):
        width = max(len(i) for i, _ in items)
        ids = torch.full((len(items), width), pad)
        labels = torch.full((len(items), width), -100)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for r, (i, lab) in enumerate(items):
            ids[r, :len(i)] = torch.tensor(i)
            labels[r, :len(lab)] = torch.tensor(lab)
            mask[r, :len(i)] = 1
        return ids.to(device), labels.to(device), mask.to(device)

    def dev_loss():
        if not dev:
            return None
        model.eval()
        losses = []
        with torch.no_grad():
            for i in range(0, len(dev), micro):
                ids, labels, mask = batch_tensors(dev[i:i + micro])
                losses.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss.item())
        model.train()
        return sum(losses) / len(losses)

    started = time.time()
    history = {"train_loss": [], "dev_loss": []}
    best, best_state, bad = float("inf"), None, 0
    first_dev = dev_loss()
    if first_dev is not None:
        history["dev_loss"].append((0, round(first_dev, 4)))
    model.train()
    step = 0
    bar = tqdm(total=total, desc=f"train {domain}", disable=not progress)
    order = []
    while step < total:
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        idx, order = order[:batch_size], order[batch_size:]
        batch_loss = 0.0
        for j in range(0, len(idx), micro):
            part = idx[j:j + micro]
            ids, labels, mask = batch_tensors([train[i] for i in part])
            # each micro-batch's mean token loss, weighted by its share of the batch's examples
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss * (len(part) / len(idx))
            loss.backward()
            batch_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        step += 1
        history["train_loss"].append(round(batch_loss, 4))
        bar.update(1)
        bar.set_postfix(loss=f"{batch_loss:.3f}")
        if dev and (step % eval_every == 0 or step == total):
            d = dev_loss()
            history["dev_loss"].append((step, round(d, 4)))
            if d < best - 1e-4:
                best, bad = d, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
            else:
                bad += 1
                if bad >= patience:
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    data_sha = hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()
    weights_sha = hashlib.sha256((out_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    manifest = {
        "domain": domain, "version": f"{time.strftime('%Y%m%d')}-{weights_sha[:8]}",
        "base_model_sha256": base_model_sha256, "training_data_sha256": data_sha,
        "examples": len(examples), "train_examples": len(train), "dev_examples": len(dev),
        "hyperparameters": {"rank": rank, "alpha": alpha or 2 * rank, "rslora": rslora, "lr": lr,
                            "batch_size": batch_size, "micro_batch": micro, "epochs": epochs, "max_steps": max_steps,
                            "max_len": max_len,
                            "target_modules": TARGET_MODULES, "dropout": 0.05, "seed": seed,
                            "qlora": qlora},
        "steps": step, "wall_time_s": round(time.time() - started, 1),
        "hardware": {"device": device, "name": torch.cuda.get_device_name() if device == "cuda" else host.processor()
                     or host.machine()},
        "loss": {"train_first": history["train_loss"][0], "train_last": history["train_loss"][-1],
                 "dev_first": first_dev and round(first_dev, 4), "dev_best": None if best == float("inf") else round(best, 4)},
        "history": history, "eval": {},
    }
    write_manifest(out_dir, manifest)
    return manifest
