"""Drift: is recent traffic of a model x prompt version distributed like its
reference window? Two-sample tests whose false-alarm rate is controlled.

Per group, on a bounded random sample of each window:

- inputs and outputs as MiniLM embeddings: the kernel two-sample test (MMD
  with a Gaussian kernel, median-distance bandwidth) with a permutation
  p-value, so it holds whatever the distribution of the embeddings;
- input and output lengths (tokens): Kolmogorov-Smirnov;
- refusal rate of the answers: Fisher's exact test;
- script of the answers (Latin, Cyrillic, CJK...: a cheap offline stand-in
  for a language detector): chi-square on the contingency table;
- judge scores and user ratings: Mann-Whitney U (rank test: scales and ties),
  and for judge scores also a one-sided CUSUM over the recent window in time
  order (a drop that started inside it), with a permutation p-value.

A group drifted when any test's p-value is below ``alpha / tests run``
(Bonferroni): one evaluation of one group raises a false alarm with
probability at most ``alpha``. The evaluator further asks for
``consecutive`` drifted evaluations in a row before alerting.
Everything numeric runs in a worker thread (:func:`compare` is plain code).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

_REFUSAL = re.compile(
    r"\b(I can(?:no|')t (?:help|assist|do|provide|comply)|I(?:'m| am) (?:sorry|unable|not able)"
    r"|I (?:won't|will not) (?:help|assist|provide)|as an AI\b|I must decline)", re.IGNORECASE)
MAX_TEXT = 2000  # characters of a text embedded or inspected
_PERM_BLOCK = 256  # permutations evaluated at once (memory: block x n)


@dataclass(slots=True)
class TestResult:
    name: str  # input_embedding, output_length, refusal_rate, judge_score...
    method: str  # mmd, ks, fisher, chi2, mannwhitney
    statistic: float
    p_value: float
    n_reference: int
    n_recent: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Sample:
    """One window of one group, ready to test (arrays may be empty)."""

    input_len: FloatArray
    output_len: FloatArray
    refusal: npt.NDArray[np.bool_]
    script: list[str]
    scores: FloatArray  # judge scores on 0..1, oldest first
    ratings: FloatArray  # user feedback scores, oldest first
    input_emb: FloatArray | None = None
    output_emb: FloatArray | None = None
    trace_ids: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def mmd_test(x: FloatArray, y: FloatArray, permutations: int,
             rng: np.random.Generator) -> tuple[float, float]:
    """(MMD^2, permutation p-value) of samples ``x`` and ``y`` (rows are
    points). The p-value counts the observed split among the permutations
    ((1 + #{perm >= observed}) / (1 + permutations)): valid for any n."""
    z = np.vstack([x, y]).astype(np.float64)
    n, total = len(x), len(z)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off = d2[np.triu_indices(total, 1)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    k = np.exp(-d2 / (bandwidth if bandwidth > 0 else 1.0))
    base = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    observed = float(base @ k @ base)
    exceed, done = 0, 0
    while done < permutations:
        b = min(_PERM_BLOCK, permutations - done)
        w = rng.permuted(np.tile(base, (b, 1)), axis=1)
        exceed += int((((w @ k) * w).sum(1) >= observed - 1e-12).sum())
        done += b
    return observed, (1 + exceed) / (1 + permutations)


def cusum_test(reference: FloatArray, recent: FloatArray, resamples: int,
               rng: np.random.Generator) -> tuple[float, float]:
    """(largest CUSUM of a drop below the reference mean, permutation
    p-value). ``recent`` in time order. The statistic is Page's one-sided
    CUSUM ``S_t = max(0, S_t-1 + (mean_ref - x_t) - k)`` with slack ``k`` a
    quarter of the reference's standard deviation (tuned to drops of half a
    standard deviation). Under "no change" every value is exchangeable, so
    the p-value recomputes the statistic (reference mean and slack included)
    on random relabellings of both windows and random orders of the recent one."""
    n_ref = len(reference)

    def peaks(ref: FloatArray, cur: FloatArray) -> FloatArray:  # rows are draws
        mu = ref.mean(1)
        sd = ref.std(1)
        k = np.where(sd > 0, 0.25 * sd, 1e-9)
        s = np.zeros(cur.shape[0])
        peak = np.zeros(cur.shape[0])
        for t in range(cur.shape[1]):
            s = np.maximum(0.0, s + (mu - cur[:, t]) - k)
            peak = np.maximum(peak, s)
        return peak

    observed = float(peaks(reference[None, :], recent[None, :])[0])
    pooled = np.concatenate([reference, recent])
    exceed, done = 0, 0
    while done < resamples:
        b = min(_PERM_BLOCK, resamples - done)
        z = rng.permuted(np.tile(pooled, (b, 1)), axis=1)
        exceed += int((peaks(z[:, :n_ref], z[:, n_ref:]) >= observed - 1e-12).sum())
        done += b
    return observed, (1 + exceed) / (1 + resamples)


def script_of(text: str) -> str:
    """The writing system most letters of ``text`` are in ('none' without letters)."""
    counts: dict[str, int] = {}
    for ch in text[:MAX_TEXT]:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = name.split(" ", 1)[0] if name else "OTHER"
            if script in ("CJK", "HIRAGANA", "KATAKANA"):
                script = "CJK"
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=lambda s: counts[s]).lower() if counts else "none"


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text[:MAX_TEXT]))


def compare(ref: Sample, cur: Sample, *, alpha: float, permutations: int, min_samples: int,
            rng: np.random.Generator) -> tuple[list[TestResult], float, bool]:
    """Run every test both samples are big enough for: (results, the
    per-test level alpha / tests, drifted)."""
    out: list[TestResult] = []
    nr, nc = len(ref.input_len), len(cur.input_len)
    if nr >= min_samples and nc >= min_samples:
        for name, a, b in (("input_embedding", ref.input_emb, cur.input_emb),
                           ("output_embedding", ref.output_emb, cur.output_emb)):
            if a is not None and b is not None and len(a) and len(b):
                stat, p = mmd_test(a, b, permutations, rng)
                out.append(TestResult(name, "mmd", stat, p, len(a), len(b)))
        for name, a, b in (("input_length", ref.input_len, cur.input_len),
                           ("output_length", ref.output_len, cur.output_len)):
            if len(a) and len(b) and np.ptp(np.concatenate([a, b])) > 0:
                r = stats.ks_2samp(a, b, method="asymp")
                out.append(TestResult(name, "ks", float(r.statistic), float(r.pvalue), nr, nc))
        ra, rb = int(ref.refusal.sum()), int(cur.refusal.sum())
        if ra + rb > 0:
            res = stats.fisher_exact([[ra, nr - ra], [rb, nc - rb]])
            out.append(TestResult("refusal_rate", "fisher", rb / nc - ra / nr,
                                  float(res.pvalue), nr, nc))
        kinds = sorted(set(ref.script) | set(cur.script))
        if len(kinds) > 1:
            table = [[ref.script.count(s) for s in kinds], [cur.script.count(s) for s in kinds]]
            chi = stats.chi2_contingency(table)
            out.append(TestResult("output_script", "chi2", float(chi.statistic),
                                  float(chi.pvalue), nr, nc))
    for name, a, b in (("judge_score", ref.scores, cur.scores),
                       ("feedback", ref.ratings, cur.ratings)):
        if len(a) >= min_samples and len(b) >= min_samples and np.ptp(np.concatenate([a, b])):
            r = stats.mannwhitneyu(a, b, alternative="two-sided")
            out.append(TestResult(name, "mannwhitney", float(np.mean(b) - np.mean(a)),
                                  float(r.pvalue), len(a), len(b)))
            if name == "judge_score":
                stat, p = cusum_test(a, b, permutations, rng)
                out.append(TestResult("judge_score_drop", "cusum", stat, p, len(a), len(b)))
    each = alpha / len(out) if out else alpha
    return out, each, any(t.p_value < each for t in out)


def novel(ref_emb: FloatArray, cur_emb: FloatArray, n: int) -> list[tuple[int, float]]:
    """The ``n`` recent points least like anything in the reference window
    (index, highest cosine to a reference point), least alike first: an
    alert's evidence of what changed."""
    if n <= 0 or not len(ref_emb) or not len(cur_emb):
        return []
    best = (cur_emb @ ref_emb.T).max(1)
    order = np.argsort(best)[:n]
    return [(int(i), float(best[i])) for i in order]


def text_of(value: Any) -> str:
    """The last user message of a stored request (messages JSON, a Responses
    input, or plain text), cut to ``MAX_TEXT``."""
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, dict):
        value = value.get("messages") or value.get("input") or ""
        return text_of(value)
    if isinstance(value, list):
        for m in reversed(value):
            if isinstance(m, dict) and m.get("role", "user") == "user":
                c = m.get("content", "")
                if isinstance(c, list):
                    c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                return str(c)[:MAX_TEXT]
    return ""


def sample_of(rows: Sequence[tuple[Any, ...]], scores: Sequence[Any],
              ratings: Sequence[Any]) -> Sample:
    """A :class:`Sample` from stored rows (trace_id, input JSON, output,
    prompt tokens, completion tokens) and (score or rating, time) pairs."""
    import orjson

    inputs, outputs = [], []
    for r in rows:
        try:
            inputs.append(text_of(orjson.loads(r[1])) if r[1] else "")
        except orjson.JSONDecodeError:
            inputs.append(str(r[1])[:MAX_TEXT])
        outputs.append((r[2] or "")[:MAX_TEXT])
    return Sample(
        input_len=np.array([float(r[3] or 0) for r in rows]),
        output_len=np.array([float(r[4] or 0) for r in rows]),
        refusal=np.array([is_refusal(o) for o in outputs], dtype=bool),
        script=[script_of(o) for o in outputs],
        scores=np.array([float(s[0]) for s in sorted(scores, key=lambda s: s[1])
                         if s[0] is not None]),
        ratings=np.array([float(s[0]) for s in sorted(ratings, key=lambda s: s[1])
                          if s[0] is not None]),
        trace_ids=[str(r[0]) for r in rows], inputs=inputs, outputs=outputs)

