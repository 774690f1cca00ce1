"""The job queue contract, on SQLite and on Postgres: same assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from seawall.config import JobSettings, Settings
from seawall.jobs.queue import JobQueue, JobState, QueueFull
from seawall.store.factory import Stores


def _settings(**kw: Any) -> JobSettings:
    return JobSettings(**{"backoff_s": 0.0, **kw})


@pytest.fixture
async def queue(stores: Stores) -> AsyncIterator[JobQueue]:
    q = stores.jobs()
    q.settings = _settings()
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
async def other_queue(backend: Settings, queue: JobQueue) -> AsyncIterator[JobQueue]:
    """A second process's view: its own Stores, connections and queue."""
    s = Stores(backend)
    await s.open()
    q = s.jobs()
    q.settings = queue.settings
    await q.open()
    try:
        yield q
    finally:
        await q.close()
        await s.close()


async def test_claim_order_is_priority_then_age(queue: JobQueue) -> None:
    low = await queue.enqueue("k", {"n": 1}, priority=5)
    first = await queue.enqueue("k", {"n": 2})
    second = await queue.enqueue("k", {"n": 3})
    claimed = await queue.claim(10, "w1", 30)
    assert [j.id for j in claimed] == [first.id, second.id, low.id]
    assert all(j.state is JobState.RUNNING and j.lease_owner == "w1" and j.attempts == 1
               for j in claimed)
    assert claimed[0].payload == {"n": 2}
    assert await queue.claim(10, "w2", 30) == []


async def test_claim_takes_at_most_n_and_only_the_kinds_asked(queue: JobQueue) -> None:
    for i in range(3):
        await queue.enqueue("a", i)
    b = await queue.enqueue("b", "x")
    assert [j.id for j in await queue.claim(5, "w", 30, kinds=["b"])] == [b.id]
    assert len(await queue.claim(2, "w", 30, kinds=["a", "c"])) == 2
    assert await queue.claim(5, "w", 30, kinds=[]) == []


async def test_concurrent_claimers_never_share_a_job(queue: JobQueue,
                                                     other_queue: JobQueue) -> None:
    ids = {(await queue.enqueue("k", i)).id for i in range(60)}

    async def claimer(q: JobQueue, name: str) -> list[str]:
        got: list[str] = []
        while batch := await q.claim(3, name, 30):
            got += [j.id for j in batch]
        return got

    results = await asyncio.gather(*(claimer(q, f"w{i}") for i, q in
                                     enumerate([queue, other_queue] * 4)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 60
    assert set(claimed) == ids
    assert sum(1 for r in results if r) >= 2  # more than one claimer took part


async def test_lapsed_lease_is_reclaimed_and_the_stale_owner_cannot_finish(
        queue: JobQueue) -> None:
    job = await queue.enqueue("k", None)
    assert [j.id for j in await queue.claim(1, "dead-worker", 0.2)] == [job.id]
    await asyncio.sleep(0.4)
    again = await queue.claim(1, "live-worker", 30)
    assert [j.id for j in again] == [job.id]
    assert again[0].attempts == 2 and again[0].lease_owner == "live-worker"
    assert await queue.heartbeat(job.id, "dead-worker", 30) == "lost"
    assert await queue.complete(job.id, "dead-worker", {"by": "dead"}) is False
    assert await queue.fail(job.id, "dead-worker", "boom") is None
    assert await queue.complete(job.id, "live-worker", {"by": "live"}) is True
    done = await queue.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert done.result == {"by": "live"} and done.lease_owner is None


async def test_heartbeat_keeps_the_lease(queue: JobQueue) -> None:
    job = await queue.enqueue("k", None)
    await queue.claim(1, "w1", 0.3)
    assert await queue.heartbeat(job.id, "w1", 60) == "held"
    await asyncio.sleep(0.5)  # past the first lease, well inside the renewed one
    assert await queue.claim(1, "w2", 30) == []
    got = await queue.get(job.id)
    assert got is not None and got.lease_owner == "w1" and got.state is JobState.RUNNING


async def test_result_is_committed_once(queue: JobQueue) -> None:
    job = await queue.enqueue("k", None)
    await queue.claim(1, "w", 30)
    assert await queue.complete(job.id, "w", {"answer": 42}) is True
    assert await queue.complete(job.id, "w", {"answer": 43}) is False
    assert await queue.fail(job.id, "w", "late") is None
    done = await queue.get(job.id)
    assert done is not None and done.result == {"answer": 42} and done.attempts == 1


async def test_retry_with_backoff_then_dead_letter_then_manual_retry(queue: JobQueue) -> None:
    queue.settings = _settings(backoff_s=0.1, backoff_max_s=0.15)
    job = await queue.enqueue("k", None, max_attempts=3)
    await queue.claim(1, "w", 30)
    assert await queue.fail(job.id, "w", "first") is JobState.QUEUED
    j = await queue.get(job.id)
    assert j is not None and j.error == "first" and j.lease_owner is None
    assert j.run_after - j.updated_at == pytest.approx(0.1)
    await asyncio.sleep(0.2)
    assert len(await queue.claim(1, "w", 30)) == 1
    assert await queue.fail(job.id, "w", "second") is JobState.QUEUED
    j = await queue.get(job.id)
    assert j is not None and j.run_after - j.updated_at == pytest.approx(0.15)  # 0.2, capped
    await asyncio.sleep(0.25)
    assert [c.attempts for c in await queue.claim(1, "w", 30)] == [3]
    assert await queue.fail(job.id, "w", "third") is JobState.DEAD
    assert await queue.claim(1, "w", 30) == []
    dead = await queue.list(state="dead")
    assert [d.id for d in dead] == [job.id] and dead[0].error == "third"
    retried = await queue.retry(job.id)
    assert retried is not None and retried.state is JobState.QUEUED and retried.attempts == 0
    assert [c.id for c in await queue.claim(1, "w", 30)] == [job.id]
    assert await queue.retry(job.id) is None  # running: nothing to retry


async def test_permanent_failure_is_failed_at_once(queue: JobQueue) -> None:
    job = await queue.enqueue("k", None, max_attempts=5)
    await queue.claim(1, "w", 30)
    assert await queue.fail(job.id, "w", "bad payload", retry=False) is JobState.FAILED
    assert await queue.claim(1, "w", 30) == []


async def test_lease_lapsing_on_the_last_attempt_is_dead(queue: JobQueue) -> None:
    job = await queue.enqueue("k", None, max_attempts=1)
    await queue.claim(1, "w", 0.1)
    await asyncio.sleep(0.3)
    assert await queue.claim(1, "w2", 30) == []
    j = await queue.get(job.id)
    assert j is not None and j.state is JobState.DEAD and "lease lapsed" in (j.error or "")


async def test_cancel_queued_at_once_and_running_through_its_runner(queue: JobQueue) -> None:
    queued = await queue.enqueue("k", 1)
    running = await queue.enqueue("k", 2)
    assert [j.id for j in await queue.claim(1, "w", 30, kinds=["k"])] == [queued.id]
    # (the first was claimed; queue one more to cancel while queued)
    waiting = await queue.enqueue("k", 3)
    c = await queue.cancel(waiting.id)
    assert c is not None and c.state is JobState.CANCELLED
    assert [j.id for j in await queue.claim(5, "w", 30)] == [running.id]
    c = await queue.cancel(running.id)
    assert c is not None and c.state is JobState.RUNNING and c.cancel_requested
    assert await queue.heartbeat(running.id, "w", 30) == "cancel"
    assert await queue.release(running.id, "w") is JobState.CANCELLED
    assert await queue.cancel("job_nope") is None
    # A failure reported after cancellation was asked also ends it cancelled.
    await queue.cancel(queued.id)
    assert await queue.fail(queued.id, "w", "stopped") is JobState.CANCELLED


async def test_release_gives_the_job_back_uncounted(queue: JobQueue) -> None:
    job = await queue.enqueue("k", None)
    await queue.claim(1, "w", 30)
    assert await queue.release(job.id, "w") is JobState.QUEUED
    again = await queue.claim(1, "w2", 30)
    assert [j.attempts for j in again] == [1]


async def test_depth_limits_per_tenant_and_in_total(queue: JobQueue) -> None:
    queue.settings = _settings(max_depth=3, max_depth_per_tenant=2)
    a1 = await queue.enqueue("k", None, tenant="a")
    await queue.enqueue("k", None, tenant="a")
    with pytest.raises(QueueFull) as e:
        await queue.enqueue("k", None, tenant="a")
    assert e.value.status == 429 and "tenant 'a'" in str(e.value)
    assert e.value.code == "job_queue_full" and e.value.headers()["retry-after"] == "5"
    await queue.enqueue("k", None, tenant="b")
    with pytest.raises(QueueFull, match="jobs.max_depth = 3"):
        await queue.enqueue("k", None, tenant="c")
    # Finished jobs do not count: a slot frees when one ends.
    claimed = await queue.claim(1, "w", 30)
    assert [j.id for j in claimed] == [a1.id]
    await queue.complete(a1.id, "w", None)
    assert (await queue.enqueue("k", None, tenant="a")).tenant == "a"


async def test_scheduled_start(queue: JobQueue) -> None:
    later = await queue.enqueue("k", None, run_after=time.time() + 3600)
    soon = await queue.enqueue("k", None, run_after=time.time() + 0.3)
    assert await queue.claim(5, "w", 30) == []
    await asyncio.sleep(0.5)
    assert [j.id for j in await queue.claim(5, "w", 30)] == [soon.id]
    j = await queue.get(later.id)
    assert j is not None and j.state is JobState.QUEUED


async def test_enqueue_with_an_id_is_idempotent(queue: JobQueue) -> None:
    a = await queue.enqueue("k", {"v": 1}, job_id="job_fixed")
    b = await queue.enqueue("k", {"v": 2}, job_id="job_fixed")
    assert a.id == b.id == "job_fixed" and b.payload == {"v": 1}
    assert len(await queue.list()) == 1


async def test_get_list_and_stats(queue: JobQueue) -> None:
    a = await queue.enqueue("alpha", None, tenant="t1")
    await queue.enqueue("alpha", None, tenant="t2")
    await queue.enqueue("beta", None, tenant="t2")
    assert await queue.get(a.id, tenant="t2") is None  # another tenant's job is not found
    assert (await queue.get(a.id, tenant="t1")) is not None
    assert await queue.cancel(a.id, tenant="t2") is None
    assert [j.kind for j in await queue.list(tenant="t2")] == ["beta", "alpha"]
    assert len(await queue.list(kind="alpha")) == 2
    assert len(await queue.list(limit=1)) == 1
    await queue.claim(1, "w", 30, kinds=["beta"])
    stats = await queue.stats()
    assert stats.queued == {"alpha": 2} and stats.running == {"beta": 1}
    assert stats.oldest_queued_s >= 0


async def test_list_pages_by_created_at_then_id(queue: JobQueue) -> None:
    """The admin list's cursor: (created_at, id) of the last job shown."""
    made = [await queue.enqueue("k", None, job_id=f"job_{i}") for i in range(5)]
    newest = await queue.list()
    seen: list[str] = []
    before = None
    while page := await queue.list(limit=2, before=before):
        seen += [j.id for j in page]
        before = (page[-1].created_at, page[-1].id)
    assert seen == [j.id for j in newest] and sorted(seen) == [j.id for j in made]
    assert await queue.list(before=(0.0, "")) == []


async def test_total_limit_below_the_tenant_limit(queue: JobQueue) -> None:
    queue.settings = _settings(max_depth=2, max_depth_per_tenant=5)
    await queue.enqueue("k", None, tenant="a")
    await queue.enqueue("k", None, tenant="b")
    with pytest.raises(QueueFull, match="jobs.max_depth = 2"):
        await queue.enqueue("k", None, tenant="a")


async def test_purge_deletes_only_finished_jobs_ended_before(queue: JobQueue) -> None:
    done = await queue.enqueue("k", None)
    await queue.claim(1, "w", 30)
    await queue.complete(done.id, "w", "r")
    cancelled = await queue.enqueue("k", None)
    await queue.cancel(cancelled.id)
    waiting = await queue.enqueue("k", None)
    assert await queue.purge(time.time() - 60) == 0  # ended just now: kept
    assert await queue.purge(time.time() + 1, batch=1) == 1
    assert await queue.purge(time.time() + 1) == 1
    assert [j.id for j in await queue.list()] == [waiting.id]
