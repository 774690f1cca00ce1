"""Token alignment of a semantic-cache candidate: does every content word have a match?

Sentence embeddings average the tokens: "What is the best way to learn Python?" and
"What is the fastest way to learn Java?" share most tokens, so their means sit at cosine
0.9+, and one mean cannot say that "best" has no counterpart on the other side. MiniLM's
contextual token vectors can: the alignment check scores each content word of either
text by its best match among the other text's tokens (BERTScore's greedy matching) and
refuses the candidate when the *worst* word scores under a threshold -- a min where
BERTScore takes a mean, because one unmatched word ("Java", "fastest", an added
qualifier) is enough to change the question. Paraphrases pass: "buy" finds "purchase",
"how do I" finds "what is the way to", and a passive reuses the same content words.

No weights of its own and no word statistics: the two constants (``threshold`` and the
least-matched-word count ``slack``) are settings, chosen on the QQP dev split and the
generated near-miss set (bench/cache_eval.py, bench/nearmiss.py). The query's token
vectors come out of the ONNX run that embeds it; a candidate's are computed on demand
(one short run, in a thread) and kept in a small LRU.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seawall.cache.guard import _STOPWORDS

__all__ = ["Alignment", "TokenText", "align_score", "token_text"]

FloatArray = npt.NDArray[np.float32]

# Function words (the guard's stop words) and contraction tails never need a match.
_SKIP = _STOPWORDS | frozenset("""
s t d ll ve re m isn aren wasn weren don doesn didn won wouldn shouldn couldn can hasn haven hadn mustn needn
""".split())
_WORD = re.compile(r"\w", re.UNICODE)


@dataclass(frozen=True, slots=True)
class TokenText:
    """One text's unit token vectors and, per token, the index of its content word (-1:
    a function word, punctuation or a special token: never required to match)."""

    vectors: FloatArray          # (t, dim), unit rows
    words: npt.NDArray[np.int64]  # (t,), content-word index or -1
    n_words: int


def token_text(vectors: FloatArray, tokens: Sequence[str], word_ids: Sequence[int | None],
               text: str, offsets: Sequence[tuple[int, int]]) -> TokenText:
    """Build a :class:`TokenText` from one encoding (tokens after truncation; specials
    carry ``word_id`` None and are dropped by the caller or marked -1 here)."""
    spans: dict[int, list[int]] = {}
    for i, w in enumerate(word_ids):
        if w is not None:
            spans.setdefault(w, []).append(i)
    words = np.full(len(tokens), -1, dtype=np.int64)
    n = 0
    for idx in spans.values():
        start, end = offsets[idx[0]][0], offsets[idx[-1]][1]
        word = text[start:end].lower()
        if not _WORD.search(word) or word in _SKIP:
            continue
        words[idx] = n
        n += 1
    return TokenText(vectors=vectors, words=words, n_words=n)


@dataclass(frozen=True, slots=True)
class Alignment:
    """The worst-matched content words' scores, either side (lowest first)."""

    worst: tuple[float, ...]

    def refused(self, threshold: float, slack: int = 0) -> bool:
        """Refuse when more than ``slack`` words score under ``threshold``."""
        return len(self.worst) > slack and self.worst[slack] < threshold


def _word_scores(sim: FloatArray, words: npt.NDArray[np.int64], n: int) -> FloatArray:
    """Per content word: the best match of its best-matched piece ("Sub" "##way")."""
    best = sim.max(axis=1) if sim.shape[1] else np.zeros(sim.shape[0], dtype=np.float32)
    out = np.full(n, np.inf, dtype=np.float32)
    mask = words >= 0
    np.minimum.at(out, words[mask], best[mask])  # min over pieces: each must match
    return out


def align_score(a: TokenText, b: TokenText, keep: int = 4) -> Alignment:
    """Greedy token matching both ways; the ``keep`` lowest word scores."""
    if a.n_words == 0 and b.n_words == 0:
        return Alignment(())
    sim = a.vectors @ b.vectors.T
    scores = np.concatenate([_word_scores(sim, a.words, a.n_words),
                             _word_scores(sim.T, b.words, b.n_words)])
    scores.sort()
    return Alignment(tuple(float(s) for s in scores[:keep]))


class TokenCache:
    """A bounded LRU of candidates' token vectors, by text (a cached question is
    checked against many queries)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[str, TokenText] = OrderedDict()

    def get(self, text: str) -> TokenText | None:
        item = self._items.get(text)
        if item is not None:
            self._items.move_to_end(text)
        return item

    def put(self, text: str, item: TokenText) -> None:
        self._items[text] = item
        self._items.move_to_end(text)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
