"""`assistant new-domain`: a new domain package from a folder of files or a corpus JSONL, with optional
synthetic training Q&A generated from the corpus by the model (split train/dev only: never test data)."""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

from assistant.data_format import AnswerType, primary_metric_for
from assistant.errors import ScaffoldError  # noqa: F401  (raised here; importable from here)
from assistant.serving.engine import GenerationRequest
from indexing.chunking import chunk_document
from indexing.documents import ReadReport, read_source

_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,39}$")
SYSTEM = ("You are the {title} assistant. Answer only from the numbered passages you are given, briefly, and cite "
          "the passage you used as [n].")
ANSWER_TEMPLATE = "Passages:\n{passages}\n\nQuestion: {question}\n{options}Answer (cite passages as [n]):\n"
# Answer first: the answer is a sentence copied from the chunk (supported by construction); the model only
# writes the question that sentence answers.
QUESTION_PROMPT = ("Passage:\n{passage}\n\nWrite one question that is answered by this sentence of the passage:\n"
                   "\"{sentence}\"\nReply with the question only.")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_QUESTION = re.compile(r"([^\n?]{8,300}\?)")


def create_domain(name: str, corpus: str | Path, domains_dir: Path, *, qa: str | Path | None = None,
                  description: str = "", read: ReadReport | None = None) -> Path:
    """A new package under `domains_dir` from a folder or file of documents. `read`: what `read_source` made
    of `corpus` already (the caller reports the files it skipped). Fails when no document is readable."""
    if not _NAME.match(name):
        raise ScaffoldError(f"domain name {name!r}: use 2-40 lowercase letters, digits, '-' or '_', "
                            "starting with a letter")
    root = domains_dir / name
    if root.exists():
        raise ScaffoldError(f"domain {name!r} already exists at {root}")
    report = read if read is not None else read_source(corpus)
    if not report.documents:
        skipped = "".join(f"\n  skipped: {e}" for e in report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise ScaffoldError(f"no readable documents in {corpus}{skipped}{more}")
    qa_rows = _read_qa(Path(qa)) if qa else []
    tmp = domains_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "prompts").mkdir(parents=True)
    (tmp / "data").mkdir()
    title = name.replace("-", " ").replace("_", " ").title()
    with open(tmp / "data" / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in report.documents:
            fh.write(json.dumps({"doc_id": d.doc_id, "title": d.title, "text": d.text,
                                 "meta": {**d.meta, "source": d.source, "doc_type": d.doc_type,
                                          **({"date": d.date} if d.date else {})}}) + "\n")
    if qa_rows:
        with open(tmp / "data" / "qa.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in qa_rows)
    (tmp / "prompts" / "system.md").write_text(SYSTEM.format(title=title) + "\n")
    (tmp / "prompts" / "answer.md").write_text(ANSWER_TEMPLATE)
    (tmp / "data" / "DATA.md").write_text(
        f"# {name} data\n\n- `corpus.jsonl`: {len(report.documents)} documents read from `{corpus}` by "
        f"`assistant new-domain`.\n- `qa.jsonl`: {'from ' + str(qa) if qa else 'none yet (see --synthetic)'}.\n"
        f"- Source and license: those of the original files; record them here.\n")
    metric = primary_metric_for(r.get("answer_type") for r in qa_rows)
    (tmp / "domain.toml").write_text(f'''name = "{name}"
title = "{title}"
description = "{description or f'Answers questions from the {title} documents.'}"
examples = []

[model]
base = ""

[adapter]
path = "adapter"

[retrieval]
mode = "hybrid"
k = 4
chunk_size = 128
chunk_overlap = 16
embed_title = true
evidence_threshold = 0.0   # run `assistant calibrate {name}` once the domain has train questions

[generation]
max_tokens = 128
temperature = 0.0
answer_form = "evidence"   # the reply copies a span of a retrieved passage, cited; "" lets the model write freely

[eval]
primary_metric = "{metric}"

[[data]]
name = "{name}"
corpus = "data/corpus.jsonl"
qa = "data/qa.jsonl"
source = "{Path(corpus).name}"
license = "see data/DATA.md"
''')
    tmp.rename(root)
    return root


def _read_qa(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScaffoldError(f"{path}:{n}: invalid JSON ({exc})") from exc
        missing = {"question", "answer"} - set(row)
        if missing:
            raise ScaffoldError(f"{path}:{n}: missing {sorted(missing)}")
        if isinstance(row["answer"], str):
            row["answer"] = [row["answer"]]
        row.setdefault("qid", f"q{n}")
        row.setdefault("split", "train")
        row.setdefault("answer_type", AnswerType.FREE_TEXT.value)
        row.setdefault("gold_doc_ids", [])
        rows.append(row)
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


_STOPWORDS = frozenset("a an the of to in on for and or is are was were be been do does did what which who how "
                       "when where why this that it its with by from as at can you your".split())


def check_synthetic_pair(question: str, answer: str, chunk_text: str) -> str | None:
    """Why a generated pair is not worth training on (None: keep it). The answer must be supported by its
    chunk (most of its content words appear there) and must say something the question does not."""
    if len(question) < 8 or not question.endswith("?"):
        return "not a question"
    answer_words = [w for w in _words(answer) if w not in _STOPWORDS]
    if not answer_words:
        return "empty answer"
    question_words = set(_words(question))
    new = [w for w in answer_words if w not in question_words]
    if len(new) < max(1, len(answer_words) // 3):
        return "answer restates the question"
    chunk_words = set(_words(chunk_text))
    if sum(w in chunk_words for w in answer_words) / len(answer_words) < 0.6:
        return "answer not supported by its passage"
    return None


def _answer_sentence(text: str, rng: random.Random) -> str:
    """A sentence of the chunk to be the answer: 6-60 words, not a heading (seeded choice)."""
    sentences = [s.strip() for s in _SENTENCE.split(text.replace("\n", " ")) if 6 <= len(s.split()) <= 60]
    return rng.choice(sentences) if sentences else ""


def synthesize_qa(root: Path, engine, n: int = 50, seed: int = 0, dev_fraction: float = 0.2,
                  report: dict | None = None) -> list[dict]:
    """One question per sampled chunk, answer first: a sentence of the chunk is the answer and the base model
    writes the question it answers; keep the pairs worth training on (`check_synthetic_pair`: not a restated
    question, supported by the chunk); split train/dev by document, so the dev split that grades the domain never
    comes from a document whose chunks trained it. `report` (if given) gets the counts and drop reasons."""
    corpus = read_source(root / "data" / "corpus.jsonl").documents
    chunks = [c for d in corpus for c in chunk_document(d)]
    rng = random.Random(seed)
    rng.shuffle(chunks)
    chunks = chunks[:n]
    docs = sorted({c.doc_id for c in chunks})
    rng.shuffle(docs)
    dev_docs = set(docs[: int(round(len(docs) * dev_fraction))]) if len(docs) > 1 else set()
    picked = [(c, _answer_sentence(c.text, rng)) for c in chunks]
    picked = [(c, s) for c, s in picked if s]
    requests = [GenerationRequest(messages=[{"role": "user", "content": QUESTION_PROMPT.format(passage=c.text,
                                                                                               sentence=s)}],
                                  max_tokens=48) for c, s in picked]
    rows, dropped = [], {}
    if len(picked) < len(chunks):
        dropped["no sentence of 6-60 words in the chunk"] = len(chunks) - len(picked)
    for (chunk, sentence), result in zip(picked, engine.generate(requests), strict=True):
        m = _QUESTION.search(result.text.replace("Question:", " "))
        q = m.group(1).strip().strip('"') if m else ""
        reason = check_synthetic_pair(q, sentence, chunk.text) if m else "no question in the reply"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        rows.append({"qid": f"syn-{len(rows)}", "split": "dev" if chunk.doc_id in dev_docs else "train",
                     "question": q, "answer": [sentence], "answer_type": AnswerType.FREE_TEXT.value,
                     "gold_doc_ids": [chunk.doc_id], "meta": {"synthetic": True}})
    if report is not None:
        report.update({"asked": len(chunks), "kept": len(rows), "dropped": dropped,
                       "train": sum(r["split"] == "train" for r in rows),
                       "dev": sum(r["split"] == "dev" for r in rows)})
    qa_path = root / "data" / "qa.jsonl"
    with open(qa_path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return rows
