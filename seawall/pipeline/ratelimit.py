"""Rate limits behind an interface: in-process, or shared by every replica
through Redis (docs/limits.md).

Every limit is a GCRA bucket (a token bucket kept as one timestamp, the
"theoretical arrival time"): a bucket of ``per_minute`` units refills
continuously and holds at most one minute's worth, so a client that spreads
its requests evenly is never refused and a burst of up to a minute's
allowance is accepted. One request may take several buckets at once (the
key's and the tenant's, requests and tokens): it takes all of them or none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from seawall.errors import ServiceUnavailable

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics
    from seawall.store.redis_link import RedisLink

BURST_S = 60.0  # a bucket holds one minute's allowance
# What a failed Redis call raises: its own errors, sockets, our own timeouts.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Charge:
    """``amount`` units from ``bucket``, a bucket of ``per_minute`` units."""

    bucket: str
    per_minute: int
    amount: int = 1


@dataclass(frozen=True, slots=True)
class Decision:
    refused: int = -1  # index of the first charge that did not fit; -1: all were taken
    wait_s: float = 0.0  # until it would fit
    local: bool = False  # decided by the per-process fallback (Redis unreachable)

    @property
    def allowed(self) -> bool:
        return self.refused < 0


ALLOWED = Decision()


class RateLimiter(Protocol):
    async def take(self, charges: Sequence[Charge]) -> Decision:
        """Take every charge, or none if one does not fit."""
        ...

    async def give(self, charges: Sequence[Charge], local: bool = False) -> None:
        """Add ``amount`` (negative: give back) to each bucket whatever its
        level: settles a token estimate with the real count. ``local``: the
        take was decided by the fallback (:attr:`Decision.local`)."""
        ...

    async def acquire(self, bucket: str, per_minute: int) -> float | None:
        """Take one request from ``bucket``; None if allowed, else seconds to wait."""
        ...


def _units(c: Charge) -> int:
    """A charge larger than a whole bucket is taken as a full bucket: it
    passes once the bucket is full, and its real size then puts the bucket
    in debt (refusing later requests) instead of being refused forever."""
    return min(c.amount, c.per_minute)


class InMemoryRateLimiter:
    """The buckets of one process (the embedded default, and the fallback
    of :class:`RedisRateLimiter`)."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._tat: dict[str, float] = {}  # theoretical arrival time per bucket
        self._max = max_buckets

    async def take(self, charges: Sequence[Charge]) -> Decision:
        now = time.monotonic()
        tats: list[float] = []
        for i, c in enumerate(charges):
            inc = BURST_S * _units(c) / c.per_minute
            tat = max(self._tat.get(c.bucket, now), now)
            if tat - now > BURST_S - inc:
                return Decision(i, tat - now - (BURST_S - inc))
            tats.append(tat + inc)
        if len(self._tat) >= self._max:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        for c, tat in zip(charges, tats, strict=True):
            self._tat[c.bucket] = tat
        return ALLOWED

    async def give(self, charges: Sequence[Charge], local: bool = False) -> None:
        now = time.monotonic()
        for c in charges:
            tat = max(self._tat.get(c.bucket, now), now) + BURST_S * c.amount / c.per_minute
            if tat > now:
                self._tat[c.bucket] = tat
            else:
                self._tat.pop(c.bucket, None)

    async def acquire(self, bucket: str, per_minute: int) -> float | None:
        d = await self.take([Charge(bucket, per_minute)])
        return None if d.allowed else d.wait_s


# KEYS: the buckets; ARGV: each one's increment in microseconds. Times are
# Redis's own clock (TIME), so replicas with skewed clocks share one limit.
# Timestamps are whole microseconds written with %d: Lua's default number
# format keeps only 14 digits.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst = 60000000
local tats = {}
for i = 1, #KEYS do
  local inc = tonumber(ARGV[i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  if tat - now > burst - inc then
    return {i, tat - now - (burst - inc)}
  end
  tats[i] = tat + inc
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', tats[i]),
             'PX', math.floor((tats[i] - now) / 1000) + 1)
end
return {0, 0}
"""

_GIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[i])
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%d', tat),
               'PX', math.floor((tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""


class RedisGuard:
    """What every Redis-backed store does when Redis does not answer: note it
    (one log line per outage, a metric), then either answer from the
    per-process fallback (``redis.fail_open``) or refuse with 503."""

    def __init__(self, link: RedisLink, metrics: Metrics | None, what: str) -> None:
        self.link = link
        self.what = what
        self._errors = metrics.redis_errors.labels(what) if metrics is not None else None
        self._fallbacks = metrics.redis_fallbacks.labels(what) if metrics is not None else None

    @property
    def up(self) -> bool:
        return self.link.up

    def ok(self) -> None:
        if self.link.outage:
            self.link.recovered()

    def lost(self, exc: BaseException) -> None:
        self.link.failed(exc)
        if self._errors is not None:
            self._errors.inc()

    def fall_back(self) -> None:
        """Raise 503 unless failing open; count the fallback decision."""
        s = self.link.settings
        if not s.fail_open:
            raise ServiceUnavailable(
                f"Rate limits and budgets cannot be checked (Redis is unreachable) and this "
                f"gateway is set to refuse then (redis.fail_open: false); retry in "
                f"{s.retry_after_s:g}s.", code="limits_unavailable", retry_after=s.retry_after_s)
        if self._fallbacks is not None:
            self._fallbacks.inc()


class RedisRateLimiter:
    """Buckets in Redis, one atomic script per check: exact across replicas.
    Redis unreachable: the per-process ``fallback`` (fail open) or 503
    ``limits_unavailable`` (fail closed), Redis tried again after
    ``redis.retry_after_s``."""

    def __init__(self, link: RedisLink, fallback: InMemoryRateLimiter,
                 metrics: Metrics | None = None) -> None:
        self.link = link
        self.fallback = fallback
        self.guard = RedisGuard(link, metrics, "limits")
        self._take = link.client.register_script(_TAKE)
        self._give = link.client.register_script(_GIVE)

    def _keys(self, charges: Sequence[Charge]) -> list[str]:
        return [self.link.key("rl", c.bucket) for c in charges]

    async def take(self, charges: Sequence[Charge]) -> Decision:
        if not charges:
            return ALLOWED
        if self.guard.up:
            args = [60_000_000 * _units(c) // c.per_minute for c in charges]
            try:
                index, wait_us = await self._take(keys=self._keys(charges), args=args)
            except REDIS_ERRORS as e:
                self.guard.lost(e)
            else:
                self.guard.ok()
                return ALLOWED if index == 0 else Decision(int(index) - 1, int(wait_us) / 1e6)
        self.guard.fall_back()
        d = await self.fallback.take(charges)
        return Decision(d.refused, d.wait_s, local=True)

    async def give(self, charges: Sequence[Charge], local: bool = False) -> None:
        if not charges:
            return
        if not local and self.guard.up:
            args = [60_000_000 * c.amount // c.per_minute for c in charges]
            try:
                await self._give(keys=self._keys(charges), args=args)
                return
            except REDIS_ERRORS as e:
                self.guard.lost(e)
        if local:
            await self.fallback.give(charges)
        # else: taken in Redis, which is now unreachable: the adjustment is
        # lost (the bucket refills by itself).

    async def acquire(self, bucket: str, per_minute: int) -> float | None:
        d = await self.take([Charge(bucket, per_minute)])
        return None if d.allowed else d.wait_s
