"""The embedded job queue: a SQLite file of its own (jobs.db), so job
traffic never waits behind trace writes. Every change runs in a
``BEGIN IMMEDIATE`` transaction: claims stay atomic even when a CLI command
or a second process (``seawall worker`` on the same machine) uses the file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from seawall.config import JobSettings
from seawall.jobs.queue import (
    COLUMNS,
    RETRY_AFTER_S,
    Heartbeat,
    Job,
    JobState,
    QueueFull,
    QueueStats,
    full_message,
    new_job_id,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_after REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (priority, created_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_lapse ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_active_tenant ON jobs (tenant)
    WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
_RETURNING = f"RETURNING {', '.join(COLUMNS)}"
# Lapsed leases: the runner died or hung. Back to the queue, or dead/cancelled.
_REAP = """
UPDATE jobs SET
    state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN error
                 WHEN attempts >= max_attempts
                 THEN 'lease lapsed on attempt ' || attempts || ' of ' || max_attempts
                      || ' (its runner died or hung)'
                 ELSE error END,
    lease_owner = NULL, lease_until = NULL, run_after = ?1, updated_at = ?1
WHERE state = 'running' AND lease_until < ?1
"""


def _job(row: Any) -> Job:
    d = dict(zip(COLUMNS, row, strict=True))
    d["payload"] = orjson.loads(d["payload"])
    d["result"] = None if d["result"] is None else orjson.loads(d["result"])
    d["state"] = JobState(d["state"])
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqliteJobQueue:
    def __init__(self, path: str | Path, settings: JobSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._listeners: list[Callable[[], None]] = []

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("job queue is not open")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level None: transactions are ours (BEGIN IMMEDIATE below).
        db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            await db.execute(f"PRAGMA {pragma}")
        await db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def _tx(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """``work`` in one write transaction, taken at once (no lock upgrade
        later, so no SQLITE_BUSY deadlock between two writers)."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                out = await work(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return out

    async def _read(self, sql: str, args: Sequence[Any]) -> list[Job]:
        """A read, never in the middle of another task's transaction on the
        shared connection (it would see that transaction's uncommitted rows)."""
        async with self._lock:
            return await self._rows(self.db, sql, args)

    async def _rows(self, db: aiosqlite.Connection, sql: str, args: Sequence[Any]) -> list[Job]:
        async with db.execute(sql, args) as c:
            return [_job(r) for r in await c.fetchall()]

    async def _one(self, db: aiosqlite.Connection, sql: str, args: Sequence[Any]) -> Job | None:
        rows = await self._rows(db, sql, args)
        return rows[0] if rows else None

    async def enqueue(self, kind: str, payload: Any, *, tenant: str = "default",
                      priority: int = 0, max_attempts: int | None = None,
                      run_after: float | None = None, job_id: str | None = None) -> Job:
        s = self.settings
        now = time.time()
        job = Job(id=job_id or new_job_id(), tenant=tenant, kind=kind, payload=payload,
                  priority=priority, max_attempts=max_attempts or s.max_attempts,
                  run_after=now if run_after is None else run_after, created_at=now,
                  updated_at=now)
        blob = _dumps(payload)

        async def work(db: aiosqlite.Connection) -> Job:
            if job_id is not None:
                found = await self._one(db, _SELECT + " WHERE id = ?", (job_id,))
                if found is not None:
                    return found
            # Below both limits in total (a count capped at the lower): room.
            least = min(s.max_depth, s.max_depth_per_tenant)
            async with db.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state IN "
                    "('queued', 'running') LIMIT ?)", (least,)) as c:
                row = await c.fetchone()
            if row is None or row[0] >= least:
                async with db.execute(
                        "SELECT count(*), coalesce(sum(tenant = ?), 0) FROM jobs "
                        "WHERE state IN ('queued', 'running')", (tenant,)) as c:
                    total, mine = await c.fetchone() or (0, 0)
                if total >= s.max_depth or mine >= s.max_depth_per_tenant:
                    raise QueueFull(full_message(total, mine, tenant, s), RETRY_AFTER_S)
            await db.execute(
                f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in COLUMNS)})",
                (job.id, tenant, kind, blob, priority, "queued", 0, job.max_attempts,
                 job.run_after, None, None, 0, None, None, now, now))
            return job

        out = await self._tx(work)
        for callback in self._listeners:
            callback()
        return out

    async def claim(self, n: int, owner: str, lease_s: float,
                    kinds: Sequence[str] | None = None) -> list[Job]:
        if n <= 0 or (kinds is not None and not kinds):
            return []
        kind_filter, kind_args = "", list(kinds or ())
        if kinds is not None:
            kind_filter = f" AND kind IN ({', '.join('?' for _ in kinds)})"

        async def work(db: aiosqlite.Connection) -> list[Job]:
            now = time.time()
            await db.execute(_REAP, (now,))
            return await self._rows(db, (
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id IN (SELECT id FROM jobs "
                f"WHERE state = 'queued' AND run_after <= ?{kind_filter} "
                f"ORDER BY priority, created_at LIMIT ?) {_RETURNING}"),
                [owner, now + lease_s, now, now, *kind_args, n])

        jobs = await self._tx(work)
        jobs.sort(key=lambda j: (j.priority, j.created_at))  # RETURNING has no order
        return jobs

    async def heartbeat(self, job_id: str, owner: str, lease_s: float) -> Heartbeat:
        async def work(db: aiosqlite.Connection) -> Heartbeat:
            now = time.time()
            async with db.execute(
                    "UPDATE jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND "
                    "state = 'running' AND lease_owner = ? RETURNING cancel_requested",
                    (now + lease_s, now, job_id, owner)) as c:
                row = await c.fetchone()
            return "lost" if row is None else "cancel" if row[0] else "held"

        return await self._tx(work)

    async def _mine(self, sql: str, args: Sequence[Any]) -> Job | None:
        """Run an UPDATE of a job ``owner`` holds; the row after, or None."""
        async def work(db: aiosqlite.Connection) -> Job | None:
            return await self._one(db, sql + " " + _RETURNING, args)

        return await self._tx(work)

    async def complete(self, job_id: str, owner: str, result: Any) -> bool:
        now = time.time()
        job = await self._mine(
            "UPDATE jobs SET state = 'succeeded', result = ?, error = NULL, "
            "lease_owner = NULL, lease_until = NULL, updated_at = ? "
            "WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (_dumps(result), now, job_id, owner))
        return job is not None

    async def fail(self, job_id: str, owner: str, error: str,
                   retry: bool = True) -> JobState | None:
        now = time.time()
        s = self.settings
        job = await self._mine(
            "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
            "WHEN ? = 0 THEN 'failed' WHEN attempts >= max_attempts THEN 'dead' "
            "ELSE 'queued' END, error = ?, lease_owner = NULL, lease_until = NULL, "
            "run_after = ? + min(?, ? * (1 << min(max(attempts - 1, 0), 30))), updated_at = ? "
            "WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (int(retry), error[:4000], now, s.backoff_max_s, s.backoff_s, now, job_id, owner))
        return None if job is None else job.state

    async def release(self, job_id: str, owner: str) -> JobState | None:
        now = time.time()
        job = await self._mine(
            "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
            "ELSE 'queued' END, attempts = max(attempts - 1, 0), lease_owner = NULL, "
            "lease_until = NULL, run_after = ?, updated_at = ? "
            "WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (now, now, job_id, owner))
        return None if job is None else job.state

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job | None:
        now = time.time()
        where, args = _scope(job_id, tenant)
        return await self._mine(
            "UPDATE jobs SET state = CASE WHEN state = 'queued' THEN 'cancelled' "
            "ELSE state END, cancel_requested = CASE WHEN state = 'running' THEN 1 "
            f"ELSE cancel_requested END, updated_at = ? WHERE {where}", (now, *args))

    async def retry(self, job_id: str, tenant: str | None = None) -> Job | None:
        now = time.time()
        where, args = _scope(job_id, tenant)
        return await self._mine(
            "UPDATE jobs SET state = 'queued', attempts = 0, cancel_requested = 0, "
            "run_after = ?, updated_at = ? "
            f"WHERE {where} AND state IN ('dead', 'failed', 'cancelled')", (now, now, *args))

    async def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        where, args = _scope(job_id, tenant)
        rows = await self._read(f"{_SELECT} WHERE {where}", args)
        return rows[0] if rows else None

    async def list(self, *, state: str | None = None, kind: str | None = None,
                   tenant: str | None = None, limit: int = 100,
                   before: tuple[float, str] | None = None) -> list[Job]:
        conds: list[str] = []
        args: list[Any] = []
        for col, value in (("state", state), ("kind", kind), ("tenant", tenant)):
            if value is not None:
                conds.append(f"{col} = ?")
                args.append(value)
        if before is not None:
            conds.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([before[0], before[0], before[1]])
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        return await self._read(f"{_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT ?",
                                [*args, limit])

    async def purge(self, finished_before: float, batch: int = 5000) -> int:
        async def work(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN "
                "('succeeded', 'failed', 'dead', 'cancelled') AND updated_at < ? LIMIT ?)",
                (finished_before, batch))
            return cur.rowcount

        return await self._tx(work)

    async def stats(self) -> QueueStats:
        now = time.time()
        out = QueueStats({}, {}, 0.0)
        async with self._lock:
            async with self.db.execute(
                    "SELECT kind, state, count(*) FROM jobs WHERE state IN "
                    "('queued', 'running') GROUP BY kind, state") as c:
                for kind, state, count in await c.fetchall():
                    (out.queued if state == "queued" else out.running)[kind] = count
            async with self.db.execute(
                    "SELECT min(max(created_at, run_after)) FROM jobs "
                    "WHERE state = 'queued' AND run_after <= ?", (now,)) as c:
                row = await c.fetchone()
        if row and row[0] is not None:
            out.oldest_queued_s = max(0.0, now - row[0])
        return out


def _scope(job_id: str, tenant: str | None) -> tuple[str, tuple[Any, ...]]:
    if tenant is None:
        return "id = ?", (job_id,)
    return "id = ? AND tenant = ?", (job_id, tenant)
