#!/usr/bin/env python3
"""Latency a background response adds over a direct one (docs/responses.md,
"Background responses"), embedded (SQLite queue, log and store, the job
runner inside the gateway), against the fake upstream on loopback.

Measured from the client, one call at a time, interleaved:

* direct: ``POST /v1/responses`` with ``stream: true``, to the last byte;
* background: the same with ``background: true`` (store, enqueue, the runner
  claims the job, runs it, logs each event; the reply follows the log), to
  the last byte;
* ack: how long the background ``POST`` without ``stream`` takes to answer
  ``queued``.

With ``--postgres``, the same on a loopback Postgres (store, queue and log
shared; one gateway, so its readers are woken in process as embedded).

Usage (from the repo root; ~30 s each)::

    .venv/bin/python bench/background_latency.py [-n 200] [--postgres]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = {"model": "gpt-x", "input": "hello there from the background latency bench"}


def _pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
    if args.postgres:
        from seawall.store.migrate import migrate
        from tests.services import create_database, postgres_server

        with postgres_server() as pg:
            url = create_database(pg)
            migrate(url)
            run(args, {"store": {"kind": "postgres", "url": url}})
    else:
        run(args, {})


def run(args: argparse.Namespace, store: dict[str, object]) -> None:
    from tests.gateway import run_gateway
    from tests.servers import start_fake_upstream

    fake_url, stop_fake = start_fake_upstream()
    config = {"auth": {"allow_anonymous_loopback": True},
              "providers": {"oa": {"type": "openai", "base_url": fake_url + "/v1"}},
              "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}}, **store}
    times: dict[str, list[float]] = {"direct": [], "background": [], "ack": []}
    try:
        with tempfile.TemporaryDirectory() as tmp, run_gateway(config, Path(tmp)) as gw, \
                httpx.Client(base_url=gw.url, timeout=30) as c:
            def timed(name: str, body: dict[str, object]) -> None:
                t0 = time.perf_counter()
                with c.stream("POST", "/v1/responses", json=body) as r:
                    r.raise_for_status()
                    data = b"".join(r.iter_bytes())
                times[name].append((time.perf_counter() - t0) * 1000)
                if body.get("stream"):
                    assert b"response.completed" in data, data[-300:]

            for i in range(args.n + 20):
                timed("direct", {**BODY, "stream": True})
                timed("background", {**BODY, "stream": True, "background": True})
                if i == 19:  # warm-up done
                    for v in times.values():
                        v.clear()
            for _ in range(args.n):  # apart: their jobs run after each answer
                timed("ack", {**BODY, "background": True})
    finally:
        stop_fake()
    d50 = statistics.median(times["direct"])
    where = "postgres" if store else "embedded"
    print(f"| call | p50 ms | p99 ms |  (n = {args.n} each, {where}, fake upstream)")
    print("|---|---|---|")
    for name, xs in times.items():
        print(f"| {name} | {statistics.median(xs):.1f} | {_pct(xs, 0.99):.1f} |")
    print(f"\nadded by background (p50): {statistics.median(times['background']) - d50:.1f} ms")


if __name__ == "__main__":
    main()
