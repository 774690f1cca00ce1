"""A count of events over the last few seconds, in one-second buckets: what
the circuit breaker's error rate and the retry budget are both measured on."""

from __future__ import annotations


class SlidingCount:
    """Adding is a dict update; old buckets are dropped as new ones start, so
    memory stays bounded by the window however busy the process is."""

    __slots__ = ("seconds", "_buckets")

    def __init__(self, seconds: float) -> None:
        self.seconds = max(1, int(seconds))
        self._buckets: dict[int, int] = {}

    def add(self, now: float) -> None:
        sec = int(now)
        buckets = self._buckets
        if sec not in buckets and len(buckets) > self.seconds:
            oldest = sec - self.seconds
            for k in [k for k in buckets if k <= oldest]:
                del buckets[k]
        buckets[sec] = buckets.get(sec, 0) + 1

    def total(self, now: float) -> int:
        """Events in the window ending now."""
        oldest = int(now) - self.seconds
        return sum(n for sec, n in self._buckets.items() if sec > oldest)

    def clear(self) -> None:
        self._buckets.clear()
