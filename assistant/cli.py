"""The `assistant` command line (also `python -m assistant`)."""
from __future__ import annotations

import json
import sys

import click

from .config import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Domain assistant platform: grounded, cited answers per domain from one base model."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the paths as JSON.")
def setup(as_json):
    """Prepare the default models (idempotent; prints where they are)."""
    from .models import ModelError, prepare

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

    from .models import prepare_embedder

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

    from .domains import DomainError, get_domain
    from .indexer import index_domain

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

    from .domains import DomainError, get_domain

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


if __name__ == "__main__":
    sys.exit(main())
