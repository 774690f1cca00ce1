"""Admission control: a bounded number of requests in flight, per process and
per tenant. Beyond it a request gets 429 with Retry-After at once, or waits
briefly in a bounded queue ordered by its key's priority, instead of piling
up without end (which turns an overload into timeouts for everyone).

A tenant over its own cap is refused without queueing: waiting would only
let one tenant's burst hold queue places that others need.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from seawall.config import AdmissionSettings
from seawall.errors import RateLimited, ShuttingDown
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext

# Endpoints that do model work (RAG search embeds the query, ingestion parses
# and embeds documents); /v1/models, listings and admin are never held back.
GUARDED = frozenset({"chat.completions", "messages", "messages.count_tokens", "responses",
                     "embeddings", "rag.search", "rag.ingest"})


class Overloaded(RateLimited):
    code = "gateway_overloaded"


class AdmissionStage:
    name = "admission"
    traced = False  # a span only when the request waited in the queue

    def __init__(self, settings: AdmissionSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.inflight = 0
        self.by_tenant: dict[str, int] = {}
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._refused = {reason: metrics.rate_limited.labels(reason)
                         for reason in ("inflight", "tenant_inflight", "queue_full",
                                        "queue_timeout")}
        self.draining = False

    def _refuse(self, reason: str, message: str) -> Overloaded:
        self._refused[reason].inc()
        return Overloaded(message, retry_after=1.0)

    async def before(self, ctx: RequestContext) -> None:
        if ctx.endpoint not in GUARDED:
            return
        if self.draining:
            raise ShuttingDown("The gateway is shutting down; retry (another replica will "
                               "answer).", retry_after=1.0)
        s = self.settings
        tenant_now = self.by_tenant.get(ctx.tenant, 0)
        if s.max_inflight_per_tenant and tenant_now >= s.max_inflight_per_tenant:
            raise self._refuse("tenant_inflight",
                               f"This tenant already has {tenant_now} requests in flight "
                               f"(admission.max_inflight_per_tenant); retry shortly.")
        if s.max_inflight and self.inflight >= s.max_inflight:
            t0 = time.time_ns()
            try:
                await self._wait_for_slot(ctx)
            finally:
                ctx.span(self.name, t0)
        self.inflight += 1
        self.by_tenant[ctx.tenant] = self.by_tenant.get(ctx.tenant, 0) + 1
        ctx.admitted = True

    async def _wait_for_slot(self, ctx: RequestContext) -> None:
        s = self.settings
        if len(self._waiting) >= s.queue_size:
            if s.queue_size == 0:
                raise self._refuse("inflight", f"The gateway is at its limit of "
                                   f"{s.max_inflight} requests in flight; retry shortly.")
            raise self._refuse("queue_full", "The gateway is at its in-flight limit and its "
                               "wait queue is full; retry shortly.")
        key = ctx.key
        priority = key.priority if key is not None and key.priority is not None \
            else s.default_priority
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._seq), slot)
        heapq.heappush(self._waiting, entry)
        try:
            await asyncio.wait_for(asyncio.shield(slot), s.queue_timeout_s)
        except TimeoutError:
            if slot.done():  # handed a slot just as the wait ran out: take it
                self.inflight -= 1
                return
            self._forget(entry)
            raise self._refuse("queue_timeout", f"No request slot freed up within "
                               f"{s.queue_timeout_s:g}s (admission.queue_timeout_s); "
                               "retry shortly.") from None
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                if not self._hand_on():  # we were given a slot but left: pass it on
                    self.inflight -= 1
            else:
                self._forget(entry)
            raise
        # A slot was handed over: the releaser did not decrement, we do not increment.
        self.inflight -= 1

    def _forget(self, entry: tuple[int, int, asyncio.Future[None]]) -> None:
        try:
            self._waiting.remove(entry)
            heapq.heapify(self._waiting)
        except ValueError:
            pass

    def _hand_on(self) -> bool:
        """Give a freed slot to the best waiter; False if nobody waits."""
        while self._waiting:
            _, _, slot = heapq.heappop(self._waiting)
            if not slot.done():
                slot.set_result(None)
                return True
        return False

    async def after(self, ctx: RequestContext) -> None:
        if not ctx.admitted:
            return
        ctx.admitted = False
        n = self.by_tenant.get(ctx.tenant, 1) - 1
        if n:
            self.by_tenant[ctx.tenant] = n
        else:
            self.by_tenant.pop(ctx.tenant, None)
        if not self._hand_on():
            self.inflight -= 1
