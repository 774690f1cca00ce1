"""A canary step's outcome window shared by every replica (with Redis), so
the one replica that decides (the lease holder) judges all the traffic,
not only its own share.

Each replica counts its outcomes in memory (requests, errors, a latency
histogram, per tenant too, and judge scores and ratings as they arrive:
no Redis call per request) and adds them every ``FLUSH_S`` to one
Redis hash per canary, step revision and arm
(``<prefix>canary:<name>:<revision>:<arm>``: a new step has a new revision,
so it starts from zero by construction). After its flush, the lease holder
reads both arms and judges. p95 comes from the histogram: log buckets 10%
wide, so it is within 10% of the exact figure, on both arms alike.

Redis away: counts stay in memory (bounded: counters and a fixed histogram)
and are added when it returns; nobody holds the lease, so nobody decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from seawall.experiments.canary import Quality, per_token, quality_summary, tenant_slot

if TYPE_CHECKING:
    from seawall.experiments.canary import Canary
    from seawall.observe.metrics import Metrics
    from seawall.store.redis_link import RedisLink

__all__ = ["Counts", "SharedWindows"]

log = logging.getLogger("seawall.experiments")

FLUSH_S = 0.5
KEEP_S = 7 * 86_400  # a step's counts outlive any rollout step; then Redis drops them
RATIO = 1.1  # histogram bucket width: each bucket's upper bound is 10% above the previous
BUCKETS = 200  # up to 1.1**199 ms (~6 hours): everything
_LOG = math.log(RATIO)


def bucket(ms: float) -> int:
    if not ms > 1.0:  # NaN, negative, under 1 ms
        return 0
    return min(BUCKETS - 1, int(math.log(ms) / _LOG) + 1)


NORM_SCALE = 1000.0  # per-token latencies are bucketed in microseconds (often under 1 ms)
SCORE_SCALE = 1_000_000  # score fractions are summed as integers (HINCRBY) in millionths


def _p95(hist: dict[int, int]) -> float:
    n = sum(hist.values())
    if not n:
        return 0.0
    rank, seen = math.ceil(0.95 * n), 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return RATIO ** b if b else 1.0
    return 0.0  # pragma: no cover


@dataclass(slots=True)
class Counts:
    """One arm's outcomes in one step (errors carry no latency, as in Window):
    totals, and per tenant its requests and errors, a histogram of the
    compared latency and the quality counts (docs/experiments.md: decisions
    are per tenant first)."""

    requests: int = 0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    tenant_hist: dict[str, dict[int, int]] = field(default_factory=dict)
    qualities: dict[str, Quality] = field(default_factory=dict)
    outcomes: dict[str, list[int]] = field(default_factory=dict)  # tenant -> [requests, errors]

    def _outcome(self, tenant: str) -> list[int]:
        return self.outcomes.setdefault(tenant_slot(self.outcomes, tenant), [0, 0])

    def add(self, error: bool, latency_ms: float, tenant: str = "",
            normalised_ms: float | None = None, attempted: bool = True) -> None:
        self.requests += 1
        if attempted:  # as Window.add (Canary.observe says why)
            mine = self._outcome(tenant)
            mine[0] += 1
            mine[1] += error
        if error:
            self.errors += 1
            return
        b = bucket(latency_ms)
        self.hist[b] = self.hist.get(b, 0) + 1
        own = self.tenant_hist.setdefault(tenant_slot(self.tenant_hist, tenant), {})
        nb = bucket((latency_ms if normalised_ms is None else normalised_ms) * NORM_SCALE)
        own[nb] = own.get(nb, 0) + 1

    def add_quality(self, tenant: str, q: Quality) -> None:
        self.qualities.setdefault(tenant_slot(self.qualities, tenant), Quality()).add(q)

    def merge(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for b, c in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + c
        for t, h in other.tenant_hist.items():
            mine = self.tenant_hist.setdefault(t, {})
            for b, c in h.items():
                mine[b] = mine.get(b, 0) + c
        for t, q in other.qualities.items():
            self.add_quality(t, q)
        for t, (n, e) in other.outcomes.items():
            own = self._outcome(t)
            own[0] += n
            own[1] += e

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float:
        return _p95(self.hist)

    def tenant_errors(self) -> dict[str, tuple[int, int]]:
        return {t: (n, e) for t, (n, e) in self.outcomes.items()}

    def tenant_p95(self) -> dict[str, float]:
        return {t: _p95(h) / NORM_SCALE for t, h in self.tenant_hist.items() if h}

    def quality(self) -> dict[str, Quality]:
        return self.qualities

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p95_ms": round(self.p95_ms, 1),
                "tenants": len(self.tenant_hist), **quality_summary(self.qualities),
                "replicas": "all"}

    def fields(self) -> dict[str, int]:
        out = {"n": self.requests, "e": self.errors,
               **{f"b{b}": c for b, c in self.hist.items()}}
        for t, h in self.tenant_hist.items():
            out.update({f"t{b}|{t}": c for b, c in h.items()})
        for t, (n, e) in self.outcomes.items():
            out.update({f"n|{t}": n, f"e|{t}": e})
        for t, q in self.qualities.items():
            out.update({f"qn|{t}": q.judged, f"qs|{t}": round(q.score_sum * SCORE_SCALE),
                        f"rn|{t}": q.rated, f"rx|{t}": q.negative})
        return {k: v for k, v in out.items() if v or k in ("n", "e")}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Counts:
        c = cls()
        for k, v in raw.items():
            try:
                name, n = k.decode(), int(v)
            except ValueError:
                continue
            head, sep, tenant = name.partition("|")
            if name == "n":
                c.requests = n
            elif name == "e":
                c.errors = n
            elif not sep and name.startswith("b") and name[1:].isdigit() \
                    and int(name[1:]) < BUCKETS:
                c.hist[int(name[1:])] = n
            elif sep and head.startswith("t") and head[1:].isdigit() \
                    and int(head[1:]) < BUCKETS:
                c.tenant_hist.setdefault(tenant, {})[int(head[1:])] = n
            elif sep and head in ("n", "e"):
                c.outcomes.setdefault(tenant, [0, 0])[head == "e"] = n
            elif sep and head in ("qn", "qs", "rn", "rx"):
                q = c.qualities.setdefault(tenant, Quality())
                if head == "qn":
                    q.judged = n
                elif head == "qs":
                    q.score_sum = n / SCORE_SCALE
                elif head == "rn":
                    q.rated = n
                else:
                    q.negative = n
        return c


class SharedWindows:
    """Counts outcomes locally, adds them to Redis, and (lease holder only) judges."""

    def __init__(self, link: RedisLink, canaries: dict[str, Canary],
                 revision: Callable[[str], int], may_decide: Callable[[str], bool],
                 metrics: Metrics | None = None) -> None:
        self.link = link
        self.canaries = canaries
        self.revision = revision
        self.may_decide = may_decide
        self.metrics = metrics
        self._pending: dict[tuple[str, int, int], Counts] = {}
        self.seen: dict[str, tuple[Counts, Counts]] = {}  # last read, for status
        self._task: asyncio.Task[None] | None = None

    def _key(self, name: str, revision: int, arm: int) -> str:
        return self.link.key("canary", name, str(revision), str(arm))

    def _counts(self, name: str, arm: int) -> Counts:
        k = (name, self.revision(name), arm)
        counts = self._pending.get(k)
        if counts is None:
            counts = self._pending[k] = Counts()
        return counts

    def add(self, name: str, arm: int, error: bool, latency_ms: float, tenant: str = "",
            normalise: bool = False, output_tokens: int = 0, attempted: bool = True) -> None:
        """On the request path: memory only."""
        self._counts(name, arm).add(error, latency_ms, tenant,
                                    per_token(latency_ms, output_tokens, normalise), attempted)

    def add_quality(self, name: str, arm: int, tenant: str, q: Quality) -> None:
        """A judge score or rating: memory only, added to Redis with the rest."""
        self._counts(name, arm).add_quality(tenant, q)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="seawall-canary-windows")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.flush()

    async def _supervise(self) -> None:
        delay = FLUSH_S
        while True:
            try:
                while True:
                    await asyncio.sleep(FLUSH_S)
                    await self.round()
                    delay = FLUSH_S
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as e:
                self.link.failed(e)  # counts stay pending; tried again next round
            except BaseException:
                if self.metrics is not None:
                    self.metrics.background_restarts.labels("canary_windows").inc()
                log.exception("canary window task failed; restarting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def round(self) -> None:
        """Add this replica's counts, then judge what the lease lets us judge."""
        await self.flush()
        for name, canary in self.canaries.items():
            if canary.state.status == "running" and self.may_decide(name):
                base, cand = await self.read(name, self.revision(name))
                self.seen[name] = (base, cand)
                canary.judge(base, cand)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self.link.client.pipeline(transaction=True) as pipe:  # all or none
                for (name, revision, arm), counts in pending.items():
                    key = self._key(name, revision, arm)
                    for f, n in counts.fields().items():
                        pipe.hincrby(key, f, n)
                    pipe.expire(key, KEEP_S)
                await pipe.execute()
        except BaseException:
            for k, counts in pending.items():  # not added: keep them for the next round
                self._pending.setdefault(k, Counts()).merge(counts)
            raise

    async def read(self, name: str, revision: int) -> tuple[Counts, Counts]:
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key(name, revision, 0))
            pipe.hgetall(self._key(name, revision, 1))
            base, cand = await pipe.execute()
        return Counts.from_hash(base), Counts.from_hash(cand)
