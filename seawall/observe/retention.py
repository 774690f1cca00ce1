"""Trace retention: delete records older than ``observe.traces.retention_days``.

Runs hourly in every server process; on a shared database the replicas'
deletes simply find less to do (each statement deletes one small batch by
time, so concurrent runs and writers never wait on each other for long).
A failed run is logged and counted, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from seawall.observe.metrics import Metrics
from seawall.store.base import TraceStore

log = logging.getLogger("seawall.observe")

INTERVAL_S = 3600.0


async def keep_traces_for(store: TraceStore, days: float, metrics: Metrics,
                          interval_s: float = INTERVAL_S) -> None:
    """Forever: delete what is older than ``days``, then wait ``interval_s``."""
    while True:
        try:
            n = await store.delete_traces_before(time.time() - days * 86400)
            if n:
                log.info("trace retention deleted %d records older than %g days", n, days,
                         extra={"deleted": n})
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.background_restarts.labels("trace_retention").inc()
            log.exception("trace retention failed; trying again in %.0fs", interval_s)
        await asyncio.sleep(interval_s)
