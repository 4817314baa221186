"""Retrieval quality per vertical on its test split: dense-only vs BM25-only vs hybrid (this platform's
index), next to LlamaIndex's default pipeline (SentenceSplitter 1024/200 + HuggingFaceEmbedding on the
same MiniLM + QdrantVectorStore over qdrant-client, dense top 10).

Questions about one policy or product are retrieved within it (payload filter), for every system alike.
A domain with a tuned query encoder (its package's, or `--query-encoder DOMAIN=DIR` for one not installed yet)
gets "tuned" dense and hybrid rows too, with a paired test of recall@5 against the base embedder's, and the
query encode time of each.

The embedder runs as the settings say (ASSISTANT_EMBED_RUNTIME, recorded in the report). `--against FILE`
compares this run's recall@5 per question with another run's JSON written with `--per-question` (e.g. the
torch runtime against OpenVINO's, each in its own data directory so each builds its own index).

usage: python -m eval.retrieval_table [--domains a,b] [--limit N] [--no-baseline] [--query-encoder d=DIR]
                                      [--per-question] [--against FILE] [--out eval/reports/retrieval]
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


def encode_ms_p50(embedder, rows, query_encoder=None, n: int = 50) -> float:
    """Median time to embed one question, as the platform does (one at a time)."""
    times = []
    for row in rows[:n]:
        t = time.perf_counter()
        embedder.embed_query(row["question"], query_encoder)
        times.append((time.perf_counter() - t) * 1000)
    return round(sorted(times)[len(times) // 2], 2)


def our_scores(domain, store, embedder, rows, query_encoder: str | None = None) -> dict[str, dict]:
    """Scores per mode; with `query_encoder` (a loaded encoder's name), the tuned dense and hybrid modes."""
    from indexing import bm25

    from .retrieval_metrics import mean_scores, score_query

    vectors = embedder.embed([r["question"] for r in rows], query_encoder=query_encoder)
    out = {}
    for mode in (MODES if query_encoder is None else ("dense", "hybrid")):
        per_q, latencies = [], []
        for row, vec in zip(tqdm(rows, desc=f"{domain.name} {mode}", leave=False), vectors, strict=True):
            t = time.perf_counter()
            hits = store.search(domain.name, dense=vec if mode != "sparse" else None,
                                sparse=bm25.query_vector(row["question"]) if mode != "dense" else None,
                                k=FETCH_CHUNKS, filter=domain.scope_filter(row))
            latencies.append((time.perf_counter() - t) * 1000)
            per_q.append(score_query([h.payload["doc_id"] for h in hits], row["gold_doc_ids"]))
        out[mode] = mean_scores(per_q) | {"search_ms_p50": round(sorted(latencies)[len(latencies) // 2], 2),
                                          "per_question_recall@5": [q["recall@5"] for q in per_q]}
    return out


def tuned_scores(domain, store, embedder, rows, base: dict) -> dict:
    """The tuned rows, each with its paired recall@5 test against the same mode with the base embedder."""
    from .statistics import paired_comparison

    tuned = our_scores(domain, store, embedder, rows, query_encoder=domain.name)
    for mode, scores in tuned.items():
        scores["vs_base_recall@5"] = paired_comparison(scores["per_question_recall@5"],
                                                       base[mode]["per_question_recall@5"])
    tuned["encode_ms_p50"] = {"base": encode_ms_p50(embedder, rows), "tuned": encode_ms_p50(embedder, rows,
                                                                                            domain.name)}
    return tuned


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
    parser.add_argument("--query-encoder", action="append", default=[], metavar="DOMAIN=DIR",
                        help="score this query encoder for DOMAIN instead of its package's")
    parser.add_argument("--per-question", action="store_true", help="keep each question's recall@5 in the JSON")
    parser.add_argument("--against", help="a --per-question JSON of another run: paired recall@5 tests against it")
    parser.add_argument("--out", default=str(ROOT / "eval" / "reports" / "retrieval"))
    args = parser.parse_args(argv)
    reference = json.loads(Path(args.against).read_text()) if args.against else None

    from assistant.building.indexer import index_domain
    from assistant.config import Settings
    from assistant.domains import get_domain, list_domains
    from assistant.serving.adapter_manifest import check_query_encoder
    from assistant.serving.models import embed_model_sha256, open_embedder
    from indexing.store import open_store

    settings = Settings.load()
    names = [n for n in args.domains.split(",") if n] or list_domains(settings)
    embedder = open_embedder(settings)
    embed_path = embedder.model_path
    chosen = dict(item.split("=", 1) for item in args.query_encoder)
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
            encoder = chosen.get(name) or domain.query_encoder_path
            if encoder:
                manifest = check_query_encoder(encoder, embed_model_sha256(settings))
                embedder.add_query_encoder(name, encoder)
                results[name]["tuned"] = tuned_scores(domain, store, embedder, rows, results[name]["ours"])
                results[name]["tuned"]["encoder"] = {"path": str(encoder), "version": manifest.get("version")}
            if not args.no_baseline:
                results[name]["llamaindex_default"] = baseline_scores(domain, embed_path, rows)
            print(json.dumps({name: results[name]}, default=str)[:2000], flush=True)
    finally:
        store.close()
    if reference is not None:
        for name, r in results.items():
            r["vs_reference"] = against(r, reference["results"].get(name))

    command = "python -m eval.retrieval_table " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(json.dumps(results, default=str))
    if not args.per_question:
        for r in summary.values():
            for scores in (*r["ours"].values(), *r.get("tuned", {}).values()):
                scores.pop("per_question_recall@5", None)  # used for the paired tests; not kept in the report
    meta = {"command": command.strip(), "embed_runtime": embedder.runtime,
            "against": None if reference is None else {"file": args.against,
                                                       "embed_runtime": reference.get("embed_runtime")}}
    out.with_suffix(".json").write_text(json.dumps(meta | {"results": summary}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(results, meta))
    print(render(results, meta))


def systems_of(r: dict) -> dict[str, dict]:
    """Our systems in one domain's results: the base embedder's modes, then the tuned query encoder's."""
    return {f"ours {m}": s for m, s in r["ours"].items()} | {
        f"ours {m}, tuned query encoder": s for m, s in r.get("tuned", {}).items() if m in MODES}


def against(r: dict, ref: dict | None) -> dict:
    """Paired recall@5 test of each system against the same system in the reference run (same questions)."""
    from .statistics import paired_comparison

    if ref is None or ref.get("n") != r["n"]:
        return {}
    out, reference = {}, systems_of(ref)
    for label, scores in systems_of(r).items():
        theirs = reference.get(label, {}).get("per_question_recall@5")
        if theirs is not None:
            out[label] = {"reference_recall@5": ref_mean(theirs),
                          "test": paired_comparison(scores["per_question_recall@5"], theirs)}
    return out


def ref_mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def render(results: dict, meta: dict) -> str:
    command = meta["command"]
    lines = ["# Retrieval quality per vertical (test split, document level)", "",
             f"Made by `{command}`. Embeddings: all-MiniLM-L6-v2 ({meta['embed_runtime']}). "
             "Ours: chunks of 128 tokens (overlap 16), "
             "Qdrant embedded engine, RRF fusion (k=60) inside Qdrant. LlamaIndex default: SentenceSplitter "
             "1024/200, HuggingFaceEmbedding, QdrantVectorStore, dense top 10. Scoped sets (policyqa, hetPQA) "
             "filter on the policy/product for every system.", "",
             "| domain | n | system | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        systems = [(f"ours {m}", r["ours"][m]) for m in MODES]
        systems += [(f"ours {m}, tuned query encoder", r["tuned"][m]) for m in ("dense", "hybrid") if m in
                    r.get("tuned", {})]
        if "llamaindex_default" in r:
            systems.append(("LlamaIndex default (dense)", r["llamaindex_default"]))
        for label, s in systems:
            lines.append(f"| {name} | {r['n']} | {label} | {s['recall@1']:.3f} | {s['recall@5']:.3f} | "
                         f"{s['recall@10']:.3f} | {s['mrr@10']:.3f} | {s['ndcg@10']:.3f} |")
    compared = {name: r["vs_reference"] for name, r in results.items() if r.get("vs_reference")}
    if compared:
        ref = meta["against"]
        lines += ["", f"Against `{ref['file']}` ({ref['embed_runtime']}): recall@5 of the same system on the same "
                  f"questions, this run ({meta['embed_runtime']}) minus that one (paired permutation test).", "",
                  "| domain | system | recall@5 reference | this run | difference [95% CI] | p |",
                  "|---|---|---|---|---|---|"]
        for name, systems in compared.items():
            for label, c in systems.items():
                t = c["test"]
                lines.append(f"| {name} | {label} | {c['reference_recall@5']:.3f} | "
                             f"{systems_of(results[name])[label]['recall@5']:.3f} | {t['diff']:+.3f} "
                             f"[{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] | {t['p_value']:.4f} |")
    tuned = {name: r["tuned"] for name, r in results.items() if "tuned" in r}
    if tuned:
        lines += ["", "Tuned query encoders (`assistant tune-retrieval`): recall@5 against the base embedder, same "
                  "mode and questions (paired permutation test), and the median time to embed one question.", "",
                  "| domain | mode | recall@5 base | tuned | difference [95% CI] | p | encode ms p50 base / tuned |",
                  "|---|---|---|---|---|---|---|"]
        for name, t in tuned.items():
            for mode in ("dense", "hybrid"):
                c = t[mode]["vs_base_recall@5"]
                lines.append(f"| {name} | {mode} | {results[name]['ours'][mode]['recall@5']:.3f} | "
                             f"{t[mode]['recall@5']:.3f} | {c['diff']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] "
                             f"| {c['p_value']:.4f} | {t['encode_ms_p50']['base']} / {t['encode_ms_p50']['tuned']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
