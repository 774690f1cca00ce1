"""The durable part of a background response: its event log (one row per
Responses stream event, keyed by ``sequence_number``) and the conditional
status moves of its stored object. SQLite: ``responses.db`` (the response
store's connection); Postgres: ``response_events`` (migration 0007), so any
replica replays and follows any background response.

Status only moves forward: ``queued`` -> ``in_progress`` -> a final state
(``completed``, ``incomplete``, ``failed``, ``cancelled``). Every move is one
conditional UPDATE, so a cancel racing the end of the answer has one winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seawall.responses import sql
from seawall.responses.pg_store import PostgresResponseStore
from seawall.responses.sqlite_store import SqliteResponseStore
from seawall.responses.store_api import ResponseStore, StoredResponse

ACTIVE = ("queued", "in_progress")
FINAL = ("completed", "incomplete", "failed", "cancelled")
_ACTIVE_SQL = "status IN ('queued', 'in_progress')"

APPEND = "INSERT INTO response_events (response_id, seq, data) VALUES (?, ?, ?)"
AFTER = ("SELECT seq, data FROM response_events WHERE response_id = ? AND seq > ? "
         "ORDER BY seq LIMIT ?")
LAST = "SELECT MAX(seq) FROM response_events WHERE response_id = ?"
DROP = "DELETE FROM response_events WHERE response_id = ?"
MOVE = f"UPDATE responses SET status = ? WHERE tenant = ? AND id = ? AND {_ACTIVE_SQL}"
FINISH = ("UPDATE responses SET status = ?, output = ?, usage = ?, extra = ?, tokens = ? "
          f"WHERE tenant = ? AND id = ? AND {_ACTIVE_SQL}")
READ_BATCH = 500  # events per read of the log


class LogConflict(Exception):
    """An event of that sequence number is already in the log: another
    attempt wrote it (this one lost its lease); stop writing."""


class BackgroundLog:
    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.pg = store.pg if isinstance(store, PostgresResponseStore) else None

    async def _exec(self, statement: str, args: tuple[Any, ...]) -> int:
        if self.pg is not None:
            pool = await self.pg.pool()
            async with pool.connection() as conn:
                cur = await conn.execute(statement.replace("?", "%s"), args)
                return cur.rowcount
        assert isinstance(self.store, SqliteResponseStore)
        lite = await self.store.db.execute(statement, args)
        await self.store.db.commit()
        return lite.rowcount

    async def _rows(self, statement: str, args: tuple[Any, ...]) -> list[Any]:
        if self.pg is not None:
            pool = await self.pg.pool()
            async with pool.connection() as conn:
                cur = await conn.execute(statement.replace("?", "%s"), args)
                return list(await cur.fetchall())
        assert isinstance(self.store, SqliteResponseStore)
        async with self.store.db.execute(statement, args) as lite:
            return list(await lite.fetchall())

    async def append(self, response_id: str, events: list[tuple[int, str]]) -> None:
        """Add events in one transaction; LogConflict if any is there already."""
        await self._write(response_id, events, None)

    async def _write(self, response_id: str, events: list[tuple[int, str]],
                     finish: tuple[Any, ...] | None) -> bool:
        """One transaction: the FINISH update (if given; nothing is written
        unless it matches), then the events. Whether it was written."""
        rows = [(response_id, seq, data) for seq, data in events]
        if self.pg is not None:
            import psycopg

            pool = await self.pg.pool()
            try:
                async with pool.connection() as conn, conn.transaction(), \
                        conn.cursor() as cur:
                    if finish is not None:
                        await cur.execute(FINISH.replace("?", "%s"), finish)
                        if cur.rowcount == 0:
                            return False
                    if rows:
                        await cur.executemany(APPEND.replace("?", "%s"), rows)
            except psycopg.errors.UniqueViolation as e:
                raise LogConflict(response_id) from e
            return True
        import sqlite3

        assert isinstance(self.store, SqliteResponseStore)
        db = self.store.db
        try:
            if finish is not None:
                lite = await db.execute(FINISH, finish)
                if lite.rowcount == 0:
                    return False
            if rows:
                await db.executemany(APPEND, rows)
            await db.commit()
        except sqlite3.IntegrityError as e:
            await db.rollback()
            raise LogConflict(response_id) from e
        return True

    async def after(self, response_id: str, seq: int,
                    limit: int = READ_BATCH) -> list[tuple[int, str]]:
        return [(int(s), str(d)) for s, d in
                await self._rows(AFTER, (response_id, seq, limit))]

    async def last_seq(self, response_id: str) -> int | None:
        rows = await self._rows(LAST, (response_id,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def drop(self, response_id: str) -> None:
        await self._exec(DROP, (response_id,))

    async def move(self, tenant: str, response_id: str, status: str) -> bool:
        """Set ``status`` unless the response already ended; whether it moved."""
        return await self._exec(MOVE, (status, tenant, response_id)) > 0

    async def finish(self, r: StoredResponse,
                     events: Sequence[tuple[int, str]] = ()) -> bool:
        """Store the ended response and log its final ``events``, in one
        transaction (a reader that sees the final status then finds the final
        event), unless it already ended (cancelled): then nothing is written."""
        row = dict(zip(sql.COLUMNS, sql.to_row(r), strict=True))
        return await self._write(r.id, list(events), (
            r.status, row["output"], row["usage"], row["extra"], r.tokens, r.tenant, r.id))
