"""Deterministic, sticky assignment of a request to an experiment's arm.

A caller's arm is a pure function of (secret salt, experiment, sticky id,
weights): the same user lands in the same arm on every replica and after
every restart. The draw is an HMAC-SHA-256 keyed by the salt (kept in the
store, or set in config) of the experiment's name and the id, read as a
number in [0, 1): without the salt a client cannot compute which ``user``
values land in which arm (so cannot pick its arm). Arms own consecutive slices of that interval
in their order, sized by weight. Raising the candidate's weight (a canary
step) moves only callers from the baseline to the candidate, never back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = ["draw", "pick"]


def draw(experiment: str, sticky_id: str | None, salt: str = "") -> float:
    """A number in [0, 1): fixed for a sticky id (and salt), random without one."""
    if sticky_id is None:
        return secrets.randbelow(1 << 53) / float(1 << 53)
    msg = f"{experiment}\x00{sticky_id}".encode()
    digest = (hmac.new(salt.encode(), msg, hashlib.sha256).digest() if salt
              else hashlib.sha256(msg).digest())
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
