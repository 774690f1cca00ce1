"""The audit log: one append-only row per admin action, in SQLite or Postgres.

Who (``actor``: a key id, ``master``, ``anonymous`` or ``cli:<login>``, with
its name and role), when (``at``), from where (``source``: the client's
address, or ``cli``), which tenant the action concerns (``*`` = the whole
gateway), the dotted ``action`` (``key.revoke``, ``cache.purge``...), its
``target``, the state ``before`` and ``after`` (JSON, secrets removed) and
the request id. There is no update or delete here; both backends also
refuse them in the database (a trigger), so a bug cannot rewrite history.

Two faces: :class:`AuditLog` (async, for the server and async CLI code) and
:class:`SyncAuditLog` (for CLI commands on threads or without a loop). Both
write the same table through the same SQL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from seawall.audit.model import Actor, AuditEvent, AuditQuery, scrub
from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres
from seawall.store.sync_sqlite import SyncSqlite

MAX_STATE_BYTES = 64 * 1024  # one before/after document; larger ones are cut, not refused
MAX_TEXT = 1000  # characters kept of a tenant, target, actor name or source


def _state(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    text = orjson.dumps(scrub(value), default=str).decode()
    if len(text) > MAX_STATE_BYTES:
        text = orjson.dumps({"truncated": True, "bytes": len(text),
                             "head": text[:1024]}).decode()
    return text


# The SQLite table (created at open); migration 0011_audit.sql is its Postgres twin.
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant, id);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, id);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""
_COLUMNS = ("at, actor, actor_name, actor_role, tenant, action, target, source, before_json, "
            "after_json, request_id")
_INSERT = f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _clip(text: str) -> str:
    """A name as stored: the first MAX_TEXT characters (a client-chosen tenant
    or key name can be megabytes long; the row stays small)."""
    return text[:MAX_TEXT]


def _row(e: AuditEvent) -> tuple[Any, ...]:
    return (e.at, _clip(e.actor.id), _clip(e.actor.name), e.actor.role, _clip(e.tenant),
            e.action, _clip(e.target), _clip(e.source), _state(e.before), _state(e.after),
            e.request_id)


def _select(q: AuditQuery) -> tuple[str, list[Any]]:
    """The query's SQL ("?" placeholders) and arguments; values are always bound."""
    where: list[str] = []
    args: list[Any] = []
    if q.tenant is not None:
        where.append("tenant = ?")
        args.append(q.tenant)
    if q.action is not None:
        if q.action.endswith(".*"):
            # A prefix match without LIKE, so '_' and '%' in a name match only themselves.
            prefix = q.action[:-1]
            where.append("substr(action, 1, ?) = ?")
            args += [len(prefix), prefix]
        else:
            where.append("action = ?")
            args.append(q.action)
    if q.since is not None:
        where.append("at >= ?")
        args.append(q.since)
    if q.before_id is not None:
        where.append("id < ?")
        args.append(q.before_id)
    sql = (f"SELECT id, {_COLUMNS} FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
    return sql, [*args, q.limit]


def _event(r: Any) -> AuditEvent:
    return AuditEvent(id=int(r[0]), at=float(r[1]), actor=Actor(r[2], r[3], r[4]), tenant=r[5],
                      action=r[6], target=r[7], source=r[8],
                      before=orjson.loads(r[9]) if r[9] is not None else None,
                      after=orjson.loads(r[10]) if r[10] is not None else None,
                      request_id=r[11])


def _stamp(event: AuditEvent) -> AuditEvent:
    event.at = event.at or time.time()
    return event


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class SqliteAuditLog(AsyncSqlite):
    """In ``seawall.db``, next to the keys whose changes it records."""

    SCHEMA = SQLITE_SCHEMA
    WHAT = "audit log"

    async def append(self, event: AuditEvent) -> AuditEvent:
        _stamp(event)
        async with self.db.execute(_INSERT, _row(event)) as c:
            event.id = c.lastrowid
        await self.db.commit()
        return event

    async def query(self, q: AuditQuery) -> list[AuditEvent]:
        sql, args = _select(q)
        async with self.db.execute(sql, args) as c:
            return [_event(r) for r in await c.fetchall()]


class SqliteSyncAuditLog(SyncSqlite):
    """The same table for sync callers (CLI commands)."""

    SCHEMA = SQLITE_SCHEMA

    def __init__(self, path: Path) -> None:
        super().__init__(path)

    def append(self, event: AuditEvent) -> AuditEvent:
        _stamp(event)
        with self._write() as db:
            event.id = db.execute(_INSERT, _row(event)).lastrowid
        return event

    def query(self, q: AuditQuery) -> list[AuditEvent]:
        sql, args = _select(q)
        with self._lock:
            return [_event(tuple(r)) for r in self.db.execute(sql, args).fetchall()]


class PostgresAuditLog:
    """The ``audit_log`` table of the shared database (migration 0011)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def append(self, event: AuditEvent) -> AuditEvent:
        _stamp(event)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_pg(_INSERT) + " RETURNING id", _row(event))
            row = await cur.fetchone()
        assert row is not None
        event.id = int(row[0])
        return event

    async def query(self, q: AuditQuery) -> list[AuditEvent]:
        sql, args = _select(q)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_pg(sql), args)
            return [_event(r) for r in await cur.fetchall()]


class PostgresSyncAuditLog:
    """The same table through the sync pool (CLI commands)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    def open(self) -> PostgresSyncAuditLog:
        self.pg.sync_pool()
        return self

    def close(self) -> None:
        """The pools belong to :class:`Postgres`."""

    def append(self, event: AuditEvent) -> AuditEvent:
        _stamp(event)
        with self.pg.sync_pool().connection() as conn:
            row = conn.execute(_pg(_INSERT) + " RETURNING id", _row(event)).fetchone()
        assert row is not None
        event.id = int(row[0])
        return event

    def query(self, q: AuditQuery) -> list[AuditEvent]:
        sql, args = _select(q)
        with self.pg.sync_pool().connection() as conn:
            return [_event(r) for r in conn.execute(_pg(sql), args).fetchall()]
