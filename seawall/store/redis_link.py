"""The one Redis client of a process, and what every caller needs to know of
Redis: whether it is answering. When a call fails, callers note it here and
use their per-process fallback until ``redis.retry_after_s`` has passed."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from seawall.config import RedisSettings

log = logging.getLogger("seawall.redis")


class RedisLink:
    REMIND_S = 60.0
    def __init__(self, settings: RedisSettings) -> None:
        assert settings.url
        self.settings = settings
        self.prefix = settings.prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            settings.url, socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s, health_check_interval=30)
        self._down_until = 0.0
        self.failures = 0  # calls that failed (for a metric)
        self.outage = False  # a call failed and none has succeeded since
        self._logged_at = 0.0

    @property
    def up(self) -> bool:
        """False while Redis is believed down: callers skip it and fall back."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        """Note a failed call: Redis is skipped for ``retry_after_s``."""
        self.failures += 1
        now = time.monotonic()
        # One line per outage, not one per retry; a reminder at most once a
        # minute for callers that never report a success (recovered).
        if not self.outage or now - self._logged_at > self.REMIND_S:
            self.outage = True
            self._logged_at = now
            log.warning("redis unreachable (%s): using per-process fallback, retrying every "
                        "%.1fs", type(exc).__name__, self.settings.retry_after_s)
        self._down_until = now + self.settings.retry_after_s

    def recovered(self) -> None:
        """Note a call that worked after an outage (callers check :attr:`outage`)."""
        if self.outage:
            self.outage = False
            log.warning("redis reachable again: shared limits and state are back in use")

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
