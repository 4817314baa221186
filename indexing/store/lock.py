"""The embedded engine's one-process-per-shard rule, made explicit: an flock with the holder named inside."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from .base import StoreBusyError


class HolderLock:
    """An exclusive flock on `<dir>/.lock`, with who holds it written inside for the error message."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ".lock"
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown process"
            self._fh.close()
            raise StoreBusyError(
                f"the embedded index {directory} is in use by {holder}. Stop that process, send the request "
                f"to it (e.g. `assistant serve` and the HTTP API), or run a Qdrant server (qdrant_url)."
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:200],
                                   "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
