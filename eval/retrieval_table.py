"""Retrieval quality per vertical on its test split: dense-only vs BM25-only vs hybrid (this platform's
index), next to LlamaIndex's default pipeline (SentenceSplitter 1024/200 + HuggingFaceEmbedding on the
same MiniLM + QdrantVectorStore over qdrant-client, dense top 10).

Questions about one policy or product are retrieved within it (payload filter), for every system alike.

usage: python -m eval.retrieval_table [--domains a,b] [--limit N] [--no-baseline] [--out eval/reports/retrieval]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
MODES = ("dense", "sparse", "hybrid")
FETCH_CHUNKS = 30  # chunks fetched so that 10 distinct documents are usually available


def our_scores(domain, store, embedder, rows) -> dict[str, dict]:
    from indexing import bm25

    from .retrieval_metrics import mean_scores, score_query

    vectors = embedder.embed([r["question"] for r in rows])
    out = {}
    for mode in MODES:
        per_q, latencies = [], []
        for row, vec in zip(tqdm(rows, desc=f"{domain.name} {mode}", leave=False), vectors, strict=True):
            t = time.perf_counter()
            hits = store.search(domain.name, dense=vec if mode != "sparse" else None,
                                sparse=bm25.query_vector(row["question"]) if mode != "dense" else None,
                                k=FETCH_CHUNKS, filter=domain.scope_filter(row))
            latencies.append((time.perf_counter() - t) * 1000)
            per_q.append(score_query([h.payload["doc_id"] for h in hits], row["gold_doc_ids"]))
        out[mode] = mean_scores(per_q) | {"search_ms_p50": round(sorted(latencies)[len(latencies) // 2], 2)}
    return out


def baseline_scores(domain, embed_path, rows) -> dict:
    """LlamaIndex's documented default pipeline, built fresh over the same corpus."""
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core import Settings as LISettings
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from indexing.documents import read_corpus_jsonl

    from .retrieval_metrics import mean_scores, score_query

    docs = []
    for data in domain.data:
        for d in read_corpus_jsonl(data.corpus).documents:
            docs.append(Document(text=d.text, metadata={"doc_id": d.doc_id, "title": d.title},
                                 excluded_embed_metadata_keys=["doc_id", "title"]))
    LISettings.embed_model = HuggingFaceEmbedding(model_name=str(embed_path), device="cpu")
    client = QdrantClient(location=":memory:")
    store = QdrantVectorStore(client=client, collection_name=domain.name)
    t = time.perf_counter()
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store),
        transformations=[SentenceSplitter(chunk_size=1024, chunk_overlap=200)], show_progress=True)
    build_s = time.perf_counter() - t
    per_q = []
    for row in tqdm(rows, desc=f"{domain.name} llamaindex", leave=False):
        scope = domain.scope_filter(row)
        filters = MetadataFilters(filters=[MetadataFilter(key=k, value=v, operator=FilterOperator.EQ)
                                           for k, v in scope.items()]) if scope else None
        nodes = index.as_retriever(similarity_top_k=10, filters=filters).retrieve(row["question"])
        per_q.append(score_query([n.node.metadata["doc_id"] for n in nodes], row["gold_doc_ids"]))
    client.close()
    return mean_scores(per_q) | {"build_s": round(build_s, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default="")
    parser.add_argument("--limit", type=int, default=0, help="first N test questions per domain (0 = all)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "eval" / "reports" / "retrieval"))
    args = parser.parse_args(argv)

    from assistant.building.indexer import index_domain
    from assistant.config import Settings
    from assistant.domains import get_domain, list_domains
    from assistant.serving.models import prepare_embedder
    from indexing.embedder import Embedder
    from indexing.store import open_store

    settings = Settings.load()
    names = [n for n in args.domains.split(",") if n] or list_domains(settings)
    embed_path = prepare_embedder(settings)
    embedder = Embedder(embed_path)
    store = open_store(settings)
    results = {}
    try:
        for name in names:
            domain = get_domain(name, settings)
            index_domain(domain, store, embedder)
            rows = [r for r in domain.qa_rows("test") if r.get("gold_doc_ids")]
            if args.limit:
                rows = rows[: args.limit]
            results[name] = {"n": len(rows), "ours": our_scores(domain, store, embedder, rows)}
            if not args.no_baseline:
                results[name]["llamaindex_default"] = baseline_scores(domain, embed_path, rows)
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        store.close()

    command = "python -m eval.retrieval_table " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "results": results}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(results, command.strip()))
    print(render(results, command.strip()))


def render(results: dict, command: str) -> str:
    lines = ["# Retrieval quality per vertical (test split, document level)", "",
             f"Made by `{command}`. Embeddings: all-MiniLM-L6-v2. Ours: chunks of 128 tokens (overlap 16), "
             "Qdrant embedded engine, RRF fusion (k=60) inside Qdrant. LlamaIndex default: SentenceSplitter "
             "1024/200, HuggingFaceEmbedding, QdrantVectorStore, dense top 10. Scoped sets (policyqa, hetPQA) "
             "filter on the policy/product for every system.", "",
             "| domain | n | system | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        systems = [(f"ours {m}", r["ours"][m]) for m in MODES]
        if "llamaindex_default" in r:
            systems.append(("LlamaIndex default (dense)", r["llamaindex_default"]))
        for label, s in systems:
            lines.append(f"| {name} | {r['n']} | {label} | {s['recall@1']:.3f} | {s['recall@5']:.3f} | "
                         f"{s['recall@10']:.3f} | {s['mrr@10']:.3f} | {s['ndcg@10']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
