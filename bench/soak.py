"""Soak: the real `assistant serve` under steady mixed-domain load, with hot reloads and bad reloads.

    .venv/bin/python -m bench.soak [--minutes 30] [--concurrency 4] [--reload-every 300] [--out bench/results]

Starts the service on its own data directory (the checkout's prepared models and indexes are copied there),
then for `--minutes`: `--concurrency` clients ask test questions of the five verticals round robin; every
`--reload-every` seconds one domain's adapter is hot-reloaded as a new version, and half-way between two of
those a broken copy (truncated weights) is posted, which must be refused (400) while everything keeps
serving. Every 10 s the RSS of the service and of each of its processes (vLLM's engine core and worker) is
sampled. Writes soak.json: success rate, p50/p95 latency, cross-domain mix-ups (an answer served by another
domain's adapter, or citing a document that is not in the asked domain's corpus: must be 0), the reloads,
and the RSS series with its growth after warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("healthcare", "legal", "finance", "retail", "manufacturing")
SAMPLE_EVERY_S = 10


def questions(domain: str, n: int = 200, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "domains" / domain / "data" / "qa.jsonl").open()]
    rows = [r for r in rows if r["split"] == "test"]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def corpus_ids(domain: str) -> set[str]:
    return {json.loads(line)["doc_id"] for line in (ROOT / "domains" / domain / "data" / "corpus.jsonl").open()}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


class Soak:
    def __init__(self, base: str, minutes: float, concurrency: int, reload_every: float, max_tokens: int,
                 work: Path):
        self.base, self.minutes, self.concurrency = base, minutes, concurrency
        self.reload_every, self.max_tokens, self.work = reload_every, max_tokens, work
        self.questions = {d: questions(d) for d in DOMAINS}
        self.corpus = {d: corpus_ids(d) for d in DOMAINS}
        self.versions = {m["id"]: m["adapter_version"] for m in httpx.get(f"{base}/v1/models").json()["data"]}
        self.lock = threading.Lock()
        self.results: list[dict] = []
        self.reloads: list[dict] = []
        self.stop = threading.Event()

    # ---- clients ---------------------------------------------------------------------------------------
    def client(self, worker: int) -> None:
        with httpx.Client(base_url=self.base, timeout=600) as http:
            i = worker
            while not self.stop.is_set():
                domain = DOMAINS[i % len(DOMAINS)]
                row = self.questions[domain][(i // len(DOMAINS)) % len(self.questions[domain])]
                i += self.concurrency
                body = {"model": domain, "max_tokens": self.max_tokens,
                        "messages": [{"role": "user", "content": row["question"]}]}
                if domain == "legal" and row.get("meta", {}).get("site"):
                    body["filter"] = {"title": row["meta"]["site"]}
                if row.get("options"):
                    body["messages"][0]["content"] += "\n" + "\n".join(f"{k}. {v}" for k, v in row["options"].items())
                started = time.time()
                try:
                    resp = http.post("/v1/chat/completions", json=body)
                    status = resp.status_code
                    data = resp.json() if status == 200 else {}
                except httpx.HTTPError as exc:
                    status, data = f"{type(exc).__name__}", {}
                latency = time.time() - started
                mixup = None
                if status == 200:
                    meta = data.get("assistant", {})
                    served = meta.get("adapter") or ""
                    if served and not served.startswith(f"{domain}@"):
                        mixup = f"asked {domain}, served by {served}"
                    strays = [c["doc_id"] for c in data.get("citations", []) if c["doc_id"] not in self.corpus[domain]]
                    if strays:
                        mixup = f"asked {domain}, cited {strays[:3]}"
                with self.lock:
                    self.results.append({"t": round(started - self.t0, 2), "domain": domain, "status": status,
                                         "latency_s": round(latency, 3), "mixup": mixup})

    # ---- reloads ---------------------------------------------------------------------------------------
    def adapter_copy(self, domain: str, version: str, broken: bool) -> Path:
        src = ROOT / "domains" / domain / "adapter"
        dst = self.work / f"{domain}-{version}"
        shutil.copytree(src, dst)
        manifest = json.loads((dst / "manifest.json").read_text())
        (dst / "manifest.json").write_text(json.dumps(manifest | {"version": version}))
        if broken:
            weights = dst / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return dst

    def reloader(self) -> None:
        n = 0
        while not self.stop.wait(self.reload_every / 2):
            n += 1
            domain = DOMAINS[(n // 2) % len(DOMAINS)]
            broken = n % 2 == 1  # bad, good, bad, good, ...
            version = f"soak-{n}{'-broken' if broken else ''}"
            path = self.adapter_copy(domain, version, broken)
            started = time.time()
            try:
                resp = httpx.post(f"{self.base}/v1/adapters/{domain}/reload", json={"path": str(path)}, timeout=300)
                status, message = resp.status_code, resp.json().get("error", {}).get("message", "")[:160]
            except httpx.HTTPError as exc:
                status, message = type(exc).__name__, str(exc)[:160]
            ok = status == (400 if broken else 200)
            self.reloads.append({"t": round(started - self.t0, 1), "domain": domain, "version": version,
                                 "broken": broken, "status": status, "as_expected": ok, "message": message,
                                 "seconds": round(time.time() - started, 2)})
            print(f"[{time.time() - self.t0:7.0f} s] reload {domain} {version}: {status}", flush=True)

    # ---- memory ----------------------------------------------------------------------------------------
    def sampler(self, server: psutil.Process, series: list[dict]) -> None:
        while not self.stop.is_set():
            row = {"t": round(time.time() - self.t0, 1), "rss_mb": {}}
            for proc in [server, *server.children(recursive=True)]:
                try:
                    name = proc.name() if "VLLM" in proc.name() else ("service" if proc.pid == server.pid
                                                                      else proc.name())
                    row["rss_mb"][f"{name}:{proc.pid}"] = round(proc.memory_info().rss / 2**20, 1)
                except psutil.NoSuchProcess:
                    pass
            series.append(row)
            self.stop.wait(SAMPLE_EVERY_S)

    def run(self, server: psutil.Process) -> dict:
        self.t0 = time.time()
        series: list[dict] = []
        threads = [threading.Thread(target=self.client, args=(w,), daemon=True) for w in range(self.concurrency)]
        threads += [threading.Thread(target=self.reloader, daemon=True),
                    threading.Thread(target=self.sampler, args=(server, series), daemon=True)]
        for t in threads:
            t.start()
        end = self.t0 + self.minutes * 60
        while time.time() < end:
            time.sleep(min(30, max(0.0, end - time.time())))
            with self.lock:
                done = len(self.results)
                good = sum(r["status"] == 200 for r in self.results)
            print(f"[{time.time() - self.t0:7.0f} s] {done} requests, {good} ok", flush=True)
        self.stop.set()
        for t in threads:
            t.join(timeout=600)
        return self.summary(series)

    def summary(self, series: list[dict]) -> dict:
        ok = [r for r in self.results if r["status"] == 200]
        latencies = [r["latency_s"] for r in ok]
        statuses: dict[str, int] = {}
        for r in self.results:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        warm = [s for s in series if s["t"] >= 120]  # after warm-up: caches, first adapter loads
        growth = {}
        if len(warm) >= 2:
            for key in warm[0]["rss_mb"]:
                if key in warm[-1]["rss_mb"]:
                    growth[key] = round(warm[-1]["rss_mb"][key] - warm[0]["rss_mb"][key], 1)
        return {
            "minutes": self.minutes, "concurrency": self.concurrency, "reload_every_s": self.reload_every,
            "max_tokens": self.max_tokens, "requests": len(self.results),
            "success_rate": round(len(ok) / max(1, len(self.results)), 4), "statuses": statuses,
            "latency_s": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                          "mean": round(statistics.fmean(latencies), 3) if latencies else None},
            "per_domain_ok": {d: sum(r["domain"] == d for r in ok) for d in DOMAINS},
            "mixups": [r for r in self.results if r["mixup"]],
            "reloads": self.reloads,
            "reloads_as_expected": all(r["as_expected"] for r in self.reloads),
            "rss_growth_after_warmup_mb": growth, "rss_series": series,
        }


def start_service(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ASSISTANT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--reload-every", type=float, default=300, help="seconds between good reloads")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)

    from assistant.config import Settings

    source = Settings.load().data_dir
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        home = Path(tmp) / "home"
        for part in ("models", "index"):  # the service gets its own data directory (one process per data dir)
            shutil.copytree(source / part, home / part, symlinks=False)
        work = Path(tmp) / "adapters"
        work.mkdir()
        log = Path(tmp) / "service.log"
        args.out.mkdir(parents=True, exist_ok=True)
        server = start_service(home, args.port, log)
        base = f"http://127.0.0.1:{args.port}"
        result: dict = {}
        try:
            deadline = time.time() + 600
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the service exited ({server.returncode}); see {log}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise SystemExit(f"the service did not come up; see {log}")
                time.sleep(2)
            result = Soak(base, args.minutes, args.concurrency, args.reload_every, args.max_tokens, work).run(
                psutil.Process(server.pid))
        finally:
            children = psutil.Process(server.pid).children(recursive=True) if server.poll() is None else []
            server.send_signal(signal.SIGTERM)
            try:
                result_exit = server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                result_exit = "killed"
            left = [p.pid for p in children if p.is_running()]
        result |= {"service_exit_after_sigterm": result_exit, "processes_left_after_sigterm": left,
                   "service_log_errors": [line for line in log.read_text().splitlines()
                                          if " ERROR " in line or "Traceback" in line][-40:]}
        out = args.out / "soak.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k not in ("rss_series", "mixups", "reloads")}, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
