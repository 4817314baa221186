"""The building workflows as SDK functions (the CLI commands are thin layers over these).

    from assistant.building.workflows import new_domain, train_domain
    report = new_domain("plant-ops", "./docs", qa="qa.jsonl", train=True, evaluate=True)

Evaluation belongs to the `eval` package, which depends on `assistant`, not the other way round: it plugs in
through the `assistant.evaluators` entry point (pyproject.toml), found by `load_evaluator()`.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from assistant.config import Settings
from assistant.domains import Domain, domain_roots, get_domain, list_domains, load_domain
from assistant.errors import AssistantError, ConfigError, InputError, ScaffoldError

Progress = Callable[[str], None]
MIX_SUFFIX = ".mix.json"  # beside an exported examples file: the MixConfig it was built with


def _quiet(_msg: str) -> None:
    pass


def load_evaluator(name: str = "default") -> Callable[..., list[dict]]:
    """The eval suites' entry function (`eval.workflow.evaluate`), found through its entry point."""
    found = [ep for ep in entry_points(group="assistant.evaluators") if ep.name == name]
    if not found:
        raise ConfigError("the eval suites are not installed (no 'assistant.evaluators' entry point); "
                          "reinstall the project with `bash scripts/install.sh`")
    return found[0].load()


def open_store_and_embedder(settings: Settings, progress: Progress = _quiet):
    from assistant.serving.models import open_embedder
    from indexing.store import open_store

    return open_store(settings), open_embedder(settings, progress=progress)


def train_domain(domain: str | Domain, settings: Settings | None = None, config=None, *, out: str | Path | None = None,
                 data_file: str | Path | None = None, export_data: str | Path | None = None, limit: int = 0,
                 seed: int = 0, mix=None, progress: Progress = _quiet) -> dict:
    """Build the domain's training examples (or read exported ones) and train its adapter. Returns the
    adapter manifest, or `{"exported": N, "path": ...}` when `export_data` is given."""
    from assistant.building.training import MixConfig, TrainConfig, build_examples, train_adapter
    from assistant.serving.models import prepare_base_model

    settings = settings or Settings.load()
    dom = domain if isinstance(domain, Domain) else get_domain(domain, settings)
    config = config or TrainConfig(seed=seed)
    mix = mix or MixConfig()
    base_model, base_sha = prepare_base_model(settings, progress=progress)
    mix_fields = dataclasses.asdict(mix)
    if data_file:
        examples = [json.loads(line) for line in open(data_file, encoding="utf-8") if line.strip()]
        sidecar = Path(str(data_file) + MIX_SUFFIX)   # how an exported file was mixed, written beside it
        mix_fields = json.loads(sidecar.read_text()) if sidecar.is_file() else {"source": str(data_file)}
    else:
        from transformers import AutoTokenizer

        from assistant.building.indexer import index_domain
        from indexing.retriever import Retriever

        store, embedder = open_store_and_embedder(settings, progress)
        try:
            if not store.has_collection(dom.name):
                index_domain(dom, store, embedder)
            tokenizer = AutoTokenizer.from_pretrained(str(base_model))
            retriever = Retriever(store, embedder, max_query_chars=settings.max_question_chars)
            examples = build_examples(dom, retriever, tokenizer, limit=limit, mix=mix, seed=config.seed)
        finally:
            store.close()
    if export_data:
        with open(export_data, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in examples)
        Path(str(export_data) + MIX_SUFFIX).write_text(json.dumps(mix_fields | {"limit": limit, "seed": config.seed}))
        return {"exported": len(examples), "path": str(export_data)}
    return train_adapter(examples, base_model, out or dom.adapter_path, config, base_model_sha256=base_sha,
                         domain=dom.name, mix=mix_fields)


def tune_retrieval(domain: str | Domain, settings: Settings | None = None, config=None, *,
                   out: str | Path | None = None, limit: int = 0, progress: Progress = _quiet) -> dict:
    """Train the domain's query encoder on its train split (assistant/building/retrieval_tuning.py), indexing
    the domain first if needed; writes it to `out` (default: the package's query encoder directory) only when it
    beats the base encoder on held-out train questions. Returns its manifest fields."""
    from assistant.building.indexer import index_domain
    from assistant.building.retrieval_tuning import QueryTuneConfig, tune_query_encoder
    from assistant.serving.models import embed_model_sha256

    settings = settings or Settings.load()
    dom = domain if isinstance(domain, Domain) else get_domain(domain, settings)
    if not out and not dom.retrieval.query_encoder:
        raise InputError(f"domain {dom.name} sets retrieval.query_encoder = \"\" (no tuned encoder): pass --out")
    store, embedder = open_store_and_embedder(settings, progress)
    try:
        if not store.has_collection(dom.name):
            index_domain(dom, store, embedder)
        return tune_query_encoder(dom, store, embedder.model_path, out or dom.root / dom.retrieval.query_encoder,
                                  config or QueryTuneConfig(), base_embedder_sha256=embed_model_sha256(settings),
                                  limit=limit)
    finally:
        store.close()


def calibrate_domains(names: list[str], settings: Settings | None = None, *, n: int = 300,
                      choices: bool = True) -> list[dict]:
    """Evidence-gate thresholds for the named domains (others' questions serve as out-of-domain), then, for
    domains with yes/no/maybe questions, the choice prior correction (needs the engine: `calibrate_choices`)."""
    from assistant.building.calibration import calibrate, calibrate_choices
    from assistant.data_format import AnswerType

    settings = settings or Settings.load()
    domains = [get_domain(d, settings) for d in list_domains(settings)]
    targets = [get_domain(d, settings) for d in names]
    store, embedder = open_store_and_embedder(settings)
    try:
        results = [calibrate(dom, [o for o in domains if o.name != dom.name], store, embedder, n=n)
                   for dom in targets]
    finally:
        store.close()
    choice_domains = [d for d in targets if choices and any(r.get("answer_type") == AnswerType.YES_NO_MAYBE
                                                            for r in d.qa_rows("train"))]
    if choice_domains:
        from assistant.platform import Platform

        with Platform.load([get_domain(d.name, settings) for d in choice_domains], settings) as platform:
            by_name = {d.name: calibrate_choices(platform, platform.domain(d.name)) for d in choice_domains}
        for result in results:
            if result["domain"] in by_name:
                result["choices"] = by_name[result["domain"]]
    return results


def require_training_questions(train: bool, qa, synthetic: int) -> None:
    """Training (and so eval) needs questions: a Q&A file or synthetic ones. Checked before anything is written."""
    if train and not (qa or synthetic > 0):
        raise InputError("--train/--eval need training questions: give --qa FILE or --synthetic N")


@dataclass
class NewDomainReport:
    root: Path
    documents: int
    chunks: int
    skipped: list[str] = field(default_factory=list)      # files that could not be read, with the reason
    synthetic: int = 0
    manifest: dict | None = None
    calibration: dict | None = None
    evaluation: dict | None = None
    split: str | None = None


class WorkflowStepError(AssistantError):
    """A step of new-domain failed after the domain was created: says which command continues from it."""

    def __init__(self, cause: BaseException, root: Path, step: str):
        super().__init__(f"{cause}\n{root} is created and indexed; go on from the failed step with: {step}")
        self.cause = cause
        for attr in ("status", "type", "code", "exit_code"):
            setattr(self, attr, getattr(cause, attr, getattr(AssistantError, attr)))


def new_domain(name: str, corpus: str | Path, settings: Settings | None = None, *, qa: str | Path | None = None,
               synthetic: int = 0, description: str = "", train: bool = False, evaluate: bool = False,
               train_config=None, eval_limit: int | None = None, progress: Progress = _quiet) -> NewDomainReport:
    """One call from a folder of documents to an indexed (and, if asked, trained, calibrated and scored)
    domain: scaffold -> index -> synthesise Q&A -> train -> calibrate -> eval."""
    from assistant.building.calibration import calibrate
    from assistant.building.indexer import index_domain
    from assistant.building.scaffold import create_domain, synthesize_qa
    from indexing.documents import read_source

    settings = settings or Settings.load()
    train = train or evaluate
    require_training_questions(train, qa, synthetic)
    existing = domain_roots(settings)
    if name in existing:  # a packaged domain too: both would share the name's index (assistant/domains.py)
        raise ScaffoldError(f"domain {name!r} already exists at {existing[name]}")
    read = read_source(corpus)  # read once: the files it skips are reported with the result
    # into the data directory: new packages never go into the source checkout
    root = create_domain(name, corpus, settings.user_domains_dir, qa=qa, description=description, read=read)
    store, embedder = open_store_and_embedder(settings, progress)
    try:
        dom = load_domain(root)
        indexed = index_domain(dom, store, embedder)
        others = [get_domain(d, settings) for d in list_domains(settings) if d != name]
        gate = calibrate(dom, others, store, embedder)
    finally:
        store.close()
    report = NewDomainReport(root=root, documents=indexed.documents, chunks=indexed.chunks,
                             skipped=[str(e) for e in [*read.errors, *indexed.errors]])
    report.calibration = gate
    progress(f"created {root} and indexed {indexed.documents} documents ({indexed.chunks} chunks); evidence "
             f"gate {gate['threshold']} (rejects {gate['out_of_domain_reject']:.0%} of {gate['n_out']} out-of-domain "
             f"questions)")
    for skipped in report.skipped:
        progress(f"  skipped: {skipped}")
    if synthetic and not qa:
        from assistant.serving.engine import Engine
        from assistant.serving.models import prepare_base_model

        counts: dict = {}
        with Engine(prepare_base_model(settings)[0], settings) as engine:
            report.synthetic = len(synthesize_qa(root, engine, n=synthetic, report=counts))
        reasons = ", ".join(f"{k}: {v}" for k, v in counts["dropped"].items()) or "none"
        progress(f"synthetic Q&A: kept {counts['kept']} of {counts['asked']} ({counts['train']} train, "
                 f"{counts['dev']} dev, split by document); dropped: {reasons}; in {root / 'data' / 'qa.jsonl'}")
    if not train:
        return report
    splits = Counter(r.get("split") for r in load_domain(root).qa_rows())
    if not splits["train"]:
        raise InputError(f"{name}: no train questions in {root / 'data' / 'qa.jsonl'}; the domain is created and "
                         f"indexed, add Q&A and run: assistant train {name}")
    # synthetic domains have no test split (no made-up test data): their dev split is scored instead;
    # training holds out its own slice of the train split, so dev is unseen; the report names the split
    report.split = "test" if splits["test"] else "dev" if splits["dev"] else None
    if evaluate and not report.split:
        raise InputError(f"{name}: --eval needs held-out questions (split 'test' or 'dev' in the Q&A), but all "
                         f"{splits['train']} are train; {root} is created and indexed")
    evaluator = load_evaluator() if evaluate else None
    step = f"assistant train {name}"
    try:
        report.manifest = train_domain(name, settings, train_config, progress=progress)
        step = f"assistant calibrate {name}"
        report.calibration = calibrate_domains([name], settings)[0]
        if evaluator:
            step = f"assistant eval {name} --split {report.split}"
            report.evaluation = evaluator([name], settings, split=report.split, limit=eval_limit,
                                          report_dir=root / "eval")[0]
    except AssistantError as exc:
        raise WorkflowStepError(exc, root, step) from exc
    return report
