"""From a score s = P(cheap tier is good enough) to a tier, for N tiers.

Why thresholds on one score: tiers are ordered cheapest -> strongest, and a
request that a cheaper tier can handle can be handled by every stronger one,
so one number per request and N-1 descending cut points are enough:
``s >= t[0]`` -> tier 0, ``t[0] > s >= t[1]`` -> tier 1, ..., else the last.

Static thresholds drift when traffic changes; :class:`CostTarget` instead
keeps the recent score distribution and places the cut points at its
quantiles, so a chosen share of traffic goes to each tier (e.g. "30% strong").
It targets a *traffic* share. A *budget* share (share of what all-strong
would cost) maps to a traffic share when the tiers' per-request cost ratio is
roughly constant: see :func:`traffic_share_for_budget`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CostTarget", "TierChoice", "TierPolicy", "traffic_share_for_budget"]


@dataclass(frozen=True, slots=True)
class TierChoice:
    """The chosen tier (index into the cheapest -> strongest list) and the cut
    point that decided it (None when the score fell below every threshold)."""

    index: int
    tier: str
    score: float
    threshold: float | None


def _check_thresholds(thresholds: Sequence[float], n_tiers: int) -> tuple[float, ...]:
    values = tuple(float(t) for t in thresholds)
    if len(values) != n_tiers - 1:
        raise ValueError(f"{n_tiers} tiers need {n_tiers - 1} thresholds, got {len(values)}")
    if any(not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"thresholds must lie in [0, 1], got {list(values)}")
    if any(a <= b for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"thresholds must strictly decrease (cheapest tier first), "
                         f"got {list(values)}")
    return values


class TierPolicy:
    """Static cut points: ``tiers`` cheapest -> strongest, ``thresholds``
    descending, one fewer than the tiers."""

    def __init__(self, tiers: Sequence[str], thresholds: Sequence[float]) -> None:
        if len(tiers) < 2:
            raise ValueError("routing needs at least 2 tiers")
        if len(set(tiers)) != len(tiers):
            raise ValueError(f"tier names must be unique, got {list(tiers)}")
        self.tiers = tuple(tiers)
        self.thresholds = _check_thresholds(thresholds, len(tiers))

    def choose(self, score: float, thresholds: Sequence[float] | None = None) -> TierChoice:
        """The tier for ``score`` (``thresholds`` overrides the static ones, e.g.
        from :meth:`CostTarget.thresholds`)."""
        cuts = self.thresholds if thresholds is None else thresholds
        for index, cut in enumerate(cuts):
            if score >= cut:
                return TierChoice(index, self.tiers[index], score, cut)
        return TierChoice(len(self.tiers) - 1, self.tiers[-1], score, None)


class CostTarget:
    """Cut points that send target shares of recent traffic to each tier.

    ``shares``: per tier, cheapest -> strongest, summing to 1 (for two tiers,
    ``CostTarget.strong_share(0.3)``). It keeps the last ``window`` scores in
    arrival order (a deque) and in sorted order (a list kept with bisect), so
    an observation is O(log n) to find plus a memmove of at most ``window``
    floats (~1 µs at 2,000), and a quantile is O(1). Until ``min_samples``
    scores are in, ``thresholds()`` returns ``fallback``. Thread-safe.
    """

    def __init__(self, shares: Sequence[float], *, window: int = 2000, min_samples: int = 200,
                 fallback: Sequence[float]) -> None:
        if len(shares) < 2:
            raise ValueError("a cost target needs shares for at least 2 tiers")
        if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"shares must be >= 0 and sum to 1, got {list(shares)}")
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError("need window >= 1 and 1 <= min_samples <= window")
        self.shares = tuple(float(s) for s in shares)
        self.fallback = _check_thresholds(fallback, len(shares))
        self.window = window
        self.min_samples = min_samples
        self._arrivals: deque[float] = deque()
        self._sorted: list[float] = []
        self._lock = threading.Lock()

    @classmethod
    def strong_share(cls, share: float, *, fallback: float = 0.5, window: int = 2000,
                     min_samples: int = 200) -> CostTarget:
        """Two tiers: send ``share`` of traffic to the strong one."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"strong share must lie in [0, 1], got {share}")
        return cls((1.0 - share, share), window=window, min_samples=min_samples,
                   fallback=(fallback,))

    def observe(self, score: float) -> None:
        """Record a request's score (call it for every routed request)."""
        value = float(score)
        with self._lock:
            if len(self._arrivals) == self.window:
                old = self._arrivals.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._arrivals.append(value)
            bisect.insort(self._sorted, value)

    def __len__(self) -> int:
        return len(self._arrivals)

    def thresholds(self) -> tuple[float, ...]:
        """Current cut points (descending): tier i gets about ``shares[i]`` of
        traffic distributed like the window. Ties at a cut go to the cheaper tier."""
        with self._lock:
            n = len(self._sorted)
            if n < self.min_samples:
                return self.fallback
            cuts: list[float] = []
            above = 0.0
            for share in self.shares[:-1]:
                above += share
                # the score with a share `above` of the window at or over it
                rank = max(0, round(n * (1.0 - above)))
                cut = (self._sorted[rank] if rank < n
                       else math.nextafter(self._sorted[-1], math.inf))  # nothing cheap
                if cuts and cut >= cuts[-1]:
                    cut = cuts[-1] - 1e-9  # keep them strictly decreasing
                cuts.append(cut)
            return tuple(cuts)

    def threshold(self) -> float:
        """Two tiers: the single cut point."""
        return self.thresholds()[0]


def traffic_share_for_budget(budget_share: float, cost_ratio: float) -> float:
    """Traffic share for the strong tier that spends ``budget_share`` of the
    all-strong cost, when a cheap request costs ``cost_ratio`` times a strong
    one (e.g. 0.6/30 per output token = 0.02). Spend is x + (1 - x) * r of
    all-strong, so x = (b - r) / (1 - r), clipped to [0, 1]."""
    if not 0.0 <= cost_ratio < 1.0:
        raise ValueError("cost_ratio must lie in [0, 1): the cheap tier must cost less")
    return min(1.0, max(0.0, (budget_share - cost_ratio) / (1.0 - cost_ratio)))
