"""Drift evaluation rounds over time, so the console can draw them: one row
per round and model x prompt version (time, requests, lowest p-value,
drifted, the corrected alpha and each test's p-value), in SQLite or Postgres
(``drift_history``, migration 0019; SQLite creates it at open).

Written by the drift evaluator (seawall/quality/evaluator.py), one batch per
round by the one process that runs the tests; rows older than
``quality.drift.history_days`` are deleted as each round is written. Reads
are bounded (``MAX_POINTS``) and walk the ``at`` index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres

MAX_POINTS = 20_000  # rows one read returns at most (20 groups x 1,000 rounds)

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
"""
_INSERT = ("INSERT INTO drift_history (at, model, prompt_version, requests, min_p, drifted, "
           "alpha_each, tests) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (model, prompt_version, at) DO NOTHING")
_PRUNE = "DELETE FROM drift_history WHERE at < ?"
_READ = ("SELECT at, model, prompt_version, requests, min_p, drifted, alpha_each, tests "
         "FROM drift_history WHERE at >= ? ORDER BY at DESC LIMIT ?")


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


def _point(r: Sequence[Any]) -> DriftPoint:
    return DriftPoint(at=float(r[0]), model=r[1], prompt_version=r[2] or None,
                      requests=int(r[3]), min_p=None if r[4] is None else float(r[4]),
                      drifted=bool(r[5]), alpha_each=float(r[6]), tests=orjson.loads(r[7]))


class DriftHistory(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def add(self, points: Sequence[DriftPoint], keep_after: float) -> None:
        """Store one round's points and delete those older than ``keep_after``."""
        ...

    async def since(self, since: float, limit: int = MAX_POINTS) -> list[DriftPoint]:
        """Points from ``since`` on, oldest first (the newest ``limit`` of them)."""
        ...


class SqliteDriftHistory(AsyncSqlite):
    """Its own connection on ``seawall.db``; creates the table at open."""

    SCHEMA = SCHEMA
    WHAT = "drift history"

    async def add(self, points: Sequence[DriftPoint], keep_after: float) -> None:
        await self.db.executemany(_INSERT, [p.row() for p in points])
        await self.db.execute(_PRUNE, (keep_after,))
        await self.db.commit()

    async def since(self, since: float, limit: int = MAX_POINTS) -> list[DriftPoint]:
        async with self.db.execute(_READ, (since, min(limit, MAX_POINTS))) as c:
            rows = await c.fetchall()
        return [_point(r) for r in reversed(list(rows))]


class PostgresDriftHistory:
    """The shared database (``drift_history``: migration 0019)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def add(self, points: Sequence[DriftPoint], keep_after: float) -> None:
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(_INSERT.replace("?", "%s"), [p.row() for p in points])
            await conn.execute(_PRUNE.replace("?", "%s"), (keep_after,))

    async def since(self, since: float, limit: int = MAX_POINTS) -> list[DriftPoint]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_READ.replace("?", "%s"), (since, min(limit, MAX_POINTS)))
            rows = await cur.fetchall()
        return [_point(r) for r in reversed(rows)]
