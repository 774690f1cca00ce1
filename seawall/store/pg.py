"""One process's connections to the shared Postgres database.

psycopg 3 is the one driver for both sides of the code: the event loop uses
an async pool (keys, trace records, canary state, cache), work that already
runs on threads (RAG ingestion and search, the prompt registry, the CLI) a
sync pool. It also brings COPY for batched trace writes and pgvector's
adapters; asyncpg would be a little faster on the loop but has no sync side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.types import string
from psycopg.types.json import set_json_dumps
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from seawall.config import StoreSettings

log = logging.getLogger("seawall.store")


# Postgres text and jsonb cannot hold NUL (U+0000), which any client can put in
# a model name, a user id, a file name or a message: a query or a trace batch
# with one failed (a 500, and a trace writer stuck journaling for good). On the
# async pool (the request path's queries: few strings each) every string and
# JSON value is sent with NUL replaced by U+FFFD. The sync pool keeps psycopg's
# C string dumpers for the trace COPY (bench/trace_ingest.py; a Python dumper
# runs once per string of every row): its users scrub themselves (RAG's store;
# the trace writer retries a batch that had a NUL with :func:`no_nul_row`).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class _StrDumper(string.StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(_no_nul(obj))


class _StrBinaryDumper(string.StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(_no_nul(obj))


def no_nul_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with NUL replaced in its strings."""
    return tuple(_no_nul(v) if isinstance(v, str) else v for v in row)


def _json_dumps(obj: Any) -> str:
    text = json.dumps(obj)
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def nul_safe(adapters: AdaptersMap, context: Any = None, strings: bool = True) -> None:
    """Dump JSON, and strings (parameters and COPY rows) unless ``strings``
    is false, without NUL."""
    if strings:
        adapters.register_dumper(str, _StrDumper)
        adapters.register_dumper(str, _StrBinaryDumper)
    set_json_dumps(_json_dumps, context)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    from pgvector.psycopg import register_vector_async

    nul_safe(conn.adapters, conn)

    # No vector extension yet (before `seawall migrate`): vectors are unused then.
    with contextlib.suppress(psycopg.ProgrammingError):
        await register_vector_async(conn)


def _configure_sync(conn: psycopg.Connection[Any]) -> None:
    from pgvector.psycopg import register_vector

    nul_safe(conn.adapters, conn, strings=False)

    with contextlib.suppress(psycopg.ProgrammingError):
        register_vector(conn)


class Postgres:
    """The pools, opened on first use; ``close`` ends both."""

    def __init__(self, settings: StoreSettings) -> None:
        assert settings.url
        self.url = settings.url
        self.settings = settings
        self._async: AsyncConnectionPool | None = None
        self._sync: ConnectionPool | None = None

    async def pool(self) -> AsyncConnectionPool:
        if self._async is None:
            s = self.settings
            pool = AsyncConnectionPool(
                self.url, min_size=s.pool_min, max_size=s.pool_max, open=False,
                timeout=s.connect_timeout_s, kwargs={"autocommit": True},
                configure=_configure_async, name="seawall")
            await pool.open(wait=False)
            self._async = pool
        return self._async

    def sync_pool(self) -> ConnectionPool:
        if self._sync is None:
            s = self.settings
            self._sync = ConnectionPool(
                self.url, min_size=0, max_size=max(2, s.pool_max // 2), open=True,
                timeout=s.connect_timeout_s, kwargs={"autocommit": True},
                configure=_configure_sync, name="seawall-sync")
        return self._sync

    def close_sync(self) -> None:
        """Close the sync pool (a CLI command that never used the async one)."""
        if self._sync is not None:
            self._sync.close(timeout=2.0)
            self._sync = None

    async def close(self) -> None:
        if self._async is not None:
            await self._async.close(timeout=2.0)
            self._async = None
        if self._sync is not None:
            self._sync.close(timeout=2.0)
            self._sync = None
