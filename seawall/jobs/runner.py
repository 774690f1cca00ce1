"""Runs jobs: claims what this process has handlers for, runs each under its
lease (heartbeats renew it), commits the outcome, and stops cleanly.

One supervised loop per process: an unexpected error restarts it after a
backoff, counted in ``seawall_background_restarts_total{task="jobs"}``.
At most ``jobs.concurrency`` jobs run at once. On stop, running jobs get
``drain_s`` to finish; the rest are cancelled and their leases released, so
another runner takes them at once instead of after the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from seawall.config import JobSettings
from seawall.jobs.queue import Job, JobQueue, JobState, PermanentJobError
from seawall.observe.metrics import Metrics

log = logging.getLogger("seawall.jobs")

Handler = Callable[[Job], Coroutine[Any, Any, Any]]

RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0
STATS_EVERY_S = 5.0
PURGE_EVERY_S = 600.0


def default_owner() -> str:
    """Who holds a lease: unique per runner, readable in ``seawall jobs show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    def __init__(self, queue: JobQueue, settings: JobSettings, metrics: Metrics | None = None,
                 owner: str | None = None, builtins: bool = True) -> None:
        self.queue = queue
        self.settings = settings
        self.metrics = metrics
        self.owner = owner or default_owner()
        self.handlers: dict[str, Handler] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._stats_at = 0.0
        self._purged_at = 0.0
        queue.on_enqueue(self.wake)
        if builtins:
            from seawall.jobs.kinds import register_builtins

            register_builtins(self)

    def register(self, kind: str, handler: Handler) -> None:
        """Run jobs of ``kind`` with ``handler(job) -> result`` (JSON-ready).
        Raise PermanentJobError for a job no retry can fix; any other error
        is retried with backoff."""
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Look for work now (a job was enqueued or a slot freed)."""
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._stopping = False
        self._loop_task = asyncio.create_task(self._supervise(), name="jobs")
        log.info("job runner %s started: kinds %s, concurrency %d", self.owner,
                 ", ".join(sorted(self.handlers)), self.settings.concurrency)

    @property
    def stopping(self) -> bool:
        """stop() was called: long handlers (a batch) should stop starting work."""
        return self._stopping

    async def stop(self, drain_s: float = 5.0) -> None:
        """Claim nothing more; give running jobs ``drain_s``, then release them."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            # Let a claim under way finish (its jobs then drain like the others).
            done, _ = await asyncio.wait({self._loop_task}, timeout=2.0)
            if not done:
                await _cancelled(self._loop_task)
            self._loop_task = None
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("job runner stopping: released %d unfinished jobs", len(pending))

    # -- the loop --

    async def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while not self._stopping:
            try:
                await self._loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.metrics is not None:
                    self.metrics.background_restarts.labels("jobs").inc()
                log.exception("job runner loop failed; restarting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)

    async def _loop(self) -> None:
        s = self.settings
        while not self._stopping:
            self._wake.clear()
            free = s.concurrency - len(self._tasks)
            if free > 0:
                jobs = await self.queue.claim(free, self.owner, s.lease_s,
                                              kinds=list(self.handlers))
                for job in jobs:
                    self._tasks[job.id] = asyncio.create_task(self._run(job),
                                                              name=f"job {job.id}")
                if jobs and len(jobs) == free:
                    continue
            if self.metrics is not None and time.monotonic() - self._stats_at >= STATS_EVERY_S:
                await self.refresh_stats()
            if time.monotonic() - self._purged_at >= PURGE_EVERY_S:
                await self.purge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.poll_s)

    async def purge(self) -> int:
        """Delete finished jobs older than ``jobs.keep_finished_days`` (a batch
        at a time, so a big backlog never holds the queue for long)."""
        self._purged_at = time.monotonic()
        before = time.time() - self.settings.keep_finished_days * 86400
        total = 0
        while (n := await self.queue.purge(before)) > 0:
            total += n
        if total:
            log.info("deleted %d jobs finished over %g days ago", total,
                     self.settings.keep_finished_days, extra={"deleted": total})
        return total

    async def refresh_stats(self) -> None:
        """Set the depth gauges from the queue (every few seconds, not per scrape:
        reading them is a query)."""
        self._stats_at = time.monotonic()
        if self.metrics is None:
            return
        m = self.metrics
        stats = await self.queue.stats()
        kinds = set(self.handlers) | set(stats.queued) | set(stats.running)
        for kind in kinds:
            label = kind if kind in self.handlers else "other"
            m.jobs_queued.labels(label).set(sum(
                n for k, n in stats.queued.items() if (k if k in self.handlers else "other")
                == label))
            m.jobs_running.labels(label).set(sum(
                n for k, n in stats.running.items() if (k if k in self.handlers else "other")
                == label))
        m.jobs_oldest_age.set(stats.oldest_queued_s)

    # -- one job --

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        work = asyncio.create_task(self.handlers[job.kind](job))
        outcome = "lost"
        try:
            outcome = await self._watch(job, work)
        except asyncio.CancelledError:  # stop(): give the job back
            await _cancelled(work)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.release(job.id, self.owner))
            outcome = "released"
            raise
        except Exception:
            log.exception("job %s (%s): the queue could not take its outcome; its lease "
                          "will lapse and it will run again", job.id, job.kind)
        finally:
            self._tasks.pop(job.id, None)
            self._wake.set()
            if self.metrics is not None:
                self.metrics.jobs_finished.labels(job.kind, outcome).inc()
                self.metrics.job_duration.labels(job.kind).observe(time.monotonic() - started)
            log.info("job %s (%s) %s after %.2fs, attempt %d", job.id, job.kind, outcome,
                     time.monotonic() - started, job.attempts,
                     extra={"job": job.id, "kind": job.kind, "outcome": outcome})

    async def _watch(self, job: Job, work: asyncio.Task[Any]) -> str:
        """Heartbeat until ``work`` ends; commit its outcome. The outcome's name."""
        every = max(0.05, self.settings.lease_s / 3)
        while True:
            done, _ = await asyncio.wait({work}, timeout=every)
            if done:
                break
            try:
                beat = await self.queue.heartbeat(job.id, self.owner, self.settings.lease_s)
            except Exception:  # the store blipped: the lease may still hold; try again
                log.warning("job %s: heartbeat failed", job.id, exc_info=True)
                continue
            if beat == "held":
                continue
            await _cancelled(work)
            if beat == "cancel":
                await self.queue.release(job.id, self.owner)
                return "cancelled"
            log.warning("job %s: lease lost (taken over after it lapsed); stopped", job.id)
            return "lost"
        try:
            result = work.result()
        except PermanentJobError as e:
            state = await self.queue.fail(job.id, self.owner, str(e), retry=False)
            return "lost" if state is None else str(state)
        except Exception as e:  # noqa: BLE001 - a handler's error is the job's outcome
            state = await self.queue.fail(job.id, self.owner, f"{type(e).__name__}: {e}")
            return ("lost" if state is None else "retried" if state is JobState.QUEUED
                    else str(state))
        try:
            committed = await self.queue.complete(job.id, self.owner, result)
        except (TypeError, ValueError) as e:  # a result that is not JSON: no retry helps
            state = await self.queue.fail(job.id, self.owner, f"result is not JSON: {e}",
                                          retry=False)
            return "lost" if state is None else str(state)
        return "succeeded" if committed else "lost"


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
