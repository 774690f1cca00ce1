"""The shared job queue on Postgres: any number of processes claim from one
table with ``FOR UPDATE SKIP LOCKED`` (a claimer passes over rows another is
taking instead of waiting for them). Schema: migrations/0005_jobs.sql."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

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
from seawall.store.pg import Postgres

_COLS = ", ".join(COLUMNS)
_SELECT = f"SELECT {_COLS} FROM jobs"
_RETURNING = "RETURNING " + ", ".join(f"jobs.{c}" for c in COLUMNS)
_REAP = """
UPDATE jobs SET
    state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN error
                 WHEN attempts >= max_attempts
                 THEN 'lease lapsed on attempt ' || attempts || ' of ' || max_attempts
                      || ' (its runner died or hung)'
                 ELSE error END,
    lease_owner = NULL, lease_until = NULL, run_after = %(now)s, updated_at = %(now)s
WHERE state = 'running' AND lease_until < %(now)s
"""
_CLAIM = f"""
WITH picked AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND run_after <= %(now)s {{kinds}}
    ORDER BY priority, created_at
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET state = 'running', lease_owner = %(owner)s, lease_until = %(until)s,
    attempts = jobs.attempts + 1, updated_at = %(now)s
FROM picked WHERE jobs.id = picked.id
{_RETURNING}
"""


# Room for one more job? The total is counted (at most up to the limit); the
# tenant's only when the total alone does not settle it (CASE keeps that
# order), so a queue below both limits costs one count, capped at the lower.
_ROOM = """CASE
    WHEN (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state IN ('queued', 'running')
          LIMIT %(least)s) t) < %(least)s THEN true
    WHEN (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state IN ('queued', 'running')
          LIMIT %(max_depth)s) t) >= %(max_depth)s THEN false
    ELSE (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE tenant = %(tenant)s AND
          state IN ('queued', 'running') LIMIT %(max_tenant)s) t) < %(max_tenant)s
END"""


def _job(row: dict[str, Any]) -> Job:
    row["state"] = JobState(row["state"])
    return Job(**row)


class PostgresJobQueue:
    def __init__(self, pg: Postgres, settings: JobSettings) -> None:
        self.pg = pg
        self.settings = settings
        self._listeners: list[Callable[[], None]] = []

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to the Stores; nothing of ours to close."""

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def _rows(self, sql: str, args: Any) -> list[Job]:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, args)
            return [_job(r) for r in await cur.fetchall()] if cur.description else []

    async def _one(self, sql: str, args: Any) -> Job | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    async def enqueue(self, kind: str, payload: Any, *, tenant: str = "default",
                      priority: int = 0, max_attempts: int | None = None,
                      run_after: float | None = None, job_id: str | None = None) -> Job:
        s = self.settings
        now = time.time()
        args = {"id": job_id or new_job_id(), "tenant": tenant, "kind": kind,
                "payload": Jsonb(payload), "priority": priority,
                "max_attempts": max_attempts or s.max_attempts,
                "run_after": now if run_after is None else run_after, "now": now,
                "max_depth": s.max_depth, "max_tenant": s.max_depth_per_tenant,
                "least": min(s.max_depth, s.max_depth_per_tenant)}
        # One statement: the depth check and the insert. Concurrent enqueues
        # may overshoot a limit by at most their number (docs/jobs.md).
        job = await self._one(
            "INSERT INTO jobs (id, tenant, kind, payload, priority, state, attempts, "
            "max_attempts, run_after, created_at, updated_at) "
            "SELECT %(id)s, %(tenant)s, %(kind)s, %(payload)s, %(priority)s, 'queued', 0, "
            "%(max_attempts)s, %(run_after)s, %(now)s, %(now)s "
            "WHERE " + _ROOM + " "
            f"ON CONFLICT (id) DO NOTHING {_RETURNING}", args)
        if job is None:
            if job_id is not None and (found := await self.get(job_id)) is not None:
                return found
            pool = await self.pg.pool()
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE tenant = %s) FROM jobs "
                    "WHERE state IN ('queued', 'running')", (tenant,))
                total, mine = await cur.fetchone() or (0, 0)
            raise QueueFull(full_message(total, mine, tenant, s), RETRY_AFTER_S)
        for callback in self._listeners:
            callback()
        return job

    async def claim(self, n: int, owner: str, lease_s: float,
                    kinds: Sequence[str] | None = None) -> list[Job]:
        if n <= 0 or (kinds is not None and not kinds):
            return []
        now = time.time()
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            await conn.execute(_REAP, {"now": now})
        sql = _CLAIM.format(kinds="" if kinds is None else "AND kind = ANY(%(kinds)s)")
        jobs = await self._rows(sql, {"now": now, "n": n, "owner": owner,
                                      "until": now + lease_s, "kinds": list(kinds or ())})
        jobs.sort(key=lambda j: (j.priority, j.created_at))
        return jobs

    async def heartbeat(self, job_id: str, owner: str, lease_s: float) -> Heartbeat:
        now = time.time()
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_until = %s, updated_at = %s WHERE id = %s AND "
                "state = 'running' AND lease_owner = %s RETURNING cancel_requested",
                (now + lease_s, now, job_id, owner))
            row = await cur.fetchone()
        return "lost" if row is None else "cancel" if row[0] else "held"

    async def complete(self, job_id: str, owner: str, result: Any) -> bool:
        job = await self._one(
            "UPDATE jobs SET state = 'succeeded', result = %s, error = NULL, "
            "lease_owner = NULL, lease_until = NULL, updated_at = %s "
            f"WHERE id = %s AND state = 'running' AND lease_owner = %s {_RETURNING}",
            (Jsonb(result), time.time(), job_id, owner))
        return job is not None

    async def fail(self, job_id: str, owner: str, error: str,
                   retry: bool = True) -> JobState | None:
        s = self.settings
        job = await self._one(
            "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
            "WHEN NOT %(retry)s THEN 'failed' WHEN attempts >= max_attempts THEN 'dead' "
            "ELSE 'queued' END, error = %(error)s, lease_owner = NULL, lease_until = NULL, "
            "run_after = %(now)s + LEAST(%(cap)s::float8, %(base)s::float8 * "
            "power(2, LEAST(GREATEST(attempts - 1, 0), 30))), updated_at = %(now)s "
            "WHERE id = %(id)s AND state = 'running' AND lease_owner = %(owner)s "
            + _RETURNING,
            {"retry": retry, "error": error[:4000], "now": time.time(), "cap": s.backoff_max_s,
             "base": s.backoff_s, "id": job_id, "owner": owner})
        return None if job is None else job.state

    async def release(self, job_id: str, owner: str) -> JobState | None:
        now = time.time()
        job = await self._one(
            "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
            "ELSE 'queued' END, attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, "
            "lease_until = NULL, run_after = %s, updated_at = %s "
            f"WHERE id = %s AND state = 'running' AND lease_owner = %s {_RETURNING}",
            (now, now, job_id, owner))
        return None if job is None else job.state

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job | None:
        where, args = _scope(job_id, tenant)
        return await self._one(
            "UPDATE jobs SET state = CASE WHEN state = 'queued' THEN 'cancelled' "
            "ELSE state END, cancel_requested = (cancel_requested OR state = 'running'), "
            f"updated_at = %s WHERE {where} {_RETURNING}", (time.time(), *args))

    async def retry(self, job_id: str, tenant: str | None = None) -> Job | None:
        now = time.time()
        where, args = _scope(job_id, tenant)
        return await self._one(
            "UPDATE jobs SET state = 'queued', attempts = 0, cancel_requested = false, "
            f"run_after = %s, updated_at = %s WHERE {where} AND state IN "
            f"('dead', 'failed', 'cancelled') {_RETURNING}", (now, now, *args))

    async def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        where, args = _scope(job_id, tenant)
        return await self._one(f"{_SELECT} WHERE {where}", args)

    async def list(self, *, state: str | None = None, kind: str | None = None,
                   tenant: str | None = None, limit: int = 100,
                   before: tuple[float, str] | None = None) -> list[Job]:
        conds: list[str] = []
        args: list[Any] = []
        for col, value in (("state", state), ("kind", kind), ("tenant", tenant)):
            if value is not None:
                conds.append(f"{col} = %s")
                args.append(value)
        if before is not None:
            conds.append("(created_at < %s OR (created_at = %s AND id < %s))")
            args.extend([before[0], before[0], before[1]])
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        return await self._rows(f"{_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT %s",
                                [*args, limit])

    async def purge(self, finished_before: float, batch: int = 5000) -> int:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN "
                "('succeeded', 'failed', 'dead', 'cancelled') AND updated_at < %s LIMIT %s "
                "FOR UPDATE SKIP LOCKED)", (finished_before, batch))
            return cur.rowcount

    async def stats(self) -> QueueStats:
        now = time.time()
        out = QueueStats({}, {}, 0.0)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT kind, state, count(*) FROM jobs WHERE state IN ('queued', 'running') "
                "GROUP BY kind, state")
            for kind, state, count in await cur.fetchall():
                (out.queued if state == "queued" else out.running)[kind] = count
            cur = await conn.execute(
                "SELECT min(GREATEST(created_at, run_after)) FROM jobs "
                "WHERE state = 'queued' AND run_after <= %s", (now,))
            row = await cur.fetchone()
        if row and row[0] is not None:
            out.oldest_queued_s = max(0.0, now - row[0])
        return out


def _scope(job_id: str, tenant: str | None) -> tuple[str, tuple[Any, ...]]:
    if tenant is None:
        return "id = %s", (job_id,)
    return "id = %s AND tenant = %s", (job_id, tenant)
