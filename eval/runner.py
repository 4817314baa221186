"""The comparison: one domain's test questions through base, +RAG, +LoRA and +RAG+LoRA.

All four conditions of a batch of questions go to the one engine together (`Platform.ask_many` with
rag/lora per item), so the comparison is also a mixed multi-LoRA batch. Finished answers are appended
to a cache file keyed by question and condition, named by a fingerprint of everything that changes
answers (model, adapter version, prompts, retrieval and generation settings): an interrupted run
continues where it stopped, and a changed adapter starts a fresh cache. Scoring reads the cache, so it
is cheap to re-run.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from assistant.answer import CONDITIONS
from assistant.choices import read_calibration
from assistant.data_format import AnswerType, primary_metric_for
from assistant.errors import InputError

from .answer_metrics import CHOICE_TYPES, NUMERIC_TYPES, SPAN_TYPES, TEXT_TYPES, score_answer
from .retrieval_metrics import mean_scores, score_query
from .statistics import mean_ci, paired_comparison

ANSWERING_VERSION = "chat-cited-choices-4"  # bump when the answer pipeline changes what it answers
RETRIEVAL_FETCH = 30  # chunks, so that 10 distinct documents are usually there


def primary_metric(domain, data: str | None = None) -> str:
    """domain.toml's metric for the domain's first data set; another data set's follows its answer types
    (accuracy for choices, token F1 otherwise)."""
    if data is None or not domain.data or data == domain.data[0].name:
        return domain.eval.primary_metric
    return primary_metric_for(r.get("answer_type") for r in domain.qa_rows(None, data))


def data_set(domain, data: str | None) -> str | None:
    """Which data set an eval scores: the one named, else the first of a domain that has several (each data set
    is compared on its own, in its own metric); None for a one-set domain (every row)."""
    names = [d.name for d in domain.data]
    if data is not None and data not in names:
        raise InputError(f"domain {domain.name} has no data set {data!r}; it has {', '.join(names)}")
    return data or (names[0] if len(names) > 1 else None)


def report_name(domain, data: str | None) -> str:
    """`healthcare` for the first data set's report, `healthcare-medquad` for another's."""
    return domain.name if data is None or data == domain.data[0].name else f"{domain.name}-{data}"


def sample_rows(domain, split: str, limit: int | None, seed: int = 0, data: str | None = None) -> list[dict]:
    """The split's questions; with a limit, a seeded random sample (not the first N, which cluster by source)."""
    rows = [r for r in domain.qa_rows(split, data) if str(r.get("question", "")).strip()]
    if not rows:
        raise ValueError(f"domain {domain.name} has no {split!r} questions" + (f" in {data}" if data else ""))
    rows.sort(key=lambda r: hashlib.sha256(f"{seed}:{r['qid']}".encode()).hexdigest())
    return rows[:limit] if limit else rows


def fingerprint(platform, domain) -> str:
    adapter = platform.adapter_for(domain.name)
    model = Path(platform.engine.model_path)
    prepared = model / "prepared.json"
    parts = [str(model), prepared.read_text() if prepared.is_file() else "",
             adapter.served_name if adapter else "-", domain.system_prompt, domain.answer_template,
             json.dumps(asdict(domain.retrieval), sort_keys=True),
             json.dumps(asdict(domain.generation), sort_keys=True),
             str(platform.settings.max_model_len), ANSWERING_VERSION,
             f"batch_invariant={platform.settings.batch_invariant}", f"embedder={platform.embedder.runtime}",
             json.dumps(read_calibration(domain.root), sort_keys=True)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


class AnswerCache:
    """Append-only JSONL of finished answers; a torn last line (killed run) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.items: dict[str, dict] = {}
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    self.items[item["key"]] = item

    def add(self, items: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item) + "\n")
                self.items[item["key"]] = item
            fh.flush()


def answer_specs(domain, rows: list[dict], conditions: list[str]) -> list[tuple[str, dict]]:
    specs = []
    for row in rows:
        for cond in conditions:
            rag, lora = CONDITIONS[cond]
            specs.append((f"{row['qid']}|{cond}", {"domain": domain.name, "question": row["question"], "rag": rag,
                                                   "lora": lora, "filter": domain.scope_filter(row),
                                                   "options": row.get("options"),
                                                   "form": row.get("answer_type") if row.get("answer_type")
                                                   == AnswerType.YES_NO_MAYBE else None}))
    return specs


def generate(platform, domain, rows, conditions, cache: AnswerCache, batch_size: int = 64,
             progress: bool = True) -> None:
    todo = [(key, spec) for key, spec in answer_specs(domain, rows, conditions) if key not in cache.items]
    bar = tqdm(total=len(todo), desc=f"eval {domain.name}", unit="answer", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        answers = platform.ask_many([spec for _, spec in batch])
        cache.add([{"key": key, "text": a.text, "abstained": a.abstained, "adapter": a.adapter,
                    "cited": [c.doc_id for c in a.citations], "shown": [p.doc_id for p in a.passages],
                    "flags": a.flags, "abstained_by": a.abstained_by,
                    "choice": a.choice} for (key, _), a in zip(batch, answers, strict=True)])
        bar.update(len(batch))
    bar.close()


def retrieval_scores(platform, domain, rows) -> dict:
    per_q = []
    for row in rows:
        if not row.get("gold_doc_ids"):
            continue
        hits = platform.retrieve(domain.name, row["question"], RETRIEVAL_FETCH, filter=domain.scope_filter(row))
        per_q.append(score_query([h.doc_id for h in hits], row["gold_doc_ids"]))
    scores = mean_scores(per_q)
    return {k: scores[k] for k in ("recall@1", "recall@5", "mrr@10", "ndcg@10")} | {"n": len(per_q)} if scores else {}


def _metric_names(rows) -> list[str]:
    kinds = {r.get("answer_type") for r in rows}
    names = []
    if kinds & set(CHOICE_TYPES):
        names += ["accuracy", "parsed"]
    if kinds & (set(SPAN_TYPES) | set(NUMERIC_TYPES)):
        names += ["exact_match", "f1"]
    if kinds & set(TEXT_TYPES):
        names += [n for n in ("f1", "rouge_l") if n not in names]
    if "unanswerable_in_candidates" in kinds:
        names.append("correct_abstention")
    return names


def summarise(domain, rows, cache: AnswerCache, conditions, metric: str | None = None) -> tuple[dict, dict]:
    """Per condition: each metric's mean with its 95% CI, groundedness and abstain rate; plus per-question
    primary scores (for the paired test)."""
    names = _metric_names(rows)
    out, per_question = {}, {}
    for cond in conditions:
        scored = []
        for row in rows:
            item = cache.items[f"{row['qid']}|{cond}"]
            scored.append((row, item, score_answer(row, item["text"], item["abstained"])))
        entry = {}
        for name in names:
            values = [s[name] for _, _, s in scored if name in s]
            if values:
                mean, low, high = mean_ci(values)
                entry[name] = round(mean, 4)
                entry.setdefault("ci95", {})[name] = [round(low, 4), round(high, 4)]
        cited = [(row, item) for row, item, _ in scored if item["cited"]]
        entry["groundedness"] = (round(sum(bool(set(item["cited"]) & set(row.get("gold_doc_ids", [])))
                                           for row, item in cited) / len(cited), 4) if cited else None)
        entry["cited_rate"] = round(len(cited) / len(scored), 4)
        entry["abstain_rate"] = round(sum(item["abstained"] for _, item, _ in scored) / len(scored), 4)
        by_type = defaultdict(list)
        for row, _, s in scored:
            by_type[row.get("answer_type")].append(s)
        entry["by_answer_type"] = {k: {"n": len(v)} | {m: round(sum(s.get(m, 0.0) for s in v) / len(v), 4)
                                                     for m in sorted({m for s in v for m in s})}
                                   for k, v in sorted(by_type.items())}
        out[cond] = entry
        per_question[cond] = [s.get(metric or primary_metric(domain), 0.0) for _, _, s in scored]
    return out, per_question


def eval_domain(platform, domain_name: str, *, split: str = "test", limit: int | None = None,
                conditions: list[str] | None = None, batch_size: int = 64, progress: bool = True,
                cache_dir: Path | None = None, risk: bool = True, retrieval: bool = True, seed: int = 0,
                baselines: bool = True, data: str | None = None) -> dict:
    """The DESIGN.md eval contract for one domain's data set (`data_set`), plus CIs, the paired tests, the trivial
    baselines and the risk suites."""
    from .baselines import baseline_scores, strongest
    from .risk_suites import run_risk_suites

    domain = platform.domain(domain_name)
    conditions = conditions or list(CONDITIONS)
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; choose from {list(CONDITIONS)}")
    limit_q = platform.settings.max_question_chars
    data = data_set(domain, data)
    metric = primary_metric(domain, data)
    rows = [r for r in sample_rows(domain, split, limit, seed, data) if len(r["question"]) <= limit_q]
    cache_dir = cache_dir or platform.settings.data_dir / "eval"
    cache = AnswerCache(cache_dir / domain.name / f"{split}-{fingerprint(platform, domain)}.jsonl")
    started = time.perf_counter()
    generate(platform, domain, rows, conditions, cache, batch_size, progress)
    answers, per_question = summarise(domain, rows, cache, conditions, metric)
    adapter = platform.adapter_for(domain.name)
    result = {
        "domain": domain.name, "data": data, "report_name": report_name(domain, data), "split": split,
        "n": len(rows), "n_split": len(domain.qa_rows(split, data)), "limit": limit, "sample_seed": seed,
        "model": str(platform.settings.base_model or "SmolLM2-135M-Instruct (default)"),
        "adapter": adapter.served_name if adapter else None,
        "batch_invariant": platform.settings.batch_invariant, "embed_runtime": platform.embedder.runtime,
        "primary_metric": metric,
        "retrieval": retrieval_scores(platform, domain, rows) if retrieval else {},
        "answers": answers,
    }
    if "rag+lora" in per_question and "base" in per_question:
        result["comparison"] = {"rag+lora_vs_base": paired_comparison(per_question["rag+lora"], per_question["base"])}
        if "rag" in per_question:
            result["comparison"]["rag+lora_vs_rag"] = paired_comparison(per_question["rag+lora"], per_question["rag"])
    if baselines:
        scored = baseline_scores(platform, domain, rows, metric, data)
        result["baselines"] = {name: {k: v for k, v in b.items() if k != "per_question"} for name, b in scored.items()}
        best = strongest(scored, metric)
        if best and "rag+lora" in per_question:
            comparison = paired_comparison(per_question["rag+lora"], best[1]["per_question"])
            result.setdefault("comparison", {})["rag+lora_vs_best_baseline"] = comparison | {"baseline": best[0]}
    if risk:
        result["risk"] = run_risk_suites(platform, domain, split=split, seed=seed, data=data)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["cache"] = str(cache.path)
    return result


def targets(result: dict) -> dict:
    """The issue's goals, met or not: RAG+LoRA >= 1.3x base, groundedness >= 0.9, OOD abstention >= 0.9."""
    out = {}
    comp = result.get("comparison", {}).get("rag+lora_vs_base")
    if comp:
        out["rag+lora >= 1.3x base"] = {"value": comp["ratio"], "met": bool(comp["ratio"] and comp["ratio"] >= 1.3)}
    g = result["answers"].get("rag+lora", {}).get("groundedness")
    if g is not None:
        out["groundedness >= 0.9"] = {"value": g, "met": g >= 0.9}
    best = result.get("comparison", {}).get("rag+lora_vs_best_baseline")
    if best:
        beats = best["diff"] > 0 and best["p_value"] < 0.05
        out[f"rag+lora beats the best trivial baseline ({best['baseline']}), p < 0.05"] = {
            "value": f"{best['diff']:+.3f} (p {best['p_value']:.4f})", "met": beats}
    ood = (result.get("risk") or {}).get("out_of_domain", {}).get("abstain_rate")
    if ood is not None:
        out["out-of-domain abstention >= 0.9"] = {"value": ood, "met": ood >= 0.9}
    return out
