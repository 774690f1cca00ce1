"""The ingestion quota: how many ingestions run at once, per tenant and in all.

Parsing, chunking and embedding a document takes a core for seconds and up to
a hundred times the document's size in memory (an HTML tree), so each tenant
gets a fixed number of ingestions at a time (taken before the body is read:
a refusal costs nothing), and the process a fixed number of parsing and
embedding ones in all (taken once the body has arrived, so slow uploads
cannot hold them); beyond either a request is refused at once with 429 and
Retry-After instead of queueing work nobody can bound. Optionally a tenant
also has a budget of bytes per minute (a token bucket holding one minute's
worth), charged when the body has arrived, before any parsing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from seawall.errors import BodyTooLarge, RateLimited
from seawall.observe.metrics import Metrics

__all__ = ["IngestQuota"]

RETRY_AFTER_S = 2.0  # an ingestion of a few MB takes seconds


class IngestQuota:
    def __init__(self, per_tenant: int, total: int, metrics: Metrics | None = None,
                 bytes_per_minute: int = 0) -> None:
        self.per_tenant = per_tenant  # 0: unlimited
        self.total = total  # 0: unlimited
        self.bytes_per_minute = bytes_per_minute  # 0: unlimited
        self.running = 0
        self.by_tenant: dict[str, int] = {}
        self._tat: dict[str, float] = {}  # per tenant: when its byte bucket is full again
        self._refused = ({reason: metrics.rate_limited.labels(reason)
                          for reason in ("ingest_tenant", "ingest_total", "ingest_bytes")}
                         if metrics is not None else {})

    def _refuse(self, reason: str, message: str,
                retry_after: float = RETRY_AFTER_S) -> RateLimited:
        if reason in self._refused:
            self._refused[reason].inc()
        return RateLimited(message, code="ingest_quota", retry_after=retry_after)

    @contextlib.contextmanager
    def tenant_slot(self, tenant: str) -> Iterator[None]:
        """Hold one of ``tenant``'s ingestion slots for the block, or raise 429."""
        mine = self.by_tenant.get(tenant, 0)
        if self.per_tenant and mine >= self.per_tenant:
            raise self._refuse("ingest_tenant", f"This tenant already has {mine} ingestions "
                               "running (rag.max_concurrent_ingests_per_tenant); retry when "
                               "one has finished.")
        self.by_tenant[tenant] = mine + 1
        try:
            yield
        finally:
            left = self.by_tenant[tenant] - 1
            if left:
                self.by_tenant[tenant] = left
            else:
                del self.by_tenant[tenant]

    @contextlib.contextmanager
    def work_slot(self) -> Iterator[None]:
        """Hold one of the process's parsing-and-embedding slots, or raise 429."""
        if self.total and self.running >= self.total:
            raise self._refuse("ingest_total", f"The gateway already runs {self.running} "
                               "ingestions (rag.max_concurrent_ingests); retry shortly.")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def charge(self, tenant: str, size: int) -> None:
        """Spend ``size`` bytes of the tenant's per-minute budget, or raise
        (429 with the wait until it has them; 413 if it never can)."""
        rate = self.bytes_per_minute
        if not rate:
            return
        if size > rate:
            raise BodyTooLarge(f"The upload is {size} bytes, more than this tenant may ingest "
                               f"in a minute ({rate}, rag.ingest_bytes_per_minute_per_tenant); "
                               "split it.")
        now = time.monotonic()
        tat = max(self._tat.get(tenant, now), now) + size * 60.0 / rate
        wait = tat - now - 60.0
        if wait > 0:
            raise self._refuse("ingest_bytes", f"This tenant has ingested its "
                               f"{rate} bytes per minute (rag.ingest_bytes_per_minute_per_tenant);"
                               f" retry in {wait:.0f} s.", retry_after=wait)
        if len(self._tat) > 100_000:  # bounded: forget the buckets that are full again
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[tenant] = tat
