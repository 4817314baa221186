"""Copy each vertical's data sets from ../shared/data into domains/<name>/data/ (run once; the copies are
committed so a plain clone works). Usage: python scripts/copy_domain_data.py [SHARED_DATA_DIR]

Whole sets are copied unchanged. MedQuAD (48 MB) is copied as a compact subset, gzipped: the consumer-health
sources (NIH Senior Health, MedlinePlus, NIDDK, NINDS, NHLBI, CancerGov, CDC), without the rare-disease (GARD)
and genetics (GHR) pages, which are 10,819 of its 16,407 documents. Repeated template questions ("What is (are)
X ?" asked of several pages) count every page they were asked of as gold, as the set's README says."""
import gzip
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
SETS = {
    "healthcare": "healthcare/pubmedqa_pqal",
    "legal": "legal/policyqa",
    "finance": "finance/tatqa",
    "retail": "retail/hetpqa_answer_generation",
    "manufacturing": "manufacturing/failuresensoriq_sc",
}
MEDQUAD_SOURCES = {"NIHSeniorHealth", "MPlusHealthTopics", "NIDDK", "NINDS", "NHLBI", "CancerGov", "CDC"}


def _lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_gz(path: Path, rows: list[dict]) -> None:
    # mtime=0: the same rows give the same bytes, so a re-run leaves git with nothing to commit
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def copy_medquad_subset(shared: Path, out: Path) -> tuple[int, int]:
    docs, kept = [], set()
    for d in _lines(shared / "healthcare/medquad/corpus.jsonl"):
        if d["meta"].get("source") in MEDQUAD_SOURCES and d["doc_id"] not in kept:  # 34 ids repeat: first kept
            docs.append(d)
            kept.add(d["doc_id"])
    rows = [r for r in _lines(shared / "healthcare/medquad/qa.jsonl") if set(r["gold_doc_ids"]) <= kept]
    asked_of = defaultdict(set)
    for r in rows:
        asked_of[" ".join(r["question"].lower().split())].update(r["gold_doc_ids"])
    for r in rows:
        r["gold_doc_ids"] = sorted(asked_of[" ".join(r["question"].lower().split())])
    out.mkdir(parents=True, exist_ok=True)
    _write_gz(out / "corpus.jsonl.gz", docs)
    _write_gz(out / "qa.jsonl.gz", rows)
    return len(docs), len(rows)


if __name__ == "__main__":
    for domain, rel in SETS.items():
        out = ROOT / "domains" / domain / "data"
        out.mkdir(parents=True, exist_ok=True)
        for name in ("corpus.jsonl", "qa.jsonl"):
            shutil.copyfile(SHARED / rel / name, out / name)
        print(f"{domain}: {rel} -> {out.relative_to(ROOT)}")
    n_docs, n_rows = copy_medquad_subset(SHARED, ROOT / "domains/healthcare/data/medquad")
    print(f"healthcare: healthcare/medquad (consumer-health subset: {n_docs} documents, {n_rows} questions) "
          f"-> domains/healthcare/data/medquad")
