"""Budgets: USD a key or a tenant may spend per UTC day or month
(docs/limits.md).

A request *reserves* its estimated cost before the call and *settles* with
the real cost after it (the reservation is released and the cost added to
what was spent). A reservation is refused when what was spent plus what is
reserved by requests in flight plus this estimate would pass the limit, so
overspend is bounded by how far real costs exceed their estimates for the
requests in flight. Amounts are kept in whole micro-dollars: sums are exact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from redis.exceptions import RedisError

from seawall.pipeline.ratelimit import REDIS_ERRORS, RedisGuard

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics
    from seawall.store.redis_link import RedisLink

log = logging.getLogger("seawall.budgets")

PERIODS = ("day", "month")


def period_bounds(period: str, now: float) -> tuple[str, float, float]:
    """(id, start, end as Unix times) of the UTC day or month holding ``now``."""
    d = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = d.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start.timestamp(), (
            start + timedelta(days=1)).timestamp()
    if period == "month":
        start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        return start.strftime("%Y-%m"), start.timestamp(), end.timestamp()
    raise ValueError(f"budget period must be one of {PERIODS}, not {period!r}")


def period_of(period: str, now: float) -> tuple[str, float]:
    """(id, end as a Unix time) of the UTC day or month holding ``now``."""
    pid, _, end = period_bounds(period, now)
    return pid, end


def micros(usd: float) -> int:
    return round(usd * 1e6)


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    scope: str  # "key:<id>" or "tenant:<name>"
    usd: float
    period: str  # "day" | "month" (UTC)
    label: str = ""  # for people: "key ci-bot", "tenant acme"
    tenant: str = ""  # whose trace records hold this spend (seeding after a restart)
    key_id: str | None = None  # None: the whole tenant
    since: float = 0.0  # reset at this time: spend before it does not count

    def start(self, now: float) -> float:
        """When this period's counted spend starts (its start, or the reset)."""
        return max(period_bounds(self.period, now)[1], self.since)

    def bucket(self, now: float) -> tuple[str, float]:
        """(the name of this period's spend, when the period ends). A reset
        starts a new bucket (seeded from the records after the reset)."""
        pid, start, end = period_bounds(self.period, now)
        reset = f":r{int(self.since)}" if self.since > start else ""
        return f"{self.scope}:{self.period}:{pid}{reset}", end


@dataclass(slots=True)
class Reservation:
    """An estimate held against one or more budgets until settled."""

    buckets: list[tuple[str, float]]  # (bucket, period end) per limit
    amount: int  # micro-dollars
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    local: bool = False  # held by the per-process fallback (Redis unreachable)


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: BudgetLimit
    spent_usd: float
    reserved_usd: float
    resets_at: float  # Unix time the period ends


class Budgets(Protocol):
    async def reserve(self, limits: Sequence[BudgetLimit], usd: float) -> Reservation | Refusal:
        """Hold ``usd`` against every limit, or against none if one would pass."""
        ...

    async def settle(self, reservation: Reservation, usd: float) -> list[float | None]:
        """Release ``reservation`` and add the real cost ``usd`` to what was
        spent. Returns each budget's spend (USD) right after this cost was
        added, in the order of the reservation's budgets (``None`` where it
        was not counted: Redis away, or a budget not started yet), so the
        50/80/100% marks are read from the same step that counted the cost."""
        ...

    async def spent(self, limit: BudgetLimit) -> tuple[float, float]:
        """(spent, reserved) in USD in the current period of ``limit``."""
        ...


@runtime_checkable
class SpendLedger(Protocol):
    """Where spend was recorded before this process started: the trace records."""

    async def spent_since(self, tenant: str, key_id: str | None, since: float) -> float: ...


def _refuses(spent: int, reserved: int, amount: int, limit: int) -> bool:
    return spent >= limit or spent + reserved + amount > limit


class InMemoryBudgets:
    """Spend in this process's memory: the embedded default (one process) and
    the fallback of :class:`RedisBudgets`. A period's spend starts from what
    the ``ledger`` (the trace records) holds for it, read once per budget and
    period the first time a request needs it, so a restart does not reset a
    budget (docs/limits.md)."""

    def __init__(self, max_buckets: int = 100_000, ledger: SpendLedger | None = None) -> None:
        self._b: dict[str, list[float]] = {}  # bucket -> [spent, reserved, period end]
        self._max = max_buckets
        self.ledger = ledger
        self._seeding: dict[str, asyncio.Future[float]] = {}

    async def _seed(self, lim: BudgetLimit, bucket: str, now: float) -> None:
        """Start ``bucket`` from the ledger; concurrent first requests share one read."""
        if self.ledger is None or bucket in self._b or not lim.tenant:
            return
        read = self._seeding.get(bucket)
        if read is None:
            read = self._seeding[bucket] = asyncio.ensure_future(
                self._read(lim.tenant, lim.key_id, lim.start(now)))
            read.add_done_callback(lambda _: self._seeding.pop(bucket, None))
        usd = await asyncio.shield(read)
        if bucket not in self._b:
            self._b[bucket] = [micros(usd), 0, lim.bucket(now)[1]]

    async def _read(self, tenant: str, key_id: str | None, since: float) -> float:
        assert self.ledger is not None
        try:
            return await self.ledger.spent_since(tenant, key_id, since)
        except Exception:
            log.warning("could not read past spend for tenant %s; counting from 0", tenant,
                        exc_info=True)
            return 0.0

    def _prune(self, now: float) -> None:
        if len(self._b) >= self._max:
            self._b = {k: v for k, v in self._b.items() if v[2] > now}

    async def reserve(self, limits: Sequence[BudgetLimit], usd: float) -> Reservation | Refusal:
        now = time.time()
        amount = math.ceil(usd * 1e6)
        buckets = [lim.bucket(now) for lim in limits]
        if self.ledger is not None:
            for lim, (b, _) in zip(limits, buckets, strict=True):
                await self._seed(lim, b, now)
        # From here on, no await: the check and the reservation are one step.
        for lim, (b, end) in zip(limits, buckets, strict=True):
            spent, reserved, _ = self._b.get(b, (0, 0, end))
            if _refuses(int(spent), int(reserved), amount, micros(lim.usd)):
                return Refusal(lim, spent / 1e6, reserved / 1e6, end)
        self._prune(now)
        for b, end in buckets:
            self._b.setdefault(b, [0, 0, end])[1] += amount
        return Reservation(buckets, amount)

    async def settle(self, reservation: Reservation, usd: float) -> list[float | None]:
        after: list[float | None] = []
        for b, end in reservation.buckets:
            row = self._b.setdefault(b, [0, 0, end])
            row[1] = max(0, row[1] - reservation.amount)
            row[0] += micros(usd)
            after.append(row[0] / 1e6)
        reservation.amount = 0
        return after

    async def spent(self, limit: BudgetLimit) -> tuple[float, float]:
        b, _ = limit.bucket(time.time())
        spent, reserved, _ = self._b.get(b, (0, 0, 0))
        return spent / 1e6, reserved / 1e6


# Per budget three keys: K (hash: spent, reserved), H (hash: reservation id ->
# amount), Z (sorted set: reservation id by expiry in ms). Reservations left
# by a replica that died mid-request expire after reservation_ttl_s.
_PURGE = """
local function purge(k, h, z, now)
  local stale = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 100)
  for _, rid in ipairs(stale) do
    local v = redis.call('HGET', h, rid)
    if v then
      redis.call('HINCRBY', k, 'reserved', -tonumber(v))
      redis.call('HDEL', h, rid)
    end
    redis.call('ZREM', z, rid)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: id, amount, ttl_ms, seeded (1: a budget must first be started from the
# ledger, answered {-b}), then per budget: limit, expire-at (Unix seconds)
_RESERVE = _PURGE + """
local id, amount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 3
for b = 0, n - 1 do
  local k, h, z = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  if ARGV[4] == '1' and redis.call('HEXISTS', k, 'seeded') == 0 then
    return {-(b + 1), 0, 0}
  end
  purge(k, h, z, now)
  local spent = tonumber(redis.call('HGET', k, 'spent')) or 0
  local reserved = tonumber(redis.call('HGET', k, 'reserved')) or 0
  local limit = tonumber(ARGV[5 + 2 * b])
  if spent >= limit or spent + reserved + amount > limit then
    return {b + 1, spent, reserved}
  end
end
for b = 0, n - 1 do
  local k, h, z = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  local at = ARGV[6 + 2 * b]
  redis.call('HINCRBY', k, 'reserved', ARGV[2])
  redis.call('HSET', h, id, ARGV[2])
  redis.call('ZADD', z, now + ttl, id)
  redis.call('EXPIREAT', k, at)
  redis.call('EXPIREAT', h, at)
  redis.call('EXPIREAT', z, at)
end
return {0, 0, 0}
"""

# ARGV: id, real cost, seeded, then per budget: expire-at. A budget not
# started from the ledger (Redis restarted mid-request) is left for the ledger
# to count when it is started. Answers each budget's spend after this cost
# (-1: not counted), so the caller needs no second read.
_SETTLE = _PURGE + """
local id = ARGV[1]
local n = #KEYS / 3
local out = {}
for b = 0, n - 1 do
  local k, h, z = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  local v = redis.call('HGET', h, id)
  if v then
    redis.call('HINCRBY', k, 'reserved', -tonumber(v))
    redis.call('HDEL', h, id)
    redis.call('ZREM', z, id)
  end
  out[b + 1] = -1
  if ARGV[3] ~= '1' or redis.call('HEXISTS', k, 'seeded') == 1 then
    out[b + 1] = redis.call('HINCRBY', k, 'spent', ARGV[2])
    redis.call('EXPIREAT', k, ARGV[4 + b])
  end
end
return out
"""

# KEYS: one budget; ARGV: spend found in the ledger, expire-at. The first
# replica to start a budget wins; the others' reads are dropped.
_SEED = """
if redis.call('HSETNX', KEYS[1], 'seeded', 1) == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return 0
"""


class RedisBudgets:
    """Spend in Redis, shared by every replica; check-and-reserve is one
    atomic script. Keys expire an hour after their period ends. With a
    ``ledger`` (the trace records), a budget Redis does not hold yet (a new
    period, or Redis restarted empty) is started from it first. Redis
    unreachable: the per-process ``fallback`` (fail open) or 503
    ``limits_unavailable`` (fail closed)."""

    GRACE_S = 3600  # keep a period's spend this long after it ends

    def __init__(self, link: RedisLink, fallback: InMemoryBudgets,
                 metrics: Metrics | None = None, reservation_ttl_s: float = 900.0,
                 ledger: SpendLedger | None = None) -> None:
        self.link = link
        self.fallback = fallback
        self.ledger = ledger
        self.guard = RedisGuard(link, metrics, "budgets")
        self.ttl_ms = int(reservation_ttl_s * 1000)
        self._reserve = link.client.register_script(_RESERVE)
        self._settle = link.client.register_script(_SETTLE)
        self._seed = link.client.register_script(_SEED)

    async def _start(self, lim: BudgetLimit, bucket: tuple[str, float], now: float) -> None:
        """Start ``bucket`` in Redis from what the ledger says was spent."""
        assert self.ledger is not None
        usd = 0.0
        if lim.tenant:
            try:
                usd = await self.ledger.spent_since(lim.tenant, lim.key_id, lim.start(now))
            except Exception:
                log.warning("could not read past spend for tenant %s; counting from 0",
                            lim.tenant, exc_info=True)
        await self._seed(keys=[self.link.key("budget", bucket[0])],
                         args=[micros(usd), int(bucket[1]) + self.GRACE_S])

    def _keys(self, buckets: Sequence[tuple[str, float]]) -> list[str]:
        keys: list[str] = []
        for b, _ in buckets:
            k = self.link.key("budget", b)
            keys += (k, k + ":res", k + ":exp")
        return keys

    async def reserve(self, limits: Sequence[BudgetLimit], usd: float) -> Reservation | Refusal:
        now = time.time()
        r = Reservation([lim.bucket(now) for lim in limits], math.ceil(usd * 1e6))
        if self.guard.up:
            args: list[int | str] = [r.id, r.amount, self.ttl_ms,
                                     int(self.ledger is not None)]
            for lim, (_, end) in zip(limits, r.buckets, strict=True):
                args += (micros(lim.usd), int(end) + self.GRACE_S)
            try:
                for _ in range(len(limits) + 1):
                    index, spent, reserved = await self._reserve(keys=self._keys(r.buckets),
                                                                 args=args)
                    if index >= 0:
                        break
                    await self._start(limits[-index - 1], r.buckets[-index - 1], now)
                else:
                    raise RedisError("a budget could not be started in Redis")
            except REDIS_ERRORS as e:
                self.guard.lost(e)
            else:
                self.guard.ok()
                if index == 0:
                    return r
                i = int(index) - 1
                return Refusal(limits[i], int(spent) / 1e6, int(reserved) / 1e6,
                               r.buckets[i][1])
        self.guard.fall_back()
        found = await self.fallback.reserve(limits, usd)
        if isinstance(found, Reservation):
            found.local = True
        return found

    async def settle(self, reservation: Reservation, usd: float) -> list[float | None]:
        if reservation.local:
            return await self.fallback.settle(reservation, usd)
        unknown: list[float | None] = [None] * len(reservation.buckets)
        if not self.guard.up:
            return unknown  # the reservation expires in Redis; this cost is not counted there
        args: list[int | str] = [reservation.id, micros(usd), int(self.ledger is not None)]
        args += [int(end) + self.GRACE_S for _, end in reservation.buckets]
        try:
            after = await self._settle(keys=self._keys(reservation.buckets), args=args)
        except REDIS_ERRORS as e:
            self.guard.lost(e)
            return unknown
        return [int(v) / 1e6 if int(v) >= 0 else None for v in after]

    async def spent(self, limit: BudgetLimit) -> tuple[float, float]:
        b, _ = limit.bucket(time.time())
        spent, reserved = await self.link.client.hmget(self.link.key("budget", b),
                                                       ["spent", "reserved"])
        return int(spent or 0) / 1e6, int(reserved or 0) / 1e6
