"""Feedback on answers: one row per (answer, user), in SQLite or Postgres.

The trace id is the answer's id (``x-request-id``); ``user`` is the
client's own end-user id ("" when it sent none), so a second rating by the
same user replaces the first. Rows keep the tenant they were checked
against; the route (seawall/api/quality_routes.py) checks the tenant before
storing, the store only keeps it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres


@dataclass(slots=True)
class Feedback:
    trace_id: str
    user: str  # "" = no user given
    tenant: str
    score: float
    key_id: str | None = None
    comment: str | None = None
    categories: list[str] = field(default_factory=list)
    created_at: float = 0.0  # first rating by this user
    updated_at: float = 0.0  # the last replacement

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FeedbackStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put(self, fb: Feedback) -> bool:
        """Store ``fb``, replacing this user's earlier rating of the answer;
        True when it is the first (the metric counts those)."""
        ...

    async def for_trace(self, trace_id: str) -> list[Feedback]:
        """Every rating of one answer, oldest first."""
        ...


# Portable SQL (both backends); "?" becomes "%s" for psycopg.
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    trace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT,
    score DOUBLE PRECISION NOT NULL,
    comment TEXT,
    categories TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trace_id, user_id)
);
CREATE INDEX IF NOT EXISTS feedback_tenant_time ON feedback (tenant, updated_at);
"""
_EXISTS = "SELECT 1 FROM feedback WHERE trace_id = ? AND user_id = ?"
_UPSERT = (
    "INSERT INTO feedback (trace_id, user_id, tenant, key_id, score, comment, categories, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (trace_id, user_id) DO UPDATE SET key_id = excluded.key_id, "
    "score = excluded.score, comment = excluded.comment, categories = excluded.categories, "
    "updated_at = excluded.updated_at WHERE feedback.tenant = excluded.tenant")
_FOR_TRACE = ("SELECT trace_id, user_id, tenant, key_id, score, comment, categories, "
              "created_at, updated_at FROM feedback WHERE trace_id = ? "
              "ORDER BY created_at, user_id")


def _row(fb: Feedback) -> tuple[Any, ...]:
    now = time.time()
    return (fb.trace_id, fb.user, fb.tenant, fb.key_id, fb.score, fb.comment,
            orjson.dumps(fb.categories).decode(), now, now)


def _feedback(r: Any) -> Feedback:
    return Feedback(trace_id=r[0], user=r[1], tenant=r[2], key_id=r[3], score=float(r[4]),
                    comment=r[5], categories=orjson.loads(r[6]), created_at=float(r[7]),
                    updated_at=float(r[8]))


class SqliteFeedbackStore(AsyncSqlite):
    """In ``seawall.db``, next to the trace records it rates (its own
    connection: ratings never queue behind trace batches)."""

    SCHEMA = SCHEMA
    WHAT = "feedback store"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._lock = asyncio.Lock()  # the exists-check and the upsert together

    async def put(self, fb: Feedback) -> bool:
        async with self._lock:
            async with self.db.execute(_EXISTS, (fb.trace_id, fb.user)) as c:
                first = await c.fetchone() is None
            await self.db.execute(_UPSERT, _row(fb))
            await self.db.commit()
        return first

    async def for_trace(self, trace_id: str) -> list[Feedback]:
        async with self.db.execute(_FOR_TRACE, (trace_id,)) as c:
            return [_feedback(r) for r in await c.fetchall()]


class PostgresFeedbackStore:
    """The ``feedback`` table of the shared database (migration 0009)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def put(self, fb: Feedback) -> bool:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            # xmax = 0: the row was inserted, not updated (Postgres' own bookkeeping).
            cur = await conn.execute(_UPSERT.replace("?", "%s")
                                     + " RETURNING (xmax = 0) AS inserted", _row(fb))
            row = await cur.fetchone()
        return bool(row and row[0])

    async def for_trace(self, trace_id: str) -> list[Feedback]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_FOR_TRACE.replace("?", "%s"), (trace_id,))
            return [_feedback(r) for r in await cur.fetchall()]
