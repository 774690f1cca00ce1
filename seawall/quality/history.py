"""The quality evaluator's rounds over time, so the console can draw them,
in SQLite or Postgres (migration 0019; SQLite creates the tables at open):

- ``drift_history``: one row per drift round and model x prompt version
  (time, requests, lowest p-value, drifted, the corrected alpha and each
  test's p-value);
- ``slo_history``: one row per SLO every ``SLO_EVERY_S`` at most (time,
  current level, error budget left, burn rate per window).

Written by the evaluator (seawall/quality/evaluator.py), one batch per
round, by the process that decides (the lease holder, or the only one);
rows older than ``quality.history_days`` are deleted as each batch is
written. Reads are bounded (``MAX_POINTS``) and walk the ``at`` indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres

MAX_POINTS = 20_000  # rows one read returns at most (20 groups x 1,000 rounds)
SLO_EVERY_S = 300.0  # an SLO's burn rates are kept this often at most (SLOs run each minute)

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_history (
    at DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    requests INTEGER NOT NULL,
    min_p DOUBLE PRECISION,
    drifted SMALLINT NOT NULL,
    alpha_each DOUBLE PRECISION NOT NULL,
    tests TEXT NOT NULL,
    PRIMARY KEY (model, prompt_version, at)
);
CREATE INDEX IF NOT EXISTS drift_history_at ON drift_history (at);
CREATE TABLE IF NOT EXISTS slo_history (
    at DOUBLE PRECISION NOT NULL,
    name TEXT NOT NULL,
    current DOUBLE PRECISION,
    budget_remaining DOUBLE PRECISION NOT NULL,
    burn_rates TEXT NOT NULL,
    PRIMARY KEY (name, at)
);
CREATE INDEX IF NOT EXISTS slo_history_at ON slo_history (at);
"""
_INSERT = ("INSERT INTO drift_history (at, model, prompt_version, requests, min_p, drifted, "
           "alpha_each, tests) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (model, prompt_version, at) DO NOTHING")
_PRUNE = "DELETE FROM drift_history WHERE at < ?"
_READ = ("SELECT at, model, prompt_version, requests, min_p, drifted, alpha_each, tests "
         "FROM drift_history WHERE at >= ? ORDER BY at DESC LIMIT ?")
_SLO_INSERT = ("INSERT INTO slo_history (at, name, current, budget_remaining, burn_rates) "
               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, at) DO NOTHING")
_SLO_PRUNE = "DELETE FROM slo_history WHERE at < ?"
_SLO_READ = ("SELECT at, name, current, budget_remaining, burn_rates FROM slo_history "
             "WHERE at >= ? ORDER BY at DESC LIMIT ?")


@dataclass(frozen=True, slots=True)
class DriftPoint:
    """One group's result in one round. ``min_p`` is None when no test ran
    (too few requests); ``tests`` maps each test's name to its p-value."""

    at: float
    model: str
    prompt_version: str | None
    requests: int
    min_p: float | None
    drifted: bool
    alpha_each: float
    tests: dict[str, float]

    def row(self) -> tuple[Any, ...]:
        return (self.at, self.model, self.prompt_version or "", self.requests, self.min_p,
                int(self.drifted), self.alpha_each, orjson.dumps(self.tests).decode())


@dataclass(frozen=True, slots=True)
class SloPoint:
    """One SLO at one evaluation: ``current`` None when it had no events;
    ``burn_rates`` maps each alert window (``1h``, ``5m``...) to its rate."""

    at: float
    name: str
    current: float | None
    budget_remaining: float
    burn_rates: dict[str, float]

    def row(self) -> tuple[Any, ...]:
        return (self.at, self.name, self.current, self.budget_remaining,
                orjson.dumps(self.burn_rates).decode())


def _drift(r: Sequence[Any]) -> DriftPoint:
    return DriftPoint(at=float(r[0]), model=r[1], prompt_version=r[2] or None,
                      requests=int(r[3]), min_p=None if r[4] is None else float(r[4]),
                      drifted=bool(r[5]), alpha_each=float(r[6]), tests=orjson.loads(r[7]))


def _slo(r: Sequence[Any]) -> SloPoint:
    return SloPoint(at=float(r[0]), name=r[1], current=None if r[2] is None else float(r[2]),
                    budget_remaining=float(r[3]), burn_rates=orjson.loads(r[4]))


class QualityHistory(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def add(self, points: Sequence[DriftPoint], keep_after: float) -> None:
        """Store one drift round's points; delete those older than ``keep_after``."""
        ...

    async def since(self, since: float, limit: int = MAX_POINTS) -> list[DriftPoint]:
        """Drift points from ``since`` on, oldest first (the newest ``limit``)."""
        ...

    async def add_slo(self, points: Sequence[SloPoint], keep_after: float) -> None:
        """Store one SLO round's points; delete those older than ``keep_after``."""
        ...

    async def slo_since(self, since: float, limit: int = MAX_POINTS) -> list[SloPoint]:
        """SLO points from ``since`` on, oldest first (the newest ``limit``)."""
        ...


class _Queries:
    """The same SQL on both backends, through each store's ``_run``/``_all``."""

    async def _write(self, sql: str, rows: list[tuple[Any, ...]], prune: str,
                     keep_after: float) -> None:
        raise NotImplementedError

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    async def add(self, points: Sequence[DriftPoint], keep_after: float) -> None:
        await self._write(_INSERT, [p.row() for p in points], _PRUNE, keep_after)

    async def since(self, since: float, limit: int = MAX_POINTS) -> list[DriftPoint]:
        rows = await self._all(_READ, (since, max(1, min(limit, MAX_POINTS))))
        return [_drift(r) for r in reversed(rows)]

    async def add_slo(self, points: Sequence[SloPoint], keep_after: float) -> None:
        await self._write(_SLO_INSERT, [p.row() for p in points], _SLO_PRUNE, keep_after)

    async def slo_since(self, since: float, limit: int = MAX_POINTS) -> list[SloPoint]:
        rows = await self._all(_SLO_READ, (since, max(1, min(limit, MAX_POINTS))))
        return [_slo(r) for r in reversed(rows)]


class SqliteQualityHistory(_Queries, AsyncSqlite):
    """Its own connection on ``seawall.db``; creates the tables at open."""

    SCHEMA = SCHEMA
    WHAT = "quality history"

    async def _write(self, sql: str, rows: list[tuple[Any, ...]], prune: str,
                     keep_after: float) -> None:
        if rows:
            await self.db.executemany(sql, rows)
        await self.db.execute(prune, (keep_after,))
        await self.db.commit()

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        async with self.db.execute(sql, args) as c:
            return list(await c.fetchall())


class PostgresQualityHistory(_Queries):
    """The shared database (``drift_history``, ``slo_history``: migration 0019)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def _write(self, sql: str, rows: list[tuple[Any, ...]], prune: str,
                     keep_after: float) -> None:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.transaction():
            if rows:
                async with conn.cursor() as cur:
                    await cur.executemany(sql.replace("?", "%s"), rows)
            await conn.execute(prune.replace("?", "%s"), (keep_after,))

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), args)
            return list(await cur.fetchall())
