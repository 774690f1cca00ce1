"""Deterministic, sticky assignment of a request to an experiment's arm.

A caller's arm is a pure function of (experiment, sticky id, weights): the
same user lands in the same arm on every replica and after every restart,
with no shared state. The draw is a SHA-256 of the experiment's name and the
id, read as a number in [0, 1); arms own consecutive slices of that interval
in their order, sized by weight. Raising the candidate's weight (a canary
step) moves only callers from the baseline to the candidate, never back.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

__all__ = ["draw", "pick"]


def draw(experiment: str, sticky_id: str | None) -> float:
    """A number in [0, 1): fixed for a sticky id, random without one."""
    if sticky_id is None:
        return secrets.randbelow(1 << 53) / float(1 << 53)
    digest = hashlib.sha256(f"{experiment}\x00{sticky_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def pick(weights: Sequence[float], u: float) -> int:
    """The arm whose slice of [0, 1) holds ``u``."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("at least one arm needs a positive weight")
    edge = 0.0
    for i, w in enumerate(weights):
        edge += w / total
        if u < edge:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u at the float edge
