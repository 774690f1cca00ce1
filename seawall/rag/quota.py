"""The ingestion quota: how many ingestions run at once, per tenant and in all.

Parsing, chunking and embedding a document takes a core for seconds and up to
a hundred times the document's size in memory (an HTML tree), so each tenant
gets a fixed number of ingestions at a time (taken before the body is read:
a refusal costs nothing), and the process a fixed number of parsing and
embedding ones in all (taken once the body has arrived, so slow uploads
cannot hold them); beyond either a request is refused at once with 429 and
Retry-After instead of queueing work nobody can bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from seawall.errors import RateLimited
from seawall.observe.metrics import Metrics

__all__ = ["IngestQuota"]

RETRY_AFTER_S = 2.0  # an ingestion of a few MB takes seconds


class IngestQuota:
    def __init__(self, per_tenant: int, total: int, metrics: Metrics | None = None) -> None:
        self.per_tenant = per_tenant  # 0: unlimited
        self.total = total  # 0: unlimited
        self.running = 0
        self.by_tenant: dict[str, int] = {}
        self._refused = ({reason: metrics.rate_limited.labels(reason)
                          for reason in ("ingest_tenant", "ingest_total")}
                         if metrics is not None else {})

    def _refuse(self, reason: str, message: str) -> RateLimited:
        if reason in self._refused:
            self._refused[reason].inc()
        return RateLimited(message, code="ingest_quota", retry_after=RETRY_AFTER_S)

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
