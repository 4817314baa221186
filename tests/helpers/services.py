"""A service (`assistant serve`, `app.py`) started as a user would: its own data directory, the prepared models,
127.0.0.1 and a free port; its whole process session killed afterwards whatever happened."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def service_env(home: Path, prepared) -> dict:
    return {**os.environ, "ASSISTANT_HOME": str(home), "ASSISTANT_BASE_MODEL": str(prepared.base_model),
            "ASSISTANT_EMBED_MODEL": str(prepared.embed_model), "ASSISTANT_KV_CACHE_GIB": "1",
            "ASSISTANT_MAX_MODEL_LEN": "1024", "PYTHONUNBUFFERED": "1"}


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 420) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


def descendants(proc: subprocess.Popen) -> list:
    import psutil

    return psutil.Process(proc.pid).children(recursive=True)


@contextlib.contextmanager
def running(args: list[str], env: dict, log: Path, ready_path: str):
    """Start a service (`assistant ...` or `app.py ...`) as a user would; yields (process, base URL, its
    descendants once ready); kills its whole session afterwards whatever happened."""
    port = free_port()
    cmd = [sys.executable, *args, "--port", str(port)]
    proc = start(cmd, env, log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}{ready_path}", proc, log)
        yield proc, base, descendants(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
