"""Upload-to-searchable latency through the service (JSON): `assistant serve` on its own data directory, files
sent over HTTP (`POST /v1/domains/{domain}/documents`), the job polled until done, then a retrieval of a
sentence taken from the upload (`POST /v1/domains/{domain}/retrieve`) must return the uploaded document.

Workloads (MedQuAD answers, public domain, from ../shared/data/healthcare/medquad):
- one 100-page PDF written with fpdf2 from those answers;
- a folder of 1,000 Markdown files, one answer each, sent as one multipart upload.
Also: the chat's latency (max_tokens 16) before and during the folder's ingest, since answers must keep
flowing while an upload is embedded (same questions, medians).

usage: python bench/ingest_upload.py [--domain manufacturing] [--files 1000] [--pages 100]
                                     [--out bench/results/ingest_upload.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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

ROOT = Path(__file__).resolve().parents[1]
MEDQUAD = ROOT.parent / "shared" / "data" / "healthcare" / "medquad" / "corpus.jsonl"
CHAT_QUESTIONS = ["Which sensor detects bearing wear in an electric motor?",
                  "What failure modes affect a centrifugal pump?", "How is a compressor valve fault detected?"]


def medquad_texts(n: int) -> list[tuple[str, str]]:
    out = []
    with MEDQUAD.open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if len(doc["text"]) > 400:
                out.append((doc["title"], doc["text"]))
            if len(out) == n:
                break
    return out


def write_pdf(path: Path, texts: list[tuple[str, str]], pages: int) -> int:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    for title, text in texts:
        if pdf.page_no() >= pages:
            break
        clean = (title + "\n" + text).encode("latin-1", "replace").decode("latin-1")
        pdf.multi_cell(0, 6, clean)
        pdf.ln(4)
    pdf.output(str(path))
    return pdf.page_no()


def start_service(home: Path, domain: str, log: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ASSISTANT_HOME": str(home), "PYTHONUNBUFFERED": "1", "ASSISTANT_KV_CACHE_GIB": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--no-app", "--domain", domain,
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the service did not come up")


def upload_until_searchable(http: httpx.Client, domain: str, files: list[tuple[str, bytes]], probe: str,
                            expect_prefix: str) -> dict:
    t0 = time.perf_counter()
    resp = http.post(f"/v1/domains/{domain}/documents",
                     files=[("files", (name, data, "application/octet-stream")) for name, data in files])
    resp.raise_for_status()
    sent = time.perf_counter() - t0
    job_id = resp.json()["job"]["id"]
    while True:
        job = http.get(f"/v1/domains/{domain}/documents/jobs/{job_id}").json()["job"]
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    indexed = time.perf_counter() - t0
    hits = http.post(f"/v1/domains/{domain}/retrieve", json={"query": probe, "k": 5}).json()["passages"]
    searchable = time.perf_counter() - t0
    found = any(h["doc_id"].startswith(expect_prefix) for h in hits)
    return {"files": len(files), "bytes": sum(len(d) for _, d in files), "status": job["status"],
            "error": job["error"], "errors": job["errors"][:5], "chunks_added": job["added"],
            "request_s": round(sent, 2),
            "indexed_s": round(indexed, 2), "searchable_s": round(searchable, 2), "probe_found": found,
            "files_per_s": round(len(files) / indexed, 1), "chunks_per_s": round(job["added"] / indexed, 1)}


def chat_latencies(http: httpx.Client, domain: str, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        r = http.post("/v1/chat/completions", json={"model": domain, "max_tokens": 16, "messages": [
            {"role": "user", "content": CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]}]})
        r.raise_for_status()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", default="manufacturing")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--chat-rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest_upload.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from assistant.config import Settings

    source = Settings.load().data_dir
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    home = work / "home"
    shutil.copytree(source / "index" / args.domain, home / "index" / args.domain,
                    ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(source / "models", home / "models", symlinks=True)
    texts = medquad_texts(args.files + 400)
    pdf_path = work / "medquad-manual.pdf"
    pages = write_pdf(pdf_path, texts[args.files:], args.pages)
    pdf_probe = texts[args.files + 40][1][:200]
    folder = [(f"medquad-{i:04d}.md", f"# {t}\n\n{x}\n".encode()) for i, (t, x) in enumerate(texts[:args.files])]
    folder_probe = texts[args.files // 2][1][:200]
    proc, base = start_service(home, args.domain, work / "serve.log")
    result: dict = {"benchmark": "ingest_upload", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "domain": args.domain, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        with httpx.Client(base_url=base, timeout=3600) as http:
            result["chat_idle_s"] = [round(x, 2) for x in chat_latencies(http, args.domain, args.chat_rounds)]
            result["pdf"] = {"pages": pages, **upload_until_searchable(
                http, args.domain, [(pdf_path.name, pdf_path.read_bytes())], pdf_probe, "upload/")}
            print("pdf:", result["pdf"], flush=True)
            during: list[float] = []
            stop = threading.Event()

            def chat_while_ingesting():
                with httpx.Client(base_url=base, timeout=3600) as other:
                    while not stop.is_set():
                        during.extend(chat_latencies(other, args.domain, 1))

            chatter = threading.Thread(target=chat_while_ingesting)
            chatter.start()
            try:
                result["folder"] = upload_until_searchable(http, args.domain, folder, folder_probe, "upload/")
            finally:
                stop.set()
                chatter.join()
            print("folder:", result["folder"], flush=True)
            result["chat_during_ingest_s"] = [round(x, 2) for x in during]
            idle, busy = statistics.median(result["chat_idle_s"]), statistics.median(during or [float("nan")])
            result["chat_median_idle_s"], result["chat_median_during_s"] = round(idle, 2), round(busy, 2)
            result["chat_slowdown_during_ingest"] = round(busy / idle, 2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.copy(work / "serve.log", Path(tempfile.gettempdir()) / "ingest_upload.serve.log")  # a failure's trace
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
