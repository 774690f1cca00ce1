"""A lease: which one process takes a decision for all of them (a canary's
promotion or rollback), so replicas never race each other to it.

:class:`RedisLease` holds ``<prefix>lease:<name>`` (SET NX PX, renewed every
third of its TTL by the holder). A process believes it holds the lease for a
quarter less than the TTL it set, counted from before it asked, so two
processes never both believe it. When the holder dies or loses Redis, the key
expires and another replica takes over within one TTL. With Redis down
nobody holds it: decisions wait (what they decide stays as it was).
The store's compare-and-set stays the last guard either way.

:class:`LocalLease` (one process, no Redis): always held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics
    from seawall.store.redis_link import RedisLink

__all__ = ["Lease", "LocalLease", "RedisLease"]

log = logging.getLogger("seawall.lease")

# Take the key if free, extend it if ours; 1 = held.
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(Protocol):
    @property
    def held(self) -> bool:
        """Cheap (no I/O): may this process decide now?"""
        ...

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class LocalLease:
    """One process decides alone."""

    held = True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLease:
    def __init__(self, link: RedisLink, name: str, ttl_s: float = 10.0,
                 metrics: Metrics | None = None) -> None:
        self.link = link
        self.key = link.key("lease", name)
        self.name = name
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.owner = uuid.uuid4().hex
        self._held_until = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return time.monotonic() < self._held_until

    async def start(self) -> None:
        await self.renew()
        self._task = asyncio.create_task(self._supervise(), name=f"seawall-lease-{self.name}")

    async def renew(self) -> bool:
        """Take or extend the lease; False if another process has it or
        Redis did not answer (then our belief runs out on its own)."""
        asked_at = time.monotonic()
        was = self.held
        try:
            got = await self.link.client.eval(
                _ACQUIRE, 1, self.key, self.owner, int(self.ttl_s * 1000))
        except (RedisError, OSError, TimeoutError) as e:
            self.link.failed(e)
            return False
        if got:
            self._held_until = asked_at + self.ttl_s * 0.75
            if not was:
                log.info("lease %s taken: this process decides", self.name)
        elif was:
            self._held_until = 0.0
            log.info("lease %s held by another process", self.name)
        return bool(got)

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            try:
                while True:
                    await asyncio.sleep(self.ttl_s / 3)
                    await self.renew()
            except asyncio.CancelledError:
                raise
            except BaseException:
                if self.metrics is not None:
                    self.metrics.background_restarts.labels("lease").inc()
                log.exception("lease %s task failed; restarting in %.1fs", self.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.ttl_s)

    async def close(self) -> None:
        """Stop renewing and let go at once, so another replica takes over now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._held_until:
            self._held_until = 0.0
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.link.client.eval(_RELEASE, 1, self.key, self.owner)
