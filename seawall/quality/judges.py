"""LLM-as-judge in the background (docs/quality.md, "Judges").

On the request path, :meth:`Judges.consider` (called by the record stage)
decides from precomputed matchers and a draw from the trace id whether any
judge scores the answer; a sampled answer's bounded payload goes to an
in-memory queue (``quality.max_pending``; more is dropped and counted) that
one task turns into ``judge`` jobs on the durable job queue, at once. Nothing
on the request path waits for storage or a judge, or does any I/O.

Why no sample is lost to a crash. A sample is in memory only between the
answer and its enqueue (usually milliseconds; longer if the job queue is
slow or down). Rather than a journal of its own, the sample rides on the
trace record's durability, so its loss window is the record's:

- the decision is a function of the record (a draw from the trace id's
  random bits, not a fresh random number), so any copy of the record gives
  it again (sampling.py);
- the trace writer's write-ahead file (``observe.traces.journal_each_record``)
  keeps every segment that may hold the record of a sample not yet enqueued
  (:meth:`unsettled_since`: the oldest such sample's time): after a
  ``kill -9``, the records it holds are replayed from the journal at start,
  and every replayed batch passes through :meth:`replayed`, which makes the
  decision again and enqueues the job; the batch counts as replayed only once
  that worked;
- jobs are idempotent: the job id is ``judge_<trace id>`` (an existing job is
  left as it is) and a job skips every (judge, rubric) the trace already has
  a Score for, so a replay never judges an answer twice, even after the job
  row itself was purged.

While the job queue refuses writes, samples wait (up to ``max_pending``)
and the write-ahead file keeps growing with them, as it does for records the
store refuses; both shrink once it is back. The alternatives were a journal
of the samples' own (a second write per sampled answer, on the request path
or in a window of its own) or enqueueing from the trace writer (tying every
trace write to the job queue's health): this one adds no I/O at all.

Without ``journal_each_record`` a ``kill -9`` loses the trace records of the
last ``flush_interval_s``, and their samples with them: the same window.
A replayed record rebuilds the payload from stored content; a record stored
without content (``store_content: false``) whose job is missing is counted
as dropped (``reason="no_content"``), as is what ``max_pending`` refuses.

The ``judge`` job scores the answer with each sampled judge's rubrics. A
rubric that fails (judge down, timeout, malformed verdict) makes the job
retry (the queue's backoff); rubrics already scored are not judged again. On
the job's last attempt a failure is stored as a Score with status "failed"
and the reason. Each judge call's cost counts against the judge's
``max_usd_per_day`` and ``seawall_judge_cost_usd_total``, never a client's
key or budget. After each stored Score, ``hook.on_score(score)`` runs (the
quality loop: canary and cache decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from typing import Any, Protocol

from seawall.config import JudgeSettings, QualitySettings
from seawall.jobs.queue import Job, JobQueue, PermanentJobError, QueueFull
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord
from seawall.pipeline.context import RequestContext
from seawall.prompts.registry import PromptRegistry
from seawall.quality.judge_call import JUDGE_TENANT, JudgeCaller
from seawall.quality.judging import JudgeFailed, Rubric, judge_one
from seawall.quality.rubrics import JudgeItem, NotApplicable
from seawall.quality.sampling import Matcher, payload, replay_payload, resampled, sampled
from seawall.quality.score_store import Score, ScoreStore

log = logging.getLogger("seawall.quality")

KIND = "judge"
JOB_PRIORITY = 100  # after clients' own jobs (lower runs first)
BUDGET_REFRESH_S = 60.0  # how often spend is re-read from the score store (other workers')
_DAY = 86_400


class ScoreHook(Protocol):
    def on_score(self, score: Score) -> Any:
        """Called after ``score`` is stored; may be a coroutine function."""
        ...


class JudgesNotReady(Exception):
    """Replay came before the job queue is open: the writer retries later."""


class NoScoreHook:
    def on_score(self, score: Score) -> None:
        return None


def _day_start(now: float) -> float:
    return now - now % _DAY


class DayBudget:
    """A judge's spend this UTC day: what the score store says (refreshed
    every minute, so other workers' spend counts) plus this process's since."""

    def __init__(self, judge: str, limit: float | None, scores: ScoreStore) -> None:
        self.judge, self.limit, self.scores = judge, limit, scores
        self.day = 0.0
        self.stored = 0.0
        self.local = 0.0
        self.read_at = 0.0

    async def spent(self) -> float:
        now = time.time()
        day = _day_start(now)
        if day != self.day or now - self.read_at >= BUDGET_REFRESH_S:
            stored = await self.scores.cost_since(day, judge=self.judge)
            self.day, self.read_at = day, now
            self.stored, self.local = stored, 0.0
        return self.stored + self.local

    async def exceeded(self) -> bool:
        return self.limit is not None and await self.spent() >= self.limit

    def add(self, usd: float) -> None:
        self.local += usd


class Judges:
    def __init__(self, settings: QualitySettings, queue: JobQueue, scores: ScoreStore,
                 caller: JudgeCaller, prompts: PromptRegistry | None, metrics: Metrics,
                 hook: ScoreHook | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.scores = scores
        self.caller = caller
        self.prompts = prompts
        self.metrics = metrics
        self.hook: ScoreHook = hook or NoScoreHook()
        self.by_name: dict[str, JudgeSettings] = {j.name: j for j in settings.judges}
        self.rubrics = {j.name: [Rubric.of(r) for r in j.rubrics] for j in settings.judges}
        self.matchers = [Matcher.of(j) for j in settings.judges]
        self.budgets = {j.name: DayBudget(j.name, j.max_usd_per_day, scores)
                        for j in settings.judges}
        self._pending: deque[tuple[float, dict[str, Any]]] = deque()  # (taken at, payload)
        self._sending: list[float] = []  # taken at, of those off _pending being enqueued
        self._wake = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        self._started = False

    @property
    def sampler(self) -> Any:
        """The record stage's hook, or None when no judge is configured (zero cost)."""
        return self.consider if self.matchers else None

    # -- the request path --

    def consider(self, ctx: RequestContext, rec: TraceRecord) -> None:
        try:
            judges = sampled(self.matchers, ctx, rec)
            if judges:
                self._take(ctx, rec, judges)
        except Exception:  # a sampling bug must never fail the answer
            log.exception("judge sampling failed for %s", rec.trace_id)

    def _take(self, ctx: RequestContext, rec: TraceRecord, judges: list[str]) -> None:
        for name in judges:
            self.metrics.judge_sampled.labels(name).inc()
        if len(self._pending) >= self.settings.max_pending:
            for name in judges:
                self.metrics.judge_skipped.labels(name, "pending_full").inc()
            return
        limit = max(self.by_name[n].max_chars for n in judges)
        self._pending.append((time.monotonic(), payload(ctx, rec, judges, limit)))
        self._wake.set()

    # -- tied to the trace writer (observe/writer.py) --

    def unsettled_since(self) -> float | None:
        """When the oldest sample not yet a job was taken (None: none is).
        The trace writer keeps write-ahead records appended since, so a crash
        replays them (a sample is taken just before its record is appended)."""
        if self._sending:
            return min(self._sending)
        return self._pending[0][0] if self._pending else None

    async def replayed(self, records: list[TraceRecord]) -> None:
        """Records replayed from the trace journal (after a crash, or a store
        outage): the same sampling decision, its job enqueued if missing.
        Raises (the writer then keeps its place and retries) unless every
        sampled record has its job or is counted as dropped."""
        if not self.matchers:
            return
        if not self._started:
            raise JudgesNotReady("judges not started yet (the job queue opens later)")
        for rec in records:
            judges = resampled(self.matchers, rec)
            if not judges:
                continue
            job_id = f"judge_{rec.trace_id}"
            if rec.output is None:  # content not stored: the payload cannot be rebuilt
                if await self.queue.get(job_id, JUDGE_TENANT) is None:
                    for name in judges:
                        self.metrics.judge_skipped.labels(name, "no_content").inc()
                continue
            limit = max(self.by_name[n].max_chars for n in judges)
            await self._enqueue(replay_payload(rec, judges, limit))

    # -- enqueueing, off the request path --

    async def start(self) -> None:
        self._started = True
        if self.matchers:
            self._feeder = asyncio.create_task(self._feed(), name="judge-enqueue")

    async def close(self) -> None:
        self._started = False  # the job queue closes next: a replay now waits for a start
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(BaseException):
                await self._feeder
            self._feeder = None
        with contextlib.suppress(TimeoutError):  # what is left: enqueue, briefly
            async with asyncio.timeout(2.0):
                await self._enqueue_pending()

    async def _feed(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._enqueue_pending()
            except Exception:  # never dies: the next wake tries again
                log.exception("enqueueing judge jobs failed; retrying in 1s")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _enqueue_pending(self) -> None:
        while self._pending:
            item = self._pending.popleft()  # taken first: flush() may drain alongside the feeder
            self._sending.append(item[0])
            try:
                await self._enqueue(item[1])
            except BaseException:  # the store is down (or we are stopping): try it later
                self._pending.appendleft(item)
                raise
            finally:
                self._sending.remove(item[0])

    async def _enqueue(self, p: dict[str, Any]) -> None:
        """Idempotent: an existing job of the trace is left as it is."""
        try:
            await self.queue.enqueue(
                KIND, p, tenant=JUDGE_TENANT, priority=JOB_PRIORITY,
                max_attempts=max(self.by_name[n].max_attempts for n in p["judges"]
                                 if n in self.by_name),
                job_id=f"judge_{p['trace_id']}")
        except QueueFull:
            for name in p["judges"]:
                self.metrics.judge_skipped.labels(name, "queue_full").inc()

    async def flush(self) -> None:
        """Enqueue everything sampled so far (tests, shutdown)."""
        await self._enqueue_pending()

    # -- the job --

    async def run(self, job: Job) -> dict[str, Any]:
        p = job.payload
        if not isinstance(p, dict) or not isinstance(p.get("judges"), list):
            raise PermanentJobError("judge: payload is not a judge job's")
        item = JudgeItem(str(p.get("input") or ""), str(p.get("output") or ""),
                         p.get("reference"), [str(s) for s in p.get("sources") or []])
        last = job.attempts >= job.max_attempts
        # Any stored verdict (ok or failed) counts: a job recreated by a replay
        # never judges an answer twice.
        done = {(s.judge, s.rubric) for s in await self.scores.for_trace(p["trace_id"])}
        outcome: dict[str, str] = {}
        errors: list[str] = []
        for name in p["judges"]:
            judge = self.by_name.get(name)
            if judge is None:  # removed from the config since: nothing to do
                outcome[name] = "unknown_judge"
                continue
            for rubric in self.rubrics[name]:
                key = f"{name}/{rubric.name}"
                if (name, rubric.name) in done:
                    outcome[key] = "done"
                    continue
                outcome[key] = status = await self._rubric(job, p, judge, rubric, item, last)
                if status == "retry":
                    errors.append(key)
        if errors:
            raise RuntimeError(f"judge: {', '.join(errors)} will be retried")
        return {"trace_id": p["trace_id"], "scores": outcome}

    async def _rubric(self, job: Job, p: dict[str, Any], judge: JudgeSettings, rubric: Rubric,
                      item: JudgeItem, last: bool) -> str:
        budget = self.budgets[judge.name]
        m = self.metrics
        if await budget.exceeded():
            m.judge_skipped.labels(judge.name, "over_budget").inc()
            for matcher in self.matchers:  # stop sampling for it until the next UTC day
                if matcher.judge == judge.name:
                    matcher.paused_until = _day_start(time.time()) + _DAY
            log.warning("judge %s reached max_usd_per_day (%g): judging stops until 00:00 UTC",
                        judge.name, judge.max_usd_per_day)  # TODO(alerts.py): alert
            return "over_budget"
        score = Score(trace_id=p["trace_id"], judge=judge.name, rubric=rubric.name,
                      tenant=p.get("tenant") or "", model=p.get("model") or "", score=None,
                      scale_max=rubric.scale_max, judge_model=judge.judge_model,
                      route=p.get("route"), prompt_version=p.get("prompt_version"),
                      experiment=p.get("experiment"), attempts=job.attempts)
        try:
            judged = await judge_one(self.caller, self.prompts, judge.judge_model, rubric, item,
                                     timeout_s=judge.timeout_s, max_tokens=judge.max_tokens,
                                     json_schema=judge.json_schema)
        except NotApplicable:
            m.judge_scores.labels(judge.name, rubric.name, "not_applicable").inc()
            return "not_applicable"
        except JudgeFailed as e:
            self._spent(judge.name, e.cost_usd)
            if not last:
                log.info("judge %s/%s on %s failed (attempt %d): %s", judge.name, rubric.name,
                         p["trace_id"], job.attempts, e)
                return "retry"
            score.status, score.reasoning, score.cost_usd = "failed", str(e)[:1000], e.cost_usd
        else:
            self._spent(judge.name, judged.cost_usd)
            score.score, score.reasoning = judged.score, judged.reasoning
            score.rubric_version, score.cost_usd = judged.rubric_version, judged.cost_usd
        score.created_at = time.time()
        await self.scores.put(score)
        m.judge_scores.labels(judge.name, rubric.name, score.status).inc()
        if score.fraction is not None:
            m.judge_score.labels(judge.name, rubric.name).observe(score.fraction)
        await self._notify(score)
        return score.status

    def _spent(self, judge: str, usd: float) -> None:
        if usd:
            self.budgets[judge].add(usd)
            self.metrics.judge_cost.labels(judge).inc(usd)

    async def _notify(self, score: Score) -> None:
        try:
            result = self.hook.on_score(score)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the loop's failure is not the score's
            log.exception("quality hook on_score failed for %s", score.trace_id)
