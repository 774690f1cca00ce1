"""The embedded store: one SQLite file in WAL mode, driven by aiosqlite on a
thread of its own so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from seawall.observe.records import ROW_COLUMNS, TraceRecord, rows_of
from seawall.store.base import KEY_COLUMNS, ApiKey, TenantBudget, key_changes, key_of, key_row

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
    budget_period TEXT,
    role TEXT NOT NULL DEFAULT 'app',
    scopes TEXT,
    models TEXT,
    collections_read TEXT,
    collections_write TEXT,
    expires_at REAL,
    prev_hash TEXT,
    prev_expires_at REAL,
    budget_reset_at REAL
);
CREATE TABLE IF NOT EXISTS tenant_budgets (
    tenant TEXT PRIMARY KEY,
    budget_usd REAL,
    budget_period TEXT NOT NULL,
    reset_at REAL,
    updated_at REAL NOT NULL
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
    route TEXT,
    spans TEXT
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
               ("route", "TEXT"), ("spans", "TEXT")],
    "api_keys": [("priority", "INTEGER"), ("cache", "INTEGER"), ("tpm", "INTEGER"),
                 ("budget_usd", "REAL"), ("budget_period", "TEXT"),
                 ("role", "TEXT NOT NULL DEFAULT 'app'"), ("scopes", "TEXT"), ("models", "TEXT"),
                 ("collections_read", "TEXT"), ("collections_write", "TEXT"),
                 ("expires_at", "REAL"), ("prev_hash", "TEXT"), ("prev_expires_at", "REAL"),
                 ("budget_reset_at", "REAL")],
    "experiments": [("revision", "INTEGER NOT NULL DEFAULT 0")],
}

_INSERT_TRACE = (
    f"INSERT OR IGNORE INTO traces ({', '.join(ROW_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ROW_COLUMNS)})"
)


class _EndsFailedTransactions(sqlite3.Connection):
    """A connection whose failed statement ends the transaction it was in.

    Why: sqlite3 opens a transaction implicitly before a write and keeps it
    open when the write fails (say ``database is locked`` after the busy
    timeout, under load). The next read on the shared connection then pins a
    WAL snapshot inside that transaction, and once anyone else writes, every
    later write of this connection fails at once with ``database is locked``
    (a stale snapshot cannot be upgraded): one busy timeout would stop the
    trace writer, key changes and canary state for the life of the process.
    Rolling back on the failure makes a store recover with the next call. Only
    operational errors (locked, busy, I/O): an integrity error is the caller's
    to handle inside its transaction."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError:
            self._end_failed()
            raise

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError:
            self._end_failed()
            raise

    def _end_failed(self) -> None:
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.rollback()


async def open_connection(path: Path, **kwargs: Any) -> aiosqlite.Connection:
    """aiosqlite over :class:`_EndsFailedTransactions`: every embedded store's
    connection, so none can be left stuck in a failed transaction."""
    return await aiosqlite.connect(path, factory=_EndsFailedTransactions, **kwargs)


async def connect(path: Path, cache_mib: int = 0) -> aiosqlite.Connection:
    """A connection in WAL mode: readers (CLI, dashboard) never block the
    writer; NORMAL sync is durable against process crashes, which is the
    failure that matters here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await open_connection(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=5000")
    if cache_mib:
        await db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
    return db


def _key(row: aiosqlite.Row) -> ApiKey:
    return key_of(dict(row))


_INSERT_KEY = (f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in KEY_COLUMNS)})")


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
        await self._db.execute(
            "CREATE INDEX IF NOT EXISTS api_keys_prev_hash ON api_keys (prev_hash)")
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
        await self.db.execute(_INSERT_KEY, key_row(key))
        await self.db.commit()

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self.db.execute("SELECT * FROM api_keys WHERE key_hash = ? OR prev_hash = ? "
                                   "LIMIT 1", (key_hash, key_hash)) as c:
            row = await c.fetchone()
        return _key(row) if row else None

    async def list_keys(self, include_revoked: bool = False,
                        tenant: str | None = None) -> list[ApiKey]:
        where, args = [], []
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        sql = "SELECT * FROM api_keys" + (" WHERE " + " AND ".join(where) if where else "")
        async with self.db.execute(sql + " ORDER BY created_at", args) as c:
            return [_key(r) for r in await c.fetchall()]

    async def _matching(self, id_or_name: str, tenant: str | None,
                        include_revoked: bool) -> list[aiosqlite.Row]:
        sql = "SELECT * FROM api_keys WHERE id = ?"
        args: list[Any] = [id_or_name]
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        async with self.db.execute(sql, args) as c:
            rows = list(await c.fetchall())
        if rows:
            return rows
        async with self.db.execute(sql.replace("id = ?", "name = ?", 1), args) as c:
            return list(await c.fetchall())

    async def find_key(self, id_or_name: str, tenant: str | None = None,
                       include_revoked: bool = False) -> ApiKey | None:
        rows = await self._matching(id_or_name, tenant, include_revoked)
        if len(rows) > 1:
            raise ValueError(f"{len(rows)} {'' if include_revoked else 'active '}keys are "
                             f"named {id_or_name!r}; use the id instead")
        return _key(rows[0]) if rows else None

    async def revoke_key(self, id_or_name: str, tenant: str | None = None) -> ApiKey | None:
        rows = await self._matching(id_or_name, tenant, False)
        if len(rows) != 1:
            if len(rows) > 1:
                raise ValueError(f"{len(rows)} active keys are named {id_or_name!r}; "
                                 "revoke by id instead")
            return None
        now = time.time()
        await self.db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                              (now, rows[0]["id"]))
        await self.db.commit()
        return key_of({**dict(rows[0]), "revoked_at": now})

    async def rotate_key(self, key_id: str, key_hash: str, prefix: str,
                         old_valid_until: float) -> ApiKey | None:
        async with self.db.execute(
                "UPDATE api_keys SET prev_hash = key_hash, prev_expires_at = ?, key_hash = ?, "
                "prefix = ? WHERE id = ? AND revoked_at IS NULL RETURNING *",
                (old_valid_until, key_hash, prefix, key_id)) as c:
            row = await c.fetchone()
        await self.db.commit()
        return _key(row) if row else None

    async def update_key(self, key_id: str, **changes: Any) -> ApiKey | None:
        cols = key_changes(changes)
        if not cols:
            return await self.find_key(key_id, include_revoked=True)
        sets = ", ".join(f"{c} = ?" for c in cols)
        async with self.db.execute(f"UPDATE api_keys SET {sets} WHERE id = ? RETURNING *",
                                   (*cols.values(), key_id)) as c:
            row = await c.fetchone()
        await self.db.commit()
        return _key(row) if row else None

    async def tenant_budget(self, tenant: str) -> TenantBudget | None:
        async with self.db.execute("SELECT * FROM tenant_budgets WHERE tenant = ?",
                                   (tenant,)) as c:
            row = await c.fetchone()
        return TenantBudget(**dict(row)) if row else None

    async def tenant_budgets(self) -> list[TenantBudget]:
        async with self.db.execute("SELECT * FROM tenant_budgets ORDER BY tenant") as c:
            return [TenantBudget(**dict(r)) for r in await c.fetchall()]

    async def set_tenant_budget(self, budget: TenantBudget) -> None:
        await self.db.execute(
            "INSERT INTO tenant_budgets (tenant, budget_usd, budget_period, reset_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE SET budget_usd = "
            "excluded.budget_usd, budget_period = excluded.budget_period, reset_at = "
            "excluded.reset_at, updated_at = excluded.updated_at",
            (budget.tenant, budget.budget_usd, budget.budget_period, budget.reset_at,
             budget.updated_at))
        await self.db.commit()

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
