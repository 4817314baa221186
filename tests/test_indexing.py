"""Ingestion and retrieval on the real stack: packaged MiniLM, Qdrant's embedded engine, qdrant-client."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.files import make_mixed_folder
from indexing import bm25
from indexing.documents import read_corpus_jsonl, read_source
from indexing.ingest import delete_documents, ingest_documents, ingest_path
from indexing.retriever import QueryError, Retriever
from indexing.store import EdgeStore, FilterError, MissingIndexError, QdrantStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
QUERY_CHARS = 4000  # the platform's default max_question_chars


def doc_chunks(store, collection, doc_id):
    return [p for pid, p in store.scan(collection, ["doc_id", "text"]) if p["doc_id"] == doc_id]


def test_bm25_matches_fastembed_scheme():
    assert bm25.stems("The runners were Running; aren't they?") == ["runner", "run"]
    ids, values = bm25.query_vector("running runs")
    assert ids == [abs(__import__("mmh3").hash("run"))] and values == [1.0]
    ids, values = bm25.document_vector("cats cats dog")
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 256)
    assert dict(zip(ids, values, strict=True)) == pytest.approx({bm25.token_id("cat"): 2 * 2.2 / (2 + norm),
                                                    bm25.token_id("dog"): 1 * 2.2 / (1 + norm)})


def test_reingest_is_idempotent_and_edits_replace_old_chunks(tmp_path, embedder, small_corpus):
    store = EdgeStore(tmp_path / "index")
    docs = read_corpus_jsonl(small_corpus).documents
    first = ingest_documents(store, "t", docs, embedder, progress=False)
    assert first.added == first.chunks == store.count("t") and first.chunks >= len(docs)
    again = ingest_documents(store, "t", docs, embedder, progress=False)
    assert (again.added, again.removed, again.unchanged) == (0, 0, first.chunks)

    edited = docs[3]
    old = doc_chunks(store, "t", edited.doc_id)
    edited.text = "Completely rewritten card: thermography finds hot spots in switchgear."
    third = ingest_documents(store, "t", docs, embedder, progress=False)
    new = doc_chunks(store, "t", edited.doc_id)
    assert [c["text"] for c in new] == [edited.text]
    assert third.removed == len(old) and third.added == 1 and store.count("t") == first.chunks - len(old) + 1

    pruned = ingest_documents(store, "t", docs[:-2], embedder, prune=True, progress=False)
    assert pruned.documents_removed == 2 and not doc_chunks(store, "t", docs[-1].doc_id)
    assert delete_documents(store, "t", [docs[0].doc_id]) >= 1 and not doc_chunks(store, "t", docs[0].doc_id)
    store.close()


KILL_SCRIPT = r"""
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from indexing.documents import read_corpus_jsonl
from indexing.embedder import Embedder
from indexing.ingest import ingest_documents
from indexing.store import EdgeStore
emb = Embedder({embed!r})
real_embed = emb.embed
def slow_embed(texts, **kw):
    out = real_embed(texts)
    print("BATCH", flush=True); time.sleep(0.5)
    return out
emb.embed = slow_embed
store = EdgeStore({index!r})
ingest_documents(store, "t", read_corpus_jsonl({corpus!r}).documents, emb, batch_size=4, progress=False)
print("DONE", flush=True)
"""


def test_killed_ingest_resumes_without_duplicates(tmp_path, embedder, prepared, small_corpus):
    index = tmp_path / "index"
    script = KILL_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), embed=str(prepared.embed_model),
                                index=str(index), corpus=str(small_corpus))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    batches = 0
    for line in proc.stdout:
        batches += line.startswith("BATCH")
        if batches == 3:
            proc.send_signal(signal.SIGKILL)  # no cleanup, no flush
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = EdgeStore(index)  # the lock died with the process
    partial = store.count("t")
    report = ingest_documents(store, "t", read_corpus_jsonl(small_corpus).documents, embedder, progress=False)
    assert report.unchanged == partial < report.chunks
    assert store.count("t") == report.chunks  # every chunk once: stable ids cannot duplicate
    ids = [pid for pid, _ in store.scan("t", ["doc_id"])]
    assert len(ids) == len(set(ids)) == report.chunks
    store.close()


def test_folder_ingest_reports_bad_files_and_keeps_the_rest(tmp_path, embedder):
    expected = make_mixed_folder(tmp_path / "docs")
    report = read_source(tmp_path / "docs")
    errors = {Path(e.where).relative_to(tmp_path / "docs").as_posix(): e.reason for e in report.errors}
    for rel, want in expected.items():
        if want == "ok":
            assert rel not in errors, f"{rel} failed: {errors.get(rel)}"
        else:
            assert want in errors[rel], f"{rel}: {errors.get(rel)}"
    ids = {d.doc_id for d in report.documents}
    assert {"notes.txt", "guide.md", "page.html", "report.pdf", "memo.docx", "sensors.csv", "card-1"} <= ids
    pdf = next(d for d in report.documents if d.doc_id == "report.pdf")
    assert "thermal fatigue" in pdf.text and pdf.doc_type == "pdf" and pdf.date
    assert "Surge happens at low flow" in next(d.text for d in report.documents if d.doc_id == "page.html")

    store = EdgeStore(tmp_path / "index")
    result = ingest_path(store, "docs", tmp_path / "docs", embedder, progress=False)
    assert not result.ok and len(result.errors) == 5 and result.documents == 7
    hits = Retriever(store, embedder, max_query_chars=QUERY_CHARS).retrieve("docs", "why do turbine blades crack?", k=1)
    assert hits[0].doc_id == "report.pdf"
    store.close()


def test_oversize_file_is_refused(tmp_path):
    (tmp_path / "big.txt").write_text("x" * 5000)
    report = read_source(tmp_path, max_bytes=1000)
    assert not report.documents and "over the" in report.errors[0].reason


def test_cli_index_reports_failures_with_exit_code(tmp_path):
    make_mixed_folder(tmp_path / "docs")
    env = dict(os.environ, ASSISTANT_HOME=str(tmp_path / "home"))
    # models come from the shared prepared cache, so point the home at it through a copy-free setting
    env["ASSISTANT_EMBED_MODEL"] = str(ROOT / ".cache" / "models" / "all-MiniLM-L6-v2")
    proc = subprocess.run([sys.executable, "-m", "assistant", "index", "manufacturing", "--source",
                           str(tmp_path / "docs"), "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["documents"] == 7 and len(report["errors"]) == 5 and report["added"] >= 7
    assert "5 item(s) failed" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "assistant", "retrieve", "nosuchdomain", "q"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "unknown domain 'nosuchdomain'" in bad.stderr
    for args, msg in (([""], "empty question"), (["q", "--k", "0"], "k must be")):
        proc = subprocess.run([sys.executable, "-m", "assistant", "retrieve", "manufacturing", *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode != 0 and msg in proc.stderr


@pytest.fixture(scope="module")
def both_stores(tmp_path_factory, embedder, small_corpus):
    docs = read_corpus_jsonl(small_corpus).documents
    for i, d in enumerate(docs):
        d.doc_type = "even" if i % 2 == 0 else "odd"
        d.date = f"2024-01-{i % 28 + 1:02d}T00:00:00Z"
    edge = EdgeStore(tmp_path_factory.mktemp("edge"))
    server = QdrantStore(location=":memory:")
    for store in (edge, server):
        ingest_documents(store, "m", docs, embedder, progress=False)
    yield edge, server
    edge.close()
    server.close()


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_embedded_and_server_backends_agree(both_stores, embedder, mode):
    edge, server = both_stores
    q = "which sensor detects bearing wear in a gas turbine"
    a = [p.doc_id for p in Retriever(edge, embedder, max_query_chars=QUERY_CHARS).retrieve("m", q, k=5, mode=mode)]
    b = [p.doc_id for p in Retriever(server, embedder, max_query_chars=QUERY_CHARS).retrieve("m", q, k=5, mode=mode)]
    assert len(a) == 5 and a[:3] == b[:3]


def test_filters_on_type_title_and_date(both_stores, embedder):
    for store in both_stores:
        r = Retriever(store, embedder, max_query_chars=QUERY_CHARS)
        even = r.retrieve("m", "vibration", k=10, filter={"doc_type": "even"})
        assert {p.payload["doc_type"] for p in even} == {"even"}
        dated = r.retrieve("m", "vibration", k=10, filter={"date": {"gte": "2024-01-20T00:00:00Z"}})
        assert dated and all(p.payload["date"] >= "2024-01-20" for p in dated)
        title = r.retrieve("m", "air", k=3)[0].title
        assert {p.title for p in r.retrieve("m", "vibration", k=5, filter={"title": title})} == {title}


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory):
    """Both backends over the same 60 random points: random weights, so no two scores tie and the order of
    ties (which Qdrant leaves open, and which RRF then turns into different fused scores) never matters."""
    import numpy as np

    from indexing.store import ChunkRecord, point_id

    rng = np.random.default_rng(7)
    records = []
    for i in range(60):
        dense = rng.normal(size=16).astype(np.float32)
        tokens = sorted(int(t) for t in rng.choice(40, size=5, replace=False))
        records.append(ChunkRecord(
            id=point_id(f"s{i}"), dense=dense / np.linalg.norm(dense),
            sparse=(tokens, [float(w) for w in rng.uniform(0.5, 3.0, size=5)]),
            payload={"doc_id": f"d{i}", "title": f"t{i % 4}", "doc_type": ("even", "odd")[i % 2], "n": i,
                     "date": f"2024-01-{i % 28 + 1:02d}T00:00:00Z", "text": f"passage {i}"}))
    edge = EdgeStore(tmp_path_factory.mktemp("edge-synthetic"))
    server = QdrantStore(location=":memory:")
    for store in (edge, server):
        store.ensure_collection("s", 16)
        store.upsert("s", records)
        store.flush("s")
    query = rng.normal(size=16).astype(np.float32)
    yield (edge, server), query / np.linalg.norm(query), ([3, 7, 11, 17, 21, 25, 31, 36], [1.0] * 8)
    edge.close()
    server.close()


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("spec", [None, {"doc_type": "odd"}, {"title": ["t1", "t2"]}, {"n": {"gte": 10, "lt": 50}},
                                  {"date": {"gte": "2024-01-10T00:00:00Z"}, "doc_type": "even"}], ids=repr)
def test_backends_return_the_same_hits(synthetic_pair, mode, spec):
    (edge, server), dense, sparse = synthetic_pair
    dense = dense if mode != "sparse" else None
    sparse = sparse if mode != "dense" else None
    a, b = (store.search("s", dense=dense, sparse=sparse, k=8, filter=spec) for store in (edge, server))
    assert len(a) == 8
    assert [h.id for h in a] == [h.id for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-4)
    assert [h.payload for h in a] == [h.payload for h in b]


BAD_FILTERS = [{"title": None}, {"title": {"foo": 1}}, {"title": [{"a": 1}]}, {"title": [None]}, {"title": 1.5},
               {"title": ["a", 1]}, {"title": {}}, {"date": {"gte": "yesterday"}}, {"doc_type": {"gte": "a"}},
               {"title": {"gte": None}}, "title=x"]


@pytest.mark.parametrize("spec", BAD_FILTERS, ids=repr)
def test_malformed_filters_raise_store_error_on_both_backends(synthetic_pair, spec):
    stores, dense, sparse = synthetic_pair

    class FixedEmbedder:
        def embed_query(self, text):
            return dense

    for store in stores:
        for d, s in ((dense, None), (None, sparse), (dense, sparse)):
            with pytest.raises(FilterError, match="filter") as info:
                store.search("s", dense=d, sparse=s, k=3, filter=spec)
            assert isinstance(info.value, StoreError)
        with pytest.raises(StoreError, match="filter"):
            Retriever(store, FixedEmbedder(), max_query_chars=QUERY_CHARS).retrieve("s", "q", filter=spec)


def test_filter_spec_is_parsed_once_for_every_backend():
    from indexing.store.filters import Condition, parse_filter, plan_search

    spec = {"title": "a", "doc_id": ["x", "y"], "n": {"gte": 1, "lt": 2.5}, "date": {"gte": "2024-01-01"},
            "flag": True}
    assert parse_filter(spec) == (Condition("title", "eq", "a"), Condition("doc_id", "any", ["x", "y"]),
                                  Condition("n", "range", {"gte": 1, "lt": 2.5}),
                                  Condition("date", "range", {"gte": "2024-01-01"}, datetime=True),
                                  Condition("flag", "eq", True))
    assert parse_filter(None) == parse_filter({}) == ()
    assert plan_search(dense=None, sparse=([], []), k=5) is None
    one = plan_search(dense=[1.0, 0.0], sparse=None, k=5)
    assert not one.fused and one.limit == 5
    both = plan_search(dense=[1.0, 0.0], sparse=([3], [0.5]), k=7)
    assert both.fused and [s.using for s in both.stages] == ["dense", "bm25"] and both.prefetch_limit == 28
    assert plan_search(dense=[1.0], sparse=([3], [0.5]), k=2).prefetch_limit == 20


def test_retrieval_input_errors(both_stores, embedder):
    r = Retriever(both_stores[0], embedder, max_query_chars=QUERY_CHARS)
    for query, k, msg in (("", 5, "empty query"), ("   ", 5, "empty query"), ("q", 0, "k must be"),
                          ("q", -1, "k must be"), ("x" * 100_000, 5, "limit is")):
        with pytest.raises(QueryError, match=msg):
            r.retrieve("m", query, k=k)
    with pytest.raises(MissingIndexError, match="no index for domain 'absent'"):
        r.retrieve("absent", "q")
    with pytest.raises(StoreError, match="invalid collection"):
        r.retrieve("../etc", "q")


def test_second_process_gets_a_clear_busy_error(tmp_path, embedder, small_corpus):
    store = EdgeStore(tmp_path / "index")
    ingest_documents(store, "t", read_corpus_jsonl(small_corpus).documents[:3], embedder, progress=False)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from indexing.store import EdgeStore, StoreBusyError\n"
            f"try:\n    EdgeStore({str(tmp_path / 'index')!r}).count('t')\n"
            "except StoreBusyError as e:\n    print('BUSY', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("BUSY") and f'"pid": {os.getpid()}' in out
    store.close()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "BUSY" not in out  # released on close


def test_bm25_stems_the_same_from_many_threads():
    """A question's query vector is made while an upload is indexed in another thread (the service)."""
    import concurrent.futures as cf
    import sys

    from indexing import bm25

    texts = [f"Glaucoma damages the optic nerves; {i} running runners ran quickly through connected nodes"
             for i in range(400)]
    expected = [bm25.stems(t) for t in texts]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch inside a stemWord call, as they do under load
    try:
        with cf.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(bm25.stems, texts * 4))
    finally:
        sys.setswitchinterval(switch)
    assert got == expected * 4
