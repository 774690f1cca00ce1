"""The job runner on both queue backends: handlers, retries, cancellation,
graceful stop, supervision and metrics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from seawall.config import JobSettings, Settings
from seawall.jobs.queue import Job, JobQueue, JobState, PermanentJobError
from seawall.jobs.runner import JobRunner
from seawall.observe.metrics import Metrics
from seawall.store.factory import Stores


@pytest.fixture
async def queue(stores: Stores) -> AsyncIterator[JobQueue]:
    q = stores.jobs()
    q.settings = JobSettings(backoff_s=0.0, lease_s=30, poll_s=0.05)
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
async def make_runner(queue: JobQueue) -> AsyncIterator[Callable[..., JobRunner]]:
    made: list[JobRunner] = []

    def make(**kw: Any) -> JobRunner:
        settings = queue.settings.model_copy(update=kw)
        r = JobRunner(queue, settings, Metrics(), owner=f"runner{len(made)}")
        made.append(r)
        return r

    yield make
    for r in made:
        await r.stop(drain_s=0)


async def wait_for(queue: JobQueue, job_id: str, *states: JobState,
                   within_s: float = 15.0) -> Job:
    async def poll() -> Job:
        while True:
            job = await queue.get(job_id)
            if job is not None and job.state in states:
                return job
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), within_s)


def count(runner: JobRunner, kind: str, outcome: str) -> float:
    assert runner.metrics is not None
    return runner.metrics.jobs_finished.labels(kind, outcome)._value.get()


async def test_runs_handlers_within_the_concurrency_bound(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner(concurrency=2)
    now_running, most = 0, 0

    async def double(job: Job) -> dict[str, int]:
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await asyncio.sleep(0.05)
        now_running -= 1
        return {"n": job.payload["n"] * 2}

    runner.register("double", double)
    await runner.start()
    jobs = [await queue.enqueue("double", {"n": i}) for i in range(6)]
    for i, j in enumerate(jobs):
        done = await wait_for(queue, j.id, JobState.SUCCEEDED)
        assert done.result == {"n": 2 * i} and done.attempts == 1
    assert most == 2
    assert count(runner, "double", "succeeded") == 6


async def test_a_failing_job_is_retried_then_succeeds_and_a_permanent_one_fails(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner()

    async def flaky(job: Job) -> str:
        if job.payload == "never":
            raise PermanentJobError("cannot ever work")
        if job.attempts < 2:
            raise ConnectionError("upstream went away")
        return "fine"

    runner.register("flaky", flaky)
    await runner.start()
    a = await queue.enqueue("flaky", "soon")
    b = await queue.enqueue("flaky", "never")
    done = await wait_for(queue, a.id, JobState.SUCCEEDED)
    assert done.result == "fine" and done.attempts == 2
    failed = await wait_for(queue, b.id, JobState.FAILED)
    assert failed.error == "cannot ever work" and failed.attempts == 1
    assert count(runner, "flaky", "retried") == 1
    assert count(runner, "flaky", "failed") == 1


async def test_builtin_sleep_and_dead_letter(queue: JobQueue,
                                             make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner()
    await runner.start()
    ok = await queue.enqueue("sleep", {"seconds": 0.01, "result": "r"})
    bad = await queue.enqueue("sleep", {"fail": "retry"}, max_attempts=2)
    done = await wait_for(queue, ok.id, JobState.SUCCEEDED)
    assert done.result == {"slept": 0.01, "worker": "runner0", "attempt": 1, "result": "r"}
    dead = await wait_for(queue, bad.id, JobState.DEAD)
    assert dead.attempts == 2 and "asked to fail" in (dead.error or "")
    assert count(runner, "sleep", "dead") == 1


async def test_cancelling_a_running_job_stops_its_handler(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner(lease_s=0.3)  # heartbeats every 0.1 s
    started, stopped = asyncio.Event(), asyncio.Event()

    async def forever(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    runner.register("forever", forever)
    await runner.start()
    job = await queue.enqueue("forever", None)
    await asyncio.wait_for(started.wait(), 10)
    await queue.cancel(job.id)
    await wait_for(queue, job.id, JobState.CANCELLED)
    assert stopped.is_set()
    assert count(runner, "forever", "cancelled") == 1


async def test_stop_releases_unfinished_jobs_for_another_runner(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    first = make_runner()
    started = asyncio.Event()

    async def slow(job: Job) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    first.register("slow", slow)
    await first.start()
    job = await queue.enqueue("slow", None)
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(drain_s=0.1)
    back = await queue.get(job.id)
    assert back is not None and back.state is JobState.QUEUED and back.attempts == 0
    assert count(first, "slow", "released") == 1

    second = make_runner()

    async def quick(job: Job) -> str:
        return "done"

    second.register("slow", quick)
    await second.start()
    done = await wait_for(queue, job.id, JobState.SUCCEEDED)
    assert done.result == "done" and done.lease_owner is None and done.attempts == 1


async def test_the_loop_restarts_after_the_store_fails(
        backend: Settings, queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    """The jobs table vanishes under the runner: its loop fails, is restarted
    (counted) and, once the table is back, runs jobs again."""
    runner = make_runner()

    def rename(old: str, new: str) -> None:
        sql = f"ALTER TABLE {old} RENAME TO {new}"
        if backend.store.kind == "postgres":
            with psycopg.connect(backend.store.url or "", autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[call-overload]
        else:
            with sqlite3.connect(backend.jobs_path, timeout=10) as conn:
                conn.execute(sql)

    await asyncio.to_thread(rename, "jobs", "jobs_away")
    await runner.start()
    restarts = runner.metrics.background_restarts.labels("jobs")  # type: ignore[union-attr]

    async def restarted() -> None:
        while True:
            if restarts._value.get() >= 1:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(restarted(), 15)
    await asyncio.to_thread(rename, "jobs_away", "jobs")
    job = await queue.enqueue("sleep", {"seconds": 0})
    await wait_for(queue, job.id, JobState.SUCCEEDED, within_s=30)


async def test_depth_gauges(queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner()
    await queue.enqueue("sleep", {"seconds": 0})
    await queue.enqueue("unhandled", None)
    await runner.refresh_stats()
    m = runner.metrics
    assert m is not None
    assert m.jobs_queued.labels("sleep")._value.get() == 1
    assert m.jobs_queued.labels("other")._value.get() == 1
    assert m.jobs_oldest_age._value.get() >= 0
    assert b"seawall_jobs_queued{kind=\"sleep\"} 1.0" in m.render()


async def test_a_result_that_is_not_json_fails_the_job(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner()

    async def odd(job: Job) -> object:
        return {"when": object()}

    runner.register("odd", odd)
    await runner.start()
    job = await queue.enqueue("odd", None)
    failed = await wait_for(queue, job.id, JobState.FAILED)
    assert "result is not JSON" in (failed.error or "") and failed.result is None


async def test_runner_purges_old_finished_jobs(
        queue: JobQueue, make_runner: Callable[..., JobRunner]) -> None:
    runner = make_runner(keep_finished_days=1e-9)  # ~0.1 ms
    jobs = [await queue.enqueue("k", None) for _ in range(3)]
    for j in await queue.claim(2, "w", 30):
        await queue.complete(j.id, "w", None)
    await asyncio.sleep(0.01)
    assert await runner.purge() == 2
    assert [j.id for j in await queue.list()] == [jobs[2].id]
