"""Evidence-gate calibration: pick each domain's threshold on the dense similarity of the closest chunk.

In-domain: the domain's train-split questions (retrieved within their policy/product where the set is
scoped). Out-of-domain: other domains' train questions and general questions (eval/data/out_of_domain.txt),
searched over the whole index. The threshold maximises Youden's J (in-domain pass rate + out-of-domain
reject rate - 1); it is written into the domain's domain.toml with the rates it reached. A domain without
questions yet (a new one) gets the threshold just above every out-of-domain question (on npm's docs: the highest
of 330 scored 0.38, the 20 real questions 0.52-0.84).
"""
from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from assistant.domains import Domain, DomainError

OOD_FILE = Path(__file__).resolve().parents[2] / "eval" / "data" / "out_of_domain.txt"


def general_questions() -> list[str]:
    return [q.strip() for q in OOD_FILE.read_text().splitlines() if q.strip()]


def evidence_scores(store, embedder, collection: str, questions: list[str], filters: list[dict | None]) -> np.ndarray:
    vectors = embedder.embed(questions)
    scores = []
    for vec, flt in zip(vectors, filters):
        hits = store.search(collection, dense=vec, sparse=None, k=1, filter=flt)
        scores.append(hits[0].score if hits else 0.0)
    return np.array(scores)


def choose_threshold(in_domain: np.ndarray, out_domain: np.ndarray) -> tuple[float, float, float]:
    """(threshold, in-domain pass rate, out-of-domain reject rate) maximising Youden's J."""
    best = (0.0, 1.0, 0.0)
    best_j = -1.0
    for t in np.unique(np.concatenate([in_domain, out_domain])):
        tpr = float((in_domain >= t).mean())
        tnr = float((out_domain < t).mean())
        if tpr + tnr - 1 > best_j:
            best_j, best = tpr + tnr - 1, (float(t), tpr, tnr)
    return best


def calibrate(domain: Domain, others: list[Domain], store, embedder, *, n: int = 300, seed: int = 0) -> dict:
    rng = random.Random(seed)
    rows = domain.qa_rows("train")
    rng.shuffle(rows)
    rows = rows[:n]
    in_scores = evidence_scores(store, embedder, domain.name, [r["question"] for r in rows],
                                [domain.scope_filter(r) for r in rows])
    ood = general_questions()
    for other in others:
        other_rows = other.qa_rows("train")
        rng.shuffle(other_rows)
        ood += [r["question"] for r in other_rows[: max(20, n // max(1, len(others)))]]
    out_scores = evidence_scores(store, embedder, domain.name, ood, [None] * len(ood))
    if len(in_scores):
        threshold, tpr, tnr = choose_threshold(in_scores, out_scores)
        threshold = round(threshold - 1e-4, 4)  # keep the boundary question on the passing side
    else:  # a new domain without questions: just above every out-of-domain question's score
        threshold = round(float(out_scores.max()) + 1e-4, 4)
        tpr, tnr = float("nan"), float((out_scores < threshold).mean())
    write_threshold(domain, threshold, tpr, tnr, len(in_scores), len(out_scores))
    return {"domain": domain.name, "threshold": threshold, "in_domain_pass": round(tpr, 3) if len(in_scores) else None,
            "out_of_domain_reject": round(tnr, 3), "n_in": len(in_scores), "n_out": len(out_scores)}


def write_threshold(domain: Domain, threshold: float, tpr: float, tnr: float, n_in: int, n_out: int) -> None:
    path = domain.root / "domain.toml"
    text = path.read_text(encoding="utf-8")
    if n_in:
        line = (f"evidence_threshold = {threshold}   # calibrated on train: passes {tpr:.1%} of {n_in} in-domain, "
                f"rejects {tnr:.1%} of {n_out} out-of-domain questions")
    else:
        line = (f"evidence_threshold = {threshold}   # no questions yet: rejects {tnr:.1%} of {n_out} out-of-domain "
                f"questions; `assistant calibrate {domain.name}` once it has train questions")
    new, count = re.subn(r"^evidence_threshold\s*=.*$", line, text, flags=re.MULTILINE)
    if count != 1:
        raise DomainError(f"{path}: expected one evidence_threshold line under [retrieval]")
    path.write_text(new, encoding="utf-8")
    domain.retrieval = replace(domain.retrieval, evidence_threshold=threshold)


def calibrate_choices(platform, domain: Domain, *, n: int = 200, seed: int = 0, batch_size: int = 64,
                      progress: bool = True) -> dict:
    """Per-label prior correction for the domain's yes/no/maybe questions, one per condition (base, +RAG,
    +LoRA, +RAG+LoRA): biases that maximise accuracy on up to n train questions, given the scores the served
    adapter gives each label. Written to the package's choice_calibration.json with the adapter it fits."""
    from tqdm.auto import tqdm

    from assistant.answer import CONDITIONS
    from assistant.choices import YES_NO_MAYBE, fit_bias, read_calibration, write_calibration
    from assistant.data_format import AnswerType

    rng = random.Random(seed)
    rows = [r for r in domain.qa_rows("train") if r.get("answer_type") == AnswerType.YES_NO_MAYBE and r.get("answer")]
    rng.shuffle(rows)
    rows = rows[:n]
    if not rows:
        return {"domain": domain.name, "choices": "no yes/no/maybe train questions"}
    calibration = read_calibration(domain.root)
    entries = calibration.setdefault(str(AnswerType.YES_NO_MAYBE), {})
    report = {"domain": domain.name, "n": len(rows), "conditions": {}}
    bar = tqdm(total=len(rows) * len(CONDITIONS), desc=f"choice priors {domain.name}", unit="question",
               disable=not progress)
    for condition, (rag, lora) in CONDITIONS.items():
        scored, golds, adapter = [], [], None
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            choices = platform.choice_scores([{"domain": domain.name, "question": r["question"], "rag": rag,
                                               "lora": lora, "filter": domain.scope_filter(r),
                                               "form": AnswerType.YES_NO_MAYBE} for r in batch])
            bar.update(len(batch))
            for row, choice in zip(batch, choices, strict=True):
                if choice:  # gated answers carry no scores
                    scored.append(choice["scores"])
                    golds.append(str(row["answer"][0]).lower())
                    adapter = choice["adapter"]
        if not scored:
            continue
        bias, accuracy = fit_bias(scored, golds, YES_NO_MAYBE)
        raw = sum(max(s, key=s.get) == g for s, g in zip(scored, golds, strict=True)) / len(golds)
        entries[condition] = {"adapter": adapter, "bias": bias, "n": len(golds),
                              "train_accuracy": round(accuracy, 4), "train_accuracy_uncorrected": round(raw, 4)}
        report["conditions"][condition] = entries[condition]
    bar.close()
    write_calibration(domain.root, calibration)
    return report
