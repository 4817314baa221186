"""The `assistant` command line (also `python -m assistant`): thin commands over the SDK and its workflows.

Every error the platform raises on purpose ends the command with one line on stderr and the exit code of
its kind (assistant.errors); click's own usage errors keep exit code 2.
"""
from __future__ import annotations

import json
import sys

import click

from assistant.config import Settings, configure_environment
from assistant.errors import ConflictError, InputError, error_info, mapped_error_types


class Group(click.Group):
    """Maps platform errors to one-line messages and exit codes (unexpected exceptions keep their traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - only the platform's own errors are mapped; the rest re-raised
            if not isinstance(exc, mapped_error_types()):
                raise
            info = error_info(exc)
            click.echo(f"Error: {info.message}", err=True)
            ctx.exit(info.exit_code)


def echo_err(message: str) -> None:
    click.echo(message, err=True)


api_key_option = click.option("--api-key", envvar="ASSISTANT_API_KEY", default=None,
                              help="Key for a running service that needs one (default: $ASSISTANT_API_KEY).")


def running_service(settings: Settings, domain: str):
    """The `assistant serve` running on this data directory, if it serves `domain`: its index is that process's
    (indexing/store/lock.py), so `ask`, `retrieve` and `index --source` send their work to it instead."""
    from assistant.entrypoints.service_file import find_running

    info = find_running(settings)
    return info if info is not None and domain in info.domains else None


def answered_by(service) -> None:
    echo_err(f"  -- answered by the running service at {service.url} (pid {service.pid})")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Domain assistant platform: grounded, cited answers per domain from one base model."""
    import atexit

    from assistant.entrypoints.lifecycle import install_shutdown_rules, reap_children

    configure_environment()
    install_shutdown_rules()      # SIGTERM (a killed eval, docker stop) stops vLLM's processes too
    atexit.register(reap_children)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the paths as JSON.")
def setup(as_json):
    """Prepare the default models (idempotent; prints where they are)."""
    from assistant.serving.models import prepare

    settings = Settings.load()
    prepared = prepare(settings, progress=echo_err)
    info = {"data_dir": str(settings.data_dir), "base_model": str(prepared.base_model),
            "base_model_sha256": prepared.base_model_sha256, "embed_model": str(prepared.embed_model),
            "embed_openvino": str(prepared.embed_openvino) if prepared.embed_openvino else None}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


@main.command()
@click.argument("domain")
@click.option("--source", type=click.Path(exists=True),
              help="A folder or file to add/update (default: the domain's corpora).")
@click.option("--prune/--no-prune", default=None,
              help="Remove documents not in the source (default: on without --source).")
@click.option("--delete", "delete_ids", multiple=True, metavar="DOC_ID",
              help="Remove a document's chunks (repeatable).")
@click.option("--chunk-size", type=int, default=None, help="Tokens per chunk (default from domain.toml).")
@click.option("--chunk-overlap", type=int, default=None, help="Token overlap between chunks.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@api_key_option
def index(domain, source, prune, delete_ids, chunk_size, chunk_overlap, as_json, api_key):
    """Build or update a domain's index (idempotent; a killed run resumes without duplicates). With `assistant
    serve` running on this data directory, `--source` files are uploaded to it and indexed there."""
    from assistant.building.indexer import index_domain
    from assistant.building.workflows import open_store_and_embedder
    from assistant.domains import get_domain
    from indexing.ingest import delete_documents

    settings = Settings.load()
    dom = get_domain(domain, settings)
    service = running_service(settings, dom.name)
    if service is not None:
        if not source or delete_ids or prune or chunk_size or chunk_overlap:
            raise ConflictError(f"the running service at {service.url} (pid {service.pid}) holds {dom.name}'s "
                                "index: only `--source PATH` is sent to it (as uploads); stop it for a full "
                                "re-index, --prune, --delete or other chunk sizes")
        from assistant.entrypoints.remote_index import index_via_service

        report = index_via_service(service, api_key, dom.name, source, as_json)
        if report["errors"]:
            echo_err(f"{len(report['errors'])} item(s) failed; the rest were indexed")
            sys.exit(1)
        return
    store, embedder = open_store_and_embedder(settings, echo_err)
    try:
        if delete_ids:
            removed = delete_documents(store, dom.name, list(delete_ids))
            click.echo(json.dumps({"domain": dom.name, "deleted_chunks": removed}) if as_json
                       else f"{dom.name}: removed {removed} chunks of {len(delete_ids)} document(s)")
            return
        try:
            report = index_domain(dom, store, embedder, source, prune=prune, chunk_size=chunk_size,
                                  chunk_overlap=chunk_overlap)
        except ValueError as exc:  # the chunker's own checks (chunk size/overlap)
            raise InputError(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"{dom.name}: {report.documents} documents, {report.chunks} chunks "
                   f"({report.added} added, {report.unchanged} unchanged, {report.removed} removed) "
                   f"in {sum(report.seconds.values()):.1f} s")
        for err in report.errors:
            echo_err(f"  error: {err}")
    if report.errors:
        echo_err(f"{len(report.errors)} item(s) failed; the rest were indexed")
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
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Payload filter, e.g. title=ticketmaster.com")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@api_key_option
def retrieve(domain, question, k, mode, filters, as_json, api_key):
    """Passages only: hybrid search in the domain's index."""
    from assistant.answer import check_question
    from assistant.building.workflows import open_store_and_embedder
    from assistant.domains import get_domain
    from indexing.retriever import Retriever

    settings = Settings.load()
    dom = get_domain(domain, settings)
    question = check_question(question, settings.max_question_chars)
    service = running_service(settings, dom.name)
    if service is not None:
        from assistant.entrypoints.service_client import ServiceClient

        with ServiceClient(service.url, api_key) as client:
            passages = client.retrieve(dom.name, question, k=k, mode=mode, filter=_parse_filters(filters))
    else:
        store, embedder = open_store_and_embedder(settings, echo_err)
        try:
            passages = [p.to_dict() for p in Retriever(store, embedder, max_query_chars=settings.max_question_chars)
                        .retrieve(dom.name, question, k, mode=mode, filter=_parse_filters(filters))]
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps({"domain": dom.name, "question": question, "passages": passages}, indent=2))
    else:
        for n, p in enumerate(passages, 1):
            click.echo(f"[{n}] {p['title'] or p['doc_id']}  (doc {p['doc_id']}, score {p['score']:.4f})")
            click.echo("    " + p["text"][:300].replace("\n", " "))
    if service is not None:
        answered_by(service)


@main.command()
@click.argument("domain")
@click.argument("question")
@click.option("--no-rag", is_flag=True, help="Answer without retrieval.")
@click.option("--no-lora", is_flag=True, help="Answer with the base model, without the domain adapter.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Retrieve within matching documents.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@api_key_option
def ask(domain, question, no_rag, no_lora, filters, as_json, api_key):
    """A grounded, cited answer from the domain's adapter and index (from the running `assistant serve` of this
    data directory when there is one)."""
    from assistant.answer import check_question
    from assistant.domains import get_domain

    settings = Settings.load()
    dom = get_domain(domain, settings)                      # fail fast, before the engine starts,
    check_question(question, settings.max_question_chars)   # on a bad domain or question
    kwargs = dict(rag=not no_rag, lora=not no_lora, filter=_parse_filters(filters))
    service = running_service(settings, dom.name)
    if service is not None:
        from assistant.entrypoints.service_client import ServiceClient

        with ServiceClient(service.url, api_key) as client:
            pieces = iter([client.ask(dom.name, question, **kwargs)]) if as_json else \
                client.stream(dom.name, question, **kwargs)
            _print_answer(pieces, as_json)
        answered_by(service)
        return
    from assistant.platform import Platform

    with Platform.load([dom], settings, progress=not as_json) as platform:
        if as_json:
            _print_answer(iter([platform.ask(dom.name, question, **kwargs).to_dict(passages=False)]), True)
            return
        _print_answer((p if isinstance(p, str) else p.to_dict(passages=False)
                       for p in platform.stream(dom.name, question, **kwargs)), False)


def _print_answer(pieces, as_json: bool) -> None:
    """Streamed text pieces, then the answer as `Answer.to_dict(passages=False)` (local or from the service)."""
    answer: dict = {}
    for piece in pieces:
        if isinstance(piece, str):
            click.echo(piece, nl=False)
        else:
            answer = piece
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo()
    for c in answer["citations"]:
        click.echo(f"  [{c['n']}] {c['title'] or c['doc_id']} (doc {c['doc_id']}, score {c['score']:.3f})")
    status = "abstained" if answer["abstained"] else ", ".join(answer["flags"]) or "ok"
    echo_err(f"  -- {answer['adapter'] or 'base model'}; retrieve {answer['timings']['retrieve_ms']:.0f} ms, "
             f"generate {answer['timings']['generate_ms']:.0f} ms; {status}")


@main.command()
@click.argument("domain")
@click.option("--rank", default=8, show_default=True, type=int, help="LoRA rank.")
@click.option("--alpha", default=None, type=int, help="LoRA alpha (default 2 x rank).")
@click.option("--rslora", is_flag=True, help="Rank-stabilised LoRA scaling.")
@click.option("--qlora", is_flag=True,
              help="4-bit NF4 frozen base (bitsandbytes; CUDA only). The adapter stays plain LoRA.")
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
@click.option("--per-set", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Train questions per data set of the domain (0 = all), so one big set does not drown the others.")
@click.option("--balance/--no-balance", default=False, show_default=True,
              help="Repeat yes/no/maybe questions of the rarer labels until every label is as frequent (off: "
                   "on PubMedQA it lowered accuracy, eval/reports/mix_study.md).")
@click.option("--negatives", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of abstain examples (shown only unrelated passages, target \"I don't know ...\").")
@click.option("--upper-layers", default=0, show_default=True, type=click.IntRange(min=0),
              help="LoRA on the top N decoder layers only (0 = all): backward stops there, faster on a CPU.")
@click.option("--bf16-autocast", is_flag=True, help="CPU: compute in bfloat16 (LoRA weights stay float32).")
@click.option("--max-len", default=1024, show_default=True, type=click.IntRange(min=16),
              help="Tokens per example (prompt + answer); longer ones are cut.")
@click.option("--time-budget", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of training at most (0 = none): the second step's time sets how many steps fit.")
def train(domain, rank, alpha, rslora, qlora, epochs, max_steps, lr, batch_size, micro_batch, limit, seed, out,
          export_data, data_file, per_set, balance, negatives, upper_layers, bf16_autocast, max_len, time_budget):
    """Train the domain's LoRA adapter on its train split, in the run-time prompt format."""
    from assistant.building.training import MixConfig, TrainConfig
    from assistant.building.workflows import train_domain

    try:
        config = TrainConfig(rank=rank, alpha=alpha, rslora=rslora, qlora=qlora, epochs=epochs, max_steps=max_steps,
                             lr=lr, batch_size=batch_size, micro_batch=micro_batch, seed=seed,
                             upper_layers=upper_layers, bf16_autocast=bf16_autocast, max_len=max_len,
                             time_budget_s=time_budget)
        mix = MixConfig(per_set=per_set, balance_labels=balance, negatives=negatives)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    result = train_domain(domain, Settings.load(), config, out=out, data_file=data_file, export_data=export_data,
                          limit=limit, mix=mix, progress=echo_err)
    if "exported" in result:
        click.echo(f"{domain}: wrote {result['exported']} examples to {result['path']}")
        return
    click.echo(json.dumps({k: result[k] for k in ("domain", "version", "steps", "wall_time_s", "loss")}, indent=2))


@main.command("tune-retrieval")
@click.argument("domain")
@click.option("--rank", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=5e-4, show_default=True, type=float)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", default=0, type=click.IntRange(min=0), help="Use the first N train questions (0 = all).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(), default=None,
              help="Encoder directory (default: the package's query_encoder/, used from the next start).")
def tune_retrieval(domain, rank, epochs, lr, batch_size, limit, seed, out):
    """Tune how DOMAIN's questions are embedded (a LoRA on the query side only; the index is kept) on its train
    split. Written only when it beats the base embedder's recall@5 on held-out train questions."""
    from assistant.building.retrieval_tuning import QueryTuneConfig
    from assistant.building.workflows import tune_retrieval as tune

    config = QueryTuneConfig(rank=rank, alpha=2 * rank, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    result = tune(domain, Settings.load(), config, out=out, limit=limit, progress=echo_err)
    click.echo(json.dumps({k: result.get(k) for k in ("domain", "written", "why", "version", "path",
                                                      "dev_recall@5", "train_questions", "wall_time_s")
                           if k in result}, indent=2))


@main.command()
@click.argument("domain")
@click.option("--n", default=300, show_default=True, type=int, help="In-domain train questions to use.")
def calibrate(domain, n):
    """Calibrate DOMAIN (or all) on its train split: the evidence gate (domain.toml) and, with the engine, the
    yes/no/maybe prior correction (choice_calibration.json)."""
    from assistant.building.workflows import calibrate_domains
    from assistant.domains import list_domains

    settings = Settings.load()
    for result in calibrate_domains(list_domains(settings) if domain == "all" else [domain], settings, n=n):
        click.echo(json.dumps(result))


@main.command("new-domain")
@click.argument("name")
@click.option("--corpus", required=True, type=click.Path(exists=True), help="A folder of files or a corpus JSONL.")
@click.option("--qa", type=click.Path(exists=True), default=None, help="Q&A JSONL (question, answer[, split]).")
@click.option("--synthetic", default=0, type=int,
              help="Without --qa: generate N synthetic train/dev Q&A with the model.")
@click.option("--description", default="", help="One line shown in the app and /v1/models.")
@click.option("--train", "do_train", is_flag=True, help="Then train the adapter and calibrate the evidence gate.")
@click.option("--eval", "do_eval", is_flag=True, help="Then score base/+RAG/+LoRA/+RAG+LoRA (implies --train).")
@click.option("--epochs", default=2.0, show_default=True, type=float, help="With --train.")
@click.option("--max-steps", default=0, type=int, help="With --train: stop after N steps (0 = by epochs).")
@click.option("--time-budget", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --train: seconds of training at most (0 = none); the first steps' times set the steps.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="With --eval: a seeded sample of N questions.")
def new_domain(name, corpus, qa, synthetic, description, do_train, do_eval, epochs, max_steps, time_budget,
               eval_limit):
    """Scaffold a domain package from documents and index it; optionally synthesise training Q&A, train the
    adapter, calibrate the gate and evaluate: one command from a folder of documents to a trained, scored domain."""
    from assistant.building.training import TrainConfig
    from assistant.building.workflows import new_domain as run
    from assistant.building.workflows import require_training_questions

    try:
        require_training_questions(do_train or do_eval, qa, synthetic)
    except InputError as exc:  # a missing option: click's usage error (exit 2)
        raise click.UsageError(str(exc)) from exc
    config = TrainConfig(epochs=epochs, max_steps=max_steps, time_budget_s=time_budget)
    report = run(name, corpus, Settings.load(), qa=qa, synthetic=synthetic, description=description,
                 train=do_train, evaluate=do_eval, train_config=config,
                 eval_limit=eval_limit, progress=click.echo)
    if report.skipped:
        echo_err(f"{len(report.skipped)} file(s) skipped (listed above); the other {report.documents} were indexed")
    if report.evaluation:
        click.echo(report.evaluation["summary"])
    elif not (do_train or do_eval):
        click.echo(f"next: assistant train {name} && assistant calibrate {name} && assistant eval {name}")


@main.command("eval")
@click.argument("domain")
@click.option("--split", default="test", show_default=True, help="Which qa.jsonl split to score.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="A seeded random sample of N questions.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the result JSON here.")
@click.option("--conditions", default="base,rag,lora,rag+lora", show_default=True, help="Comma-separated subset.")
@click.option("--adapter", "adapter_path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Score this adapter directory instead of the domain's shipped one (e.g. a rank study).")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where <domain>.md/.json/.png go (default eval/reports; --no-report to skip).")
@click.option("--no-report", is_flag=True, help="Write no report files.")
@click.option("--no-risk", is_flag=True, help="Skip the risk suites (out-of-domain, unanswerable, injection, PII).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Answers per engine batch.")
@click.option("--seed", default=0, show_default=True, type=int, help="Sample seed.")
@click.option("--data", "data_set", default=None, metavar="NAME",
              help="Which of the domain's data sets ([[data]] name; default: the first). Each has its own report.")
@click.option("--batch-invariant/--no-batch-invariant", default=True, show_default=True,
              help="Answer each question as it would be answered alone (the engine's batch-invariant mode: its "
                   "batches took 1.65x the time here); off: faster, but an answer may change with its batch "
                   "neighbours.")
def eval_command(domain, split, limit, json_out, conditions, adapter_path, report_dir, no_report, no_risk,
                 batch_size, seed, data_set, batch_invariant):
    """Score DOMAIN (or all) as base / +RAG / +LoRA / +RAG+LoRA, with CIs, risk suites and a report (resumable)."""
    from pathlib import Path

    from assistant.answer import CONDITIONS
    from assistant.building.workflows import load_evaluator

    chosen = [c.strip() for c in conditions.split(",") if c.strip()]
    bad = [c for c in chosen if c not in CONDITIONS]
    if bad or not chosen:
        raise click.BadParameter(f"unknown condition(s) {bad}; choose from {', '.join(CONDITIONS)}",
                                 param_hint="--conditions")
    command = "assistant eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else f"assistant eval {domain}"
    settings = Settings.load(batch_invariant=batch_invariant)
    results = load_evaluator()([domain], settings, split=split, limit=limit, conditions=chosen,
                               adapter_path=adapter_path, report_dir=report_dir, write_reports=not no_report,
                               risk=not no_risk, batch_size=batch_size, seed=seed, command=command,
                               progress=echo_err, data=data_set)
    for result in results:
        click.echo(result["summary"])
    if json_out:
        Path(json_out).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n")


@main.command()
@click.argument("domain")
@click.option("--merged", "out", required=True, type=click.Path(),
              help="Output directory for the merged checkpoint.")
@click.option("--dtype", default="bfloat16", show_default=True,
              type=click.Choice(["bfloat16", "float16", "float32"]))
def export(domain, out, dtype):
    """Write the base model with the domain adapter merged in (plain checkpoint, no LoRA at serve time)."""
    from assistant.building.export import export_merged
    from assistant.domains import get_domain
    from assistant.serving.models import prepare_base_model

    settings = Settings.load()
    dom = get_domain(domain, settings)
    base, sha = prepare_base_model(settings, progress=echo_err)
    try:
        path = export_merged(base, sha, dom.adapter_path, out, dtype)
    except FileExistsError as exc:
        raise InputError(str(exc)) from exc
    click.echo(f"merged {dom.name} adapter into {path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 exposes it).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--domain", "domains", multiple=True, help="Serve only these domains (default: all).")
@click.option("--app/--no-app", default=True, show_default=True, help="Also serve the chat app at /.")
def serve(host, port, domains, app):
    """The service: the chat app at / and the OpenAI-compatible API (/v1/chat/completions with model = domain,
    /v1/models, /v1/domains/{domain}/documents, /health) in one process, on one engine and one store."""
    from assistant.entrypoints.server import serve as run_server

    run_server(host, port, list(domains) or None, app=app)


if __name__ == "__main__":
    sys.exit(main())
