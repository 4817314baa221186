"""Choice-adapter study: which training recipe makes the scored label (yes/no/maybe, option letter) right?

The platform answers choice questions by scoring each allowed label as the first token of the reply
(`assistant.choices`). The shipped adapters were trained to write label + reason + citation, with 10% "I don't
know" examples, on one order of the options; this study trains variants of that recipe on a GPU and scores
them the way the platform does, on every test question, against the majority class.

Two steps, two machines:
    python -m eval.choice_study export OUT_DIR     # CPU, here: retrieval + the platform's prompts -> jsonl.gz
    python -m eval.choice_study run DATA_DIR MODEL_DIR OUT_DIR VARIANT   # GPU: train one variant, score, save
    python -m eval.choice_study report RESULTS_DIR DATA_DIR eval/reports  # CPU: the table, paired tests

`run` needs only torch, transformers and peft (no vLLM, no store): what the GPU image has. Scores there come
from HF in bf16; the CPU eval with the real engine (`assistant eval`) confirms the one kept.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

DOMAINS = ("healthcare", "manufacturing")
CALIBRATION_QUESTIONS = 200  # train questions the per-label bias is fitted on, as `assistant calibrate` does
TRAIN_QUESTIONS = 2200       # train questions exported per domain: all (healthcare has 500, manufacturing 2,126)

# variant -> domain, how targets are written, and TrainConfig fields; "shipped" scores the adapter in the package
VARIANTS = {
    "h_shipped": ("healthcare", "shipped", {}),
    "h_reason": ("healthcare", "reason", {"epochs": 4}),
    "h_label": ("healthcare", "label", {"epochs": 4}),
    "h_label8": ("healthcare", "label", {"epochs": 8, "lr": 1e-4}),
    "m_shipped": ("manufacturing", "shipped", {}),
    "m_rotated": ("manufacturing", "rotated", {"epochs": 2, "batch_size": 16, "eval_every": 100}),
    "m_rotated16": ("manufacturing", "rotated", {"epochs": 3, "batch_size": 16, "eval_every": 100, "rank": 16,
                                                 "lr": 1e-4}),
}


# --- export (CPU: the platform's retrieval and prompts) -----------------------------------------------------------

def _prompts(dom, retriever, tokenizer, settings, row, orders):
    """The messages the platform scores for one question: one per shown order of the options."""
    from assistant.prompting import build_messages
    from assistant.redaction import redact

    passages = retriever.retrieve(dom.name, row["question"], dom.k, filter=dom.scope_filter(row))
    clean = redact if dom.redacts_identifiers else (lambda text: text)
    passages = [dataclasses.replace(p, text=clean(p.text)) for p in passages]
    budget = settings.max_model_len - dom.generation.max_tokens - 8
    return [build_messages(dom.system_prompt, row["question"], passages, tokenizer,
                           answer_template=dom.answer_template, options=order, budget_tokens=budget)[0]
            for order in orders], passages


def export(out_dir: Path) -> None:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from assistant.building.workflows import open_store_and_embedder
    from assistant.choices import form_for
    from assistant.config import Settings
    from assistant.domains import get_domain
    from assistant.serving.models import prepare_base_model
    from indexing.retriever import Retriever

    settings = Settings.load()
    base_model, _ = prepare_base_model(settings)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    store, embedder = open_store_and_embedder(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        retriever = Retriever(store, embedder, max_query_chars=settings.max_question_chars)
        for name in DOMAINS:
            dom = get_domain(name, settings)
            rows = {"score": []}
            train = dom.qa_rows("train")
            random.Random(0).shuffle(train)
            calibration_ids = {r["qid"] for r in train[:CALIBRATION_QUESTIONS]}
            train = train[:TRAIN_QUESTIONS]
            for row in tqdm([*train, *dom.qa_rows("test")], desc=f"prompts {name}"):
                form = form_for(row.get("options"), row.get("answer_type"))
                if form is None or not row.get("answer"):
                    continue
                orders = form.orders()
                messages, passages = _prompts(dom, retriever, tokenizer, settings, row, orders)
                gold = set(row.get("gold_doc_ids") or [])
                shown = next((i + 1 for i, p in enumerate(passages) if p.doc_id in gold), None)
                long_answer = (row.get("meta") or {}).get("long_answer") or ""
                rows["score"].append({
                    "qid": row["qid"], "split": row["split"], "calibration": row["qid"] in calibration_ids,
                    "kind": str(form.kind), "labels": list(form.labels), "options": dict(form.options),
                    "continuations": form.continuations(), "gold": str(row["answer"][0]).strip().lower()
                    if form.kind != "multiple_choice" else str(row["answer"][0]).strip().upper(),
                    "messages": messages, "qtype": (row.get("meta") or {}).get("question_type"),
                    "gold_shown": shown, "reason": re.split(r"(?<=[.!?])\s", long_answer.strip())[0]})
            with gzip.open(out_dir / f"{name}.json.gz", "wt", encoding="utf-8") as fh:
                json.dump(rows, fh)
            print(f"{name}: {len(rows['score'])} scored questions")
    finally:
        store.close()


# --- run (GPU: train one variant, score it and the base) ----------------------------------------------------------

def _targets(data: dict, how: str, seed: int = 0) -> list[dict]:
    """Training examples for a variant, from the exported prompts."""
    train = [s for s in data["score"] if s["split"] == "train"]
    examples = []
    rng = random.Random(seed)
    for s in train:
        if s["kind"] == "multiple_choice":
            letters = s["labels"]
            gold_text = s["options"][s["gold"]]
            orders = range(len(s["messages"])) if how == "rotated" else [0]
            for r in orders:  # rotation r shows text (i + r) % n at letter i
                texts = [s["options"][letters[(i + r) % len(letters)]] for i in range(len(letters))]
                letter = letters[texts.index(gold_text)]
                examples.append({"qid": s["qid"], "messages": s["messages"][r], "target": f"{letter}. {gold_text}"})
        else:
            label = s["gold"].capitalize()
            reason = f"{s['reason']} [{s['gold_shown']}]" if how == "reason" and s["gold_shown"] else ""
            examples.append({"qid": s["qid"], "messages": s["messages"][0],
                             "target": f"{label}. {reason}".strip()})
    rng.shuffle(examples)
    return examples


def _score(model, tokenizer, items: list[dict], device: str, batch: int = 32) -> list[dict[str, float]]:
    """Each label's score as the platform computes it: first-token log-probabilities, normalised over the
    labels, averaged over the option rotations (assistant.choices.combine)."""
    import torch

    from assistant.choices import ChoiceForm, combine

    flat = []  # (item index, prompt ids, label token ids)
    for i, s in enumerate(items):
        label_ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in s["continuations"]]
        for messages in s["messages"]:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            flat.append((i, list(ids), label_ids))
    per_item: list[list[list[float]]] = [[] for _ in items]
    order = sorted(range(len(flat)), key=lambda j: len(flat[j][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chunk = [flat[j] for j in order[start:start + batch]]
            width = max(len(c[1]) for c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (_, prompt, _) in enumerate(chunk):  # left padding: the last position is the prompt's end
                ids[row, width - len(prompt):] = torch.tensor(prompt)
                mask[row, width - len(prompt):] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding must not shift the positions
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device)).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            for row, (i, _, label_ids) in enumerate(chunk):  # flat index = rotation order within an item
                per_item[i].append((order[start + row], [float(logprobs[row, t]) for t in label_ids]))
    results = []
    for s, scored in zip(items, per_item, strict=True):
        scored.sort()  # back in rotation order
        form = ChoiceForm(s["kind"], tuple(s["labels"]), tuple(s["options"].items()))
        results.append(combine(form, [v for _, v in scored]))
    return results


def _accuracy(items, scores, bias=None) -> dict:
    from collections import Counter

    from assistant.choices import decide

    picks = [decide(sc, bias) for sc in scores]
    right = [float(p == s["gold"]) for p, s in zip(picks, items, strict=True)]
    rng = random.Random(0)
    boots = sorted(sum(rng.choice(right) for _ in right) / len(right) for _ in range(2000))
    return {"accuracy": round(sum(right) / len(right), 4), "ci95": [round(boots[50], 4), round(boots[1949], 4)],
            "n": len(right), "picked": dict(Counter(picks)), "right": right}


def _evaluate(model, tokenizer, data: dict, device: str) -> dict:
    from collections import Counter

    from assistant.choices import fit_bias

    test = [s for s in data["score"] if s["split"] == "test"]
    calibration = [s for s in data["score"] if s["calibration"]]
    test_scores = _score(model, tokenizer, test, device)
    result = {"raw": _accuracy(test, test_scores)}
    if test[0]["kind"] != "multiple_choice":
        cal_scores = _score(model, tokenizer, calibration, device)
        bias, fitted = fit_bias(cal_scores, [s["gold"] for s in calibration], test[0]["labels"])
        result["calibrated"] = _accuracy(test, test_scores, bias) | {"bias": bias, "fit_accuracy": fitted}
    train_golds = Counter(s["gold"] for s in data["score"] if s["split"] == "train")
    majority = train_golds.most_common(1)[0][0]
    result["majority"] = {"label": majority, "accuracy": round(sum(s["gold"] == majority for s in test) / len(test), 4)}
    return result


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _base_sha256(model_dir: Path) -> str:
    """What adapter manifests record as the base: the packaged GGUF's sha256 (`assistant setup`'s marker)."""
    return json.loads((model_dir / "prepared.json").read_text())["source_sha256"]


def _shipped(model_dir: Path, domain: str, device: str):
    """The base with the package's adapter (peft), in the dtype training uses."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
    adapter = Path(__file__).resolve().parents[1] / "domains" / domain / "adapter"
    return PeftModel.from_pretrained(base, str(adapter)), AutoTokenizer.from_pretrained(str(model_dir))


def run(data_dir: Path, model_dir: Path, out_dir: Path, variant: str) -> dict:
    import torch

    from assistant.building.training import (
        TrainConfig,
        encode_examples,
        fit,
        hardware,
        load_model,
        save_adapter,
        split_dev,
    )

    domain, how, fields = VARIANTS[variant]
    with gzip.open(data_dir / f"{domain}.json.gz", "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"variant": variant, "domain": domain, "targets": how}
    if how == "shipped":
        model, tokenizer = _shipped(model_dir, domain, device)
    else:
        config = TrainConfig(seed=0, device=device, **fields).resolved()
        torch.manual_seed(config.seed)
        rng = random.Random(config.seed)
        examples = _targets(data, how)
        model, tokenizer = load_model(model_dir, config)
        started = time.perf_counter()
        encoded = encode_examples(examples, tokenizer, config.max_len)
        train, dev = split_dev(encoded, config.dev_fraction, rng)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        fitted = fit(model, train, dev, config, rng=rng, pad_id=pad_id, progress=False, desc=variant)
        manifest = save_adapter(model, out_dir / variant, {
            "domain": domain, "base_model_sha256": _base_sha256(model_dir),
            "training_data_sha256": _sha256(data_dir / f"{domain}.json.gz"),
            "training_data": f"eval/choice_study.py export, targets '{how}'", "hardware": hardware(device),
            "examples": len(examples), "train_examples": len(train), "dev_examples": len(dev),
            "hyperparameters": config.to_manifest(), "steps": fitted.steps, "wall_time_s": fitted.wall_time_s,
            "loss": fitted.loss(), "study_variant": variant, "targets": how})
        report |= {"config": config.to_manifest(), "examples": len(examples), "version": manifest["version"],
                   "train_s": round(time.perf_counter() - started, 1), "loss": fitted.loss()}
    model.eval()
    tokenizer.padding_side = "left"
    scored = _evaluate(model, tokenizer, data, device)
    with model.disable_adapter():
        base = _evaluate(model, tokenizer, data, device)
    report |= {"adapter": scored, "base_rag": base}
    (out_dir / f"{variant}.json").write_text(json.dumps(report, indent=1))
    summary = {k: v["accuracy"] for k, v in scored.items() if isinstance(v, dict) and "accuracy" in v}
    print(variant, json.dumps(summary), "base", json.dumps(
        {k: v["accuracy"] for k, v in base.items() if isinstance(v, dict) and "accuracy" in v}))
    return report


# --- report (CPU: the variants side by side, paired against the majority class and the shipped adapter) ----------

def _best(result: dict) -> tuple[str, dict]:
    """The variant's decision rule the platform would use: calibrated when it was fitted, else raw."""
    return ("calibrated", result["calibrated"]) if "calibrated" in result else ("raw", result["raw"])


def _overlap(domain: str) -> str:
    """How much of the test split asks about documents the train split already asks about (a fact an adapter
    can memorise from train questions, not only read from the passage)."""
    from assistant.domains import get_domain

    dom = get_domain(domain)
    seen = {d for r in dom.qa_rows("train") for d in r.get("gold_doc_ids") or []}
    test = [r for r in dom.qa_rows("test") if r.get("gold_doc_ids")]
    share = sum(any(d in seen for d in r["gold_doc_ids"]) for r in test) / max(1, len(test))
    if not share:
        return "No test question shares its gold document with a train question."
    return (f"{share:.0%} of the test questions have a gold document that train questions also have (the "
            f"benchmark's split is by question, not by document).")


def report(results_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    from eval.statistics import paired_comparison

    rows, lines = {}, []
    for domain in DOMAINS:
        with gzip.open(data_dir / f"{domain}.json.gz", "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        test = [s for s in data["score"] if s["split"] == "test"]
        variants = [v for v, (d, _, _) in VARIANTS.items() if d == domain and (results_dir / f"{v}.json").is_file()]
        results = {v: json.loads((results_dir / f"{v}.json").read_text()) for v in variants}
        if not results:
            continue
        majority = next(iter(results.values()))["adapter"]["majority"]
        majority_right = [float(s["gold"] == majority["label"]) for s in test]
        shipped = next((v for v in variants if VARIANTS[v][1] == "shipped"), None)
        base_rag = _best(next(iter(results.values()))["base_rag"])[1]["accuracy"]
        lines += [f"## {domain} ({len(test)} test questions)", "",
                  f"Majority class (`{majority['label']}`, from train): {majority['accuracy']:.3f}. Base model "
                  f"+RAG (no adapter, same scoring): {base_rag:.3f}. {_overlap(domain)}",
                  "", "| variant | targets | rule | accuracy [95% CI] | vs majority (diff, p) | vs shipped (diff, p) "
                  "| picked |", "|---|---|---|---|---|---|---|"]
        for v, r in results.items():
            rule, scored = _best(r["adapter"])
            vs_major = paired_comparison(scored["right"], majority_right)
            vs_shipped = (paired_comparison(scored["right"], _best(results[shipped]["adapter"])[1]["right"])
                          if shipped and v != shipped else None)
            rows[v] = {"domain": domain, "targets": r["targets"], "rule": rule, "accuracy": scored["accuracy"],
                       "ci95": scored["ci95"], "picked": scored["picked"], "vs_majority": vs_major,
                       "vs_shipped": vs_shipped, "config": r.get("config"), "train_s": r.get("train_s"),
                       "examples": r.get("examples"), "version": r.get("version")}
            shipped_cell = f"{vs_shipped['diff']:+.3f}, p {vs_shipped['p_value']:.3g}" if vs_shipped else "-"
            lines.append(f"| {v} | {r['targets']} | {rule} | {scored['accuracy']:.3f} [{scored['ci95'][0]:.3f}, "
                         f"{scored['ci95'][1]:.3f}] | {vs_major['diff']:+.3f}, p {vs_major['p_value']:.3g} | "
                         f"{shipped_cell} | {scored['picked']} |")
        lines.append("")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "choice_study.json").write_text(json.dumps(rows, indent=1) + "\n")
    head = ["# Choice-adapter study (eval/choice_study.py)", "",
            "Each variant trained on one H200 (bf16, seed 0) and scored there with HF transformers the way the "
            "platform scores choices: first-token log-probabilities of the allowed labels, normalised over them, "
            "averaged over every cyclic order of the options; yes/no/maybe with the per-label bias fitted on 200 "
            "train questions. Every test question of the split; paired permutation tests on the same questions. "
            "The kept adapter is re-scored on the CPU with the real engine by `assistant eval`.", ""]
    (out_dir / "choice_study.md").write_text("\n".join(head + lines))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["export"]:
        export(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["run"]:
        run(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
    elif sys.argv[1:2] == ["report"]:
        report(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        sys.exit(__doc__)
