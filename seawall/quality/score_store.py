"""Judge scores of answers: one row per (answer, judge, rubric), in SQLite or
Postgres.

A judge job (seawall/quality/judges) writes a row when it scores an answer or
gives up on it (``status`` "failed", ``score`` None). The traffic fields
(model, route, prompt version, experiment arm, tenant) are copied from the
trace record, so SLOs, drift and canary decisions read scores without a join
and keep working after trace retention removed the record. A second score by
the same judge and rubric replaces the first (a retried job is idempotent).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres

MAX_WINDOW_ROWS = 100_000  # a window query never returns more (newest first)


@dataclass(slots=True)
class Score:
    trace_id: str
    judge: str
    rubric: str
    tenant: str
    model: str
    score: float | None  # None when status is "failed"
    scale_max: float = 5.0
    rubric_version: str = "builtin"
    judge_model: str = ""
    route: str | None = None
    prompt_version: str | None = None  # "name@version" as in the trace record
    experiment: str | None = None  # "name=variant", the trace record's experiment label
    reasoning: str | None = None
    status: str = "ok"  # ok | failed
    attempts: int = 1
    cost_usd: float = 0.0
    created_at: float = 0.0

    @property
    def fraction(self) -> float | None:
        """The score on 0..1 (None when failed), so rubrics on different scales compare."""
        if self.score is None or self.scale_max <= 0:
            return None
        return self.score / self.scale_max

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ScoreStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put(self, score: Score) -> None:
        """Store ``score``, replacing an earlier one of the same (trace, judge, rubric)."""
        ...

    async def for_trace(self, trace_id: str) -> list[Score]:
        """Every score of one answer, oldest first."""
        ...

    async def cost_since(self, since: float, judge: str | None = None) -> float:
        """USD spent judging since ``since`` (by one judge, or all): a sum in
        the database, exact however many answers were judged."""
        ...

    async def window(self, since: float, until: float | None = None, *,
                     limit: int = MAX_WINDOW_ROWS, **filters: str | None) -> list[Score]:
        """Scores created in [since, until), newest first, at most ``limit``;
        ``filters`` match columns exactly (model, route, prompt_version,
        experiment, tenant, judge, rubric, status); a None filter is ignored."""
        ...


_COLUMNS = ("trace_id", "judge", "rubric", "rubric_version", "judge_model", "tenant", "model",
            "route", "prompt_version", "experiment", "score", "scale_max", "reasoning",
            "status", "attempts", "cost_usd", "created_at")
FILTERS = frozenset({"model", "route", "prompt_version", "experiment", "tenant", "judge",
                     "rubric", "status"})

# Portable SQL (both backends); "?" becomes "%s" for psycopg. Same meaning as
# migration 0010_scores.sql.
SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_scores (
    trace_id TEXT NOT NULL,
    judge TEXT NOT NULL,
    rubric TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    judge_model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT,
    prompt_version TEXT,
    experiment TEXT,
    score DOUBLE PRECISION,
    scale_max DOUBLE PRECISION NOT NULL,
    reasoning TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trace_id, judge, rubric)
);
CREATE INDEX IF NOT EXISTS quality_scores_time ON quality_scores (created_at);
CREATE INDEX IF NOT EXISTS quality_scores_model_time ON quality_scores (model, created_at);
CREATE INDEX IF NOT EXISTS quality_scores_tenant_time ON quality_scores (tenant, created_at);
"""
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM quality_scores"
_UPSERT = (
    f"INSERT INTO quality_scores ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (trace_id, judge, rubric) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[3:]))
_FOR_TRACE = f"{_SELECT} WHERE trace_id = ? ORDER BY created_at, judge, rubric"


def _window_sql(since: float, until: float | None, limit: int,
                filters: dict[str, str | None]) -> tuple[str, list[Any]]:
    unknown = set(filters) - FILTERS
    if unknown:
        raise ValueError(f"unknown score filter(s): {sorted(unknown)}")
    where: list[str] = ["created_at >= ?"]
    args: list[Any] = [since]
    if until is not None:
        where.append("created_at < ?")
        args.append(until)
    for name in sorted(filters):  # names come from FILTERS only, never from a client
        if filters[name] is not None:
            where.append(f"{name} = ?")
            args.append(filters[name])
    args.append(max(0, min(limit, MAX_WINDOW_ROWS)))
    return f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?", args


def _cost_sql(since: float, judge: str | None) -> tuple[str, list[Any]]:
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM quality_scores WHERE created_at >= ?"
    if judge is None:
        return sql, [since]
    return sql + " AND judge = ?", [since, judge]


def _row(s: Score) -> tuple[Any, ...]:
    d = asdict(s)
    d["created_at"] = s.created_at or time.time()
    return tuple(d[c] for c in _COLUMNS)


def _score(r: Any) -> Score:
    d = dict(zip(_COLUMNS, r, strict=True))
    d["score"] = None if d["score"] is None else float(d["score"])
    d["scale_max"], d["cost_usd"] = float(d["scale_max"]), float(d["cost_usd"])
    d["created_at"], d["attempts"] = float(d["created_at"]), int(d["attempts"])
    return Score(**d)


class SqliteScoreStore(AsyncSqlite):
    """In ``seawall.db``, next to the trace records it scores (its own connection)."""

    SCHEMA = SCHEMA
    WHAT = "score store"

    async def put(self, score: Score) -> None:
        await self.db.execute(_UPSERT, _row(score))
        await self.db.commit()

    async def for_trace(self, trace_id: str) -> list[Score]:
        async with self.db.execute(_FOR_TRACE, (trace_id,)) as c:
            return [_score(r) for r in await c.fetchall()]

    async def cost_since(self, since: float, judge: str | None = None) -> float:
        async with self.db.execute(*_cost_sql(since, judge)) as c:
            row = await c.fetchone()
        return float(row[0]) if row else 0.0

    async def window(self, since: float, until: float | None = None, *,
                     limit: int = MAX_WINDOW_ROWS, **filters: str | None) -> list[Score]:
        sql, args = _window_sql(since, until, limit, filters)
        async with self.db.execute(sql, args) as c:
            return [_score(r) for r in await c.fetchall()]


class PostgresScoreStore:
    """The ``quality_scores`` table of the shared database (migration 0010)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def _query(self, sql: str, args: Any) -> list[Score]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), args)
            return [_score(r) for r in await cur.fetchall()]

    async def put(self, score: Score) -> None:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            await conn.execute(_UPSERT.replace("?", "%s"), _row(score))

    async def for_trace(self, trace_id: str) -> list[Score]:
        return await self._query(_FOR_TRACE, (trace_id,))

    async def cost_since(self, since: float, judge: str | None = None) -> float:
        sql, args = _cost_sql(since, judge)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), args)
            row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def window(self, since: float, until: float | None = None, *,
                     limit: int = MAX_WINDOW_ROWS, **filters: str | None) -> list[Score]:
        return await self._query(*_window_sql(since, until, limit, filters))
