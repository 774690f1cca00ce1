"""A database written by an older Seawall opens and gains the new columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from seawall.observe.records import TraceRecord
from seawall.store.sqlite import SqliteStore


async def test_old_database_gains_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as c:  # the first release's tables, minus later columns
        c.execute("CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT "
                  "NOT NULL, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, rpm INTEGER, "
                  "created_at REAL NOT NULL, revoked_at REAL)")
        c.execute("INSERT INTO api_keys VALUES ('k1', 'old', 't', 'h', 'p', NULL, 1.0, NULL)")
        c.execute("CREATE TABLE traces (rowid INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT "
                  "NOT NULL UNIQUE, endpoint TEXT NOT NULL, started_at REAL NOT NULL, tenant "
                  "TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL, deployment TEXT NOT NULL, "
                  "stream INTEGER NOT NULL, status INTEGER NOT NULL, error_type TEXT, "
                  "error_code TEXT, error_message TEXT, input TEXT, output TEXT, input_hash "
                  "TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER "
                  "NOT NULL, usage_estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, "
                  "latency_ms REAL NOT NULL, ttft_ms REAL, finish_reason TEXT, user TEXT)")
    store = SqliteStore(db)
    await store.open()
    try:
        old = await store.key_by_hash("h")
        assert old is not None and old.priority is None
        await store.write_traces([TraceRecord(
            trace_id="t1", endpoint="chat.completions", started_at=1.0, degraded="static",
            attempts=[{"deployment": "a/m", "model": "m", "outcome": "upstream_error",
                       "ms": 3.0}])])
        row = await store.get_trace("t1")
        assert row is not None and row["degraded"] == "static"
        assert '"outcome":"upstream_error"' in row["attempts"]
    finally:
        await store.close()
