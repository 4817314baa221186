"""Evidence answers: the reply is a span copied from a retrieved passage, never text the small model writes.

For factual questions over documents a 135M model paraphrases badly (repeated lines, invented code, a wrong key
from the right page), while the passages it is shown usually hold the answer verbatim. So the reply is one of
the candidate spans of the shown passages, the one the domain's embedding model (the retrieval model) finds
closest to the question. The answer is supported by construction, and since the platform knows which passage
holds the span, it adds the citation itself: never missing, never invented.

Candidates: the sentences of the shown passages that share the most content words with the question and,
within each, every run of its clauses (split at `,` `;` `:`), so a short span ("we share it with advertisers")
can win as well as the whole sentence. A candidate has at least four words and a content word the question
lacks: headings, titles and names that only restate the question ("npm ping" for "What does npm ping check?")
are not answers.

Why the embedder and not the LLM picks: on 74 PolicyQA and 72 hetPQA test questions (after fitting on 85 and 80
train questions) the LLM's log-probabilities of the candidates, alone or weighed with word overlap, picked spans
no better than taking the first candidate (token F1 0.127-0.162 vs 0.171 on PolicyQA, 0.185-0.245 vs 0.246 on
hetPQA) at 2.5 s a question, while the embedder's question-span similarity is the best single rule we measured
(PolicyQA 0.145 vs 0.123 for word overlap on 300 test questions; hetPQA 0.323 vs 0.245 on 183 train questions) at
a few milliseconds a candidate.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from assistant.answer import Citation

EVIDENCE_FORM = "evidence"
MAX_SENTENCES = 4         # the sentences that share the most content words with the question
MAX_SPAN_WORDS = 80       # longer clause runs are not candidates (the whole sentence still is)
MIN_SPAN_CHARS = 3
MIN_SPAN_WORDS = 4        # shorter spans are headings, titles or code names, not answers
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")
_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset("a an the of to in on for and or is are was were be been do does did what which who whom how "
                      "when where why this that these those it its with by from as at can could would should will "
                      "there their they them you your i me my we our us not no yes any if".split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of two or more characters, stop words removed: what question and evidence share."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in _SENTENCE.split(text) if len(s.strip()) >= MIN_SPAN_CHARS]


_MARKUP = re.compile(r"^(?:[#>*+\-]+\s+|\d+\.\s+)")  # heading, quote and list markers at a line's start


def _tidy(span: str) -> str:
    return _MARKUP.sub("", span.strip().strip(",;:").strip()).strip()


def _answers(span: str, question_words: set[str]) -> bool:
    """A span can answer only if it is sentence-sized and says something the question does not."""
    return len(span.split()) >= MIN_SPAN_WORDS and bool(content_words(span) - question_words)


@dataclass(frozen=True)
class Span:
    text: str
    n: int            # the passage [n] that holds it
    whole: bool       # the whole sentence (else a run of its clauses)
    reply: str = ""   # what the answer copies: the text, or a whole sentence and those after it (prose answers)

    @property
    def copied(self) -> str:
        return self.reply or self.text


@dataclass(frozen=True)
class EvidenceForm:
    """The spans a reply may copy, in the order of the passages."""
    spans: tuple[Span, ...]

    @classmethod
    def of(cls, question: str, passages: Sequence[Citation], follow: int = 0) -> EvidenceForm | None:
        """Candidates from the passages as shown to the model; None when no passage has a usable sentence.
        `follow` > 0: a whole sentence's reply also copies up to that many sentences after it (prose answers)."""
        wanted = content_words(question)
        ranked = []  # (-overlap, order, sentence, passage number, the sentences after it)
        for p in passages:
            said = sentences(p.text.removesuffix(" ..."))
            for i, sentence in enumerate(said):
                ranked.append((-len(wanted & content_words(sentence)), len(ranked), sentence, p.n,
                               tuple(said[i + 1:i + 1 + follow])))
        chosen = sorted(sorted(ranked)[:MAX_SENTENCES], key=lambda item: item[1])
        spans: dict[str, Span] = {}
        for _, _, sentence, n, after in chosen:
            clauses = [c for c in _CLAUSE.split(sentence) if c.strip()]
            for start in range(len(clauses)):
                for end in range(len(clauses), start, -1):
                    text = _tidy(" ".join(clauses[start:end]))
                    whole = start == 0 and end == len(clauses)
                    if _answers(text, wanted) and text not in spans and (whole or len(text.split()) <= MAX_SPAN_WORDS):
                        reply = " ".join((text, *after)) if whole and after else ""
                        spans[text] = Span(text, n, whole, reply)
        return cls(tuple(spans.values())) if spans else None

    def within(self, max_tokens: int, count_tokens: Callable[[str], int]) -> EvidenceForm | None:
        """Only the spans shorter than `max_tokens` tokens (a reply's budget); None when none is. A prose reply
        that runs over keeps as many of its sentences as fit."""
        keep = []
        for span in self.spans:
            if count_tokens(span.text) >= max_tokens:
                continue
            reply = span.reply
            while reply and count_tokens(reply) >= max_tokens:
                reply = " ".join(sentences(reply)[:-1]) if len(sentences(reply)) > 1 else ""
            keep.append(Span(span.text, span.n, span.whole, reply if reply != span.text else ""))
        return EvidenceForm(tuple(keep)) if keep else None

    def texts(self) -> list[str]:
        return [s.text for s in self.spans]


def pick_span(question_vector: np.ndarray, span_vectors: np.ndarray) -> tuple[int, float]:
    """(index, cosine) of the span closest to the question (normalised embeddings; ties: the earlier span)."""
    similarity = np.asarray(span_vectors) @ np.asarray(question_vector)
    best = int(np.argmax(similarity))
    return best, float(similarity[best])
