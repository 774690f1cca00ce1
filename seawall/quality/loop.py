"""Closing the quality loop: what users and judges say about an answer
changes what the gateway does next (docs/quality.md, "Closing the loop").

* A cached answer rated negatively (below ``quality.loop.feedback_threshold``)
  or scored below ``quality.loop.cache_min_score`` by a judge is quarantined:
  its row stays, marked with why, and is no longer served (the next identical
  request goes upstream, and its trace record says ``cache: quarantined``)
  until an operator releases it or it expires. The entry is found from the
  rated request's trace record: the entry it was served from (a hit), or the
  entry stored from its own answer (a miss, by the entry's ``trace_id``).
* The rating or score counts towards the quality guard of the canary whose
  arm served the answer (seawall/experiments/canary.py).

The cache store is the truth for every replica (the shared table, or the
SQLite file every lookup reads), so a quarantine needs no change notice.
Both hooks do I/O and run off the request path (:meth:`QualityLoop.submit`
for the feedback route; judges call :meth:`on_score` from their job).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from seawall.cache.store import CacheStore
from seawall.config import Settings
from seawall.experiments.canary import Quality
from seawall.experiments.service import Experiments
from seawall.observe.metrics import Metrics
from seawall.quality.feedback_store import Feedback
from seawall.quality.score_store import Score

__all__ = ["QualityLoop"]

log = logging.getLogger("seawall.quality")

MAX_BACKGROUND = 256  # ratings acted on in the background at once; beyond, the rater waits
# Cache outcomes whose record names the entry that was served (cache_entry).
_SERVED = frozenset({"hit", "semantic-hit", "stale"})


class TraceReader(Protocol):
    async def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...


class QualityLoop:
    def __init__(self, settings: Settings, cache_store: CacheStore, experiments: Experiments,
                 traces: TraceReader, metrics: Metrics) -> None:
        self.settings = settings.quality.loop
        scale = settings.feedback.scale
        self.negative_below = (self.settings.feedback_threshold
                               if self.settings.feedback_threshold is not None
                               else (scale.min + scale.max) / 2)
        self.cache_store = cache_store
        self.experiments = experiments
        self.traces = traces
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, feedback: Feedback, trace: dict[str, Any], first: bool = True) -> None:
        """:meth:`on_feedback` in the background (the rating is already stored);
        with ``MAX_BACKGROUND`` in flight, here (a flood of ratings slows its
        senders instead of piling up tasks)."""
        work = self._safely(self.on_feedback(feedback, trace, first))
        if len(self._tasks) >= MAX_BACKGROUND:
            await work
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safely(self, coro: Any) -> None:
        try:
            await coro
        except Exception:
            log.exception("the quality loop failed on a rating (it stays stored)")

    async def settle(self) -> None:
        """Wait for the work in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def negative(self, score: float) -> bool:
        return score < self.negative_below

    async def on_feedback(self, feedback: Feedback, trace: dict[str, Any],
                          first: bool = True) -> list[int]:
        """A rating of the answer ``trace`` (its stored record) was stored;
        ``first``: not a user's replacement of an earlier rating (the canary
        counts each user's rating once). Returns the entries quarantined."""
        bad = self.negative(feedback.score)
        if first:
            self.experiments.observe_quality(trace.get("experiment"), feedback.tenant,
                                             Quality(rated=1, negative=int(bad)))
        if not (bad and self.settings.quarantine_on_feedback):
            return []
        return await self._quarantine(trace, feedback.tenant, "feedback",
                                      f"feedback {feedback.score:g}")

    async def on_score(self, score: Score) -> list[int]:
        """A judge score was stored: count it for the canary of its arm, and
        quarantine the answer's cache entry when it fails."""
        fraction = score.fraction
        if score.status != "ok" or fraction is None:
            return []
        self.experiments.observe_quality(score.experiment, score.tenant,
                                         Quality(judged=1, score_sum=fraction))
        if not (self.settings.quarantine_on_score and fraction < self.settings.cache_min_score):
            return []
        trace = await self.traces.get_trace(score.trace_id)
        if trace is None:  # retention removed it: the stored answer is still found by id
            trace = {"trace_id": score.trace_id, "cache": "miss", "tenant": score.tenant}
        if trace.get("tenant") != score.tenant:
            return []
        return await self._quarantine(
            trace, score.tenant, "judge",
            f"judge {score.judge}/{score.rubric} {score.score:g}/{score.scale_max:g}")

    async def _quarantine(self, trace: dict[str, Any], tenant: str, kind: str,
                          reason: str) -> list[int]:
        status = trace.get("cache")
        if status is None or status == "bypass":
            return []  # the answer was neither served from nor stored in the cache
        entry = trace.get("cache_entry") if status in _SERVED else None
        ids = await self.cache_store.quarantine(tenant, reason[:200], entry_id=entry,
                                                trace_id=str(trace["trace_id"]))
        if ids:
            self.metrics.cache_quarantined.labels(kind).inc(len(ids))
            log.info("cache entries quarantined: %s (%s)", ids, reason,
                     extra={"trace_id": trace["trace_id"], "tenant": tenant})
        return ids
