"""The shared Files/Batch store on Postgres (migrations/0008_batches.sql).

Contents are 1 MB ``bytea`` chunks (why not large objects: see the migration).
An upload's pieces go to ``file_uploads`` as they arrive, each its own small
insert, and become the file's chunks in one transaction at the end: a file is
whole or absent, and no piece is ever held beyond the one in hand.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from psycopg.types.json import Jsonb

from seawall.batches.store_api import (
    BATCH_COLUMNS,
    CHUNK,
    FILE_COLUMNS,
    Batch,
    LineResult,
    StoredFile,
    new_id,
)
from seawall.store.pg import Postgres

_JSON = ("metadata", "auth", "errors")
_FILES = ", ".join(FILE_COLUMNS)
_BATCHES = ", ".join(BATCH_COLUMNS)
PAGE = 500


def _val(k: str, v: Any) -> Any:
    return Jsonb(v) if k in _JSON and v is not None else v


class PostgresBatchStore:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        return None  # the pools belong to Stores

    async def _exec(self, sql: str, args: Any = ()) -> int:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return cur.rowcount

    async def _all(self, sql: str, args: Any = ()) -> list[Any]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return list(await cur.fetchall())

    # -- files --

    async def put_file(self, tenant: str, filename: str, purpose: str,
                       chunks: AsyncIterator[bytes], file_id: str | None = None) -> StoredFile:
        file_id = file_id or new_id("file-")
        upload = uuid.uuid4().hex
        size = seq = 0
        buf = bytearray()

        async def flush() -> None:
            nonlocal seq
            await self._exec("INSERT INTO file_uploads (upload_id, seq, data, created_at) "
                             "VALUES (%s, %s, %s, %s)", (upload, seq, bytes(buf), time.time()))
            seq += 1
            buf.clear()

        try:
            async for piece in chunks:  # re-cut into CHUNK-sized rows
                size += len(piece)
                buf += piece
                while len(buf) >= CHUNK:
                    rest = buf[CHUNK:]
                    del buf[CHUNK:]
                    await flush()
                    buf += rest
            if buf:
                await flush()
            f = StoredFile(file_id, tenant, filename, purpose, size, time.time())
            pool = await self.pg.pool()
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("DELETE FROM files WHERE id = %s", (file_id,))
                await conn.execute(f"INSERT INTO files ({_FILES}) VALUES (%s, %s, %s, %s, %s, %s)",
                                   (f.id, f.tenant, f.filename, f.purpose, f.bytes, f.created_at))
                await conn.execute("INSERT INTO file_chunks (file_id, seq, data) SELECT %s, seq, "
                                   "data FROM file_uploads WHERE upload_id = %s", (file_id, upload))
        finally:
            await self._exec("DELETE FROM file_uploads WHERE upload_id = %s", (upload,))
        return f

    async def get_file(self, file_id: str, tenant: str | None = None) -> StoredFile | None:
        rows = await self._all(f"SELECT {_FILES} FROM files WHERE id = %s AND "
                               "(%s::text IS NULL OR tenant = %s)", (file_id, tenant, tenant))
        return StoredFile(*rows[0]) if rows else None

    async def list_files(self, tenant: str, purpose: str | None = None,
                         after: str | None = None, limit: int = 20) -> list[StoredFile]:
        rows = await self._all(
            f"SELECT {_FILES} FROM files WHERE tenant = %s AND (%s::text IS NULL OR purpose = %s) "
            "AND (%s::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM files "
            "WHERE id = %s)) ORDER BY created_at DESC, id DESC LIMIT %s",
            (tenant, purpose, purpose, after, after, limit))
        return [StoredFile(*r) for r in rows]

    async def delete_file(self, file_id: str, tenant: str) -> bool:
        return bool(await self._exec("DELETE FROM files WHERE id = %s AND tenant = %s",
                                     (file_id, tenant)))

    async def expire(self, before: float) -> int:
        finished = "('completed', 'failed', 'cancelled', 'expired')"
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT id FROM batches WHERE created_at < %s AND status IN {finished}",
                (before,))
            old = [r[0] for r in await cur.fetchall()]
            if old:
                for table in ("batch_lines", "batch_custom_ids"):
                    await conn.execute(f"DELETE FROM {table} WHERE batch_id = ANY(%s)", (old,))
                await conn.execute("DELETE FROM batches WHERE id = ANY(%s)", (old,))
            cur = await conn.execute(
                "DELETE FROM files WHERE created_at < %s AND id NOT IN (SELECT input_file_id "
                f"FROM batches WHERE status NOT IN {finished})", (before,))
            return len(old) + cur.rowcount

    async def read_file(self, file_id: str) -> AsyncIterator[bytes]:
        seq = -1
        while True:
            rows = await self._all("SELECT seq, data FROM file_chunks WHERE file_id = %s AND "
                                   "seq > %s ORDER BY seq LIMIT 1", (file_id, seq))
            if not rows:
                return
            seq = rows[0][0]
            yield bytes(rows[0][1])

    # -- batches --

    async def create_batch(self, batch: Batch) -> None:
        row = batch.row()
        await self._exec(f"INSERT INTO batches ({_BATCHES}) VALUES "
                         f"({', '.join(['%s'] * len(BATCH_COLUMNS))})",
                         [_val(c, row[c]) for c in BATCH_COLUMNS])

    async def get_batch(self, batch_id: str, tenant: str | None = None) -> Batch | None:
        rows = await self._all(f"SELECT {_BATCHES} FROM batches WHERE id = %s AND "
                               "(%s::text IS NULL OR tenant = %s)", (batch_id, tenant, tenant))
        return Batch(*rows[0]) if rows else None

    async def list_batches(self, tenant: str | None, after: str | None = None,
                           limit: int = 20) -> list[Batch]:
        rows = await self._all(
            f"SELECT {_BATCHES} FROM batches WHERE (%s::text IS NULL OR tenant = %s) AND "
            "(%s::text IS NULL OR "
            "(created_at, id) < (SELECT created_at, id FROM batches WHERE id = %s)) "
            "ORDER BY created_at DESC, id DESC LIMIT %s", (tenant, tenant, after, after, limit))
        return [Batch(*r) for r in rows]

    async def update_batch(self, batch_id: str, **values: Any) -> None:
        assert values and all(k in BATCH_COLUMNS for k in values)
        sets = ", ".join(f"{k} = %s" for k in values)
        await self._exec(f"UPDATE batches SET {sets} WHERE id = %s",
                         [*(_val(k, v) for k, v in values.items()), batch_id])

    async def set_status(self, batch_id: str, status: str, when: str | None = None,
                         only_from: tuple[str, ...] = ()) -> bool:
        sql = "UPDATE batches SET status = %s"
        args: list[Any] = [status]
        if when is not None:
            assert when in BATCH_COLUMNS
            sql += f", {when} = %s"
            args.append(time.time())
        sql += " WHERE id = %s"
        args.append(batch_id)
        if only_from:
            sql += " AND status = ANY(%s)"
            args.append(list(only_from))
        return bool(await self._exec(sql, args))

    # -- lines --

    async def put_line(self, batch_id: str, result: LineResult) -> bool:
        return bool(await self._exec(
            "INSERT INTO batch_lines (batch_id, line, custom_id, ok, record) VALUES "
            "(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (batch_id, result.line, result.custom_id, result.ok, result.record)))

    async def done_lines(self, batch_id: str, lo: int, hi: int) -> set[int]:
        rows = await self._all("SELECT line FROM batch_lines WHERE batch_id = %s AND "
                               "line >= %s AND line < %s", (batch_id, lo, hi))
        return {r[0] for r in rows}

    async def first_line_of(self, batch_id: str, custom_id: str, line: int) -> int:
        rows = await self._all(
            "WITH ins AS (INSERT INTO batch_custom_ids (batch_id, custom_id, line) "
            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING line) "
            "SELECT line FROM ins UNION ALL SELECT line FROM batch_custom_ids "
            "WHERE batch_id = %s AND custom_id = %s", (batch_id, custom_id, line,
                                                       batch_id, custom_id))
        return int(rows[0][0]) if rows else line

    async def counts(self, batch_id: str) -> tuple[int, int]:
        rows = await self._all("SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok)"
                               " FROM batch_lines WHERE batch_id = %s", (batch_id,))
        return int(rows[0][0]), int(rows[0][1])

    async def records(self, batch_id: str, ok: bool) -> AsyncIterator[bytes]:
        last = -1
        while True:
            rows = await self._all(
                "SELECT line, record FROM batch_lines WHERE batch_id = %s AND ok = %s AND "
                "line > %s ORDER BY line LIMIT %s", (batch_id, ok, last, PAGE))
            if not rows:
                return
            last = rows[-1][0]
            yield b"".join(bytes(r[1]) + b"\n" for r in rows)
