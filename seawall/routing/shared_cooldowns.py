"""Upstream cool-downs shared by every replica: when a deployment answers 429
(Retry-After, or its rate-limit headers at zero), no replica sends it
anything until then, not only the one that was told.

The replica that was told stores ``<prefix>cooldown:<deployment>`` in Redis
with that expiry and sends a ``cooldown`` change notice; every replica
applies the notice to its in-process :class:`DeploymentHealth`, so the check
on the request path stays a local comparison (no Redis round trip per
request). A replica that (re)connects reads the keys' remaining time
(``resync``), so a notice missed while Redis was away is not lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from seawall.store.bus import ChangeBus, Event

if TYPE_CHECKING:
    from seawall.providers.registry import ModelRegistry
    from seawall.store.redis_link import RedisLink

__all__ = ["SharedCooldowns"]

log = logging.getLogger("seawall.routing")

MAX_COOLDOWN_S = 3600.0  # a notice asking for longer is capped (hostile or broken upstream)

# Set the key unless it already lasts longer.
_EXTEND = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class SharedCooldowns:
    def __init__(self, registry: ModelRegistry, bus: ChangeBus, link: RedisLink | None) -> None:
        self.registry = registry
        self.bus = bus
        self.link = link
        self._tasks: set[asyncio.Task[Any]] = set()
        for dep in registry.by_name.values():
            dep.health.on_upstream_cooldown = self._told
        bus.subscribe("cooldown", self._notice, resync=self.load)

    def _key(self, deployment: str) -> str:
        assert self.link is not None
        return self.link.key("cooldown", deployment)

    def _told(self, deployment: str, seconds: float, reason: str) -> None:
        """This replica was told to wait (on the event loop, mid-request):
        share it in the background."""
        task = asyncio.get_running_loop().create_task(self.share(deployment, seconds, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def share(self, deployment: str, seconds: float, reason: str) -> None:
        seconds = min(seconds, MAX_COOLDOWN_S)
        if self.link is not None and self.link.up:
            try:
                await self.link.client.eval(
                    _EXTEND, 1, self._key(deployment), reason[:200],
                    max(1, int(seconds * 1000)))
            except (RedisError, OSError, TimeoutError) as e:
                self.link.failed(e)
        await self.bus.publish({"kind": "cooldown", "deployment": deployment,
                                "for_s": seconds, "reason": reason[:200]})

    def _notice(self, event: Event) -> None:
        name, seconds, reason = event.get("deployment"), event.get("for_s"), event.get("reason")
        dep = self.registry.by_name.get(name) if isinstance(name, str) else None
        if dep is None or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                or not isinstance(reason, str):
            return
        seconds = min(max(0.0, float(seconds)), MAX_COOLDOWN_S)
        if dep.health.cool_down(time.monotonic(), seconds, reason[:200]):
            log.info("deployment %s cooling down %.1fs (%s)", dep.name, seconds, reason[:200],
                     extra={"deployment": dep.name})

    async def load(self) -> None:
        """Apply the cool-downs stored in Redis (at start, after a reconnect)."""
        if self.link is None:
            return
        names = list(self.registry.by_name)
        if not names:
            return
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.pttl(self._key(name))
                    pipe.get(self._key(name))
                replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            self.link.failed(e)
            return
        now = time.monotonic()
        for i, name in enumerate(names):
            ttl_ms, reason = replies[2 * i], replies[2 * i + 1]
            if isinstance(ttl_ms, int) and ttl_ms > 0:
                text = reason.decode(errors="replace") if isinstance(reason, bytes) else "shared"
                self.registry.by_name[name].health.cool_down(now, ttl_ms / 1000, text)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
