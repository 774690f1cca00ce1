"""The console's service: its own reads of the store (a connection of its
own on SQLite, the shared pool on Postgres), the rollup task, the session
signer. Built by the composition root (seawall/app.py) from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiosqlite
import numpy as np

from seawall.config import Settings
from seawall.console.queries import TraceQueries, range_seconds
from seawall.console.rollup import (
    DIM_CAP,
    DIMS,
    HOUR,
    ROLLUP_FIELDS,
    SETTLE_S,
    SQLITE_SCHEMA,
    STEP_HOURS,
    SUMS,
    Agg,
    fold,
    fold_dims,
    hist_matrix,
    raw_select,
    rollup_rows,
)
from seawall.console.session import Sessions, session_secret
from seawall.store.sqlite import connect

if TYPE_CHECKING:
    from seawall.store.pg import Postgres

log = logging.getLogger("seawall.console")
ROLLUP_EVERY_S = 30.0
TOP_N = 20  # rows shown per deployment / key / user table
# The deployment / key / user tables cover at most the last day: with many
# users their rollup holds up to a row per record, and a 30-day GROUP BY of
# it took ~1 s at 1M records (bench/console_pages.py).
DIM_WINDOW_S = 86400.0


class Console:
    def __init__(self, settings: Settings, pg: Postgres | None) -> None:
        self.settings = settings
        self.pg = pg
        self.secret = session_secret(settings)
        self.sessions = Sessions(self.secret, settings.console.session_ttl_s)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the SQLite connection
        scale = settings.feedback.scale
        self.queries = TraceQueries(self._fetch, pg is not None, settings.console.scan_rows,
                                    feedback_mid=(scale.min + scale.max) / 2)
        self._task: asyncio.Task[None] | None = None
        self.dim_cap = DIM_CAP  # values per (hour, tenant, dimension) rollup

    # -- life cycle --
    async def start(self, roll: bool = True) -> None:
        """Open; ``roll``: run the rollup task here (tests step it by hand)."""
        if self.pg is None:
            self._db = await connect(self.settings.db_path)
            self._db.row_factory = aiosqlite.Row
            await self._db.executescript(SQLITE_SCHEMA)
            await self._db.commit()
        if roll:
            self._task = asyncio.create_task(self._roll_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            await self._db.close()
            self._db = None

    # -- one query --
    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self.pg is not None:
            from psycopg.rows import dict_row

            pool = await self.pg.pool()
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())
        assert self._db is not None, "start() the console first"
        async with self._lock, self._db.execute(sql, args) as c:
            return [dict(r) for r in await c.fetchall()]

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """(execute, executemany) inside one transaction."""
        if self.pg is not None:
            pool = await self.pg.pool()
            async with pool.connection() as conn, conn.transaction():
                async def run(sql: str, args: tuple[Any, ...] = ()) -> int:
                    cur = await conn.execute(sql.replace("?", "%s"), args)
                    return cur.rowcount

                async def many(sql: str, rows: list[tuple[Any, ...]]) -> None:
                    async with conn.cursor() as cur:
                        await cur.executemany(sql.replace("?", "%s"), rows)
                yield run, many
            return
        db = self._db
        assert db is not None
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                async def run(sql: str, args: tuple[Any, ...] = ()) -> int:
                    cur = await db.execute(sql, args)
                    return cur.rowcount

                async def many(sql: str, rows: list[tuple[Any, ...]]) -> None:
                    await db.executemany(sql, rows)
                yield run, many
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    # -- the rollup --
    async def _roll_forever(self) -> None:
        while True:
            try:
                more = True
                while more:  # catching up: one step after another, yielding between
                    more = await self.roll_step()
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store is down: try again next round
                log.warning("trace rollup failed; retrying in %.0f s", ROLLUP_EVERY_S,
                            extra={"error": repr(e)[:200]})
            await asyncio.sleep(ROLLUP_EVERY_S)

    async def rollup_upto(self) -> float | None:
        rows = await self.queries.fetch(
            "SELECT upto FROM trace_rollup_state WHERE name = 'traces'")
        return float(rows[0]["upto"]) if rows else None

    async def roll_step(self, now: float | None = None) -> bool:
        """Fold up to ``STEP_HOURS`` settled hours; True when more are waiting."""
        now = time.time() if now is None else now
        target = math.floor((now - SETTLE_S) / HOUR) * HOUR
        q = self.queries
        upto = await self.rollup_upto()
        first = await q.fetch("SELECT MIN(started_at) AS m FROM traces WHERE started_at >= ?",
                              (upto if upto is not None else 0.0,))
        start = upto
        if first and first[0]["m"] is not None:
            begin = math.floor(float(first[0]["m"]) / HOUR) * HOUR
            start = begin if upto is None else max(upto, begin)
        elif upto is None:
            start = target
        assert start is not None
        start = min(start, target)
        end = min(target, start + STEP_HOURS * HOUR)
        groups: dict[tuple[Any, ...], Agg] = {}
        dims: dict[tuple[Any, ...], Agg] = {}
        if end > start:
            rows = await q.fetch(raw_select("started_at >= ? AND started_at < ?"), (start, end))
            groups = await asyncio.to_thread(fold, rows)
            dims = await asyncio.to_thread(fold_dims, rows, self.dim_cap)
        async with self._transaction() as (run, many):
            if upto is None:
                await run("INSERT INTO trace_rollup_state (name, upto) VALUES ('traces', ?) "
                          "ON CONFLICT (name) DO NOTHING", (-1.0,))
                upto = -1.0
            if not await run("UPDATE trace_rollup_state SET upto = ? WHERE name = 'traces' "
                             "AND upto = ?", (end, upto)):
                return False  # another process moved it meanwhile: its round
            for sql, values in rollup_rows(groups, dims).items():
                if values:
                    await many(sql, values)
        return end < target

    async def overview(self, range_name: str, tenant: str | None,
                       now: float | None = None) -> dict[str, Any]:
        """Totals, per model and per tenant, and an hourly series over the range."""
        now = time.time() if now is None else now
        since = now - range_seconds(range_name)
        q = self.queries
        upto = await self.rollup_upto() or 0.0
        first_hour = math.floor(since / HOUR) * HOUR
        where, args = "hour >= ? AND hour < ?", [first_hour, upto]
        raw_where, raw_args = "started_at >= ?", [max(since, upto)]
        args_t: list[Any] = args
        raw_t: list[Any] = raw_args
        if tenant is not None:
            where += " AND tenant = ?"
            raw_where += " AND tenant = ?"
            args_t.append(tenant)
            raw_t.append(tenant)
        raw = await q.fetch(raw_select(raw_where), tuple(raw_args))
        dim_hour = max(first_hour, math.floor((now - DIM_WINDOW_S) / HOUR) * HOUR)
        dim_sums = await q.fetch(f"SELECT dim, value, {SUMS} FROM trace_rollup_dim "
                                 f"WHERE {where} GROUP BY dim, value",
                                 (dim_hour, *args[1:]))
        dim_raw = [r for r in raw if r["started_at"] >= dim_hour]
        by_dim = await asyncio.to_thread(_top_dims, dim_sums, dim_raw, self.dim_cap)
        by_dim["since"] = dim_hour
        if tenant is not None:  # a few models' rows per hour: read them whole
            rolled = await q.fetch(f"SELECT * FROM trace_rollup WHERE {where}", tuple(args))
            out = await asyncio.to_thread(_summarise, rolled, raw, first_hour, now)
            return {**out, "by_dim": by_dim}
        # Every tenant: sums in SQL, the per-model histograms summed as one matrix.
        hists = await q.fetch(f"SELECT model, latency, ttft FROM trace_rollup_model "
                              f"WHERE {where}", tuple(args))
        sums = await q.fetch(f"SELECT model, {SUMS} FROM trace_rollup_model WHERE {where} "
                             "GROUP BY model", tuple(args))
        hours = await q.fetch(f"SELECT hour, SUM(requests) AS requests, SUM(errors) AS errors "
                              f"FROM trace_rollup_model WHERE {where} GROUP BY hour",
                              tuple(args))
        tenants = await q.fetch(f"SELECT tenant, {SUMS} FROM trace_rollup_tenant WHERE {where} "
                                "GROUP BY tenant", tuple(args))
        out = await asyncio.to_thread(_summarise_all, hists, sums, hours, tenants, raw,
                                      first_hour, now)
        return {**out, "by_dim": by_dim}


def _sums(r: dict[str, Any]) -> Agg:
    """An Agg of one row of SQL sums (SUM() of integers is numeric, a
    Decimal, on Postgres: back to int/float)."""
    values: dict[str, Any] = {f: (float if f.endswith("usd") else int)(r[f] or 0)
                              for f in ROLLUP_FIELDS}
    return Agg(**values)


def _top_dims(rows: list[dict[str, Any]], raw: list[dict[str, Any]],
              cap: int) -> dict[str, Any]:
    """Per dimension, the TOP_N values by cost over the range: the rolled
    sums plus the records not folded yet (capped the same way)."""
    sums: dict[tuple[str, str], Agg] = {(r["dim"], r["value"]): _sums(r) for r in rows}
    for (_h, _tenant, dim, value), agg in fold_dims(raw, cap, hour=False).items():
        sums.setdefault((dim, value), Agg()).merge(agg)
    out: dict[str, Any] = {}
    for dim, _col in DIMS:
        ranked = sorted(((v, a) for (d, v), a in sums.items() if d == dim),
                        key=lambda va: (-va[1].cost_usd, -va[1].requests, va[0]))
        out[dim] = {v: a.summary() for v, a in ranked[:TOP_N]}
    return out


def _summarise_all(hists: list[dict[str, Any]], sums: list[dict[str, Any]],
                   hours: list[dict[str, Any]], tenants: list[dict[str, Any]],
                   raw: list[dict[str, Any]], first_hour: float, now: float) -> dict[str, Any]:
    by_model = {r["model"]: _sums(r) for r in sums}
    by_tenant = {r["tenant"]: _sums(r) for r in tenants}
    by_hour: dict[float, Agg] = {}
    for r in hours:
        by_hour[float(r["hour"])] = Agg(requests=int(r["requests"]), errors=int(r["errors"]))
    # Thousands of rows for 30 days: sum the histograms as one matrix, not row by row.
    matrices = {h: hist_matrix([r[h] for r in hists]) for h in ("latency", "ttft")}
    names = np.array([r["model"] for r in hists])
    for model in set(names.tolist()):
        mask = names == model
        agg = by_model.setdefault(model, Agg())
        agg.latency = matrices["latency"][mask].sum(axis=0)
        agg.ttft = matrices["ttft"][mask].sum(axis=0)
    for (hour, model, tenant), agg in fold(raw).items():
        by_model.setdefault(model, Agg()).merge(agg)
        hourly = by_hour.setdefault(hour, Agg())
        hourly.requests += agg.requests
        hourly.errors += agg.errors
        sums_only = Agg(**{f: getattr(agg, f) for f in ROLLUP_FIELDS})
        by_tenant.setdefault(tenant, Agg()).merge(sums_only)
    total = Agg()
    for agg in by_model.values():
        total.merge(agg)
    return _result(total, by_model, by_tenant, by_hour, first_hour, now)


def _result(total: Agg, by_model: dict[str, Agg], by_tenant: dict[str, Agg],
            by_hour: dict[float, Agg], first_hour: float, now: float) -> dict[str, Any]:
    grid = [first_hour + i * HOUR for i in range(int((now - first_hour) // HOUR) + 1)]
    return {
        "total": total.summary(),
        "by_model": {k: v.summary() for k, v in sorted(by_model.items())},
        "by_tenant": {k: v.summary() for k, v in sorted(by_tenant.items())},
        "series": {"hour": grid,
                   "requests": [by_hour[h].requests if h in by_hour else 0 for h in grid],
                   "errors": [by_hour[h].errors if h in by_hour else 0 for h in grid]},
    }


def _summarise(rolled: list[dict[str, Any]], raw: list[dict[str, Any]], first_hour: float,
               now: float) -> dict[str, Any]:
    groups: dict[tuple[Any, ...], Agg] = {
        (r["hour"], r["model"], r["tenant"]): Agg.from_row(r) for r in rolled}
    for key, agg in fold(raw).items():
        if key in groups:
            groups[key].merge(agg)
        else:
            groups[key] = agg
    total = Agg()
    by_model: dict[str, Agg] = {}
    by_tenant: dict[str, Agg] = {}
    by_hour: dict[float, Agg] = {}
    for (hour, model, tenant), agg in groups.items():
        total.merge(agg)
        by_model.setdefault(model, Agg()).merge(agg)
        by_tenant.setdefault(tenant, Agg()).merge(agg)
        by_hour.setdefault(hour, Agg()).merge(agg)
    return _result(total, by_model, by_tenant, by_hour, first_hour, now)
