"""The one place that turns settings into stores.

``serve``, ``worker``, ``doctor`` and every CLI command get their stores from
:class:`Stores`; nothing else constructs one. ``store.kind`` picks the
backend of every store at once: ``sqlite`` (files under ``data_dir``, one
process) or ``postgres`` (one shared database, any number of processes);
``redis.url`` adds what many processes must decide together (rate limits,
budgets, change notices). Each store is a Protocol with both backends, and
tests/contract/ runs one suite against each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from seawall.config import Settings
from seawall.store.base import Store

if TYPE_CHECKING:
    from seawall.cache.store import CacheStore
    from seawall.observe.metrics import Metrics
    from seawall.pipeline.ratelimit import RateLimiter
    from seawall.store.pg import Postgres
    from seawall.store.redis_link import RedisLink

log = logging.getLogger("seawall.store")


class Stores:
    """Every store of one process, built from one Settings. Constructing is
    cheap and touches nothing; :meth:`open` connects (and, on Postgres,
    refuses a schema that is not this code's), :meth:`close` lets go."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shared = settings.store.kind == "postgres"
        self.pg: Postgres | None = None
        self.redis: RedisLink | None = None
        if self.shared:
            from seawall.store.pg import Postgres

            self.pg = Postgres(settings.store)
        if settings.redis.url:
            from seawall.store.redis_link import RedisLink

            self.redis = RedisLink(settings.redis)
        self.main: Store = self._main()
        # Key lookups on a connection of their own: never behind trace writes.
        self.keys: Store = self._main() if not self.shared else self.main
        self._cache: CacheStore | None = None
        self._opened = False

    @property
    def description(self) -> str:
        """One line naming where the data lives (for logs and the CLI)."""
        if self.pg is not None:
            return f"postgres {_safe_url(self.pg.url)}"
        return f"sqlite {self.settings.db_path}"

    # -- construction: one function per store --

    def _main(self) -> Store:
        if self.pg is not None:
            from seawall.store.postgres import PostgresStore

            return PostgresStore(self.pg)
        from seawall.store.sqlite import SqliteStore

        return SqliteStore(self.settings.db_path)

    def cache_store(self, on_evict: Any = None) -> CacheStore:
        if self._cache is None:
            s = self.settings
            if self.pg is not None:
                from seawall.cache.pg_store import PostgresCacheStore

                self._cache = PostgresCacheStore(self.pg, s.cache.max_entries,
                                                 on_evict=on_evict,
                                                 keep_expired_s=s.cache.stale_if_error_s)
            else:
                from seawall.cache.sqlite_store import SqliteCacheStore

                self._cache = SqliteCacheStore(s.cache_path, s.cache.max_entries,
                                               on_evict=on_evict,
                                               keep_expired_s=s.cache.stale_if_error_s)
        return self._cache

    def rag_store(self) -> Any:
        """The RAG documents/chunks/vectors store (sync: its callers run on threads)."""
        if self.pg is not None:
            from seawall.rag.pg_store import PostgresRagStore

            return PostgresRagStore(self.pg)
        from seawall.rag.store import RagStore

        return RagStore(self.settings.rag_path)

    def prompt_store(self) -> Any:
        """The prompt versions and labels store (sync)."""
        if self.pg is not None:
            from seawall.prompts.pg_store import PostgresPromptStore

            return PostgresPromptStore(self.pg)
        from seawall.prompts.store import PromptStore

        return PromptStore(self.settings.prompts_path)

    def rate_limiter(self) -> RateLimiter:
        from seawall.pipeline.ratelimit import InMemoryRateLimiter

        local = InMemoryRateLimiter()
        if self.redis is None:
            return local
        from seawall.pipeline.ratelimit import RedisRateLimiter  # type: ignore[attr-defined]

        return RedisRateLimiter(self.redis, fallback=local, metrics=self.metrics)

    # -- lifecycle --

    async def check_schema(self) -> None:
        """Postgres: SchemaError unless the database is at this code's version."""
        if self.pg is not None:
            from seawall.store.migrate import check

            await asyncio.to_thread(check, self.pg.url, self.settings.store.connect_timeout_s)

    async def open(self) -> None:
        await self.check_schema()
        await self.main.open()
        if self.keys is not self.main:
            await self.keys.open_reader()  # type: ignore[attr-defined]
        self._opened = True

    async def close(self) -> None:
        if self.keys is not self.main:
            await self.keys.close()
        await self.main.close()
        if self.redis is not None:
            await self.redis.close()
        if self.pg is not None:
            await self.pg.close()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
