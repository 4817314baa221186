"""Copy each vertical's data set from ../shared/data into domains/<name>/data/ (run once; the copies are
committed so a plain clone works). Usage: python scripts/copy_domain_data.py [SHARED_DATA_DIR]"""
import shutil
import sys
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
for domain, rel in SETS.items():
    out = ROOT / "domains" / domain / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "qa.jsonl"):
        shutil.copyfile(SHARED / rel / name, out / name)
    print(f"{domain}: {rel} -> {out.relative_to(ROOT)}")
