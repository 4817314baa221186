"""Domain packages: `domains/<name>/domain.toml` + prompts/ + data/ + adapter/, loaded and validated."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import Settings


class DomainError(ValueError):
    pass


@dataclass
class DataSource:
    name: str
    corpus: Path
    qa: Path | None
    source: str = ""
    license: str = ""


@dataclass
class Domain:
    name: str
    title: str
    description: str
    root: Path
    examples: list[str]
    system_prompt: str
    answer_template: str
    adapter_path: Path
    base_model: str
    data: list[DataSource]
    retrieval: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def has_adapter(self) -> bool:
        return (self.adapter_path / "adapter_config.json").is_file()

    @property
    def adapter_manifest(self) -> dict:
        path = self.adapter_path / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def redacts_identifiers(self) -> bool:
        return bool(self.config.get("privacy", {}).get("redact_identifiers", False))

    @property
    def k(self) -> int:
        return int(self.retrieval.get("k", 4))

    @property
    def evidence_threshold(self) -> float:
        return float(self.retrieval.get("evidence_threshold", 0.0))

    def qa_rows(self, split: str | None = None) -> list[dict]:
        rows = []
        for source in self.data:
            if source.qa and source.qa.is_file():
                with open(source.qa, encoding="utf-8") as fh:
                    rows.extend(r for r in map(json.loads, fh) if split is None or r.get("split") == split)
        return rows

    def scope_filter(self, qa_row: dict) -> dict | None:
        """Questions about one policy/product are retrieved within it (payload `title`)."""
        key = self.retrieval.get("scope_qa_meta")
        value = (qa_row.get("meta") or {}).get(key) if key else None
        return {"title": value} if value else None


def _require(cfg: dict, key: str, where: Path):
    if key not in cfg or cfg[key] in ("", None):
        raise DomainError(f"{where}: missing required field {key!r}")
    return cfg[key]


def load_domain(root: str | Path) -> Domain:
    root = Path(root).resolve()
    toml_path = root / "domain.toml"
    if not toml_path.is_file():
        raise DomainError(f"{root} is not a domain package (no domain.toml)")
    try:
        cfg = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DomainError(f"{toml_path}: invalid TOML ({exc})") from exc
    name = _require(cfg, "name", toml_path)
    if name != root.name:
        raise DomainError(f"{toml_path}: name {name!r} does not match its folder {root.name!r}")
    prompts = root / "prompts"
    system = prompts / "system.md"
    template = prompts / "answer.md"
    for p in (system, template):
        if not p.is_file():
            raise DomainError(f"domain {name}: missing {p.relative_to(root)}")
    data = []
    for entry in cfg.get("data", []):
        corpus = (root / _require(entry, "corpus", toml_path)).resolve()
        qa = (root / entry["qa"]).resolve() if entry.get("qa") else None
        data.append(DataSource(name=entry.get("name", corpus.parent.name), corpus=corpus, qa=qa,
                               source=entry.get("source", ""), license=entry.get("license", "")))
    return Domain(
        name=name, title=cfg.get("title", name), description=cfg.get("description", ""), root=root,
        examples=list(cfg.get("examples", [])), system_prompt=system.read_text(encoding="utf-8").strip(),
        answer_template=template.read_text(encoding="utf-8"),
        adapter_path=(root / cfg.get("adapter", {}).get("path", "adapter")).resolve(),
        base_model=cfg.get("model", {}).get("base", ""), data=data,
        retrieval=cfg.get("retrieval", {}), generation=cfg.get("generation", {}), eval=cfg.get("eval", {}),
        config=cfg,
    )


def list_domains(settings: Settings | None = None) -> list[str]:
    settings = settings or Settings.load()
    if not settings.domains_dir.is_dir():
        return []
    return sorted(p.name for p in settings.domains_dir.iterdir() if (p / "domain.toml").is_file())


def get_domain(name: str, settings: Settings | None = None) -> Domain:
    settings = settings or Settings.load()
    known = list_domains(settings)
    if name not in known:
        raise DomainError(f"unknown domain {name!r}; known domains: {', '.join(known) or 'none'}")
    return load_domain(settings.domains_dir / name)
