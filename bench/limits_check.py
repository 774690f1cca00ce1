#!/usr/bin/env python3
"""Latency of one rate-limit check and one budget reserve + settle, in
process and on a loopback Redis (docs/limits.md).

What is timed, one call at a time on one event loop (what a request waits):

* rate-limit check: one ``take`` of the four buckets a request with every
  limit set takes (key and tenant, requests and tokens per minute), over
  1,000 keys of 10 tenants with limits high enough never to refuse: with
  Redis, one EVALSHA of the GCRA script;
* budget: ``reserve`` then ``settle`` against a key's and a tenant's budget
  (two Redis scripts).

Redis: ``--redis-url`` or, by default, a ``redis-server`` started on a free
loopback port for the run (no persistence) and stopped at the end.

Usage (from the repo root; ~20 s)::

    .venv/bin/python bench/limits_check.py [-n 20000] [--out bench/results/x.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from seawall.config import RedisSettings
from seawall.pipeline.budgets import (
    BudgetLimit,
    Budgets,
    InMemoryBudgets,
    RedisBudgets,
    Reservation,
)
from seawall.pipeline.ratelimit import (
    Charge,
    InMemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from seawall.store.redis_link import RedisLink


@contextlib.contextmanager
def loopback_redis() -> Iterator[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
    from tests.services import redis_server

    with redis_server() as server:
        yield server.url()


async def timed(n: int, call: Callable[[int], Awaitable[None]]) -> tuple[list[float], float]:
    """(wall time of each call in µs, this process's CPU time per call in µs)."""
    for i in range(min(n, 1000)):  # warm up: connections, scripts loaded
        await call(i)
    out = []
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter_ns()
        await call(i)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out, (time.process_time() - cpu0) / n * 1e6


def limit_check(rl: RateLimiter) -> Callable[[int], Awaitable[None]]:
    async def call(i: int) -> None:
        k, t = f"k:{i % 1000}", f"t:{i % 10}"
        d = await rl.take([Charge(k + ":rpm", 10_000_000), Charge(t + ":rpm", 10_000_000),
                           Charge(k + ":tpm", 10_000_000, 500),
                           Charge(t + ":tpm", 10_000_000, 500)])
        assert d.allowed
    return call


def budget_cycle(b: Budgets) -> Callable[[int], Awaitable[None]]:
    async def call(i: int) -> None:
        limits = [BudgetLimit(f"key:{i % 1000}", 1e9, "month"),
                  BudgetLimit(f"tenant:{i % 10}", 1e9, "day")]
        r = await b.reserve(limits, 0.0123)
        assert isinstance(r, Reservation)
        await b.settle(r, 0.0101)
    return call


def row(name: str, backend: str, timing: tuple[list[float], float]) -> str:
    us, cpu = timing
    q = statistics.quantiles(us, n=100)
    return (f"| {name} | {backend} | {len(us)} | {statistics.median(us):.0f} | {q[89]:.0f} "
            f"| {q[98]:.0f} | {max(us):.0f} | {cpu:.0f} |")


async def run(n: int, url: str) -> list[str]:
    link = RedisLink(RedisSettings(url=url, timeout_s=1.0))
    rows = []
    try:

        async def ping(i: int) -> None:
            await link.client.ping()

        rows.append(row("PING (the round-trip floor)", "Redis, loopback", await timed(n, ping)))
        for name, make in (("rate-limit check (4 buckets)", limit_check),
                           ("budget reserve + settle (2 budgets)", budget_cycle)):
            for backend, obj in (
                    ("in-process", InMemoryRateLimiter() if make is limit_check
                     else InMemoryBudgets()),
                    ("Redis, loopback", RedisRateLimiter(link, InMemoryRateLimiter())
                     if make is limit_check else RedisBudgets(link, InMemoryBudgets()))):
                rows.append(row(name, backend, await timed(n, make(obj))))  # type: ignore[arg-type]
    finally:
        await link.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20_000, help="timed calls per row")
    ap.add_argument("--redis-url", help="default: a redis-server started for the run")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(loopback_redis())
        rows = asyncio.run(run(args.n, url))
    version = subprocess.run(["redis-server", "--version"], capture_output=True,
                             text=True).stdout.split()[2] if not args.redis_url else "given"
    text = "\n".join([
        f"# Rate-limit and budget check latency ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`bench/limits_check.py -n {args.n}`: one call at a time, one event loop, "
        f"Python {platform.python_version()}, redis-py (hiredis), redis-server {version} on "
        f"127.0.0.1; the machine is shared (2 cores, load average {os.getloadavg()[0]:.1f} "
        "at the end of the run). Gateway CPU: this process's CPU time per call (the "
        "client side a gateway pays; redis-server's own CPU is not in it).",
        "",
        "| what | backend | calls | p50 µs | p90 µs | p99 µs | max µs | gateway CPU µs/call |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows, ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
