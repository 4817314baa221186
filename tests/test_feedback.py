"""Feedback log: concurrent writers (threads and processes) lose no line and interleave none."""
from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest

from assistant.feedback import FeedbackError, FeedbackLog

LONG = "x" * 50_000  # one line far larger than a pipe/page buffer: torn writes would show


def _write(directory: str, worker: int, n: int) -> None:
    log = FeedbackLog(directory)
    for i in range(n):
        log.append(domain="legal", question=f"q{worker}-{i}", answer=LONG, rating="up", citations=[], adapter=None)


def test_concurrent_threads_and_processes_keep_every_line_whole(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write, args=(str(tmp_path), w, 20)) for w in range(3)]
    for p in procs:
        p.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda w: _write(str(tmp_path), w, 20), range(10, 14)))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = (tmp_path / "legal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses: nothing torn or interleaved
    assert len(records) == 7 * 20
    assert {r["question"] for r in records} == {f"q{w}-{i}" for w in [0, 1, 2, 10, 11, 12, 13] for i in range(20)}
    assert all(r["answer"] == LONG for r in records)


@pytest.mark.parametrize("kwargs, message", [
    ({"domain": "../etc", "rating": "up"}, "invalid domain"),
    ({"domain": "legal", "rating": "meh"}, "rating must be"),
    ({"domain": "legal", "rating": "up", "question": ""}, "needs the question"),
])
def test_bad_feedback_is_refused_and_writes_nothing(tmp_path, kwargs, message):
    args = {"question": "q", "answer": "a", "citations": [], "adapter": None} | kwargs
    with pytest.raises(FeedbackError, match=message):
        FeedbackLog(tmp_path).append(**args)
    assert not list(tmp_path.glob("*.jsonl"))
