"""Offline BM25 sparse vectors, token-compatible with fastembed's `Qdrant/bm25`.

Same pipeline as fastembed's Bm25 (so an index built here can be queried by any Qdrant client that
uses `Qdrant/bm25`, and moved to a server): lowercase, split on non-word characters, drop
punctuation, English NLTK stopwords and tokens over 40 characters, Snowball-stem, hash each stem
with murmur3 (`abs(mmh3.hash(stem))`). Documents carry the BM25 term-frequency part
`tf*(k+1) / (tf + k*(1-b+b*len/avg_len))`; queries carry 1.0 per unique stem; the collection's IDF
modifier supplies the inverse document frequency at search time.
"""
from __future__ import annotations

import re
import string
import threading
from collections import Counter
from functools import lru_cache
from pathlib import Path

import mmh3
import snowballstemmer

K = 1.2
B = 0.75
AVG_LEN = 256.0
TOKEN_MAX_LENGTH = 40
_SPLIT = re.compile(r"[^\w]+", re.UNICODE)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    # llama-index-core ships NLTK's data (no download); fastembed's Qdrant/bm25 uses the same English list.
    import llama_index.core
    path = Path(llama_index.core.__file__).parent / "_static" / "nltk_cache" / "corpora" / "stopwords" / "english"
    return frozenset(w.strip() for w in path.read_text().splitlines() if w.strip())


_PUNCT = frozenset(string.punctuation)
# One Snowball stemmer per thread: a stemmer keeps its working word in the instance, so two threads sharing one
# (a question's query vector while an upload is being indexed) corrupt each other's stems or raise IndexError.
_local = threading.local()


def _stemmer():
    if not hasattr(_local, "stemmer"):
        _local.stemmer = snowballstemmer.stemmer("english")
    return _local.stemmer


@lru_cache(maxsize=500_000)
def _stem(word: str) -> str:
    """One word's stem, cached: a corpus repeats its words, and stemming was a fifth of ingest once the
    embedder ran on OpenVINO (bench/embedding.py). The stem is the thread's stemmer's; the cache is shared."""
    return _stemmer().stemWord(word)


def clear_caches() -> None:
    """Forget cached stems and token ids (benchmarks start each system cold)."""
    _stem.cache_clear()
    token_id.cache_clear()


def stems(text: str) -> list[str]:
    stop = stopwords()
    words = [w for w in _SPLIT.split(text.lower()) if w and w not in _PUNCT and w not in stop
             and len(w) <= TOKEN_MAX_LENGTH]
    return [s for s in map(_stem, words) if s]


@lru_cache(maxsize=500_000)
def token_id(stem: str) -> int:
    return abs(mmh3.hash(stem))


def document_vector(text: str) -> tuple[list[int], list[float]]:
    tokens = stems(text)
    if not tokens:
        return [], []
    doc_len = len(tokens)
    norm = K * (1 - B + B * doc_len / AVG_LEN)
    weights: dict[int, float] = {}
    for stem, tf in Counter(tokens).items():
        # Distinct stems may collide in the hash space; fastembed keeps the last, and so do we.
        weights[token_id(stem)] = tf * (K + 1) / (tf + norm)
    return list(weights), list(weights.values())


def query_vector(text: str) -> tuple[list[int], list[float]]:
    ids = sorted({token_id(s) for s in stems(text)})
    return ids, [1.0] * len(ids)
