"""The `assistant` command line (also `python -m assistant`)."""
from __future__ import annotations

import json
import sys
from collections import Counter

import click

from assistant.config import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Domain assistant platform: grounded, cited answers per domain from one base model."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the paths as JSON.")
def setup(as_json):
    """Prepare the default models (idempotent; prints where they are)."""
    from assistant.serving.models import ModelError, prepare

    settings = Settings.load()
    try:
        prepared = prepare(settings, progress=lambda msg: click.echo(msg, err=True))
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    info = {"data_dir": str(settings.data_dir), "base_model": str(prepared.base_model),
            "base_model_sha256": prepared.base_model_sha256, "embed_model": str(prepared.embed_model)}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _store_and_embedder(settings: Settings):
    from indexing.embedder import Embedder
    from indexing.store import open_store

    from assistant.serving.models import prepare_embedder

    return open_store(settings), Embedder(prepare_embedder(settings, progress=lambda m: click.echo(m, err=True)))


@main.command()
@click.argument("domain")
@click.option("--source", type=click.Path(exists=True), help="A folder or file to add/update (default: the domain's corpora).")
@click.option("--prune/--no-prune", default=None, help="Remove documents not in the source (default: on without --source).")
@click.option("--delete", "delete_ids", multiple=True, metavar="DOC_ID", help="Remove a document's chunks (repeatable).")
@click.option("--chunk-size", type=int, default=None, help="Tokens per chunk (default from domain.toml).")
@click.option("--chunk-overlap", type=int, default=None, help="Token overlap between chunks.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def index(domain, source, prune, delete_ids, chunk_size, chunk_overlap, as_json):
    """Build or update a domain's index (idempotent; a killed run resumes without duplicates)."""
    from indexing.ingest import delete_documents
    from indexing.store import StoreError

    from assistant.domains import DomainError, get_domain
    from assistant.building.indexer import index_domain

    settings = Settings.load()
    try:
        dom = get_domain(domain, settings)
        store, embedder = _store_and_embedder(settings)
    except (DomainError, StoreError) as exc:
        raise _fail(exc) from exc
    try:
        if delete_ids:
            removed = delete_documents(store, dom.name, list(delete_ids))
            click.echo(json.dumps({"domain": dom.name, "deleted_chunks": removed}) if as_json
                       else f"{dom.name}: removed {removed} chunks of {len(delete_ids)} document(s)")
            return
        report = index_domain(dom, store, embedder, source, prune=prune, chunk_size=chunk_size,
                              chunk_overlap=chunk_overlap)
    except (ValueError, FileNotFoundError, StoreError) as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"{dom.name}: {report.documents} documents, {report.chunks} chunks "
                   f"({report.added} added, {report.unchanged} unchanged, {report.removed} removed) "
                   f"in {sum(report.seconds.values()):.1f} s")
        for err in report.errors:
            click.echo(f"  error: {err}", err=True)
    if report.errors:
        click.echo(f"{len(report.errors)} item(s) failed; the rest were indexed", err=True)
        sys.exit(1)


def _parse_filters(items) -> dict | None:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--filter")
        out.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()} or None


@main.command()
@click.argument("domain")
@click.argument("question")
@click.option("--k", default=5, show_default=True, type=int, help="Passages to return.")
@click.option("--mode", default="hybrid", show_default=True, type=click.Choice(["hybrid", "dense", "sparse"]))
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Payload filter, e.g. title=ticketmaster.com")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def retrieve(domain, question, k, mode, filters, as_json):
    """Passages only: hybrid search in the domain's index."""
    from indexing.retriever import Retriever
    from indexing.store import StoreError

    from assistant.domains import DomainError, get_domain

    settings = Settings.load()
    try:
        dom = get_domain(domain, settings)
        store, embedder = _store_and_embedder(settings)
    except (DomainError, StoreError) as exc:
        raise _fail(exc) from exc
    try:
        passages = Retriever(store, embedder).retrieve(dom.name, question, k, mode=mode,
                                                       filter=_parse_filters(filters))
    except (ValueError, StoreError) as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"domain": dom.name, "question": question,
                               "passages": [p.to_dict() for p in passages]}, indent=2))
        return
    for n, p in enumerate(passages, 1):
        click.echo(f"[{n}] {p.title or p.doc_id}  (doc {p.doc_id}, score {p.score:.4f})")
        click.echo("    " + p.text[:300].replace("\n", " "))


def _answer_json(answer) -> dict:
    """The `assistant ask --json` contract of DESIGN.md (plus flags, evidence and first-token time)."""
    return {"domain": answer.domain, "answer": answer.text,
            "citations": [{"n": c.n, "doc_id": c.doc_id, "title": c.title, "score": c.score, "text": c.text}
                          for c in answer.citations],
            "adapter": answer.adapter, "abstained": answer.abstained,
            "timings": {"retrieve_ms": answer.timings.get("retrieve_ms", 0.0),
                        "generate_ms": answer.timings.get("generate_ms", 0.0),
                        "first_token_ms": answer.timings.get("first_token_ms")},
            "flags": answer.flags, "evidence": answer.evidence}


@main.command()
@click.argument("domain")
@click.argument("question")
@click.option("--no-rag", is_flag=True, help="Answer without retrieval.")
@click.option("--no-lora", is_flag=True, help="Answer with the base model, without the domain adapter.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Retrieve within matching documents.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def ask(domain, question, no_rag, no_lora, filters, as_json):
    """A grounded, cited answer from the domain's adapter and index."""
    from indexing.store import StoreError

    from assistant.serving.adapters import AdapterError
    from assistant.domains import DomainError
    from assistant.platform import Platform

    settings = Settings.load()
    try:
        from assistant.domains import get_domain
        get_domain(domain, settings)  # fail fast, before the engine starts
        Platform._check_question(question, settings.max_question_chars)
        platform = Platform.load([domain], settings, progress=not as_json)
    except (DomainError, StoreError, AdapterError, ValueError) as exc:
        raise _fail(exc) from exc
    try:
        if as_json:
            answer = platform.ask(domain, question, rag=not no_rag, lora=not no_lora, filter=_parse_filters(filters))
            click.echo(json.dumps(_answer_json(answer), indent=2))
            return
        answer = None
        for piece in platform.stream(domain, question, rag=not no_rag, lora=not no_lora,
                                     filter=_parse_filters(filters)):
            if isinstance(piece, str):
                click.echo(piece, nl=False)
            else:
                answer = piece
        click.echo()
        for c in answer.citations:
            click.echo(f"  [{c.n}] {c.title or c.doc_id} (doc {c.doc_id}, score {c.score:.3f})")
        status = "abstained" if answer.abstained else ", ".join(answer.flags) or "ok"
        click.echo(f"  -- {answer.adapter or 'base model'}; retrieve {answer.timings['retrieve_ms']:.0f} ms, "
                   f"generate {answer.timings['generate_ms']:.0f} ms; {status}", err=True)
    except ValueError as exc:
        raise _fail(exc) from exc
    finally:
        platform.close()


@main.command()
@click.argument("domain")
@click.option("--rank", default=8, show_default=True, type=int, help="LoRA rank.")
@click.option("--alpha", default=None, type=int, help="LoRA alpha (default 2 x rank).")
@click.option("--rslora", is_flag=True, help="Rank-stabilised LoRA scaling.")
@click.option("--qlora", is_flag=True, help="4-bit NF4 frozen base (bitsandbytes; CUDA only). The adapter stays plain LoRA.")
@click.option("--epochs", default=2.0, show_default=True, type=float)
@click.option("--max-steps", default=0, type=int, help="Stop after N steps (0 = by epochs).")
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--micro-batch", default=None, type=click.IntRange(min=1),
              help="Examples per forward pass, accumulated to --batch-size (default: all on CUDA, 2 on CPU).")
@click.option("--limit", default=0, type=int, help="Use the first N train questions (0 = all).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(), default=None, help="Adapter directory (default: the domain's adapter/).")
@click.option("--export-data", type=click.Path(), default=None, help="Only write the examples (JSONL) and stop.")
@click.option("--data", "data_file", type=click.Path(exists=True), default=None, help="Train on exported examples.")
def train(domain, rank, alpha, rslora, qlora, epochs, max_steps, lr, batch_size, micro_batch, limit, seed, out,
          export_data, data_file):
    """Train the domain's LoRA adapter on its train split, in the run-time prompt format."""
    from assistant.domains import DomainError, get_domain
    from assistant.serving.models import prepare_base_model
    from assistant.building.training import build_examples, train_adapter

    settings = Settings.load()
    try:
        dom = get_domain(domain, settings)
    except DomainError as exc:
        raise _fail(exc) from exc
    base_model, base_sha = prepare_base_model(settings, progress=lambda m: click.echo(m, err=True))
    if data_file:
        examples = [json.loads(line) for line in open(data_file, encoding="utf-8") if line.strip()]
    else:
        from indexing.retriever import Retriever
        from transformers import AutoTokenizer

        from assistant.building.indexer import index_domain

        store, embedder = _store_and_embedder(settings)
        try:
            if not store.has_collection(dom.name):
                index_domain(dom, store, embedder)
            tokenizer = AutoTokenizer.from_pretrained(str(base_model))
            examples = build_examples(dom, Retriever(store, embedder), tokenizer, limit=limit, seed=seed)
        finally:
            store.close()
    if export_data:
        with open(export_data, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in examples)
        click.echo(f"{dom.name}: wrote {len(examples)} examples to {export_data}")
        return
    try:
        manifest = train_adapter(examples, base_model, out or dom.adapter_path,
                                 base_model_sha256=base_sha, domain=dom.name, rank=rank,
                                 alpha=alpha, rslora=rslora, epochs=epochs, max_steps=max_steps, lr=lr,
                                 batch_size=batch_size, micro_batch=micro_batch, seed=seed, qlora=qlora)
    except ValueError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps({k: manifest[k] for k in ("domain", "version", "steps", "wall_time_s", "loss")}, indent=2))


@main.command()
@click.argument("domain")
@click.option("--n", default=300, show_default=True, type=int, help="In-domain train questions to use.")
def calibrate(domain, n):
    """Calibrate the evidence gate (DOMAIN or all) on the train split; writes domain.toml."""
    from assistant.building.calibration import calibrate as run
    from assistant.domains import DomainError, get_domain, list_domains

    settings = Settings.load()
    names = list_domains(settings) if domain == "all" else [domain]
    try:
        domains = [get_domain(d, settings) for d in list_domains(settings)]
        targets = [get_domain(d, settings) for d in names]
    except DomainError as exc:
        raise _fail(exc) from exc
    store, embedder = _store_and_embedder(settings)
    try:
        for dom in targets:
            click.echo(json.dumps(run(dom, [o for o in domains if o.name != dom.name], store, embedder, n=n)))
    finally:
        store.close()


@main.command("new-domain")
@click.argument("name")
@click.option("--corpus", required=True, type=click.Path(exists=True), help="A folder of files or a corpus JSONL.")
@click.option("--qa", type=click.Path(exists=True), default=None, help="Q&A JSONL (question, answer[, split]).")
@click.option("--synthetic", default=0, type=int, help="Without --qa: generate N synthetic train/dev Q&A with the model.")
@click.option("--description", default="", help="One line shown in the app and /v1/models.")
@click.option("--train", "do_train", is_flag=True, help="Then train the adapter and calibrate the evidence gate.")
@click.option("--eval", "do_eval", is_flag=True, help="Then score base/+RAG/+LoRA/+RAG+LoRA (implies --train).")
@click.option("--epochs", default=2.0, show_default=True, type=float, help="With --train.")
@click.option("--max-steps", default=0, type=int, help="With --train: stop after N steps (0 = by epochs).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="With --eval: a seeded sample of N questions.")
@click.pass_context
def new_domain(ctx, name, corpus, qa, synthetic, description, do_train, do_eval, epochs, max_steps, eval_limit):
    """Scaffold a domain package from documents and index it; optionally synthesise training Q&A, train the
    adapter, calibrate the gate and evaluate: one command from a folder of documents to a trained, scored domain."""
    from assistant.building.indexer import index_domain
    from assistant.domains import load_domain
    from assistant.building.scaffold import ScaffoldError, create_domain, synthesize_qa

    settings = Settings.load()
    do_train = do_train or do_eval
    if do_train and not (qa or synthetic > 0):
        raise click.UsageError("--train/--eval need training questions: give --qa FILE or --synthetic N")
    try:
        root = create_domain(name, corpus, settings.domains_dir, qa=qa, description=description)
    except (ScaffoldError, FileNotFoundError) as exc:
        raise _fail(exc) from exc
    store, embedder = _store_and_embedder(settings)
    try:
        report = index_domain(load_domain(root), store, embedder)
    finally:
        store.close()
    click.echo(f"created {root} and indexed {report.documents} documents ({report.chunks} chunks)")
    if synthetic and not qa:
        from assistant.serving.engine import Engine
        from assistant.serving.models import prepare_base_model

        with Engine(prepare_base_model(settings)[0], settings) as engine:
            rows = synthesize_qa(root, engine, n=synthetic)
        click.echo(f"wrote {len(rows)} synthetic Q&A (train/dev) to {root / 'data' / 'qa.jsonl'}")
    if not do_train:
        click.echo(f"next: assistant train {name} && assistant calibrate {name} && assistant eval {name}")
        return
    splits = Counter(r.get("split") for r in load_domain(root).qa_rows())
    if not splits["train"]:
        raise _fail(ValueError(f"{name}: no train questions in {root / 'data' / 'qa.jsonl'}; the domain is "
                               f"created and indexed, add Q&A and run: assistant train {name}"))
    # synthetic domains have no test split (no made-up test data): their dev split is scored instead;
    # training holds out its own slice of the train split, so dev is unseen; the report names the split
    split = "test" if splits["test"] else "dev" if splits["dev"] else None
    if do_eval and not split:
        raise _fail(ValueError(f"{name}: --eval needs held-out questions (split 'test' or 'dev' in the Q&A), but all "
                               f"{splits['train']} are train; {root} is created and indexed"))
    step = f"assistant train {name}"
    try:
        ctx.invoke(train, domain=name, epochs=epochs, max_steps=max_steps)
        step = f"assistant calibrate {name}"
        ctx.invoke(calibrate, domain=name)
        if do_eval:
            step = f"assistant eval {name} --split {split}"
            ctx.invoke(eval_command, domain=name, split=split, limit=eval_limit, report_dir=str(root / "eval"))
    except click.ClickException as exc:
        raise click.ClickException(f"{exc.format_message()}\n{root} is created and indexed; "
                                   f"go on from the failed step with: {step}") from exc


@main.command("eval")
@click.argument("domain")
@click.option("--split", default="test", show_default=True, help="Which qa.jsonl split to score.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="A seeded random sample of N questions.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the result JSON here.")
@click.option("--conditions", default="base,rag,lora,rag+lora", show_default=True, help="Comma-separated subset.")
@click.option("--adapter", "adapter_path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Score this adapter directory instead of the domain's shipped one (e.g. a rank study).")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where <domain>.md/.json/.png go (default eval/reports; --no-report to skip).")
@click.option("--no-report", is_flag=True, help="Write no report files.")
@click.option("--no-risk", is_flag=True, help="Skip the risk suites (out-of-domain, unanswerable, injection, PII).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Answers per engine batch.")
@click.option("--seed", default=0, show_default=True, type=int, help="Sample seed.")
def eval_command(domain, split, limit, json_out, conditions, adapter_path, report_dir, no_report, no_risk,
                 batch_size, seed):
    """Score DOMAIN (or all) as base / +RAG / +LoRA / +RAG+LoRA, with CIs, risk suites and a report (resumable)."""
    from pathlib import Path

    from eval.report import write_report
    from eval.runner import CONDITIONS, eval_domain

    from assistant.serving.adapters import AdapterError
    from assistant.domains import DomainError, get_domain, list_domains
    from assistant.platform import Platform

    settings = Settings.load()
    chosen = [c.strip() for c in conditions.split(",") if c.strip()]
    bad = [c for c in chosen if c not in CONDITIONS]
    if bad or not chosen:
        raise click.BadParameter(f"unknown condition(s) {bad}; choose from {', '.join(CONDITIONS)}", param_hint="--conditions")
    try:
        names = list_domains(settings) if domain == "all" else [get_domain(domain, settings).name]
        if adapter_path and len(names) != 1:
            raise DomainError("--adapter needs one domain, not all")
        platform = Platform.load(names, settings)
    except (DomainError, AdapterError, ValueError) as exc:
        raise _fail(exc) from exc
    command = "assistant eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else f"assistant eval {domain}"
    results = []
    try:
        if adapter_path:
            platform.reload_adapter(names[0], adapter_path)
        for name in names:
            result = eval_domain(platform, name, split=split, limit=limit, conditions=chosen, batch_size=batch_size,
                                 risk=not no_risk, seed=seed)
            result["adapter_path"] = str(Path(adapter_path).resolve()) if adapter_path else None
            results.append(result)
            report_md = None
            if not no_report:
                out_dir = Path(report_dir) if report_dir else Path(__file__).resolve().parents[2] / "eval" / "reports"
                report_md = write_report(result, out_dir, command)["md"]
                click.echo(f"{name}: report {report_md}", err=True)
            scored_split = split == "test" or not platform.domain(name).qa_rows("test")  # no test split: dev
            if not adapter_path and scored_split and "rag+lora" in chosen:
                _record_eval_in_manifest(platform.domain(name), result, report_md)
            _print_summary(result)
    except (AdapterError, ValueError) as exc:
        raise _fail(exc) from exc
    finally:
        platform.close()
    if json_out:
        Path(json_out).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n")


def _print_summary(result: dict) -> None:
    metric = result["primary_metric"]
    cells = [f"{c} {v.get(metric, float('nan')):.3f}" for c, v in result["answers"].items()]
    click.echo(f"{result['domain']} ({result['split']}, n={result['n']}): {metric}: " + ", ".join(cells))


def _record_eval_in_manifest(dom, result: dict, report_md=None) -> None:
    """The shipped adapter's manifest keeps the scores it reached (issue: adapter manifest), and where the
    report is (relative to the checkout when it is inside it)."""
    from assistant.serving.adapter_manifest import read_manifest, write_manifest

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
    from pathlib import Path

    path, root = Path(path).resolve(), Path(__file__).resolve().parents[2]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@main.command()
@click.argument("domain")
@click.option("--merged", "out", required=True, type=click.Path(), help="Output directory for the merged checkpoint.")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(["bfloat16", "float16", "float32"]))
def export(domain, out, dtype):
    """Write the base model with the domain adapter merged in (plain checkpoint, no LoRA at serve time)."""
    from assistant.serving.adapters import AdapterError
    from assistant.domains import DomainError, get_domain
    from assistant.building.export import export_merged
    from assistant.serving.models import prepare_base_model

    settings = Settings.load()
    try:
        dom = get_domain(domain, settings)
        base, sha = prepare_base_model(settings, progress=lambda m: click.echo(m, err=True))
        path = export_merged(base, sha, dom.adapter_path, out, dtype)
    except (DomainError, AdapterError, FileExistsError) as exc:
        raise _fail(exc) from exc
    click.echo(f"merged {dom.name} adapter into {path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 exposes it).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--domain", "domains", multiple=True, help="Serve only these domains (default: all).")
def serve(host, port, domains):
    """OpenAI-compatible HTTP API: /v1/chat/completions (model = domain), /v1/models, /health."""
    from assistant.entrypoints.server import serve as run_server

    run_server(host, port, list(domains) or None)


if __name__ == "__main__":
    sys.exit(main())
