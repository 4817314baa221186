"""The eval workflow as one SDK function: run the comparison, write the report, record the scores in the
shipped adapter's manifest. The `assistant eval` command and `new_domain(..., evaluate=True)` reach it
through the `assistant.evaluators` entry point (pyproject.toml), so `assistant` never imports `eval`.

    from eval.workflow import evaluate
    [result] = evaluate(["healthcare"], limit=50)
"""
from __future__ import annotations

from pathlib import Path

from assistant import InputError, Platform, Settings
from assistant.answer import CONDITIONS
from assistant.domains import get_domain, list_domains
from assistant.serving.adapter_manifest import read_manifest, write_manifest

from .report import write_report
from .runner import eval_domain

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT_DIR = REPO_ROOT / "eval" / "reports"


def evaluate(names: list[str], settings: Settings | None = None, *, split: str = "test", limit: int | None = None,
             conditions: list[str] | None = None, adapter_path: str | Path | None = None,
             report_dir: str | Path | None = None, write_reports: bool = True, risk: bool = True,
             batch_size: int = 64, seed: int = 0, command: str | None = None, platform: Platform | None = None,
             progress=print, data: str | None = None) -> list[dict]:
    """Score each named domain (or ["all"]) as base / +RAG / +LoRA / +RAG+LoRA; one result dict per domain.
    `data`: which of a domain's data sets (default: its first; each has its own report and metric)."""
    settings = settings or (platform.settings if platform else Settings.load())
    conditions = conditions or list(CONDITIONS)
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise InputError(f"unknown condition(s) {bad}; choose from {', '.join(CONDITIONS)}")
    names = list_domains(settings) if names == ["all"] else [get_domain(n, settings).name for n in names]
    if (adapter_path or data) and len(names) != 1:
        raise InputError(f"{'--adapter' if adapter_path else '--data'} needs one domain, not all")
    owned = platform is None
    platform = platform or Platform.load(names, settings)
    command = command or f"assistant eval {' '.join(names)}"
    results = []
    try:
        if adapter_path:
            platform.reload_adapter(names[0], adapter_path)
        for name in names:
            result = eval_domain(platform, name, split=split, limit=limit, conditions=conditions,
                                 batch_size=batch_size, risk=risk, seed=seed, data=data)
            result["adapter_path"] = str(Path(adapter_path).resolve()) if adapter_path else None
            result["summary"] = summary_line(result)
            report_md = None
            if write_reports:
                report_md = write_report(result, Path(report_dir) if report_dir else DEFAULT_REPORT_DIR, command)["md"]
                progress(f"{name}: report {report_md}")
            scored_split = split == "test" or not platform.domain(name).qa_rows("test")  # no test split: dev
            first_set = result["report_name"] == name  # the manifest keeps the first data set's scores
            # only a whole run (every condition, its report written) replaces the scores the manifest keeps: a
            # --conditions rag+lora --no-report check once overwrote them with a partial block and no report
            whole_run = report_md is not None and set(CONDITIONS) <= set(conditions)
            if not adapter_path and scored_split and first_set and whole_run:
                record_in_manifest(platform.domain(name), result, report_md)
            results.append(result)
    finally:
        if owned:
            platform.close()
    return results


def summary_line(result: dict) -> str:
    metric = result["primary_metric"]
    cells = [f"{c} {v.get(metric, float('nan')):.3f}" for c, v in result["answers"].items()]
    return f"{result['domain']} ({result['split']}, n={result['n']}): {metric}: " + ", ".join(cells)


def record_in_manifest(dom, result: dict, report_md=None) -> None:
    """The shipped adapter's manifest keeps the scores it reached, and where the report is (relative to the
    checkout when it is inside it)."""
    if not (dom.adapter_path / "manifest.json").is_file():
        return
    manifest = read_manifest(dom.adapter_path)
    if result.get("adapter") != f"{dom.name}@{manifest.get('version')}":
        return
    metric = result["primary_metric"]
    manifest["eval"] = {"split": result["split"], "n": result["n"], "limit": result["limit"], "metric": metric,
                        **{c: v.get(metric) for c, v in result["answers"].items()},
                        "groundedness": result["answers"].get("rag+lora", {}).get("groundedness"),
                        "rag+lora_vs_base": result.get("comparison", {}).get("rag+lora_vs_base"),
                        "report": _shown_path(report_md) if report_md else None}
    write_manifest(dom.adapter_path, manifest)


def _shown_path(path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
