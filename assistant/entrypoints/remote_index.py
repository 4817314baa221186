"""`assistant index DOMAIN --source PATH` while `assistant serve` owns the index: the files are uploaded to
the service (`POST /v1/domains/{domain}/documents`, for every user of the domain), its jobs are polled with
a progress bar, and the result is printed in the shape of the local report.

The service keys uploads by file name (`upload/_public/<name>`), so two files of the folder with the same
name are refused here, the second one named, rather than one silently replacing the other.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
from tqdm import tqdm

from assistant.entrypoints.service_client import ServiceClient


def files_to_send(source: Path) -> tuple[list[Path], list[str]]:
    """The supported files of a file or folder, and an error line for each one left out (as the local read)."""
    from indexing.documents import SUPPORTED_SUFFIXES, iter_files

    candidates = [source] if source.is_file() else list(iter_files(source))
    send: list[Path] = []
    errors: list[str] = []
    by_name: dict[str, Path] = {}
    for path in candidates:
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            errors.append(f"{path}: unsupported file type {path.suffix.lower() or '(none)'}; "
                          f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
        elif path.name in by_name:
            errors.append(f"{path}: same file name as {by_name[path.name]}; the service keeps uploads by file "
                          "name, so it was not sent")
        else:
            by_name[path.name] = path
            send.append(path)
    if not candidates:
        errors.append(f"{source}: folder holds no files")
    return send, errors


def index_via_service(service, api_key: str | None, domain: str, source: str, as_json: bool) -> dict:
    """Upload, wait, print; returns the report (`errors` non-empty: the command exits 1, as locally)."""
    started = time.perf_counter()
    files, errors = files_to_send(Path(source))
    jobs: list[dict] = []
    if files:
        with ServiceClient(service.url, api_key) as client:
            job_ids = client.upload(domain, files)
            with tqdm(total=len(files), desc=f"index {domain} (service)", unit="file", leave=False) as bar:
                jobs = client.wait(domain, job_ids, on_progress=lambda done: bar.update(done - bar.n))
    results = [f for job in jobs for f in job["files"]]
    errors += [e for job in jobs for e in job["errors"]]
    errors += [f"job {job['id']} failed: {job['error']}" for job in jobs if job["status"] == "failed" and job["error"]]
    chunks = sum(f["chunks"] for f in results if f["status"] == "indexed")
    added = sum(job["added"] for job in jobs)
    report = {"collection": domain, "documents": sum(f["status"] == "indexed" for f in results), "chunks": chunks,
              "added": added, "unchanged": max(0, chunks - added), "removed": 0, "documents_removed": 0,
              "errors": errors, "seconds": {"total": round(time.perf_counter() - started, 3)},
              "service": service.url, "jobs": [job["id"] for job in jobs],
              "doc_ids": [f["doc_id"] for f in results if f["status"] == "indexed"]}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{domain}: {report['documents']} documents, {chunks} chunks ({added} added, "
                   f"{report['unchanged']} unchanged, 0 removed) in {report['seconds']['total']:.1f} s")
        for err in errors:
            click.echo(f"  error: {err}", err=True)
    click.echo(f"  -- indexed by the running service at {service.url} (pid {service.pid}) as uploads "
               "every user of the domain sees", err=True)
    return report
