"""Rate limits behind an interface: in-process now, Redis for many replicas later."""

from __future__ import annotations

import time
from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self, bucket: str, per_minute: int) -> float | None:
        """Take one request from ``bucket``; None if allowed, else seconds to wait."""
        ...


class InMemoryRateLimiter:
    """A token bucket per key (GCRA form: one timestamp per bucket).

    Allows a burst of up to ``per_minute`` requests, refilling continuously,
    so a client that spreads its requests evenly is never refused.
    """

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._tat: dict[str, float] = {}  # theoretical arrival time per bucket
        self._max = max_buckets

    async def acquire(self, bucket: str, per_minute: int) -> float | None:
        now = time.monotonic()
        interval = 60.0 / per_minute
        burst = 60.0  # a full minute's worth of requests may come at once
        tat = max(self._tat.get(bucket, now), now)
        if tat - now > burst - interval:
            return tat - now - (burst - interval)
        if len(self._tat) >= self._max and bucket not in self._tat:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[bucket] = tat + interval
        return None
