"""User feedback on answers: one JSON line per rating in `<data_dir>/feedback/<domain>.jsonl`.

Writers in several threads or processes (app workers, two app instances) take a file lock around one
`write` of one complete line, so no line is lost, torn or interleaved.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from filelock import FileLock

from assistant.errors import FeedbackError

__all__ = ["FeedbackError", "FeedbackLog"]

MAX_COMMENT_CHARS = 2000
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class FeedbackLog:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, domain: str) -> Path:
        if not isinstance(domain, str) or not _SAFE.match(domain):
            raise FeedbackError(f"invalid domain name {domain!r}")
        return self.directory / f"{domain}.jsonl"

    def append(self, *, domain: str, question: str, answer: str, rating: str, citations: list[dict],
               adapter: str | None, comment: str = "", extra: dict | None = None, user: str | None = None) -> dict:
        """`user`: who rated (a login's name; None without logins), recorded in the line."""
        if rating not in ("up", "down"):
            raise FeedbackError(f"rating must be 'up' or 'down', not {rating!r}")
        if not question or not answer:
            raise FeedbackError("feedback needs the question and the answer it rates")
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "domain": domain, "rating": rating,
                  "comment": (comment or "").strip()[:MAX_COMMENT_CHARS], "question": question, "answer": answer,
                  "citations": citations, "adapter": adapter, "user": user} | (extra or {})
        path = self.path(domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with FileLock(str(path) + ".lock", timeout=30):
            with open(path, "ab") as fh:
                fh.write(line)
                fh.flush()
        return record

    def read(self, domain: str) -> list[dict]:
        path = self.path(domain)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def export(self, domain: str) -> bytes:
        """The domain's log as JSONL bytes, read under the writers' lock (no torn last line); empty if none."""
        path = self.path(domain)
        if not path.is_file():
            return b""
        with FileLock(str(path) + ".lock", timeout=30):
            return path.read_bytes()
