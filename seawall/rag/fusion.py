"""Combining the BM25 and dense rankings into one.

* Reciprocal-rank fusion (Cormack et al., 2009): ``sum w / (k + rank)``; needs
  no score calibration, which is why it is the common default.
* Weighted score fusion (a convex combination of min-max normalised scores,
  Bruch et al., 2023): uses how far apart the scores are, not only their
  order, and beat RRF on SciFact's train queries (bench/rag_eval.py).
Both take rankings of ``(item, score)`` best first and return the fused
scores, best first.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

__all__ = ["reciprocal_rank", "weighted_scores"]

K = TypeVar("K", bound=Hashable)


def reciprocal_rank(rankings: Sequence[Sequence[tuple[K, float]]], k: float = 60.0,
                    weights: Sequence[float] | None = None) -> list[tuple[K, float]]:
    if k <= 0:
        raise ValueError("the RRF constant k must be positive")
    weights = weights or [1.0] * len(rankings)
    fused: dict[K, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def _normalised(ranking: Sequence[tuple[K, float]]) -> dict[K, float]:
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    lo, hi = min(scores), max(scores)
    if hi - lo <= 1e-12:
        return {item: 1.0 for item, _ in ranking}
    return {item: (s - lo) / (hi - lo) for item, s in ranking}


def weighted_scores(rankings: Sequence[Sequence[tuple[K, float]]],
                    weights: Sequence[float]) -> list[tuple[K, float]]:
    """``sum w_i * minmax_i(score)``; an item missing from a ranking scores 0
    there (it was below that ranking's cut, so at or under its minimum)."""
    fused: dict[K, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for item, s in _normalised(ranking).items():
            fused[item] = fused.get(item, 0.0) + w * s
    return sorted(fused.items(), key=lambda kv: -kv[1])
