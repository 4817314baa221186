"""Retrieval benchmark (JSON): ingest throughput and hybrid query latency, in one run.

1. End-to-end ingest (read, chunk, embed, store) of the same MedQuAD documents: this platform
   (SentenceSplitter chunks, MiniLM, BM25, Qdrant's embedded engine on disk) vs LlamaIndex's default
   pipeline (SentenceSplitter 1024/200 + HuggingFaceEmbedding on the same MiniLM + QdrantVectorStore over
   qdrant-client local mode on disk). Reported as chunks/s and documents/s.
2. Store only (vectors precomputed: "without embedding"): upsert points/s, embedded engine vs
   qdrant-client local mode.
3. Hybrid query latency (dense + BM25 prefetch, RRF in Qdrant) p50/p99 at 10k and 100k chunks,
   embedded engine vs qdrant-client local mode (in memory: its on-disk upsert of 100k points would take ~12 min).

usage: python bench/retrieval.py [--docs 300] [--queries 200] [--sizes 10000,100000]
                                [--out bench/results/retrieval.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDQUAD = ROOT.parent / "shared" / "data" / "healthcare" / "medquad"


def pct(values, q):
    return round(float(np.percentile(values, q)), 2)


def ingest_ours(docs, embedder, workdir, name="edge"):
    """Read-to-store ingest into a new embedded store (the embedder is opened by the caller, outside the timing)."""
    from indexing.ingest import ingest_documents
    from indexing.store import EdgeStore

    store = EdgeStore(workdir / name)
    t = time.perf_counter()
    report = ingest_documents(store, "bench", docs, embedder, progress=False)
    wall = time.perf_counter() - t
    store.close()
    return {"chunks": report.chunks, "seconds": round(wall, 2), "chunks_per_s": round(report.chunks / wall, 1),
            "docs_per_s": round(len(docs) / wall, 2), "stage_seconds": report.seconds,
            "store_vs_embed_speed": round(report.seconds["embed"] / max(report.seconds["store"], 1e-9), 1)}


def ingest_llamaindex_default(docs, embed_path, workdir):
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    embed = HuggingFaceEmbedding(model_name=str(embed_path), device="cpu")
    client = QdrantClient(path=str(workdir / "qdrant-local"))
    store = QdrantVectorStore(client=client, collection_name="bench")
    li_docs = [Document(text=d.text, metadata={"doc_id": d.doc_id}) for d in docs]
    t = time.perf_counter()
    index = VectorStoreIndex.from_documents(li_docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            transformations=[SentenceSplitter(chunk_size=1024, chunk_overlap=200)],
                                            embed_model=embed)
    wall = time.perf_counter() - t
    chunks = client.count("bench").count
    client.close()
    del index
    return {"chunks": chunks, "seconds": round(wall, 2), "chunks_per_s": round(chunks / wall, 1),
            "docs_per_s": round(len(docs) / wall, 2)}


def synthetic_points(n, texts, seed=0):
    """n points: random unit dense vectors, real BM25 vectors from MedQuAD chunk texts (cycled)."""
    from indexing import bm25
    from indexing.store import ChunkRecord, point_id

    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, 384)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse_cache = [bm25.document_vector(t) for t in texts]
    return [ChunkRecord(id=point_id(f"p{i}"), dense=dense[i], sparse=sparse_cache[i % len(texts)],
                        payload={"doc_id": f"d{i // 4}", "title": f"t{i % 50}", "text": texts[i % len(texts)][:200]})
            for i in range(n)]


def store_bench(make_store, points, queries, label):
    from indexing.store import batched

    store = make_store()
    store.ensure_collection("b", 384)
    t = time.perf_counter()
    for batch in batched(points, 512):
        store.upsert("b", batch)
    store.flush("b")
    upsert_s = time.perf_counter() - t
    latencies = []
    for dense, sparse in queries:
        t = time.perf_counter()
        store.search("b", dense=dense, sparse=sparse, k=10)
        latencies.append((time.perf_counter() - t) * 1000)
    filtered = []
    for dense, sparse in queries[:50]:
        t = time.perf_counter()
        store.search("b", dense=dense, sparse=sparse, k=10, filter={"title": "t7"})
        filtered.append((time.perf_counter() - t) * 1000)
    store.close()
    return {"store": label, "points": len(points), "upsert_points_per_s": round(len(points) / upsert_s, 1),
            "hybrid_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99)},
            "hybrid_filtered_ms": {"p50": pct(filtered, 50), "p99": pct(filtered, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=300, help="MedQuAD documents for the end-to-end ingest")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval.json"))
    args = parser.parse_args()

    from assistant.config import Settings
    from assistant.serving.models import open_embedder
    from indexing import bm25
    from indexing.chunking import chunk_document
    from indexing.documents import read_corpus_jsonl
    from indexing.store import EdgeStore, QdrantStore

    settings = Settings.load()
    embedder = open_embedder(settings)
    embed_path = embedder.model_path
    all_docs = read_corpus_jsonl(MEDQUAD / "corpus.jsonl").documents
    docs = all_docs[: args.docs]
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    result = {"benchmark": "retrieval", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "corpus": f"MedQuAD, first {len(docs)} documents"}

    # 1. end to end, both pipelines, alternating order would double the cost; run ours second so any
    # warm file cache helps the baseline, not us.
    baseline = ingest_llamaindex_default(docs, embed_path, work)
    ours = ingest_ours(docs, embedder, work) | {"embed_runtime": embedder.runtime}
    result["ingest_end_to_end"] = {
        "ours": ours, "llamaindex_default": baseline,
        "ratio_chunks_per_s": round(ours["chunks_per_s"] / baseline["chunks_per_s"], 2),
        "ratio_docs_per_s": round(ours["docs_per_s"] / baseline["docs_per_s"], 2),
    }
    print(json.dumps(result["ingest_end_to_end"], indent=2), flush=True)

    # 2 + 3. store only, at each size
    texts = [c.text for d in all_docs[:6000] for c in chunk_document(d, 128, 16)][:20000]
    qa = [json.loads(line) for line in open(MEDQUAD / "qa.jsonl")][: args.queries]
    qvecs = embedder.embed([q["question"] for q in qa])
    queries = [(v, bm25.query_vector(q["question"])) for v, q in zip(qvecs, qa, strict=True)]
    result["stores"] = []
    for n in [int(s) for s in args.sizes.split(",")]:
        points = synthetic_points(n, texts)
        result["stores"].append(store_bench(lambda n=n: EdgeStore(work / f"edge-{n}"), points, queries,
                                            "qdrant-edge (embedded default, on disk)"))
        result["stores"].append(store_bench(lambda: QdrantStore(location=":memory:"), points, queries,
                                            "qdrant-client local mode (in memory)"))
        if n <= 10000:
            result["stores"].append(store_bench(lambda n=n: QdrantStore(path=str(work / f"local-{n}")), points,
                                                queries, "qdrant-client local mode (on disk)"))
        print(json.dumps(result["stores"][-3:], indent=2), flush=True)
    embed_rate = ours["chunks"] / ours["stage_seconds"]["embed"]
    edge_10k = next(s for s in result["stores"] if s["store"].startswith("qdrant-edge"))
    result["summary"] = {
        "ingest_ratio_vs_llamaindex_default": result["ingest_end_to_end"]["ratio_chunks_per_s"],
        "embedding_chunks_per_s": round(embed_rate, 1),
        "store_upsert_vs_embedding": round(edge_10k["upsert_points_per_s"] / embed_rate, 1),
        "hybrid_p50_ms": {f"{s['points']} {s['store']}": s["hybrid_ms"]["p50"] for s in result["stores"]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
