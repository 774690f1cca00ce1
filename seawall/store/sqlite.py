"""The embedded store: one SQLite file in WAL mode, driven by aiosqlite on a
thread of its own so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from seawall.observe.records import ROW_COLUMNS, TraceRecord, rows_of
from seawall.store.base import ApiKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    rpm INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL,
    priority INTEGER,
    cache INTEGER,
    tpm INTEGER,
    budget_usd REAL,
    budget_period TEXT
);
CREATE TABLE IF NOT EXISTS traces (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    started_at REAL NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT,
    model TEXT NOT NULL,
    deployment TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    error_code TEXT,
    error_message TEXT,
    input TEXT,
    output TEXT,
    input_hash TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usage_estimated INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    finish_reason TEXT,
    user TEXT,
    attempts TEXT,
    degraded TEXT,
    cache TEXT,
    cache_entry INTEGER,
    cache_similarity REAL,
    saved_tokens INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0,
    cache_guard TEXT,
    rag TEXT,
    experiment TEXT,
    prompt_version TEXT,
    route TEXT
);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_tenant_time ON traces (tenant, started_at);
CREATE INDEX IF NOT EXISTS traces_model_time ON traces (model, started_at);
CREATE INDEX IF NOT EXISTS traces_time ON traces (started_at);
"""

# Columns added after the first release, for databases created before them.
_ADDED_COLUMNS = {
    "traces": [("attempts", "TEXT"), ("degraded", "TEXT"), ("cache", "TEXT"),
               ("cache_entry", "INTEGER"), ("cache_similarity", "REAL"),
               ("saved_tokens", "INTEGER NOT NULL DEFAULT 0"),
               ("saved_usd", "REAL NOT NULL DEFAULT 0"), ("cache_guard", "TEXT"),
               ("rag", "TEXT"), ("experiment", "TEXT"), ("prompt_version", "TEXT"),
               ("route", "TEXT")],
    "api_keys": [("priority", "INTEGER"), ("cache", "INTEGER"), ("tpm", "INTEGER"),
                 ("budget_usd", "REAL"), ("budget_period", "TEXT")],
    "experiments": [("revision", "INTEGER NOT NULL DEFAULT 0")],
}

_INSERT_TRACE = (
    f"INSERT OR IGNORE INTO traces ({', '.join(ROW_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ROW_COLUMNS)})"
)


async def connect(path: Path, cache_mib: int = 0) -> aiosqlite.Connection:
    """A connection in WAL mode: readers (CLI, dashboard) never block the
    writer; NORMAL sync is durable against process crashes, which is the
    failure that matters here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=5000")
    if cache_mib:
        await db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
    return db


def _key(row: aiosqlite.Row) -> ApiKey:
    d = dict(row)
    if d.get("cache") is not None:
        d["cache"] = bool(d["cache"])
    return ApiKey(**d)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await connect(self.path, cache_mib=64)  # 64 MiB: indexes stay in memory
        self._db.row_factory = aiosqlite.Row
        await self._db.executescript(_SCHEMA)
        await self._add_missing_columns()
        await self._db.commit()

    async def open_reader(self) -> None:
        """A read-only connection of its own (the schema exists: the writing
        store opened first). Key lookups use one, so they never queue behind
        trace writes on the writer's connection or wait out its busy timeout:
        in WAL mode a reader is not blocked by another process's write lock."""
        self._db = await connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA query_only=1")

    async def _add_missing_columns(self) -> None:
        """Bring a database made by an older version up to date (columns are
        only ever added, nullable, so this is the whole migration story)."""
        for table, columns in _ADDED_COLUMNS.items():
            async with self.db.execute(f"PRAGMA table_info({table})") as c:
                have = {row[1] for row in await c.fetchall()}
            for name, decl in columns:
                if name not in have:
                    await self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await (await self.db.execute("SELECT 1")).close()

    # -- keys --
    async def create_key(self, key: ApiKey) -> None:
        await self.db.execute(
            "INSERT INTO api_keys (id, name, tenant, key_hash, prefix, rpm, created_at, revoked_at,"
            " priority, cache, tpm, budget_usd, budget_period)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.name, key.tenant, key.key_hash, key.prefix, key.rpm, key.created_at,
             key.revoked_at, key.priority, key.cache, key.tpm, key.budget_usd,
             key.budget_period))
        await self.db.commit()

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self.db.execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)) as c:
            row = await c.fetchone()
        return _key(row) if row else None

    async def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        sql = "SELECT * FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        async with self.db.execute(sql + " ORDER BY created_at") as c:
            return [_key(r) for r in await c.fetchall()]

    async def revoke_key(self, id_or_name: str) -> ApiKey | None:
        async with self.db.execute(
            "SELECT * FROM api_keys WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
            (id_or_name, id_or_name)) as c:
            rows = list(await c.fetchall())
        if len(rows) != 1:
            if len(rows) > 1:
                raise ValueError(f"{len(rows)} active keys are named {id_or_name!r}; "
                                 "revoke by id instead")
            return None
        now = time.time()
        await self.db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                              (now, rows[0]["id"]))
        await self.db.commit()
        return ApiKey(**{**dict(rows[0]), "revoked_at": now})

    # -- traces --
    async def write_traces(self, records: list[TraceRecord]) -> None:
        rows = await rows_of(records)  # built in slices on the loop
        # One batch at a time on the one connection: two interleaved
        # executemany/commit pairs misuse it (the contract allows concurrent calls).
        async with self._write_lock:
            await self.db.executemany(_INSERT_TRACE, rows)
            await self.db.commit()

    async def recent_traces(self, limit: int = 20, after_rowid: int = 0) -> list[dict[str, Any]]:
        if after_rowid:
            sql = "SELECT * FROM traces WHERE rowid > ? ORDER BY rowid LIMIT ?"
            args: tuple[Any, ...] = (after_rowid, limit)
        else:
            sql = "SELECT * FROM (SELECT * FROM traces ORDER BY rowid DESC LIMIT ?) ORDER BY rowid"
            args = (limit,)
        async with self.db.execute(sql, args) as c:
            return [dict(r) for r in await c.fetchall()]

    async def spent_since(self, tenant: str, key_id: str | None, since: float) -> float:
        """USD spent by ``tenant`` (or by its key ``key_id``) since ``since``,
        from the trace records: where in-process budgets start after a restart
        (seawall.pipeline.budgets)."""
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM traces WHERE tenant = ? AND started_at >= ?"
        args: list[Any] = [tenant, since]
        if key_id is not None:
            sql += " AND key_id = ?"
            args.append(key_id)
        async with self.db.execute(sql, args) as c:
            row = await c.fetchone()
        return float(row[0]) if row else 0.0

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)) as c:
            row = await c.fetchone()
        return dict(row) if row else None

    async def delete_traces_before(self, started_before: float, batch: int = 5000) -> int:
        total = 0
        while True:
            cur = await self.db.execute(
                "DELETE FROM traces WHERE rowid IN (SELECT rowid FROM traces "
                "WHERE started_at < ? ORDER BY started_at LIMIT ?)", (started_before, batch))
            await self.db.commit()
            total += cur.rowcount
            if cur.rowcount < batch:
                return total

    # -- experiments --

    async def experiment_states(self) -> dict[str, dict[str, Any]]:
        async with self.db.execute("SELECT name, state FROM experiments") as c:
            # Rows named _seawall* are internal (the arm salt): never listed.
            return {r[0]: orjson.loads(r[1]) for r in await c.fetchall()
                    if not r[0].startswith("_seawall")}

    async def experiment_state(self, name: str) -> tuple[dict[str, Any] | None, int]:
        async with self.db.execute(
                "SELECT state, revision FROM experiments WHERE name = ?", (name,)) as c:
            row = await c.fetchone()
        return (None, 0) if row is None else (orjson.loads(row[0]), row[1])

    async def save_experiment_state(self, name: str, state: dict[str, Any],
                                    expect_revision: int | None = None) -> int | None:
        blob, now = orjson.dumps(state).decode(), time.time()
        if expect_revision is None:
            sql = ("INSERT INTO experiments (name, state, updated_at, revision) "
                   "VALUES (?, ?, ?, 1) ON CONFLICT (name) DO UPDATE SET state = "
                   "excluded.state, updated_at = excluded.updated_at, revision = revision + 1 "
                   "RETURNING revision")
            args: tuple[Any, ...] = (name, blob, now)
        elif expect_revision == 0:  # none saved yet (or saved before revisions existed)
            sql = ("INSERT INTO experiments (name, state, updated_at, revision) "
                   "VALUES (?, ?, ?, 1) ON CONFLICT (name) DO UPDATE SET state = "
                   "excluded.state, updated_at = excluded.updated_at, revision = 1 "
                   "WHERE experiments.revision = 0 RETURNING revision")
            args = (name, blob, now)
        else:
            sql = ("UPDATE experiments SET state = ?, updated_at = ?, revision = revision + 1 "
                   "WHERE name = ? AND revision = ? RETURNING revision")
            args = (blob, now, name, expect_revision)
        async with self.db.execute(sql, args) as c:
            row = await c.fetchone()
        await self.db.commit()
        return None if row is None else int(row[0])
