"""LoRA training for a domain, in the exact prompt format the platform uses at run time: a recipe read top to bottom.

1. Examples (`build_examples`): each train-split question with the passages retrieval finds for it (the gold
   passage made sure to be among them), target = the answer in the vertical's style, citing the gold passage as
   [n]. Some examples show only unrelated passages, with the target "I don't know from these documents." so the
   adapter learns to abstain rather than invent. A question with lettered options gives one example per cyclic
   order of its options (the orders the platform scores), so no letter is learnt as a habit.
2. Config (`TrainConfig`): every hyperparameter of a run, validated, with the defaults the adapters ship with.
3. Encoding (`encode_examples`): prompt + target + the chat template's end-of-turn token(s); loss on the answer
   tokens only (labels -100 over the prompt).
4. Model (`load_model`): the base, plain or 4-bit NF4 (QLoRA, CUDA only), with a peft LoRA on top.
5. Fit (`fit`): seeded AdamW with warm-up and linear decay, micro-batch accumulation, early stopping on the dev
   loss, the best state restored.
6. Save (`save_adapter`): the peft adapter plus manifest.json (version `YYYYMMDD-<sha8 of the weights>`, the
   sha256 of every weight file, data, hyperparameters, losses).

`train_adapter` runs 3-6 in that order. Plain LoRA or rsLoRA (what vLLM serves); CPU or CUDA.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform as host
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.data_format import NUMERIC_TYPES, AnswerType
from assistant.domains import Domain
from assistant.errors import InputError, ModelError
from assistant.prompting import build_messages
from assistant.serving.adapter_manifest import write_manifest

IDK = "I don't know from these documents."
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WEIGHTS_FILE = "adapter_model.safetensors"  # what peft's save_pretrained writes (safe_serialization=True)


# --- 1. Examples --------------------------------------------------------------------------------------------------

def target_text(row: dict, n: int) -> str | None:
    """The answer in the vertical's style, citing passage n."""
    answers = [a for a in row.get("answer", []) if str(a).strip()]
    kind = row.get("answer_type")
    if kind == AnswerType.UNANSWERABLE or not answers:
        return IDK
    meta = row.get("meta") or {}
    if kind == AnswerType.YES_NO_MAYBE:
        reason = re.split(r"(?<=[.!?])\s", (meta.get("long_answer") or "").strip())[0]
        return f"{answers[0].capitalize()}. {reason} [{n}]".replace("  ", " ")
    if kind == AnswerType.MULTIPLE_CHOICE:
        letter = answers[0]
        return f"{letter}. {row.get('options', {}).get(letter, '')} [{n}]"
    if kind == AnswerType.MULTI_SPAN:
        return f"{', '.join(answers)} [{n}]"
    if kind in NUMERIC_TYPES:
        scale = meta.get("scale") or ""
        return f"{answers[0]}{' ' + scale if scale else ''} [{n}]"
    return f"{answers[0]} [{n}]"


@dataclass(frozen=True)
class MixConfig:
    """Which train questions make a domain's mix: every data set of the domain, each capped at `per_set`
    questions (0 = all) so one big set does not drown the others' forms, and with `balance_labels` the
    yes/no/maybe questions oversampled until each label is as frequent as the commonest. Off by default: on
    PubMedQA (55% "yes") balancing took +RAG+LoRA from 0.547 to 0.453 (p 0.017, eval/reports/mix_study.md), since
    this model's label scores carry little signal beyond the prior it learns.
    Abstain examples come from `negatives` (share shown only unrelated passages) and unanswerable rows."""

    per_set: int = 1000
    balance_labels: bool = False
    negatives: float = 0.1

    def __post_init__(self):
        _check(_is_int(self.per_set) and self.per_set >= 0, "per_set must be an integer >= 0 (0 = all)",
               self.per_set, "MixConfig")
        _check(isinstance(self.balance_labels, bool), "balance_labels must be True or False", self.balance_labels,
               "MixConfig")
        _check(_is_number(self.negatives) and 0 <= self.negatives < 1, "negatives must be in [0, 1)",
               self.negatives, "MixConfig")


def closed_label(row: dict) -> str | None:
    """The label of a yes/no/maybe question (what `balance_labels` evens out), else None."""
    if row.get("answer_type") != AnswerType.YES_NO_MAYBE or not row.get("answer"):
        return None
    return str(row["answer"][0]).strip().lower()


def mix_rows(rows: list[dict], mix: MixConfig, rng: random.Random) -> list[dict]:
    """The train questions of the mix, shuffled: each data set capped, closed labels balanced by repeating
    questions of the rarer labels (a repeat keeps its qid, so it lands on the same side of the dev split)."""
    by_set: dict[str, list[dict]] = {}
    for row in rows:
        by_set.setdefault(row.get("data") or "", []).append(row)
    mixed = []
    for name in sorted(by_set):
        chosen = list(by_set[name])
        rng.shuffle(chosen)
        if mix.per_set:
            chosen = chosen[: mix.per_set]
        if mix.balance_labels:
            by_label: dict[str, list[dict]] = {}
            for row in chosen:
                label = closed_label(row)
                if label is not None:
                    by_label.setdefault(label, []).append(row)
            if len(by_label) > 1:
                most = max(len(group) for group in by_label.values())
                for group in by_label.values():
                    chosen.extend(group[i % len(group)] for i in range(most - len(group)))
        mixed.extend(chosen)
    rng.shuffle(mixed)
    return mixed


def mix_summary(examples: list[dict]) -> dict:
    """What a set of examples holds, for the manifest: examples per data set, per target label and form."""
    from collections import Counter

    return {"by_data": dict(Counter(e.get("data", "") for e in examples).most_common()),
            "by_label": dict(Counter(e.get("label", "") for e in examples).most_common())}


def build_examples(domain: Domain, retriever, tokenizer, *, split: str = "train", limit: int = 0,
                   mix: MixConfig | None = None, seed: int = 0, budget_tokens: int = 900,
                   rotate_options: bool = True, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    mix = mix or MixConfig()
    negatives = mix.negatives
    rng = random.Random(seed)
    rows = [r for r in domain.qa_rows(split)
            if r.get("gold_doc_ids") or r.get("answer_type") == AnswerType.UNANSWERABLE]
    rows.sort(key=lambda r: (r.get("data") or "", str(r.get("qid"))))
    if limit:
        rng.shuffle(rows)
        rows = rows[:limit]
    rows = mix_rows(rows, mix, rng)
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
        for options, shown_target in _option_orders(row, target, rotate_options and not negative):
            messages, shown = build_messages(
                domain.system_prompt, row["question"], passages, tokenizer, answer_template=domain.answer_template,
                options=options, budget_tokens=budget_tokens)
            cited = re.findall(r"\[(\d+)\]", shown_target)
            if cited and int(cited[-1]) > len(shown):  # the gold passage was trimmed away: skip
                continue
            label = "abstain" if shown_target == IDK else (closed_label(row) or str(row.get("answer_type")))
            examples.append({"qid": row["qid"], "messages": messages, "target": shown_target,
                             "data": row.get("data", ""), "label": label})
    return examples


def _option_orders(row: dict, target: str, rotate: bool) -> list[tuple[dict | None, str]]:
    """(options as shown, target) pairs: the row's own order, or with `rotate` every cyclic order the platform
    scores (assistant.choices), the target's letter following the gold text. Training on one order taught the
    shipped manufacturing adapter a position preference; every order took FailureSensorIQ from 0.376 to 0.833
    (eval/reports/choice_study.md)."""
    from assistant.choices import form_for

    options = row.get("options")
    form = form_for(options, row.get("answer_type")) if options else None
    if not rotate or form is None or target == IDK or not row.get("answer"):
        return [(options, target)]
    gold_text = options.get(row["answer"][0])
    if gold_text is None:
        return [(options, target)]
    pairs = []
    for shown in form.orders():
        letter = next(k for k, v in shown.items() if v == gold_text)
        pairs.append((shown, re.sub(r"^[A-Z]\. ", f"{letter}. ", target, count=1)))
    return pairs


# --- 2. Config ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """One training run's hyperparameters. The LoRA fields are peft's `LoraConfig` ones (see `lora_config`).

    `resolved()` fills in what depends on the machine (device, micro_batch) and alpha = 2 x rank; the
    manifest records the resolved values."""

    rank: int = 8                        # LoRA rank r (LoraConfig.r): width of the low-rank update B @ A
    alpha: int | None = None             # LoRA alpha (LoraConfig.lora_alpha); None = 2 x rank
    rslora: bool = False                 # rank-stabilised scaling alpha / sqrt(r) instead of alpha / r (use_rslora)
    epochs: float = 2.0                  # passes over the train examples (fractions allowed); ignored with max_steps
    max_steps: int = 0                   # stop after this many optimizer steps; 0 = run `epochs`
    lr: float = 2e-4                     # peak AdamW learning rate (10-step warm-up, then linear decay to 0)
    batch_size: int = 8                  # examples per optimizer step
    micro_batch: int | None = None       # examples per forward pass, accumulated to batch_size; None = all on CUDA,
                                         # 2 on CPU (a batch of 8 x 1,024 tokens held 14 GB of activations on CPU)
    max_len: int = 1024                  # tokens per example (prompt + answer), longer ones are cut at the end
    dev_fraction: float = 0.1            # share of the examples held out for the dev loss (at least 1 when > 10)
    patience: int = 3                    # stop after this many dev evaluations without improvement
    eval_every: int = 25                 # steps between dev evaluations (and at the last step)
    seed: int = 0                        # seeds LoRA init, dropout, the dev split and the step order
    device: str | None = None            # "cuda" or "cpu"; None = CUDA when available
    qlora: bool = False                  # frozen base in 4-bit NF4 (bitsandbytes, CUDA only); adapter stays plain LoRA
    target_modules: tuple[str, ...] | str = TARGET_MODULES  # modules that get LoRA (LoraConfig.target_modules)
    dropout: float = 0.05                # dropout on the LoRA input during training (LoraConfig.lora_dropout)
    upper_layers: int = 0                # LoRA on the top N decoder layers only (LoraConfig.layers_to_transform);
                                         # 0 = all. Backward then stops at the lowest adapted layer: the CPU recipe
    bf16_autocast: bool = False          # CPU: run the forward and backward in bfloat16 (torch.autocast; the LoRA
                                         # weights and optimizer stay float32); CUDA already trains in bf16
    time_budget_s: float = 0.0           # stop planning steps past this many seconds of training (0 = no budget):
                                         # the second step's time sets how many steps fit, the schedule follows

    def __post_init__(self):
        if isinstance(self.target_modules, list):  # frozen: normalise a list to a tuple
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        _check(_is_int(self.rank) and self.rank >= 1, "rank must be an integer >= 1", self.rank)
        _check(self.alpha is None or (_is_number(self.alpha) and self.alpha > 0),
               "alpha must be > 0, or None for 2 x rank", self.alpha)
        _check(_is_number(self.epochs) and self.epochs >= 0, "epochs must be a number >= 0", self.epochs)
        _check(_is_int(self.max_steps) and self.max_steps >= 0, "max_steps must be an integer >= 0 (0 = by epochs)",
               self.max_steps)
        _check(self.epochs > 0 or self.max_steps > 0, "epochs or max_steps must be > 0", (self.epochs, self.max_steps))
        _check(_is_number(self.lr) and self.lr > 0, "lr must be > 0", self.lr)
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be an integer >= 1",
               self.batch_size)
        _check(self.micro_batch is None or (_is_int(self.micro_batch) and self.micro_batch >= 1),
               "micro_batch must be an integer >= 1, or None for the device's default", self.micro_batch)
        _check(_is_int(self.max_len) and self.max_len >= 1, "max_len must be an integer >= 1", self.max_len)
        _check(_is_number(self.dev_fraction) and 0 <= self.dev_fraction < 1, "dev_fraction must be in [0, 1)",
               self.dev_fraction)
        _check(_is_int(self.patience) and self.patience >= 1, "patience must be an integer >= 1", self.patience)
        _check(_is_int(self.eval_every) and self.eval_every >= 1, "eval_every must be an integer >= 1",
               self.eval_every)
        _check(_is_int(self.seed), "seed must be an integer", self.seed)
        _check(self.device in (None, "cpu", "cuda"), "device must be 'cpu', 'cuda' or None (CUDA when available)",
               self.device)
        _check(isinstance(self.qlora, bool), "qlora must be True or False", self.qlora)
        if self.qlora and self.device == "cpu":
            raise InputError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels), but the device is the CPU; "
                             "train plain LoRA on CPU")
        _check(bool(self.target_modules) and (isinstance(self.target_modules, str)
                                             or all(isinstance(m, str) and m for m in self.target_modules)),
               "target_modules must be module names (or one peft pattern string)", self.target_modules)
        _check(_is_number(self.dropout) and 0 <= self.dropout < 1, "dropout must be in [0, 1)", self.dropout)
        _check(_is_int(self.upper_layers) and self.upper_layers >= 0, "upper_layers must be an integer >= 0 (0 = all)",
               self.upper_layers)
        _check(isinstance(self.bf16_autocast, bool), "bf16_autocast must be True or False", self.bf16_autocast)
        _check(_is_number(self.time_budget_s) and self.time_budget_s >= 0, "time_budget_s must be >= 0 (0 = none)",
               self.time_budget_s)

    def resolved(self) -> TrainConfig:
        """The same run with device, alpha and micro_batch decided (idempotent)."""
        device = self.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        micro = max(1, min(self.batch_size, self.micro_batch or (self.batch_size if device == "cuda" else 2)))
        return dataclasses.replace(self, device=device, alpha=self.alpha or 2 * self.rank, micro_batch=micro)

    def to_manifest(self) -> dict:
        """The manifest's "hyperparameters" block (of the resolved config)."""
        c = self.resolved()
        modules = c.target_modules if isinstance(c.target_modules, str) else list(c.target_modules)
        return {"rank": c.rank, "alpha": c.alpha, "rslora": c.rslora, "lr": c.lr, "batch_size": c.batch_size,
                "micro_batch": c.micro_batch, "epochs": c.epochs, "max_steps": c.max_steps, "max_len": c.max_len,
                "target_modules": modules, "dropout": c.dropout, "seed": c.seed, "qlora": c.qlora,
                "upper_layers": c.upper_layers, "bf16_autocast": c.bf16_autocast, "time_budget_s": c.time_budget_s}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, message: str, value, owner: str = "TrainConfig") -> None:
    if not ok:
        raise InputError(f"{owner}: {message}, got {value!r}")


# --- 3. Encoding --------------------------------------------------------------------------------------------------

def end_of_turn_ids(tokenizer) -> list[int]:
    """The token id(s) that close an assistant turn, read from the tokenizer's chat template.

    Renders a one-turn conversation and tokenizes what the template writes after the assistant's content,
    without trailing whitespace-only tokens (ChatML writes "<|im_end|>\\n": this gives [id of <|im_end|>]).
    Falls back to the eos token when the template writes nothing after the content."""
    marker = "END-OF-TURN-PROBE-7f3a"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}],
                                         tokenize=False)
    tail = text.rsplit(marker, 1)[1] if marker in text else ""
    ids = tokenizer.encode(tail, add_special_tokens=False) if tail.strip() else []
    while ids and not tokenizer.decode(ids[-1:]).strip():
        ids.pop()
    if ids:
        return ids
    if tokenizer.eos_token_id is None:
        raise ModelError("cannot tell how the model ends a turn: its chat template writes nothing after the "
                         "assistant's content and the tokenizer has no eos token")
    return [tokenizer.eos_token_id]


def encode_example(example: dict, tokenizer, max_len: int, end_of_turn: list[int]) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as served (chat template + generation prompt), then the target and the
    end of turn; labels are -100 over the prompt, so the loss is on the answer only. Cut to max_len tokens."""
    prompt = tokenizer.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=True)
    if hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    answer = tokenizer.encode(example["target"], add_special_tokens=False) + list(end_of_turn)
    ids = (list(prompt) + answer)[:max_len]
    labels = ([-100] * len(prompt) + answer)[:max_len]
    return ids, labels


def encode_examples(examples: list[dict], tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    end_of_turn = end_of_turn_ids(tokenizer)
    return [encode_example(e, tokenizer, max_len, end_of_turn) for e in examples]


def split_dev(data: list, dev_fraction: float, rng: random.Random,
              groups: list | None = None) -> tuple[list, list]:
    """(train, dev) after a seeded shuffle; no dev set for 10 examples or fewer, else at least one. With `groups`
    (one key per item, e.g. the question id) a group stays on one side: a question's option orders and the repeats
    of label balancing would otherwise grade the dev loss on questions it trained on."""
    if groups is None:
        rng.shuffle(data)
        n_dev = max(1, int(len(data) * dev_fraction)) if len(data) > 10 else 0
        return data[n_dev:], data[:n_dev]
    keys = sorted(set(groups), key=str)
    rng.shuffle(keys)
    n_dev = max(1, int(len(keys) * dev_fraction)) if len(data) > 10 and len(keys) > 1 else 0
    dev_keys = set(keys[:n_dev])
    order = list(range(len(data)))
    rng.shuffle(order)
    return ([data[i] for i in order if groups[i] not in dev_keys],
            [data[i] for i in order if groups[i] in dev_keys])


# --- 4. Model -----------------------------------------------------------------------------------------------------

def lora_config(config: TrainConfig, num_layers: int | None = None):
    """peft's LoraConfig for the run (`num_layers`: the base's decoder layers, needed with upper_layers)."""
    from peft import LoraConfig

    c = config.resolved()
    modules = c.target_modules if isinstance(c.target_modules, str) else list(c.target_modules)
    layers = None
    if c.upper_layers:
        if not num_layers:
            raise InputError("upper_layers needs the base model's number of layers")
        layers = list(range(max(0, num_layers - c.upper_layers), num_layers))
    return LoraConfig(r=c.rank, lora_alpha=c.alpha, target_modules=modules, lora_dropout=c.dropout,
                      use_rslora=c.rslora, task_type="CAUSAL_LM", layers_to_transform=layers)


def load_model(base_model: str | Path, config: TrainConfig):
    """(peft model, tokenizer): the base in bfloat16 on CUDA, float32 on CPU, or 4-bit NF4 with qlora; LoRA on top.
    Seed torch before calling: the LoRA A matrices are initialised at random."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config.resolved()
    if config.qlora:
        _check_qlora(config.device)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    if config.qlora:
        model = _load_4bit(base_model)
    else:
        dtype = torch.bfloat16 if config.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype)
        model.to(config.device)
    return get_peft_model(model, lora_config(config, model.config.num_hidden_layers)), tokenizer


def _check_qlora(device: str) -> None:
    import importlib.util

    if device != "cuda":
        raise InputError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); train plain LoRA on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError("QLoRA needs the bitsandbytes package: pip install 'domain-assistant[gpu]' or bitsandbytes")


def _load_4bit(base_model: str | Path):
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), quantization_config=quant, device_map={"": 0})
    return prepare_model_for_kbit_training(model)


# --- 5. Fit -------------------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    steps: int                      # optimizer steps taken (fewer than planned when early stopping hit)
    # per step: train loss and seconds; (step, dev loss) at each evaluation
    history: dict = field(default_factory=lambda: {"train_loss": [], "dev_loss": [], "step_s": []})
    dev_first: float | None = None  # dev loss before training (None without a dev set)
    dev_best: float | None = None   # best dev loss seen; the model holds that state
    wall_time_s: float = 0.0

    def loss(self) -> dict:
        """The manifest's "loss" block."""
        return {"train_first": self.history["train_loss"][0], "train_last": self.history["train_loss"][-1],
                "dev_first": self.dev_first, "dev_best": self.dev_best}


def collate(items: list[tuple[list[int], list[int]]], pad_id: int, device: str):
    """(input ids, labels, attention mask) tensors, right-padded to the longest item."""
    import torch

    width = max(len(i) for i, _ in items)
    ids = torch.full((len(items), width), pad_id)
    labels = torch.full((len(items), width), -100)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for r, (i, lab) in enumerate(items):
        ids[r, :len(i)] = torch.tensor(i)
        labels[r, :len(lab)] = torch.tensor(lab)
        mask[r, :len(i)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _autocast(config: TrainConfig):
    """bfloat16 compute on the CPU when the config asks for it (CUDA runs hold the base in bf16 already)."""
    import torch

    if config.bf16_autocast and config.device == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def dev_loss(model, dev: list, config: TrainConfig, pad_id: int) -> float | None:
    """Mean of the micro-batches' mean token losses over the dev set (eval mode, no grad); None without one."""
    import torch

    if not dev:
        return None
    model.eval()
    losses = []
    with torch.no_grad(), _autocast(config):
        for i in range(0, len(dev), config.micro_batch):
            ids, labels, mask = collate(dev[i:i + config.micro_batch], pad_id, config.device)
            losses.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss.item())
    model.train()
    return sum(losses) / len(losses)


def fit(model, train: list, dev: list, config: TrainConfig, *, rng: random.Random, pad_id: int,
        progress: bool = True, desc: str = "train") -> FitResult:
    """Train the LoRA weights; returns the history with the model at its best dev loss.

    `rng` orders the steps: a fresh shuffle of the train set each epoch (pass the one that split the data, as
    `train_adapter` does, to reproduce a run). Each step accumulates micro-batches to batch_size; the dev loss
    is measured every eval_every steps and at the last, and `patience` evaluations without improvement stop."""
    import torch
    from tqdm.auto import tqdm

    config = config.resolved()
    batch_size, micro = config.batch_size, config.micro_batch
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = config.max_steps or max(1, int(steps_per_epoch * config.epochs))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    # linear warm-up over the first 10 steps, then linear decay to 0 at the last step
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / total))
    # (the lambda reads `total` when called: a time budget that shortens the run after step 1 shortens the decay)

    started = time.time()
    result = FitResult(steps=0)
    history = result.history
    best, best_state, bad = float("inf"), None, 0
    first_dev = dev_loss(model, dev, config, pad_id)
    if first_dev is not None:
        history["dev_loss"].append((0, round(first_dev, 4)))
    model.train()
    step = 0
    bar = tqdm(total=total, desc=desc, disable=not progress)
    order = []
    while step < total:
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        idx, order = order[:batch_size], order[batch_size:]
        batch_loss = 0.0
        step_started = time.time()
        for j in range(0, len(idx), micro):
            part = idx[j:j + micro]
            ids, labels, mask = collate([train[i] for i in part], pad_id, config.device)
            # each micro-batch's mean token loss, weighted by its share of the batch's examples
            with _autocast(config):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss * (len(part) / len(idx))
            loss.backward()
            batch_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        step += 1
        history["train_loss"].append(round(batch_loss, 4))
        history["step_s"].append(round(time.time() - step_started, 2))
        if step == min(2, total):  # the first step holds one-off set-up (kernels, allocator): time the second
            total = _plan_steps(total, step, history["step_s"], time.time() - started, config,
                                bar if progress else None)
            bar.total = total
        elif config.time_budget_s and time.time() - started > config.time_budget_s:
            total = step  # over the budget (dev evaluations take time too): this step is the last, evaluated
        bar.update(1)
        bar.set_postfix(loss=f"{batch_loss:.3f}")
        if dev and (step % config.eval_every == 0 or step == total):
            d = dev_loss(model, dev, config, pad_id)
            history["dev_loss"].append((step, round(d, 4)))
            if d < best - 1e-4:
                best, bad = d, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
            else:
                bad += 1
                if bad >= config.patience:
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    result.steps = step
    result.dev_first = None if first_dev is None else round(first_dev, 4)
    result.dev_best = None if best == float("inf") else round(best, 4)
    result.wall_time_s = round(time.time() - started, 1)
    return result


def _plan_steps(total: int, done: int, step_s: list[float], elapsed_s: float, config: TrainConfig, bar) -> int:
    """After the first steps: how many steps the run takes (the time budget's cap), said with the expected time
    and memory before the rest of the run. The last step's time is the estimate (the first holds set-up)."""
    per_step = max(step_s[-1], 1e-3)
    planned = total
    if config.time_budget_s:
        planned = max(done, min(total, done + int((config.time_budget_s - elapsed_s) / per_step)))
    if bar is not None:
        note = f" (time budget {config.time_budget_s:.0f} s: {planned} of {total} steps)" if planned < total else ""
        bar.write(f"steps took {', '.join(f'{t:.1f}' for t in step_s)} s: ~{(planned - done) * per_step / 60:.1f} "
                  f"min more for {planned} steps{note}; peak memory so far {peak_memory_gb(config.device):.1f} GB")
    return planned


def peak_memory_gb(device: str) -> float:
    """This process's peak memory: CUDA allocations on a GPU, resident set size on the CPU."""
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# --- 6. Save ------------------------------------------------------------------------------------------------------

STORAGE_DTYPE = "bfloat16"  # the engines run the base in bf16 and cast LoRA weights to it: fp32 files only cost size


def store_weights_as(weights_file: Path, dtype: str = STORAGE_DTYPE) -> None:
    """Rewrite a safetensors file with its floating-point tensors in `dtype` (metadata kept), atomically."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = getattr(torch, dtype)
    with safe_open(str(weights_file), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    tensors = {name: t.to(target) if t.is_floating_point() else t for name, t in tensors.items()}
    tmp = weights_file.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(weights_file)


def save_adapter(model, out_dir: str | Path, fields: dict) -> dict:
    """Write the peft adapter (weights stored in bf16) and its manifest.json; returns the manifest: `fields`
    (which must hold "domain") plus "version" (`YYYYMMDD-<first 8 hex of the weights' sha256>`),
    "weights_sha256" ({file: sha256}) and "weights_dtype"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    store_weights_as(out_dir / WEIGHTS_FILE)
    weights = {WEIGHTS_FILE: hashlib.sha256((out_dir / WEIGHTS_FILE).read_bytes()).hexdigest()}
    version = f"{time.strftime('%Y%m%d')}-{weights[WEIGHTS_FILE][:8]}"
    manifest = {"domain": fields["domain"], "version": version} | fields | {
        "weights_sha256": weights, "weights_dtype": STORAGE_DTYPE}
    write_manifest(out_dir, manifest)
    return manifest


def hardware(device: str) -> dict:
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else host.processor() or host.machine()
    return {"device": device, "name": name}


# --- The recipe ---------------------------------------------------------------------------------------------------

def train_adapter(examples: list[dict], base_model: str | Path, out_dir: str | Path, config: TrainConfig | None = None,
                  *, base_model_sha256: str, domain: str, mix: dict | None = None, progress: bool = True) -> dict:
    """Train a domain's LoRA adapter on `examples` (from `build_examples`) and write it with its manifest to
    `out_dir`; returns the manifest. `config`: TrainConfig() when None; `mix`: the MixConfig the examples were
    built with (its fields, recorded with what the examples hold)."""
    import torch

    if not examples:
        raise InputError(f"no training examples for {domain}")
    config = (config or TrainConfig()).resolved()
    torch.manual_seed(config.seed)        # LoRA init and dropout
    rng = random.Random(config.seed)      # the dev split, then the step order
    model, tokenizer = load_model(base_model, config)
    encoded = encode_examples(examples, tokenizer, config.max_len)
    kept = [i for i, (_, labels) in enumerate(encoded) if any(t != -100 for t in labels)]
    if not kept:  # a loss over no tokens is NaN: say why instead
        longest = max(len(ids) for ids, _ in encoded)
        raise InputError(f"max_len {config.max_len} cuts every example before its answer (prompts run to {longest} "
                         f"tokens): raise max_len, or export the examples with shorter passages")
    data = [encoded[i] for i in kept]
    train, dev = split_dev(data, config.dev_fraction, rng, groups=[examples[i].get("qid") for i in kept])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = fit(model, train, dev, config, rng=rng, pad_id=pad_id, progress=progress, desc=f"train {domain}")
    return save_adapter(model, out_dir, {
        "domain": domain, "base_model_sha256": base_model_sha256,
        "training_data_sha256": hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest(),
        "examples": len(examples), "train_examples": len(train), "dev_examples": len(dev),
        "examples_cut_before_answer": len(examples) - len(kept),
        "hyperparameters": config.to_manifest(), "steps": result.steps, "wall_time_s": result.wall_time_s,
        "hardware": hardware(config.device), "loss": result.loss(), "history": result.history, "eval": {},
        "training_mix": (mix or {}) | mix_summary(examples),
    })
