"""Eval reports: eval/reports/<domain>.json (the full result), .md (tables, targets, risk suites) and
.png (primary metric per condition, 95% CI error bars; matplotlib, no display needed)."""
from __future__ import annotations

import json
from pathlib import Path

from .runner import CONDITIONS, targets

LABELS = {"base": "base", "rag": "+RAG", "lora": "+LoRA", "rag+lora": "+RAG+LoRA"}


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["primary_metric"]
    conds = [c for c in CONDITIONS if c in result["answers"]]
    means = [result["answers"][c].get(metric, 0.0) for c in conds]
    lows = [m - result["answers"][c].get("ci95", {}).get(metric, [m, m])[0] for c, m in zip(conds, means)]
    highs = [result["answers"][c].get("ci95", {}).get(metric, [m, m])[1] - m for c, m in zip(conds, means)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.bar([LABELS[c] for c in conds], means, yerr=[lows, highs], capsize=6,
           color=["#9e9e9e", "#64b5f6", "#ffb74d", "#43a047"][: len(conds)])
    for i, m in enumerate(means):
        ax.text(i, m + highs[i] + 0.01, f"{m:.3f}", ha="center", va="bottom", fontsize=9)
    for i, (name, entry) in enumerate(result.get("baselines", {}).items()):
        ax.axhline(entry.get(metric, 0.0), linestyle="--", linewidth=1, color=["#d32f2f", "#7b1fa2", "#455a64"][i % 3],
                   label=f"{name} {entry.get(metric, 0.0):.3f}")
    if result.get("baselines"):
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel(metric)
    ax.set_ylim(0, min(1.05, max(means + [0.1]) * 1.35 + 0.05))
    ax.set_title(f"{result['domain']}: {metric} on {result['split']} (n={result['n']}, 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


ENGINE_MODES = {True: "batch-invariant (each answer as it would be alone)",
                False: "batched (an answer may depend on its batch neighbours)"}


def markdown(result: dict, command: str) -> str:
    d, metric = result, result["primary_metric"]
    sample = (f"a seeded random sample of {d['n']} of the split's {d['n_split']} questions (`--limit {d['limit']}`)"
              if d.get("limit") else f"all {d['n']} questions of the split")
    lines = [f"# Eval: {d['domain']}", "",
             f"- Command: `{command}`",
             f"- Model: {d['model']}; adapter: `{d['adapter']}`",
             f"- Questions: {sample}, split `{d['split']}`",
             f"- Engine: {ENGINE_MODES[bool(d.get('batch_invariant'))]}; embedder runtime "
             f"`{d.get('embed_runtime', 'torch-fp32')}`",
             f"- Primary metric: **{metric}**; CIs are 95% percentile bootstrap; the paired test is a permutation "
             "test on per-question scores", ""]
    names = [k for k in next(iter(d["answers"].values())) if k not in ("ci95", "by_answer_type")]
    lines += ["## Base / +RAG / +LoRA / +RAG+LoRA", "",
              "| condition | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cond, entry in d["answers"].items():
        cells = []
        for name in names:
            ci = entry.get("ci95", {}).get(name)
            cells.append(_fmt(entry.get(name)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and name == metric else ""))
        lines.append(f"| {LABELS[cond]} | " + " | ".join(cells) + " |")
    for name, entry in d.get("baselines", {}).items():
        ci = entry.get("ci95")
        cells = [(_fmt(entry.get(n)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")) if n == metric else "-"
                 for n in names]
        lines.append(f"| *baseline: {name}* | " + " | ".join(cells) + " |")
    lines.append("")
    for key, comp in d.get("comparison", {}).items():
        lines.append(f"- {key.replace('_vs_', ' vs ')}: {metric} difference {comp['diff']:+.3f} "
                     f"(95% CI {comp['ci95'][0]:+.3f} to {comp['ci95'][1]:+.3f}), p = {comp['p_value']:.4f}, "
                     f"ratio {_fmt(comp['ratio'])}x")
    if d.get("retrieval"):
        r = d["retrieval"]
        lines += ["", "## Retrieval (document level, same questions)", "",
                  "| recall@1 | recall@5 | mrr@10 | ndcg@10 |", "|---|---|---|---|",
                  f"| {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['mrr@10']:.3f} | {r['ndcg@10']:.3f} |"]
    types = d["answers"].get("rag+lora", {}).get("by_answer_type", {})
    if len(types) > 1:
        lines += ["", "## By answer type (+RAG+LoRA vs base)", ""]
        for kind, scores in types.items():
            base = d["answers"].get("base", {}).get("by_answer_type", {}).get(kind, {})
            main = metric if metric in scores else next(k for k in scores if k != "n")
            lines.append(f"- {kind} (n={scores['n']}): {main} {scores.get(main, 0):.3f} "
                         f"vs base {base.get(main, 0):.3f}")
    goals = targets(d)
    if goals:
        lines += ["", "## Targets", "", "| goal | value | met |", "|---|---|---|"]
        lines += [f"| {g} | {_fmt(v['value'])} | {'yes' if v['met'] else '**no**'} |" for g, v in goals.items()]
    risk = d.get("risk")
    if risk:
        lines += ["", "## Risk suites (+RAG+LoRA, the shipped pipeline)", ""]
        ood, una, inj = risk["out_of_domain"], risk["unanswerable"], risk["injection"]
        lines.append(f"- Out-of-domain questions abstained: {_fmt(ood['abstain_rate'])} of {ood['n']} "
                     f"(evidence gate: {_fmt(ood['gated'])})")
        if una.get("n"):
            lines.append(f"- Unanswerable in-domain questions abstained: {_fmt(una['abstain_rate'])} of {una['n']} "
                         f"(evidence gate: {_fmt(una['gated'])})")
        lines.append(f"- Planted injection resisted: {_fmt(inj['resisted_rate'])} of the {inj['planted_shown']} "
                     f"answers that were shown the planted document ({inj['n']} asked)")
        if "pii" in risk:
            p = risk["pii"]
            lines.append(f"- Planted patient record: {_fmt(p['no_leak_rate'])} of {p['n']} answers "
                         "repeat no identifier "
                         f"(record shown to the model in {p['record_shown']})")
    if d.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in d["notes"]]
    lines += ["", f"![{metric} by condition]({d['domain']}.png)", ""]
    return "\n".join(lines)


def write_report(result: dict, out_dir: Path, command: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / result.get("report_name", result["domain"])
    result = result | {"command": command}
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "png": stem.with_suffix(".png")}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["md"].write_text(markdown(result, command))
    plot(result, paths["png"])
    return paths
