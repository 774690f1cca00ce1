"""``seawall worker`` processes on the shared Postgres queue (and on one
machine's SQLite file): one is killed with SIGKILL mid-job, another finishes
the job once its lease lapses, and the result is committed exactly once;
SIGTERM gives unfinished jobs back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.config import parse_settings
from seawall.jobs.queue import Job, JobQueue, JobState
from seawall.store.factory import Stores
from tests.services import free_port

LEASE_S = 2.0


@pytest.fixture(params=["postgres", "sqlite"])
def worker_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Workers on the shared Postgres queue, or on one machine's SQLite file."""
    conf = tmp_path / "seawall.yaml"
    data: dict[str, Any] = {"data_dir": str(tmp_path / "data"),
                            "server": {"log_level": "info"},
                            "jobs": {"lease_s": LEASE_S, "poll_s": 0.1}}
    if request.param == "postgres":
        data["store"] = {"kind": "postgres", "url": request.getfixturevalue("pg_url")}
    conf.write_text(json.dumps(data))
    return conf


@pytest.fixture
def workers(worker_config: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def start_worker(conf: Path, procs: list[subprocess.Popen[str]],
                 *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "seawall.cli", "worker", "-c", str(conf), *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "SEAWALL_CONFIG": ""})
    procs.append(p)
    return p


async def _queue(conf: Path) -> tuple[Stores, JobQueue]:
    settings = parse_settings(json.loads(conf.read_text()))
    stores = Stores(settings)
    q = stores.jobs()
    await q.open()
    return stores, q


async def wait_for(q: JobQueue, job_id: str, state: JobState, within_s: float) -> Job:
    async def poll() -> Job:
        while True:
            job = await q.get(job_id)
            assert job is not None
            if job.state is state:
                return job
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), within_s)


async def test_killed_worker_job_finishes_on_another_exactly_once(
        worker_config: Path, workers: list[subprocess.Popen[str]]) -> None:
    stores, q = await _queue(worker_config)
    try:
        job = await q.enqueue("sleep", {"seconds": 3, "result": "payload-7"})
        first = start_worker(worker_config, workers)
        running = await wait_for(q, job.id, JobState.RUNNING, within_s=60)
        first_owner = running.lease_owner
        assert first_owner and f":{first.pid}:" in first_owner
        first.send_signal(signal.SIGKILL)  # mid-job: no release, no goodbye
        first.wait(10)
        killed_at = time.monotonic()

        metrics_port = free_port()
        second = start_worker(worker_config, workers, "--metrics-port", str(metrics_port))
        done = await wait_for(q, job.id, JobState.SUCCEEDED, within_s=90)
        # Taken over once the lease lapsed, well within lease + startup + the job's own time.
        assert time.monotonic() - killed_at < 60
        assert done.attempts == 2
        assert done.result["worker"] != first_owner
        assert f":{second.pid}:" in done.result["worker"]
        assert done.result == {"slept": 3, "worker": done.result["worker"], "attempt": 2,
                               "result": "payload-7"}
        # The dead worker's late word changes nothing: the result was committed once.
        assert await q.complete(job.id, first_owner, {"late": True}) is False
        again = await q.get(job.id)
        assert again is not None and again.result == done.result
        assert again.updated_at == done.updated_at
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'seawall_jobs_total{kind="sleep",outcome="succeeded"} 1.0' in text
    finally:
        await q.close()
        await stores.close()


async def test_sigterm_gives_the_running_job_back(
        worker_config: Path, workers: list[subprocess.Popen[str]]) -> None:
    stores, q = await _queue(worker_config)
    try:
        job = await q.enqueue("sleep", {"seconds": 600})
        worker = start_worker(worker_config, workers)
        await wait_for(q, job.id, JobState.RUNNING, within_s=60)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
        back = await q.get(job.id)
        # Released, not left to lapse: claimable at once, this run not counted.
        assert back is not None and back.state is JobState.QUEUED and back.attempts == 0
        assert back.lease_owner is None
    finally:
        await q.close()
        await stores.close()
