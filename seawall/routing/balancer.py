"""Which deployment gets the next request, among those able to take it.

* ``weighted``: random in proportion to ``weight``.
* ``least_inflight``: fewest requests in flight per unit of weight.
* ``latency`` (default): power of two choices: draw two by weight, keep the one
  with the lower expected wait, EWMA time-to-first-token x (in-flight + 1).
  Two random draws instead of the global best avoids the herd that "always
  the fastest" causes when every request sees the same numbers (Mitzenmacher).
  A deployment with no TTFT sample yet counts as fastest, so it gets tried.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from seawall.routing.health import DeploymentHealth


class Candidate(Protocol):
    @property
    def weight(self) -> float: ...
    @property
    def health(self) -> DeploymentHealth: ...


C = TypeVar("C", bound=Candidate)


def _cost(c: Candidate) -> float:
    ewma = c.health.ewma_ttft_s
    return (ewma or 0.0) * (c.health.inflight + 1)


def choose(candidates: Sequence[C], strategy: str, rng: random.Random) -> C:
    if len(candidates) == 1:
        return candidates[0]
    weights = [c.weight for c in candidates]
    if strategy == "weighted":
        return rng.choices(candidates, weights)[0]
    if strategy == "least_inflight":
        best = min(c.health.inflight / c.weight for c in candidates)
        return rng.choice([c for c in candidates if c.health.inflight / c.weight == best])
    a, b = rng.choices(candidates, weights, k=2)
    if a is b:
        others = [c for c in candidates if c is not a]
        b = rng.choices(others, [c.weight for c in others])[0]
    ca, cb = _cost(a), _cost(b)
    if ca == cb:
        return a
    return a if ca < cb else b
