"""Experiment services as separate replicas would run them: each with its own
store connection, Redis link, change bus and decision lease on one shared
SQLite file and one Redis (under a fresh key prefix)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from seawall.config import Settings, parse_settings
from seawall.experiments.service import Experiments
from seawall.observe.metrics import Metrics
from seawall.providers.registry import ModelRegistry
from seawall.store.bus import RedisBus
from seawall.store.lease import RedisLease
from seawall.store.redis_link import RedisLink
from seawall.store.sqlite import SqliteStore


@asynccontextmanager
async def experiment_replicas(settings: Settings, db: Path, redis_url: str,
                              n: int = 2) -> AsyncIterator[list[Experiments]]:
    """``n`` started replicas, the first holding the lease; all closed after."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    parts: list[tuple[Experiments, RedisBus, RedisLink, SqliteStore]] = []
    try:
        for _ in range(n):
            store = SqliteStore(db)
            await store.open()
            link = RedisLink(parse_settings({"redis": {"url": redis_url, "prefix": prefix}},
                                            env={}).redis)
            bus = RedisBus(link)
            exp = Experiments(settings, ModelRegistry(settings), store, Metrics(), bus=bus,
                              lease=RedisLease(link, "experiments", ttl_s=30), redis=link)
            parts.append((exp, bus, link, store))
            await bus.start()
            await exp.start()
        yield [p[0] for p in parts]
    finally:
        for exp, bus, link, store in parts:
            await exp.close()
            await bus.close()
            await link.close()
            await store.close()
