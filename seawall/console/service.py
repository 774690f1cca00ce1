"""The console's service: its own reads of the store (a connection of its
own on SQLite, the shared pool on Postgres), the rollup task, the session
signer. Built by the composition root (seawall/app.py) from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiosqlite

from seawall.config import Settings
from seawall.console import overview as ov
from seawall.console.queries import TraceQueries
from seawall.console.rollup import DIM_CAP, ROLLUPS, SQLITE_SCHEMA
from seawall.console.session import Sessions, session_secret
from seawall.store.sqlite import connect

if TYPE_CHECKING:
    from seawall.store.pg import Postgres

log = logging.getLogger("seawall.console")
ROLLUP_EVERY_S = 30.0


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
        self.dim_cap = DIM_CAP  # values per (period, tenant, dimension) rollup
        self.memo = ov.Memo(self.queries)  # rollup reads, until the watermarks move
        self.strong = ov.strong_prices(settings)  # routes' strongest tiers, for the savings

    # -- life cycle --
    async def start(self, roll: bool = True) -> None:
        """Open; ``roll``: run the rollup task here (tests step it by hand)."""
        if self.pg is None:
            self._db = await connect(self.settings.db_path)
            self._db.row_factory = aiosqlite.Row
            await self._db.executescript(SQLITE_SCHEMA)
            await self._upgrade_sqlite()
            await self._db.commit()
        if roll:
            self._task = asyncio.create_task(self._roll_forever())

    async def _upgrade_sqlite(self) -> None:
        """Columns a table made by an older version lacks (the histograms
        of the tenant and dimension rollups): added, '' in the old rows."""
        assert self._db is not None
        for rollup in ROLLUPS:
            table = rollup.table(False)
            async with self._db.execute(f"PRAGMA table_info({table})") as c:
                have = {r[1] for r in await c.fetchall()}
            for col in rollup.columns:
                if col not in have:
                    try:
                        await self._db.execute(
                            f"ALTER TABLE {table} ADD COLUMN {rollup.column_def(col)}")
                    except aiosqlite.OperationalError as e:  # another process added it
                        if "duplicate column" not in str(e):
                            raise

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

    async def rollup_upto(self, name: str = "traces") -> float | None:
        """How far the hourly ("traces") or daily ("traces_day") rollup has folded."""
        return await ov.watermark(self.queries, name)

    async def roll_step(self, now: float | None = None) -> bool:
        """Fold up to a day of settled hours, then a day of folded hours into
        the daily rollup; True when more are waiting."""
        now = time.time() if now is None else now
        more = await ov.roll_hours(self.queries, self._transaction, now, self.dim_cap,
                                   self.strong)
        return await ov.roll_days(self.queries, self._transaction, self.dim_cap) or more

    async def overview(self, range_name: str, tenant: str | None,
                       now: float | None = None) -> dict[str, Any]:
        """Totals; per model, tenant, deployment, key, user and route; an
        hourly series; over the range (seawall/console/overview.py)."""
        return await ov.read(self.queries, self.memo, range_name, tenant, now, self.strong,
                             self.dim_cap)
