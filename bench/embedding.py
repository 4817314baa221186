"""Embedding speed benchmark (JSON): the embedder's runtimes side by side, and what a user feels, ingest.

1. Encoder throughput on the same MedQuAD chunks (128-token chunks as the platform makes them), each runtime
   timed `--repeats` times, interleaved, median texts/s; cosine of each runtime's vectors to torch fp32's.
2. End-to-end ingest (read, chunk, embed, store) of the same MedQuAD documents, `--repeats` rounds, each
   round running LlamaIndex's default pipeline (bench/retrieval.py) and this platform with each runtime:
   median documents/s and chunks/s, and the ratios to LlamaIndex measured in the same round.

Retrieval quality with each runtime is the retrieval table's job (eval/retrieval_table.py, ASSISTANT_EMBED_RUNTIME).

usage: python bench/embedding.py [--docs 300] [--chunks 1500] [--repeats 3] [--out bench/results/embedding.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import MEDQUAD, ingest_llamaindex_default, ingest_ours  # noqa: E402

RUNTIMES = {"torch-fp32": {"embed_runtime": "torch"},
            "openvino-f32": {"embed_runtime": "openvino", "embed_precision": "f32"},
            "openvino-auto": {"embed_runtime": "openvino", "embed_precision": "auto"}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=300, help="MedQuAD documents for the end-to-end ingest")
    parser.add_argument("--chunks", type=int, default=1500, help="chunks for the encoder throughput")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "embedding.json"))
    args = parser.parse_args()

    from assistant.config import Settings
    from assistant.serving.models import open_embedder
    from indexing import bm25
    from indexing.chunking import chunk_document
    from indexing.documents import read_corpus_jsonl

    corpus = read_corpus_jsonl(MEDQUAD / "corpus.jsonl").documents
    docs = corpus[: args.docs]
    texts = [c.embed_text for d in corpus[:1000] for c in chunk_document(d, 128, 16)][: args.chunks]
    embedders = {name: open_embedder(Settings.load(**over), progress=lambda *_: None)
                 for name, over in RUNTIMES.items()}
    runtime_names = {name: e.runtime for name, e in embedders.items()}
    result = {"benchmark": "embedding", "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                    "cpu": _cpu_name()},
              "model": "all-MiniLM-L6-v2 (packaged)", "runtimes": runtime_names,
              "corpus": f"MedQuAD: {len(texts)} chunks of 128 tokens; ingest of the first {len(docs)} documents"}

    vectors, rates = {}, {name: [] for name in embedders}
    for e in embedders.values():
        e.embed(texts[:64])  # warm-up: compilation, first allocations
    for _ in range(args.repeats):
        for name, e in embedders.items():
            t = time.perf_counter()
            vectors[name] = e.embed(texts)
            rates[name].append(len(texts) / (time.perf_counter() - t))
    ref = vectors["torch-fp32"]
    torch_rate = statistics.median(rates["torch-fp32"])
    result["encoder"] = {name: {"texts_per_s_median": round(statistics.median(r), 1),
                                "texts_per_s": [round(x, 1) for x in r],
                                "speed_vs_torch": round(statistics.median(r) / torch_rate, 2),
                                "cosine_to_torch_min": round(float((vectors[name] * ref).sum(1).min()), 6),
                                "cosine_to_torch_mean": round(float((vectors[name] * ref).sum(1).mean()), 6)}
                         for name, r in rates.items()}
    print(json.dumps(result["encoder"], indent=2), flush=True)

    embed_path = embedders["torch-fp32"].model_path
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as tmp:
        for i in range(args.repeats):
            work = Path(tmp) / f"round{i}"
            work.mkdir()
            row = {"llamaindex_default": ingest_llamaindex_default(docs, embed_path, work)}
            for name, e in embedders.items():
                bm25.clear_caches()  # each system starts cold, as a new process would
                row[name] = ingest_ours(docs, e, work, name=f"edge-{name}")
            rounds.append(row)
            print(json.dumps({k: v["docs_per_s"] for k, v in row.items()}), flush=True)
    ingest = {}
    for system in rounds[0]:
        ingest[system] = {"docs_per_s_median": round(statistics.median(r[system]["docs_per_s"] for r in rounds), 2),
                          "chunks_per_s_median": round(statistics.median(r[system]["chunks_per_s"] for r in rounds), 1),
                          "chunks": rounds[0][system]["chunks"]}
        if system != "llamaindex_default":
            ingest[system]["docs_per_s_ratio_to_llamaindex_median"] = round(statistics.median(
                r[system]["docs_per_s"] / r["llamaindex_default"]["docs_per_s"] for r in rounds), 2)
            ingest[system]["embed_share_median"] = round(statistics.median(
                r[system]["stage_seconds"]["embed"] / r[system]["seconds"] for r in rounds), 2)
    result["ingest"] = ingest
    result["rounds"] = rounds
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ingest, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
