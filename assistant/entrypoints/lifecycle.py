"""The long-running doors' process rules (`assistant serve`, `app.py`): signals, a dead engine, leftovers.

- SIGTERM (docker stop, systemd) ends the process the way Ctrl-C does, so every `finally` runs and the
  vLLM engine is shut down; whatever descendant is still alive after that (vLLM's engine-core and worker
  processes) is terminated, then killed. The service is a child subreaper (Linux), so a worker whose
  engine-core died is re-parented to it, not to init, and is found too. No `VLLM::` process outlives it.
- When the engine dies (its engine-core process is gone), requests get 503 and the service exits with
  `EXIT_ENGINE_DEAD`, so that its supervisor starts a fresh one: restarting vLLM in-process would leave
  the dead engine's memory behind.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 75  # sysexits EX_TEMPFAIL: try again (a supervisor restarts the service)
WATCH_EVERY_S = 2.0


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def install_shutdown_rules() -> None:
    """SIGTERM raises SystemExit in the main thread (SIGINT already raises KeyboardInterrupt), and orphaned
    descendants stay ours (a child subreaper; a no-op where prctl does not exist)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        logger.debug("prctl(PR_SET_CHILD_SUBREAPER) is not available here")


def reap_children(timeout: float = 10.0) -> list[int]:
    """Terminate this process's remaining descendants (then kill those that stay); returns their pids."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    if children:
        logger.info("stopped %d leftover child process(es): %s", len(children), [c.pid for c in children])
    return [c.pid for c in children]


class EngineWatchdog(threading.Thread):
    """Polls the engine's liveness every `every` seconds; calls `on_dead` once when it stops answering."""

    def __init__(self, healthy: Callable[[], bool], on_dead: Callable[[], None], every: float = WATCH_EVERY_S):
        super().__init__(name="assistant-engine-watchdog", daemon=True)
        self.healthy, self.on_dead, self.every = healthy, on_dead, every
        self.dead = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every):
            if not self.healthy():
                self.dead = True
                logger.error("the generation engine died; exiting with code %d so the supervisor restarts the "
                             "service", EXIT_ENGINE_DEAD)
                self.on_dead()
                return

    def stop(self) -> None:
        self._stop.set()
