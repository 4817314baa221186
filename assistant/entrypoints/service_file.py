"""`<data_dir>/service.json`: how a command finds the `assistant serve` that owns this data directory.

The embedded index belongs to one process (indexing/store/lock.py), so `assistant ask/retrieve/index` run
beside a service would only be refused. The service publishes where it listens instead, and those commands
send their work to it. The file is written atomically, removed when the service stops cleanly, and ignored
when the process it names is gone (killed, crashed) or is another process that got the same pid since.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from assistant.config import Settings

FILE_NAME = "service.json"


@dataclass(frozen=True)
class ServiceInfo:
    url: str                 # base URL a local client reaches it at, e.g. http://127.0.0.1:8000
    pid: int
    domains: list[str]
    started: str             # ISO 8601, UTC
    process_started: float   # the process's own start time (psutil): tells a reused pid apart


def service_path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def client_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server bound to `host` (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def publish(settings: Settings, url: str, domains: list[str]) -> Iterator[ServiceInfo]:
    """Publish this process as the data directory's service while the block runs."""
    info = ServiceInfo(url=url, pid=os.getpid(), domains=sorted(domains),
                       started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       process_started=psutil.Process().create_time())
    path = service_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILE_NAME}.{info.pid}.tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
    try:
        yield info
    finally:
        if _read(path) == info:  # still ours: a newer service may have replaced it
            path.unlink(missing_ok=True)


def find_running(settings: Settings) -> ServiceInfo | None:
    """The service published for this data directory, if its process is still the one that published it."""
    info = _read(service_path(settings))
    if info is None:
        return None
    try:
        if abs(psutil.Process(info.pid).create_time() - info.process_started) > 1.0:
            return None  # the pid was reused by another process
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        pass  # alive, someone else's: trust the file
    return info


def _read(path: Path) -> ServiceInfo | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ServiceInfo(url=str(raw["url"]), pid=int(raw["pid"]), domains=[str(d) for d in raw["domains"]],
                           started=str(raw["started"]), process_started=float(raw["process_started"]))
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-written by hand, or another format
        return None
