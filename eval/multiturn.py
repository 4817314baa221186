"""The multi-turn suite: a test question, then a follow-up that names what it asks about only by a pronoun.

Built per vertical from its test split, seeded, no hand-written turns: two test questions about the same thing
(the same gold document, the same product or site, or the same MedQuAD topic) that share a phrase; the second,
with that phrase replaced by "it", is the follow-up ("What are the symptoms of Glaucoma ?" after "What is (are)
Glaucoma ?" becomes "What are the symptoms of it ?"). The first turn's reply is the platform's own answer
(+RAG+LoRA), as in a real chat. The follow-up is then scored three ways for retrieval (recall@5 of its gold
documents): as asked (no rewrite), with the platform's rewrite (the condense step, or its fallback), and as the
original standalone question (the ceiling); and its answer is scored with and without the rewrite, with the
single-turn suite's metric.

usage: python -m eval.multiturn [--domains a,b] [--n 100] [--seed 0] [--out eval/reports/multiturn]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from assistant.evidence import STOPWORDS

from .answer_metrics import score_answer
from .retrieval_metrics import score_query
from .runner import RETRIEVAL_FETCH, primary_metric
from .statistics import mean_ci, paired_comparison

ROOT = Path(__file__).resolve().parents[1]
_TOKEN = re.compile(r"\S+")
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "your", "my", "our"}
RETRIEVAL_WAYS = ("as_asked", "rewritten", "original")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _bare(word: str) -> str:
    return re.sub(r"\W+", "", word.lower())


def _content(word: str) -> bool:
    return bool(word) and word not in STOPWORDS


def shared_phrase(first: str, second: str) -> tuple[int, int] | None:
    """The longest run of words of `second` (start, end) that also occurs in `first`, begins and ends with a
    content word and holds one of four letters or more: the thing both questions are about."""
    a, b = [_bare(w) for w in _words(first)], [_bare(w) for w in _words(second)]
    best = None
    for i in range(len(b)):
        for j in range(len(b), i, -1):
            run = b[i:j]
            if best and j - i <= best[1] - best[0]:
                break
            if _content(run[0]) and _content(run[-1]) and any(len(w) > 3 for w in run) and _occurs(run, a):
                best = (i, j)
                break
    return best


def _occurs(run: list[str], words: list[str]) -> bool:
    return any(words[k:k + len(run)] == run for k in range(len(words) - len(run) + 1))


def follow_up(first: str, second: str) -> str | None:
    """`second` with the phrase it shares with `first` (and its determiner) said as "it"; None when there is no
    such phrase or "it" would not stand where it does (the words around it must be function words, the ends of
    the question or a number, so that a noun phrase, not half of one, is replaced)."""
    span = shared_phrase(first, second)
    if span is None:
        return None
    words = _words(second)
    start, end = span
    if start > 0 and _bare(words[start - 1]) in _DETERMINERS:
        start -= 1
    before = _bare(words[start - 1]) if start > 0 else ""
    after = _bare(words[end]) if end < len(words) else ""
    if (before and before not in STOPWORDS) or (after and after not in STOPWORDS and not after.isdigit()):
        return None
    tail = re.search(r"[?.!,;:]*$", words[end - 1]).group()  # the punctuation glued to the phrase ("Glaucoma?")
    out = words[:start] + [("It" if start == 0 else "it") + tail] + words[end:]
    text = " ".join(out)
    return text if text != second and len([w for w in out if _bare(w)]) >= 3 else None


def _topic(domain, row: dict) -> str | None:
    meta = row.get("meta") or {}
    if meta.get("focus"):
        return f"focus:{meta['focus']}"
    scope = domain.scope_filter(row)
    if scope:
        return f"scope:{json.dumps(scope, sort_keys=True)}"
    return f"doc:{row['gold_doc_ids'][0]}" if row.get("gold_doc_ids") else None


def build_suite(domain, rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to `n` conversations (first row, follow-up text, second row), each question used at most once."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        key = _topic(domain, row)
        if key and row.get("gold_doc_ids"):
            groups[key].append(row)

    def order(item):
        return hashlib.sha256(f"{seed}:{item}".encode()).hexdigest()

    suite, used = [], set()
    topics = sorted(groups, key=order)
    members = {key: sorted(groups[key], key=lambda r: order(r["qid"])) for key in topics}
    while len(suite) < n:  # one conversation per topic a round, so topics are spread over the sample
        added = 0
        for key in topics:
            convo = _one_pair(members[key], used)
            if convo:
                suite.append(convo)
                used.update((convo["first"]["qid"], convo["second"]["qid"]))
                added += 1
                if len(suite) >= n:
                    break
        if not added:
            break
    return suite


def _one_pair(members: list[dict], used: set) -> dict | None:
    for first in members:
        if first["qid"] in used:
            continue
        for second in members:
            if second["qid"] in used or second["qid"] == first["qid"] or \
                    second["question"].strip().lower() == first["question"].strip().lower():
                continue
            text = follow_up(first["question"], second["question"])
            if text:
                return {"first": first, "follow_up": text, "second": second}
    return None


def _recall5(platform, domain, question: str, row: dict) -> float:
    hits = platform.retrieve(domain.name, question, RETRIEVAL_FETCH, filter=domain.scope_filter(row))
    return score_query([h.doc_id for h in hits], row["gold_doc_ids"])["recall@5"]


def _chat_item(domain, convo: dict, first_reply: str, condense: bool) -> dict:
    second = convo["second"]
    return {"domain": domain.name, "condense": condense, "filter": domain.scope_filter(second),
            "options": second.get("options"),
            "form": second.get("answer_type") if second.get("answer_type") == "yes/no/maybe" else None,
            "messages": [{"role": "user", "content": convo["first"]["question"]},
                         {"role": "assistant", "content": first_reply},
                         {"role": "user", "content": convo["follow_up"]}]}


def eval_multiturn(platform, name: str, *, n: int = 100, seed: int = 0, batch_size: int = 32,
                   progress: bool = True) -> dict:
    domain = platform.domain(name)
    limit_q = platform.settings.max_question_chars
    rows = [r for r in domain.qa_rows("test") if len(r["question"]) <= limit_q]
    suite = build_suite(domain, rows, n, seed)
    if not suite:
        return {"domain": name, "n": 0, "note": "no two test questions about the same thing share a phrase"}
    started = time.perf_counter()
    items = []
    bar = tqdm(total=len(suite), desc=f"multi-turn {name}", unit="conversation", disable=not progress)
    for start in range(0, len(suite), batch_size):
        batch = suite[start:start + batch_size]
        firsts = platform.ask_many([{"domain": name, "question": c["first"]["question"],
                                     "filter": domain.scope_filter(c["first"]), "options": c["first"].get("options"),
                                     "form": c["first"].get("answer_type")
                                     if c["first"].get("answer_type") == "yes/no/maybe" else None} for c in batch])
        replies = [a.text for a in firsts]
        with_rewrite = platform.chat_many([_chat_item(domain, c, r, True) for c, r in zip(batch, replies, strict=True)])
        without = platform.chat_many([_chat_item(domain, c, r, False) for c, r in zip(batch, replies, strict=True)])
        for convo, reply, a, b in zip(batch, replies, with_rewrite, without, strict=True):
            second = convo["second"]
            rewritten = a.standalone_question or convo["follow_up"]
            items.append({
                "data": second.get("data"), "qid": second["qid"], "first": convo["first"]["question"],
                "first_reply": reply, "follow_up": convo["follow_up"],
                "original": second["question"], "rewrite": rewritten, "rewrite_by": a.rewrite,
                "recall@5": {"as_asked": _recall5(platform, domain, convo["follow_up"], second),
                             "rewritten": _recall5(platform, domain, rewritten, second),
                             "original": _recall5(platform, domain, second["question"], second)},
                "answer": {"with_rewrite": score_answer(second, a.text, a.abstained),
                           "without_rewrite": score_answer(second, b.text, b.abstained)},
                "texts": {"with_rewrite": a.text, "without_rewrite": b.text}})
        bar.update(len(batch))
    bar.close()
    return summarise(domain, items) | {"seconds": round(time.perf_counter() - started, 1), "items": items}


def summarise(domain, items: list[dict]) -> dict:
    sets = {i["data"] for i in items}
    metric = primary_metric(domain, sets.pop() if len(sets) == 1 else None)
    out = {"domain": domain.name, "n": len(items), "metric": metric, "recall@5": {}, "answer": {},
           "rewrite_by": dict(Counter(i["rewrite_by"] or "none" for i in items))}
    for way in RETRIEVAL_WAYS:
        mean, low, high = mean_ci([i["recall@5"][way] for i in items])
        out["recall@5"][way] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
    out["recall@5"]["rewritten_vs_as_asked"] = paired_comparison([i["recall@5"]["rewritten"] for i in items],
                                                                 [i["recall@5"]["as_asked"] for i in items])
    scores = {way: [i["answer"][way].get(metric, 0.0) for i in items] for way in ("with_rewrite", "without_rewrite")}
    for way, values in scores.items():
        mean, low, high = mean_ci(values)
        out["answer"][way] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
    out["answer"]["with_vs_without"] = paired_comparison(scores["with_rewrite"], scores["without_rewrite"])
    out["examples"] = [{k: i[k] for k in ("first", "follow_up", "rewrite", "rewrite_by", "original")}
                       | {"recall@5": i["recall@5"]} for i in items[:3]]
    return out


def render(results: dict, command: str) -> str:
    lines = ["# Multi-turn suite: follow-ups that refer back by a pronoun (test split)", "",
             f"Made by `{command}`. Each conversation: a test question, the platform's own answer to it "
             "(+RAG+LoRA), then a second test question about the same thing (same gold document, product, site or "
             "MedQuAD topic) with the phrase they share replaced by \"it\". Recall@5 of the follow-up's gold "
             "documents, and its answer's score, with the follow-up as asked (no rewrite), with the platform's "
             "rewrite (the model's condensed question, or the fallback: the latest questions + the follow-up), "
             "and as the original standalone question (the ceiling). 95% bootstrap CIs; p: paired permutation "
             "test.", "",
             "| domain | n | recall@5 as asked | recall@5 rewritten | diff (p) | recall@5 original | rewrite by | "
             "answer without rewrite | answer with rewrite | diff (p) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(entry):
        return f"{entry['mean']:.3f} [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"

    for name, r in results.items():
        if not r.get("n"):
            lines.append(f"| {name} | 0 | {r.get('note', '')} | | | | | | | |")
            continue
        rc, ans = r["recall@5"], r["answer"]
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["rewrite_by"].items()))
        lines.append(f"| {name} | {r['n']} | {cell(rc['as_asked'])} | {cell(rc['rewritten'])} | "
                     f"{rc['rewritten_vs_as_asked']['diff']:+.3f} ({rc['rewritten_vs_as_asked']['p_value']:.4f}) | "
                     f"{cell(rc['original'])} | {by} | {r['metric']} {cell(ans['without_rewrite'])} | "
                     f"{cell(ans['with_rewrite'])} | {ans['with_vs_without']['diff']:+.3f} "
                     f"({ans['with_vs_without']['p_value']:.4f}) |")
    lines += ["", "## Examples", ""]
    for name, r in results.items():
        for ex in r.get("examples", [])[:2]:
            lines.append(f"- {name}: \"{ex['first']}\" then \"{ex['follow_up']}\" -> searched \"{ex['rewrite']}\" "
                         f"({ex['rewrite_by']}); original \"{ex['original']}\"")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default="", help="comma-separated (default: every domain)")
    parser.add_argument("--n", type=int, default=100, help="conversations per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "eval" / "reports" / "multiturn"))
    args = parser.parse_args(argv)

    from assistant import Platform
    from assistant.config import Settings
    from assistant.domains import list_domains

    settings = Settings.load()
    names = [n for n in args.domains.split(",") if n] or list_domains(settings)
    results = {}
    with Platform.load(names, settings) as platform:
        for name in names:
            results[name] = eval_multiturn(platform, name, n=args.n, seed=args.seed)
            print(json.dumps({k: v for k, v in results[name].items() if k not in ("examples", "items")}), flush=True)
            _save(results, args, argv)
    print(render(results, _save(results, args, argv)))


def _save(results: dict, args, argv) -> str:
    """The report so far (after each domain, so a long run leaves what it finished)."""
    command = ("python -m eval.multiturn " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(results, command))
    return command


if __name__ == "__main__":
    main()
