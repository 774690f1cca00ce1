"""The shared response store: one ``responses`` table in Postgres
(migration 0006), so any replica continues any conversation."""

from __future__ import annotations

import time
from typing import Any

from seawall.responses import sql
from seawall.responses.store_api import StoredResponse
from seawall.store.pg import Postgres


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


_INSERT, _GET, _DELETE, _CHAIN, _PURGE = map(_pg, (sql.INSERT, sql.GET, sql.DELETE, sql.CHAIN,
                                                   sql.PURGE))


class PostgresResponseStore:
    """Implements :class:`~seawall.responses.store_api.ResponseStore` on the shared database."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def _rows(self, statement: str, args: tuple[Any, ...]) -> list[Any]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(statement, args)
            return await cur.fetchall()

    async def _count(self, statement: str, args: tuple[Any, ...]) -> int:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(statement, args)
            return cur.rowcount

    async def put(self, r: StoredResponse) -> None:
        await self._count(_INSERT, sql.to_row(r))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        rows = await self._rows(_GET, (tenant, response_id, time.time()))
        return (await sql.from_rows(rows))[0] if rows else None

    async def delete(self, tenant: str, response_id: str) -> bool:
        return await self._count(_DELETE, (tenant, response_id)) > 0

    async def chain(self, tenant: str, response_id: str,
                    max_turns: int) -> list[StoredResponse]:
        rows = await self._rows(_CHAIN, sql.chain_args(tenant, response_id, max_turns,
                                                        time.time()))
        return await sql.from_rows(rows)

    async def purge_expired(self, now: float) -> int:
        await self._count(_pg(sql.PURGE_EVENTS), (now,))
        return await self._count(_PURGE, (now,))
