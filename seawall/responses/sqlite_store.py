"""The embedded response store: a SQLite file of its own (``responses.db``
under ``data_dir``), like the cache, prompts and RAG stores: conversation
writes never queue behind trace writes on ``seawall.db``'s connection, and
deleting the file forgets every conversation and nothing else."""

from __future__ import annotations

import time

from seawall.responses import sql
from seawall.responses.store_api import StoredResponse
from seawall.store.async_sqlite import AsyncSqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    previous_response_id TEXT,
    instructions TEXT,
    input_items TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT,
    metadata TEXT,
    extra TEXT NOT NULL,
    tokens INTEGER
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS response_events (  -- background responses (background_log.py)
    response_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (response_id, seq)
);
"""


class SqliteResponseStore(AsyncSqlite):
    """Implements :class:`~seawall.responses.store_api.ResponseStore` on one file."""

    SCHEMA = _SCHEMA
    WHAT = "response store"

    async def put(self, r: StoredResponse) -> None:
        await self.db.execute(sql.INSERT, sql.to_row(r))
        await self.db.commit()

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        async with self.db.execute(sql.GET, (tenant, response_id, time.time())) as cur:
            rows = list(await cur.fetchall())
        return (await sql.from_rows(rows))[0] if rows else None

    async def delete(self, tenant: str, response_id: str) -> bool:
        cur = await self.db.execute(sql.DELETE, (tenant, response_id))
        await self.db.commit()
        return cur.rowcount > 0

    async def chain(self, tenant: str, response_id: str,
                    max_turns: int) -> list[StoredResponse]:
        args = sql.chain_args(tenant, response_id, max_turns, time.time())
        async with self.db.execute(sql.CHAIN, args) as cur:
            rows = list(await cur.fetchall())
        return await sql.from_rows(rows)

    async def purge_expired(self, now: float) -> int:
        await self.db.execute(sql.PURGE_EVENTS, (now,))
        cur = await self.db.execute(sql.PURGE, (now,))
        await self.db.commit()
        return cur.rowcount
