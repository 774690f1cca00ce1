"""The embedded Files/Batch store: contents on disk under ``data_dir/files``
(written to a temporary name, then renamed: a file is whole or absent),
metadata and per-line outcomes in a SQLite file of its own (batches.db)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from seawall.batches.store_api import (
    BATCH_COLUMNS,
    CHUNK,
    FILE_COLUMNS,
    Batch,
    LineResult,
    StoredFile,
    new_id,
)
from seawall.store.sqlite import open_connection

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, filename TEXT NOT NULL,
    purpose TEXT NOT NULL, bytes INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_tenant ON files (tenant, created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL, status TEXT NOT NULL,
    metadata TEXT, auth TEXT NOT NULL, errors TEXT, output_file_id TEXT, error_file_id TEXT,
    total INTEGER NOT NULL, completed INTEGER NOT NULL, failed INTEGER NOT NULL,
    created_at REAL NOT NULL, in_progress_at REAL, finalizing_at REAL, completed_at REAL,
    failed_at REAL, cancelling_at REAL, cancelled_at REAL, expires_at REAL);
CREATE INDEX IF NOT EXISTS batches_tenant ON batches (tenant, created_at);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT, ok INTEGER NOT NULL,
    record BLOB NOT NULL, PRIMARY KEY (batch_id, line));
CREATE TABLE IF NOT EXISTS batch_custom_ids (
    batch_id TEXT NOT NULL, custom_id TEXT NOT NULL, line INTEGER NOT NULL,
    PRIMARY KEY (batch_id, custom_id));
"""
_JSON = ("metadata", "auth", "errors")
PAGE = 500


def _batch(row: Any) -> Batch:
    d = dict(zip(BATCH_COLUMNS, row, strict=True))
    for k in _JSON:
        d[k] = None if d[k] is None else orjson.loads(d[k])
    return Batch(**d)


class SqliteBatchStore:
    def __init__(self, path: Path, files_dir: Path) -> None:
        self.path = path
        self.files_dir = files_dir
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one writer transaction at a time on the connection

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "open() first"
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._db = await open_connection(self.path, timeout=30)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        async with self._lock:
            cur = await self.db.execute(sql, args)
            await self.db.commit()
            return cur.rowcount

    # -- files --

    def _content(self, file_id: str) -> Path:
        return self.files_dir / file_id

    async def put_file(self, tenant: str, filename: str, purpose: str,
                       chunks: AsyncIterator[bytes], file_id: str | None = None) -> StoredFile:
        file_id = file_id or new_id("file-")
        final = self._content(file_id)
        tmp = final.with_name(final.name + f".{os.getpid()}.part")
        size = 0
        fh = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for piece in chunks:
                size += len(piece)
                await asyncio.to_thread(fh.write, piece)
            await asyncio.to_thread(fh.close)
            await asyncio.to_thread(os.replace, tmp, final)
        except BaseException:
            fh.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        f = StoredFile(file_id, tenant, filename, purpose, size, time.time())
        await self._write(f"INSERT OR REPLACE INTO files ({', '.join(FILE_COLUMNS)}) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (f.id, f.tenant, f.filename, f.purpose, f.bytes, f.created_at))
        return f

    async def get_file(self, file_id: str, tenant: str | None = None) -> StoredFile | None:
        sql = f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE id = ?"
        args: tuple[Any, ...] = (file_id,)
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (file_id, tenant)
        async with self.db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return None if row is None else StoredFile(*row)

    async def list_files(self, tenant: str, purpose: str | None = None,
                         after: str | None = None, limit: int = 20) -> list[StoredFile]:
        sql = f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE tenant = ?"
        args: list[Any] = [tenant]
        if purpose is not None:
            sql += " AND purpose = ?"
            args.append(purpose)
        if after is not None:
            sql += (" AND (created_at, id) < (SELECT created_at, id FROM files WHERE id = ?)")
            args.append(after)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        async with self.db.execute(sql, args) as cur:
            return [StoredFile(*r) for r in await cur.fetchall()]

    async def delete_file(self, file_id: str, tenant: str) -> bool:
        n = await self._write("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))
        if n:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._content(file_id).unlink)
        return bool(n)

    async def expire(self, before: float) -> int:
        async with self._lock:
            old = [r[0] for r in await (await self.db.execute(
                "SELECT id FROM batches WHERE created_at < ? AND status IN "
                "('completed', 'failed', 'cancelled', 'expired')", (before,))).fetchall()]
            for batch_id in old:
                for table in ("batch_lines", "batch_custom_ids"):
                    await self.db.execute(f"DELETE FROM {table} WHERE batch_id = ?", (batch_id,))
                await self.db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            files = [r[0] for r in await (await self.db.execute(
                "SELECT id FROM files WHERE created_at < ? AND id NOT IN ("
                "SELECT input_file_id FROM batches WHERE status NOT IN "
                "('completed', 'failed', 'cancelled', 'expired'))", (before,))).fetchall()]
            for file_id in files:
                await self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))
            await self.db.commit()
        for file_id in files:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._content(file_id).unlink)
        return len(old) + len(files)

    async def read_file(self, file_id: str) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(open, self._content(file_id), "rb")
        try:
            while piece := await asyncio.to_thread(fh.read, CHUNK):
                yield piece
        finally:
            fh.close()

    # -- batches --

    async def create_batch(self, batch: Batch) -> None:
        row = batch.row()
        values = [orjson.dumps(row[c]) if c in _JSON and row[c] is not None else row[c]
                  for c in BATCH_COLUMNS]
        await self._write(f"INSERT INTO batches ({', '.join(BATCH_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(BATCH_COLUMNS))})", tuple(values))

    async def get_batch(self, batch_id: str, tenant: str | None = None) -> Batch | None:
        sql = f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE id = ?"
        args: tuple[Any, ...] = (batch_id,)
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (batch_id, tenant)
        async with self.db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return None if row is None else _batch(row)

    async def list_batches(self, tenant: str | None, after: str | None = None,
                           limit: int = 20) -> list[Batch]:
        sql = f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE (? IS NULL OR tenant = ?)"
        args: list[Any] = [tenant, tenant]
        if after is not None:
            sql += " AND (created_at, id) < (SELECT created_at, id FROM batches WHERE id = ?)"
            args.append(after)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        async with self.db.execute(sql, args) as cur:
            return [_batch(r) for r in await cur.fetchall()]

    async def update_batch(self, batch_id: str, **values: Any) -> None:
        assert values and all(k in BATCH_COLUMNS for k in values)
        sets = ", ".join(f"{k} = ?" for k in values)
        args = [orjson.dumps(v) if k in _JSON and v is not None else v
                for k, v in values.items()]
        await self._write(f"UPDATE batches SET {sets} WHERE id = ?", (*args, batch_id))

    async def set_status(self, batch_id: str, status: str, when: str | None = None,
                         only_from: tuple[str, ...] = ()) -> bool:
        sql = "UPDATE batches SET status = ?"
        args: list[Any] = [status]
        if when is not None:
            assert when in BATCH_COLUMNS
            sql += f", {when} = ?"
            args.append(time.time())
        sql += " WHERE id = ?"
        args.append(batch_id)
        if only_from:
            sql += f" AND status IN ({', '.join('?' * len(only_from))})"
            args += only_from
        return bool(await self._write(sql, tuple(args)))

    # -- lines --

    async def put_line(self, batch_id: str, result: LineResult) -> bool:
        return bool(await self._write(
            "INSERT OR IGNORE INTO batch_lines (batch_id, line, custom_id, ok, record) "
            "VALUES (?, ?, ?, ?, ?)",
            (batch_id, result.line, result.custom_id, int(result.ok), result.record)))

    async def done_lines(self, batch_id: str, lo: int, hi: int) -> set[int]:
        async with self.db.execute("SELECT line FROM batch_lines WHERE batch_id = ? AND "
                                   "line >= ? AND line < ?", (batch_id, lo, hi)) as cur:
            return {r[0] for r in await cur.fetchall()}

    async def first_line_of(self, batch_id: str, custom_id: str, line: int) -> int:
        await self._write("INSERT OR IGNORE INTO batch_custom_ids (batch_id, custom_id, line) "
                          "VALUES (?, ?, ?)", (batch_id, custom_id, line))
        async with self.db.execute("SELECT line FROM batch_custom_ids WHERE batch_id = ? AND "
                                   "custom_id = ?", (batch_id, custom_id)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else line

    async def counts(self, batch_id: str) -> tuple[int, int]:
        async with self.db.execute("SELECT COALESCE(SUM(ok), 0), COUNT(*) - COALESCE(SUM(ok), 0) "
                                   "FROM batch_lines WHERE batch_id = ?", (batch_id,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def records(self, batch_id: str, ok: bool) -> AsyncIterator[bytes]:
        last = -1
        while True:
            async with self.db.execute(
                    "SELECT line, record FROM batch_lines WHERE batch_id = ? AND ok = ? AND "
                    "line > ? ORDER BY line LIMIT ?", (batch_id, int(ok), last, PAGE)) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return
            last = rows[-1][0]
            yield b"".join(bytes(r[1]) + b"\n" for r in rows)
