"""A domain's query encoder: a peft LoRA on the packaged MiniLM that tunes how the domain's questions are embedded.

Only the query side is trained. The documents keep the vectors already in the index (read back from the store),
so a tuned domain needs no re-index, and uploads embedded later with the base model stay comparable. That also
makes the loss exact and cheap: each train question is scored against *every* chunk it could retrieve (its
domain, or its site/product when the domain scopes retrieval), a softmax over the whole candidate set, with the
chunks of its gold documents as positives. Every other chunk is a negative, the hardest ones included, so no
negative mining is needed.

A slice of the train split (`dev_fraction`) is held out **by document** (by site/product where retrieval is
scoped), since several questions ask about one table or one policy and a random slice would grade the encoder
on documents it trained on (measured on finance: held-out recall 0.77 by question, 0.52 on the test split).
Dense recall@5 on it is measured before training and after each epoch, and the best epoch is kept. When no
epoch beats the base encoder, nothing is written: the domain keeps the base encoder, and the result says so.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.domains import Domain
from assistant.errors import InputError
from indexing.store import ORIGIN_FIELD

TARGET_MODULES = ("query", "key", "value", "dense")  # BERT's attention and feed-forward linears
RECALL_AT = 5


@dataclass(frozen=True)
class QueryTuneConfig:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    epochs: int = 4
    lr: float = 5e-4
    batch_size: int = 32
    temperature: float = 0.05   # softmax temperature over cosine similarities (MultipleNegativesRanking's 1/20)
    max_len: int = 64           # query word pieces
    dev_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("rank", "alpha", "epochs", "batch_size", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < self.dev_fraction < 0.5:
            raise InputError(f"dev_fraction must be in (0, 0.5), got {self.dev_fraction!r}")


@dataclass
class Candidates:
    """The domain's chunks as the index holds them: doc ids, titles and base vectors (N x dim, normalised)."""
    doc_ids: list[str]
    titles: list[str]
    vectors: np.ndarray

    @classmethod
    def from_store(cls, store, domain: str) -> Candidates:
        doc_ids, titles, vectors = [], [], []
        for _, payload, vector in store.scan_vectors(domain, ["doc_id", "title", ORIGIN_FIELD]):
            if payload.get(ORIGIN_FIELD) is not None:  # users' uploads are not the package's corpus
                continue
            doc_ids.append(payload.get("doc_id", ""))
            titles.append(payload.get("title", ""))
            vectors.append(vector)
        if not vectors:
            raise InputError(f"domain {domain} has no indexed chunks: run `assistant index {domain}` first")
        return cls(doc_ids, titles, np.stack(vectors).astype(np.float32))


@dataclass
class Example:
    question: str
    positives: np.ndarray          # chunk indices of the gold documents
    scope: np.ndarray | None       # chunk indices it may retrieve (None: all)
    group: str                     # what the held-out slice is split by: the scope item, else the first gold doc


def build_examples(dom: Domain, candidates: Candidates, split: str = "train", limit: int = 0) -> list[Example]:
    """The split's questions with gold documents that are in the index, each with its positives and scope."""
    by_doc: dict[str, list[int]] = {}
    by_title: dict[str, list[int]] = {}
    for i, (doc, title) in enumerate(zip(candidates.doc_ids, candidates.titles, strict=True)):
        by_doc.setdefault(doc, []).append(i)
        by_title.setdefault(title, []).append(i)
    scope_key = dom.retrieval.scope_qa_meta
    out = []
    for row in dom.qa_rows(split):
        positives = sorted({i for doc in row.get("gold_doc_ids") or [] for i in by_doc.get(doc, [])})
        if not positives or not (row.get("question") or "").strip():
            continue
        scope, group = None, sorted(row["gold_doc_ids"])[0]
        if scope_key:
            item = (row.get("meta") or {}).get(scope_key)
            if item not in by_title:
                continue
            scope, group = np.array(by_title[item]), str(item)
        out.append(Example(row["question"], np.array(positives), scope, group))
        if limit and len(out) >= limit:
            break
    return out


def split_by_group(examples: list[Example], dev_fraction: float, rng: random.Random):
    """(dev, train): whole groups held out until the dev slice has `dev_fraction` of the examples."""
    groups = sorted({e.group for e in examples})
    rng.shuffle(groups)
    held, size = set(), 0
    for g in groups:
        if size >= dev_fraction * len(examples):
            break
        held.add(g)
        size += sum(e.group == g for e in examples)
    return [e for e in examples if e.group in held], [e for e in examples if e.group not in held]


def _masks(batch: list[Example], n: int):
    import torch

    scope = torch.zeros((len(batch), n), dtype=torch.bool)
    positive = torch.zeros((len(batch), n), dtype=torch.bool)
    for j, ex in enumerate(batch):
        if ex.scope is None:
            scope[j] = True
        else:
            scope[j, torch.from_numpy(ex.scope)] = True
        positive[j, torch.from_numpy(ex.positives)] = True
    return scope, positive & scope


def _encode(model, texts: list[str]):
    import torch

    features = model.tokenize(texts)
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)


def recall_at(model, examples: list[Example], docs, doc_ids: list[str], config: QueryTuneConfig,
              k: int = RECALL_AT) -> float:
    """Dense document recall@k: the share of questions with a gold document among the top-k chunks' documents."""
    import torch

    if not examples:
        return float("nan")
    hits = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), 64):
            batch = examples[start:start + 64]
            scores = _encode(model, [e.question for e in batch]) @ docs.T
            scope, _ = _masks(batch, docs.shape[0])
            scores = scores.masked_fill(~scope, float("-inf"))
            for j, ex in enumerate(batch):
                gold = {doc_ids[i] for i in ex.positives}
                top = torch.topk(scores[j], min(len(doc_ids), 4 * k)).indices.tolist()
                seen: list[str] = []
                for i in top:  # the top-k *documents*, as the eval counts them
                    if doc_ids[i] not in seen:
                        seen.append(doc_ids[i])
                    if len(seen) == k:
                        break
                hits += bool(gold & set(seen))
    return hits / len(examples)


def tune_query_encoder(dom: Domain, store, embed_model: str | Path, out_dir: str | Path,
                       config: QueryTuneConfig | None = None, *, base_embedder_sha256: str, limit: int = 0,
                       progress: bool = True) -> dict:
    """Train `dom`'s query encoder on its train split and write it (peft adapter + manifest.json) to `out_dir`
    when it beats the base encoder on the held-out slice. Returns the manifest fields (with `"written"`)."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    from assistant.building.training import save_adapter

    config = config or QueryTuneConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    candidates = Candidates.from_store(store, dom.name)
    examples = build_examples(dom, candidates, "train", limit)
    if len(examples) < 20:
        raise InputError(f"domain {dom.name} has {len(examples)} train questions with an indexed gold document; "
                         f"a query encoder needs at least 20")
    dev, train = split_by_group(examples, config.dev_fraction, rng)
    docs = torch.from_numpy(candidates.vectors)

    model = SentenceTransformer(str(embed_model), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_len  # questions: the serving embedder keeps its own (longer) limit
    model.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(TARGET_MODULES)))
    params = [p for name, p in model.named_parameters() if "lora_" in name]
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, (total - s) / total))

    model.disable_adapters()
    base_dev = recall_at(model, dev, docs, candidates.doc_ids, config)
    model.enable_adapters()
    history = [{"epoch": 0, "dev_recall@5": round(base_dev, 4)}]
    best, best_state = base_dev, None
    bar = tqdm(total=total, desc=f"tune {dom.name} query encoder", unit="step", disable=not progress)
    for epoch in range(1, config.epochs + 1):
        model.train()
        rng.shuffle(train)
        losses = []
        for start in range(0, len(train), config.batch_size):
            batch = train[start:start + config.batch_size]
            scores = _encode(model, [e.question for e in batch]) @ docs.T / config.temperature
            scope, positive = _masks(batch, docs.shape[0])
            all_ = torch.logsumexp(scores.masked_fill(~scope, float("-inf")), dim=1)
            pos = torch.logsumexp(scores.masked_fill(~positive, float("-inf")), dim=1)
            loss = (all_ - pos).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", best_dev=f"{best:.3f}")
        dev_recall = recall_at(model, dev, docs, candidates.doc_ids, config)
        history.append({"epoch": epoch, "train_loss": round(float(np.mean(losses)), 4),
                        "dev_recall@5": round(dev_recall, 4)})
        if dev_recall > best:
            best = dev_recall
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    bar.close()
    fields = {"domain": dom.name, "kind": "query_encoder", "base_embedder_sha256": base_embedder_sha256,
              "recipe": dataclasses.asdict(config) | {"target_modules": list(TARGET_MODULES),
                                                      "loss": "softmax over every candidate chunk"},
              "train_questions": len(train), "dev_questions": len(dev), "candidate_chunks": len(candidates.doc_ids),
              "dev_recall@5": {"base": round(base_dev, 4), "tuned": round(best, 4)}, "history": history,
              "wall_time_s": round(time.perf_counter() - started, 1)}
    if best_state is None:
        return fields | {"written": False, "why": "no epoch beat the base encoder on the held-out questions"}
    model.load_state_dict(best_state, strict=False)
    for peft_config in model[0].auto_model.peft_config.values():
        peft_config.base_model_name_or_path = Path(embed_model).name  # a name, not this machine's path
    return save_adapter(model[0].auto_model, out_dir, fields) | {"written": True, "path": str(out_dir)}

