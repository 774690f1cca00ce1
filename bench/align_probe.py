#!/usr/bin/env python3
"""Probe: does a token-alignment check (BERTScore-style, min instead of mean) over
MiniLM's contextual token vectors separate QQP duplicates from non-duplicates better
than the cosine threshold? Measured on QQP dev only (id < 60000) and bench/nearmiss.py.

Answer (bench/results/cache-align-probe-dev.md): no. Every content word of either text
must find a counterpart above ``tau`` (``slack`` words may miss); at cosine 0.92 it moves
labelled precision from 0.870 to 0.882-0.901 but costs duplicate hits at the same rate
as raising the threshold does (0.93 alone: 0.886 at 32.3%), and it does not move the
near-miss set (whose misses share every word). QQP duplicates often add or drop a
qualifier ("Who exactly is the Dalai Lama?"), which a min-alignment refuses. So it is
not part of the shipped verifier; this file keeps the measurement reproducible.

Usage: .venv/bin/python bench/align_probe.py   (embeds ~30k texts once, cached in /tmp)
"""

from __future__ import annotations

import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.cache.guard import _STOPWORDS, _words  # noqa: E402

__all__ = ["Alignment", "TokenText", "align_score", "token_text"]

FloatArray = npt.NDArray[np.float32]

# Function words (the guard's stop words) and contraction tails never need a match.
_SKIP = _STOPWORDS | _words("""
s t d ll ve re m isn aren wasn weren don doesn didn won wouldn shouldn couldn can hasn haven
hadn mustn needn
""")
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


# ------------------------------------------------------------------ the probe

TOKENS = Path("/tmp/seawall-cache-eval/align-tokens.pkl")


def token_rows(texts: Sequence[str]) -> dict[str, TokenText]:
    """Each text's token vectors (one ONNX run per 64 texts), cached in /tmp."""
    from seawall.ml.embedder import Embedder

    cached: dict[str, TokenText] = pickle.loads(TOKENS.read_bytes()) if TOKENS.exists() else {}
    missing = sorted({t for t in texts if t not in cached}, key=len)
    if missing:
        e = Embedder()
        e.warm_up()
        tok, session = e._tokenizer, e._session  # noqa: SLF001 - a probe, not the package
        for s in range(0, len(missing), 64):
            batch = missing[s:s + 64]
            encodings = tok.encode_batch(batch)
            feeds, _ = e._feeds(encodings)  # noqa: SLF001
            (hidden,) = session.run([e._output_name], feeds)  # noqa: SLF001
            for text, row, enc in zip(batch, np.asarray(hidden), encodings, strict=True):
                keep = [i for i, (m, sp) in enumerate(zip(enc.attention_mask,
                                                           enc.special_tokens_mask,
                                                           strict=True)) if m and not sp]
                v = row[keep]
                v = (v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None))
                cached[text] = token_text(v.astype(np.float32), [enc.tokens[i] for i in keep],
                                          [enc.word_ids[i] for i in keep], text,
                                          [enc.offsets[i] for i in keep])
        TOKENS.parent.mkdir(parents=True, exist_ok=True)
        TOKENS.write_bytes(pickle.dumps(cached))
    return cached


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cache_eval as ce
    import nearmiss

    pairs = ce.load_pairs("dev", None)
    emb = ce.EmbeddingCache()
    side = ce.SeawallSide(emb, ce.GuardAndVerifier())
    entries = list(dict.fromkeys(p.q1 for p in pairs))
    entry_set = set(entries)
    side.insert(entries)
    judge = ce.Judge(pairs)
    idx, sims = side.nearest([p.q2 for p in pairs])
    assert side.guard is not None
    cands = []  # (query index, entry text, cosine, judge's kind), passing guard + verifier
    for qi, p in enumerate(pairs):
        if p.q2 in entry_set:
            continue
        for i, sim in zip(idx[qi].tolist(), sims[qi].tolist(), strict=True):
            if sim < 0.90:
                break
            if side.guard.check(p.q2, side.texts[i]) is None:
                cands.append((qi, side.texts[i], sim, judge.kind(p, side.texts[i])))
    dup_queries = sum(p.dup for p in pairs if p.q2 not in entry_set)
    nm = nearmiss.generate()
    rows = token_rows([t for c in cands for t in (pairs[c[0]].q2, c[1])]
                      + [t for p in nm for t in (p.first, p.second)])
    scores = [align_score(rows[pairs[qi].q2], rows[e]) for qi, e, _, _ in cands]
    nm_ok = [side.guard.check(p.second, p.first) is None for p in nm]
    nm_cos = (emb([p.first for p in nm]) * emb([p.second for p in nm])).sum(axis=1)
    nm_scores = [align_score(rows[p.second], rows[p.first]) for p in nm]

    def qqp(t: float, tau: float, slack: int) -> tuple[float, float, int]:
        served: dict[int, str] = {}
        for (qi, _e, sim, kind), a in zip(cands, scores, strict=True):
            if qi in served or sim < t or a.refused(tau, slack):
                continue
            served[qi] = kind
        correct_dup = sum(1 for qi, k in served.items() if k == "correct" and pairs[qi].dup)
        correct = sum(1 for k in served.values() if k == "correct")
        labelled = sum(1 for k in served.values() if k == "labelled")
        return correct_dup / dup_queries, correct / max(correct + labelled, 1), len(served)

    def near(t: float, tau: float, slack: int) -> tuple[float, float]:
        hit = [ok and c >= t and not a.refused(tau, slack)
               for ok, c, a in zip(nm_ok, nm_cos, nm_scores, strict=True)]
        right = sum(h and p.same for h, p in zip(hit, nm, strict=True))
        return right / max(sum(hit), 1), right / sum(p.same for p in nm)

    print("| cosine | alignment (tau, slack) | dup hit rate | precision (labelled) | hits | "
          "near-miss precision | paraphrases answered |")
    print("|---|---|---|---|---|---|---|")
    for t in (0.90, 0.92, 0.93, 0.94):
        for tau, slack in ((-1.0, 0), (0.4, 0), (0.5, 0), (0.6, 0), (0.7, 0), (0.6, 1)):
            d, prec, n = qqp(t, tau, slack)
            npre, nrec = near(t, tau, slack)
            label = "off" if tau < 0 else f"{tau}, {slack}"
            print(f"| {t:.2f} | {label} | {d:.3f} | {prec:.3f} | {n} | {npre:.3f} | {nrec:.3f} |")


if __name__ == "__main__":
    main()
