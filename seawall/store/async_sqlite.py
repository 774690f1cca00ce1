"""A store on one SQLite file driven by aiosqlite: the connection, its schema
and its life cycle, shared by the embedded twins of the Postgres stores whose
callers are on the event loop (responses, feedback). The sync twin for
callers on threads is :class:`seawall.store.sync_sqlite.SyncSqlite`."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from seawall.store.sqlite import connect


class AsyncSqlite:
    """Subclasses set ``SCHEMA`` (run on open) and ``WHAT`` (for the error a
    use before :meth:`open` raises)."""

    SCHEMA = ""
    WHAT = "store"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._db is None:
            self._db = await connect(self.path)
            await self._db.executescript(self.SCHEMA)
            await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, f"open() the {self.WHAT} first"
        return self._db
