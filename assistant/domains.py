"""Domain packages: `domains/<name>/domain.toml` + prompts/ + data/ + adapter/, read once into a typed spec.
Packaged domains live in `Settings.domains_dir`; those made by `new-domain` in `Settings.user_domains_dir`.

Every key `domain.toml` may hold is a field below, with its default and what it means; there is no other
place that knows a default. A key that is not a field, or a value of the wrong type, is refused with the
file, the key and its line.
"""
from __future__ import annotations

import json
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from assistant.config import Settings
from assistant.data_format import PRIMARY_METRICS
from assistant.errors import DomainError, UnknownDomainError
from indexing.documents import open_jsonl

__all__ = ["DataSource", "Domain", "DomainError", "UnknownDomainError", "domain_roots", "get_domain", "list_domains",
           "load_domain"]
RETRIEVAL_MODES = ("hybrid", "dense", "sparse")
ANSWER_FORMS = ("", "yes/no/maybe", "evidence")  # free text, scored label, copied span (assistant.evidence)


@dataclass(frozen=True)
class ModelSpec:
    base: str = ""                   # empty = the platform's base model; else a local HF model dir


@dataclass(frozen=True)
class AdapterSpec:
    path: str = "adapter"            # peft LoRA dir with manifest.json, relative to the package


@dataclass(frozen=True)
class RetrievalSpec:
    mode: str = "hybrid"             # hybrid (dense + BM25, RRF) | dense | sparse
    k: int = 4                       # passages shown to the model
    chunk_size: int = 128            # tokens per chunk (MiniLM's training length)
    chunk_overlap: int = 16          # tokens shared by neighbouring chunks
    embed_title: bool = True         # prepend the document title to each chunk before embedding
    scope_qa_meta: str = ""          # qa `meta` key naming the one item a question is about (payload "title")
    evidence_threshold: float = 0.0  # evidence gate: min dense similarity of the closest chunk (`assistant calibrate`)
    query_encoder: str = "query_encoder"  # package dir of the tuned query encoder (`assistant tune-retrieval`),
                                          # used when it holds one; "" = always the base embedder


@dataclass(frozen=True)
class GenerationSpec:
    max_tokens: int = 128            # generated tokens per answer
    temperature: float = 0.0         # 0 = greedy
    answer_form: str = ""            # "": free text; "yes/no/maybe": picked by scoring; "evidence": a copied span
    open_form: str = "same"          # the form of open questions ("What ...?", "How ...?"): "same" as answer_form,
                                     # or another of the forms (assistant/question_form.py)
    evidence_sentences: int = 1      # an evidence reply copies the picked sentence and up to N-1 after it (prose)
    calculate: bool = False          # questions naming an operation (change, average, ...) over a retrieved table
                                     # are computed by the platform (assistant/table_arithmetic.py)


@dataclass(frozen=True)
class EvalSpec:
    primary_metric: str = "f1"       # accuracy | f1 | exact_match | rouge_l: the metric comparisons use
    pii_suite: bool = False          # risk suite: a planted patient record's identifiers must not be repeated


@dataclass(frozen=True)
class PrivacySpec:
    redact_identifiers: bool = False  # mask SSNs, phones, e-mails, record numbers, ... (assistant/redaction.py)


@dataclass(frozen=True)
class DataSpec:
    corpus: str                      # corpus.jsonl, relative to the package
    name: str = ""                   # default: the corpus file's folder name
    qa: str = ""                     # qa.jsonl, relative to the package (optional)
    source: str = ""                 # where the data comes from
    license: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """domain.toml as written."""
    name: str
    title: str = ""                  # default: the name
    description: str = ""            # one line shown in the app and /v1/models
    examples: list[str] = field(default_factory=list)  # example questions shown in the app
    model: ModelSpec = ModelSpec()
    adapter: AdapterSpec = AdapterSpec()
    retrieval: RetrievalSpec = RetrievalSpec()
    generation: GenerationSpec = GenerationSpec()
    eval: EvalSpec = EvalSpec()
    privacy: PrivacySpec = PrivacySpec()
    data: list[DataSpec] = field(default_factory=list)


@dataclass
class DataSource:
    name: str
    corpus: Path
    qa: Path | None
    source: str = ""
    license: str = ""


@dataclass
class Domain:
    """A loaded domain package: its spec, prompts and resolved paths."""
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
    retrieval: RetrievalSpec = RetrievalSpec()
    generation: GenerationSpec = GenerationSpec()
    eval: EvalSpec = EvalSpec()
    privacy: PrivacySpec = PrivacySpec()

    @property
    def has_adapter(self) -> bool:
        return (self.adapter_path / "adapter_config.json").is_file()

    @property
    def adapter_manifest(self) -> dict:
        path = self.adapter_path / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def query_encoder_path(self) -> Path | None:
        """The tuned query encoder's directory when the package holds one (None: the base embedder)."""
        if not self.retrieval.query_encoder:
            return None
        path = (self.root / self.retrieval.query_encoder).resolve()
        return path if (path / "adapter_config.json").is_file() else None

    @property
    def redacts_identifiers(self) -> bool:
        return self.privacy.redact_identifiers

    @property
    def k(self) -> int:
        return self.retrieval.k

    @property
    def evidence_threshold(self) -> float:
        return self.retrieval.evidence_threshold

    def qa_rows(self, split: str | None = None, data: str | None = None) -> list[dict]:
        """The questions of one split (None: all), of every data set or of the one named `data`; each row says
        which data set it came from (`row["data"]`)."""
        rows = []
        for source in self.data:
            if data is not None and source.name != data:
                continue
            if source.qa and source.qa.is_file():
                with open_jsonl(source.qa) as fh:
                    rows.extend(r | {"data": source.name} for r in map(json.loads, fh)
                                if split is None or r.get("split") == split)
        return rows

    def scope_filter(self, qa_row: dict) -> dict | None:
        """Questions about one policy/product are retrieved within it (payload `title`)."""
        key = self.retrieval.scope_qa_meta
        value = (qa_row.get("meta") or {}).get(key) if key else None
        return {"title": value} if value else None


# ---- reading domain.toml ------------------------------------------------------------------------
def _line_of(text: str, section: str, key: str) -> int | None:
    """The line of `key = ...` in `[section]` (or at top level when section is empty)."""
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\[?\s*([\w.-]+)\s*\]\]?", line)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return n
    return None


def _type_ok(value, hint) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    return True


def _type_name(hint) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        hint, "a list of strings" if typing.get_origin(hint) is list else str(hint))


def _build(cls, values, where: Path, text: str, section: str):
    """cls(**values), refusing unknown keys and wrong types with the file, key and line."""
    hints = typing.get_type_hints(cls)
    label = f"[{section}]" if section else "top level"
    if not isinstance(values, dict):
        raise DomainError(f"{where}: {section or 'value'} must be a table")
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            line = _line_of(text, section, key)
            raise DomainError(f"{where}:{line or '?'}: unknown key {key!r} in {label}; "
                              f"known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for f in fields(cls):
        hint = hints[f.name]
        if f.name not in values:
            if f.default is MISSING and f.default_factory is MISSING:
                raise DomainError(f"{where}: missing required key {f.name!r} in {label}")
            continue
        value = values[f.name]
        if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
            kwargs[f.name] = _build(hint, value, where, text, f.name)
        elif typing.get_origin(hint) is list and hasattr(typing.get_args(hint)[0], "__dataclass_fields__"):
            if not isinstance(value, list):
                raise DomainError(f"{where}: [[{f.name}]] must be an array of tables")
            kwargs[f.name] = [_build(typing.get_args(hint)[0], v, where, text, f.name) for v in value]
        elif not _type_ok(value, hint):
            line = _line_of(text, section, f.name)
            raise DomainError(f"{where}:{line or '?'}: {f.name} in {label} must be {_type_name(hint)}, "
                              f"got {value!r}")
        else:
            kwargs[f.name] = float(value) if hint is float else value
    return cls(**kwargs)


def read_spec(toml_path: Path) -> DomainSpec:
    text = toml_path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DomainError(f"{toml_path}: invalid TOML ({exc})") from exc
    spec = _build(DomainSpec, raw, toml_path, text, "")
    if not spec.name:
        raise DomainError(f"{toml_path}: missing required field 'name'")
    checks = [(spec.retrieval.mode in RETRIEVAL_MODES, "retrieval", "mode", f"one of {RETRIEVAL_MODES}"),
              (spec.retrieval.k >= 1, "retrieval", "k", "at least 1"),
              (spec.retrieval.chunk_size >= 32, "retrieval", "chunk_size", "at least 32"),
              (0 <= spec.retrieval.chunk_overlap < spec.retrieval.chunk_size, "retrieval", "chunk_overlap",
               ">= 0 and below chunk_size"),
              (spec.generation.max_tokens >= 1, "generation", "max_tokens", "at least 1"),
              (spec.generation.temperature >= 0, "generation", "temperature", ">= 0"),
              (spec.generation.answer_form in ANSWER_FORMS, "generation", "answer_form",
               " or ".join(f'"{f}"' for f in ANSWER_FORMS)),
              (spec.generation.open_form in (*ANSWER_FORMS, "same"), "generation", "open_form",
               '"same" or ' + " or ".join(f'"{f}"' for f in ANSWER_FORMS)),
              (1 <= spec.generation.evidence_sentences <= 8, "generation", "evidence_sentences", "1 to 8"),
              (spec.eval.primary_metric in PRIMARY_METRICS, "eval", "primary_metric", f"one of {PRIMARY_METRICS}")]
    for ok, section, key, want in checks:
        if not ok:
            line = _line_of(text, section, key)
            value = getattr(getattr(spec, section), key)
            raise DomainError(f"{toml_path}:{line or '?'}: {key} in [{section}] must be {want}, got {value!r}")
    for entry in spec.data:
        if not entry.corpus:
            raise DomainError(f"{toml_path}: missing required field 'corpus' in [[data]]")
    return spec


def load_domain(root: str | Path) -> Domain:
    root = Path(root).resolve()
    toml_path = root / "domain.toml"
    if not toml_path.is_file():
        raise DomainError(f"{root} is not a domain package (no domain.toml)")
    spec = read_spec(toml_path)
    if spec.name != root.name:
        raise DomainError(f"{toml_path}: name {spec.name!r} does not match its folder {root.name!r}")
    prompts = root / "prompts"
    system = prompts / "system.md"
    template = prompts / "answer.md"
    for p in (system, template):
        if not p.is_file():
            raise DomainError(f"domain {spec.name}: missing {p.relative_to(root)}")
    data = []
    for entry in spec.data:
        corpus = (root / entry.corpus).resolve()
        data.append(DataSource(name=entry.name or corpus.parent.name, corpus=corpus,
                               qa=(root / entry.qa).resolve() if entry.qa else None,
                               source=entry.source, license=entry.license))
    return Domain(
        name=spec.name, title=spec.title or spec.name, description=spec.description, root=root,
        examples=list(spec.examples), system_prompt=system.read_text(encoding="utf-8").strip(),
        answer_template=template.read_text(encoding="utf-8"),
        adapter_path=(root / spec.adapter.path).resolve(), base_model=spec.model.base, data=data,
        retrieval=spec.retrieval, generation=spec.generation, eval=spec.eval, privacy=spec.privacy,
    )


def domain_roots(settings: Settings | None = None) -> dict[str, Path]:
    """Every domain package by name: the packaged ones (`settings.domains_dir`: the source checkout's or
    ASSISTANT_DOMAINS_DIR) and those made by `new-domain` (`settings.user_domains_dir`, under the
    data directory). A name in both is refused rather than one silently shadowing the other: both would
    share the name's index and adapter registration, so which one answers would be a guess."""
    settings = settings or Settings.load()
    found: dict[str, Path] = {}
    for folder in (settings.domains_dir, settings.user_domains_dir):
        if not folder.is_dir():
            continue
        for root in sorted(p for p in folder.iterdir() if (p / "domain.toml").is_file()):
            if root.name in found and found[root.name].resolve() != root.resolve():
                raise DomainError(f"domain {root.name!r} is in both {found[root.name]} and {root}: rename or "
                                  "remove one (packaged domains and those made by new-domain share one namespace)")
            found[root.name] = root
    return found


def list_domains(settings: Settings | None = None) -> list[str]:
    return sorted(domain_roots(settings))


def get_domain(name: str, settings: Settings | None = None) -> Domain:
    roots = domain_roots(settings)
    if name not in roots:
        raise UnknownDomainError(f"unknown domain {name!r}; known domains: {', '.join(sorted(roots)) or 'none'}")
    return load_domain(roots[name])
