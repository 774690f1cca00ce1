"""Retention: delete what is older than its configured age (trace records,
finished batches and their files).

Runs hourly in every server process; on a shared database the replicas'
deletes simply find less to do (each statement deletes a small batch by
time, so concurrent runs and writers never wait on each other for long).
A failed run is logged and counted, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from seawall.observe.metrics import Metrics
from seawall.store.base import TraceStore

log = logging.getLogger("seawall.observe")

INTERVAL_S = 3600.0


async def keep_for(what: str, delete_before: Callable[[float], Awaitable[int]], days: float,
                   metrics: Metrics, interval_s: float = INTERVAL_S) -> None:
    """Forever: ``delete_before(now - days)``, then wait ``interval_s``."""
    while True:
        try:
            n = await delete_before(time.time() - days * 86400)
            if n:
                log.info("%s retention deleted %d older than %g days", what, n, days,
                         extra={"deleted": n, "what": what})
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.background_restarts.labels(f"{what}_retention").inc()
            log.exception("%s retention failed; trying again in %.0fs", what, interval_s)
        await asyncio.sleep(interval_s)


async def keep_traces_for(store: TraceStore, days: float, metrics: Metrics,
                          interval_s: float = INTERVAL_S) -> None:
    await keep_for("trace", store.delete_traces_before, days, metrics, interval_s)
