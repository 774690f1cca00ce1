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
    from seawall.audit.model import AuditLog, SyncAuditLog
    from seawall.batches.store_api import BatchStore
    from seawall.cache.store import CacheStore
    from seawall.jobs.queue import JobQueue
    from seawall.observe.metrics import Metrics
    from seawall.pipeline.budgets import Budgets
    from seawall.pipeline.ratelimit import RateLimiter
    from seawall.prompts.store_api import PromptStore
    from seawall.quality.feedback_store import FeedbackStore
    from seawall.quality.history import QualityHistory
    from seawall.quality.score_store import ScoreStore
    from seawall.quality.slo_store import SloStore
    from seawall.rag.store_api import RagStore
    from seawall.responses.store_api import ResponseStore
    from seawall.store.bus import ChangeBus
    from seawall.store.lease import Lease
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
        self._bus: ChangeBus | None = None

    @property
    def description(self) -> str:
        """One line naming where the data lives (for logs and the CLI)."""
        if self.pg is not None:
            return f"postgres {safe_url(self.pg.url)}"
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

    def rag_store(self) -> RagStore:
        """The RAG documents/chunks/vectors store (sync: its callers run on threads)."""
        if self.pg is not None:
            from seawall.rag.pg_store import PostgresRagStore

            return PostgresRagStore(self.pg)
        from seawall.rag.store import SqliteRagStore

        return SqliteRagStore(self.settings.rag_path)

    def prompt_store(self) -> PromptStore:
        """The prompt versions and labels store (sync)."""
        if self.pg is not None:
            from seawall.prompts.pg_store import PostgresPromptStore

            return PostgresPromptStore(self.pg)
        from seawall.prompts.store import SqlitePromptStore

        return SqlitePromptStore(self.settings.prompts_path)

    def jobs(self) -> JobQueue:
        """The durable job queue (async; opened and closed by its user)."""
        if self.pg is not None:
            from seawall.jobs.pg_queue import PostgresJobQueue

            return PostgresJobQueue(self.pg, self.settings.jobs)
        from seawall.jobs.sqlite_queue import SqliteJobQueue

        return SqliteJobQueue(self.settings.jobs_path, self.settings.jobs)

    def responses(self) -> ResponseStore:
        """Stored responses (the Responses API); opened and closed by its user."""
        if self.pg is not None:
            from seawall.responses.pg_store import PostgresResponseStore

            return PostgresResponseStore(self.pg)
        from seawall.responses.sqlite_store import SqliteResponseStore

        return SqliteResponseStore(self.settings.responses_path)

    def feedback(self) -> FeedbackStore:
        """Ratings of answers (in seawall.db next to the traces, or Postgres);
        opened and closed by its user."""
        if self.pg is not None:
            from seawall.quality.feedback_store import PostgresFeedbackStore

            return PostgresFeedbackStore(self.pg)
        from seawall.quality.feedback_store import SqliteFeedbackStore

        return SqliteFeedbackStore(self.settings.db_path)

    def scores(self) -> ScoreStore:
        """Judge scores of answers (in seawall.db next to the traces, or
        Postgres); opened and closed by its user."""
        if self.pg is not None:
            from seawall.quality.score_store import PostgresScoreStore

            return PostgresScoreStore(self.pg)
        from seawall.quality.score_store import SqliteScoreStore

        return SqliteScoreStore(self.settings.db_path)

    def slo_store(self) -> SloStore:
        """SLO counts, drift samples and alert state (seawall/quality/); opened
        and closed by its user."""
        if self.pg is not None:
            from seawall.quality.slo_store import PostgresSloStore

            return PostgresSloStore(self.pg)
        from seawall.quality.slo_store import SqliteSloStore

        return SqliteSloStore(self.settings.db_path)

    def quality_history(self) -> QualityHistory:
        """Drift rounds and SLO burn rates over time (seawall/quality/history.py);
        opened and closed by its user."""
        if self.pg is not None:
            from seawall.quality.history import PostgresQualityHistory

            return PostgresQualityHistory(self.pg)
        from seawall.quality.history import SqliteQualityHistory

        return SqliteQualityHistory(self.settings.db_path)

    def audit(self) -> AuditLog:
        """The append-only audit log of admin actions (in seawall.db, or
        Postgres); opened and closed by its user. :meth:`audit_sync` is the
        same table for sync callers (CLI commands)."""
        from seawall.audit import store as audit

        if self.pg is not None:
            return audit.PostgresAuditLog(self.pg)
        return audit.SqliteAuditLog(self.settings.db_path)

    def audit_sync(self) -> SyncAuditLog:
        from seawall.audit import store as audit

        if self.pg is not None:
            return audit.PostgresSyncAuditLog(self.pg)
        return audit.SqliteSyncAuditLog(self.settings.db_path)

    def files(self) -> BatchStore:
        """Uploaded files, batches and their per-line outcomes (opened and
        closed by its user)."""
        if self.pg is not None:
            from seawall.batches.pg_store import PostgresBatchStore

            return PostgresBatchStore(self.pg)
        from seawall.batches.sqlite_store import SqliteBatchStore

        path = self.settings.batches_path
        return SqliteBatchStore(path, path.parent / "files")

    def rate_limiter(self) -> RateLimiter:
        from seawall.pipeline.ratelimit import InMemoryRateLimiter

        local = InMemoryRateLimiter()
        if self.redis is None:
            return local
        from seawall.pipeline.ratelimit import RedisRateLimiter

        return RedisRateLimiter(self.redis, fallback=local, metrics=self.metrics)

    def budgets(self, ledger: Any = None) -> Budgets:
        """Spend per key and tenant: in this process (starting from the trace
        records of ``ledger``, default the key store's connection, when it can
        sum them), or shared through Redis."""
        from seawall.pipeline.budgets import InMemoryBudgets, SpendLedger

        ledger = ledger if ledger is not None else self.keys
        if not isinstance(ledger, SpendLedger):
            ledger = None
        local = InMemoryBudgets(ledger=ledger)
        if self.redis is None:
            return local
        from seawall.pipeline.budgets import RedisBudgets

        return RedisBudgets(self.redis, fallback=local, metrics=self.metrics,
                            reservation_ttl_s=self.settings.limits.reservation_ttl_s,
                            ledger=ledger)

    def bus(self) -> ChangeBus:
        """Change notices to every replica (Redis pub/sub), or to this process
        only (no ``redis.url``). One per process; the caller starts and closes it."""
        if self._bus is None:
            from seawall.store.bus import make_bus

            self._bus = make_bus(self.redis, self.metrics)
        return self._bus

    def lease(self, name: str, ttl_s: float = 10.0) -> Lease:
        """Who decides for all replicas (a Redis lease), or this process alone."""
        from seawall.store.lease import LocalLease, RedisLease

        if self.redis is None:
            return LocalLease()
        return RedisLease(self.redis, name, ttl_s, self.metrics)

    # -- lifecycle --

    async def check_schema(self) -> None:
        """Postgres: SchemaError unless the database is at this code's version."""
        if self.pg is not None:
            from seawall.store.migrate import check

            await asyncio.to_thread(check, self.pg.url, self.settings.store.connect_timeout_s)

    async def open(self, key_reader: bool = True) -> None:
        """Connect; ``key_reader=False`` (the CLI) skips the separate key-lookup
        connection a server keeps."""
        await self.check_schema()
        await self.main.open()
        if self.keys is not self.main:
            if key_reader:
                await self.keys.open_reader()  # type: ignore[attr-defined]
            else:
                self.keys = self.main

    async def close(self) -> None:
        if self.keys is not self.main:
            await self.keys.close()
        await self.main.close()  # the cache store is opened and closed by its user
        if self.redis is not None:
            await self.redis.close()
        if self.pg is not None:
            await self.pg.close()


def safe_url(url: str) -> str:
    """A database or Redis URL without its password, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
