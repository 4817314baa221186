"""The API on a real uvicorn server in a thread (127.0.0.1, a free port), over a given Platform."""
from __future__ import annotations

import contextlib
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(platform):
    """Yields the base URL of `create_app(platform)` served by uvicorn; stops it afterwards."""
    import uvicorn

    from assistant.entrypoints.server import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
