"""The shared cache store: entries and their vectors in Postgres (pgvector),
seen by every replica at once.

Postgres is the only truth: an exact lookup, a semantic lookup, a purge and
an eviction are each one statement on the shared rows, so an answer stored
by one replica is an exact hit on every other at once, and a purge (from any
replica, or the CLI) is never served again anywhere.

Semantic lookups filter by scope inside the query (a scope covers tenant,
model, prompt version, parameters and earlier turns: a match never crosses
them). How the scope's rows are searched is decided per lookup in the same
statement, from the scope's size: a small scope (most: one per conversation
prefix) is scanned exactly through the B-tree on ``scope``; a large one (an
FAQ-like stream of first questions) walks the HNSW index with pgvector's
iterative scan (``hnsw.iterative_scan = relaxed_order``), which keeps
walking until enough rows of the scope are found, instead of filtering the
first ``ef_search`` neighbours of every scope and finding none. Either way
the scope, liveness and age conditions are in the WHERE clause, and the
distances are exact (from the stored float16 vectors).

Only hints live in the process: ``may_have_scope`` (a Bloom filter of the
scopes holding vectors, refreshed every ``hint_refresh_s`` from new rows and
rebuilt now and then) and ``len`` (a count refreshed periodically). Neither
ever serves an entry. Hits are noted in memory and written in batches
(``last_used_at`` for least-recently-used eviction, ``hits`` for stats).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from pgvector import HalfVector

from seawall.cache.scope_hint import ScopeFilter
from seawall.cache.store import CachedAnswer, NewEntry, Purge, Vector
from seawall.store.pg import Postgres

log = logging.getLogger("seawall.cache")

DIM = 384  # the column's width (0002_cache.sql): an HNSW index needs a fixed one
_EVICT_LOCK = 0x5EA_CAC4E  # advisory lock: one replica evicts at a time
_SWEEP_BATCH = 5_000  # expired rows deleted per statement (short locks)
_LATE_ROWS = 1_000  # ids re-read after a rebuild, for inserts that were in flight
HNSW_EF_SEARCH = 64  # first batch of the HNSW walk (the embedded graph's query ef)

# The search's settings, local to its transaction. No parallel workers: the
# planner may plan the branch that the size test skips as a parallel scan,
# and starting its workers costs milliseconds even when it never runs. A
# statement timeout (the parameter, in ms): a search that slow is a miss.
LOOKUP_SETTINGS = (
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    f"set_config('hnsw.ef_search', '{HNSW_EF_SEARCH}', true), "
    "set_config('max_parallel_workers_per_gather', '0', true), "
    "set_config('statement_timeout', %s, true)")

_ANSWER = "e.id, e.completion, e.created_at, e.prompt_tokens, e.completion_tokens, " \
          "e.cost_usd, e.text, e.quarantined"
_QUARANTINE = ("UPDATE cache_entries SET quarantined = %s, quarantined_at = %s WHERE tenant = %s "
               "AND (id = %s OR trace_id = %s) AND quarantined IS NULL RETURNING id")
RELEASE_SQL = ("UPDATE cache_entries SET quarantined = NULL, quarantined_at = NULL "
               "WHERE id = %s AND quarantined IS NOT NULL RETURNING tenant")

_PUT = """
INSERT INTO cache_entries AS e (key, scope, tenant, model, prompt_version, text, embedding,
    completion, prompt_tokens, completion_tokens, cost_usd, created_at, expires_at, last_used_at,
    trace_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET completion = excluded.completion,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    cost_usd = excluded.cost_usd, created_at = excluded.created_at,
    expires_at = excluded.expires_at, last_used_at = excluded.last_used_at,
    trace_id = excluded.trace_id
WHERE e.quarantined IS NULL
RETURNING e.id, (e.xmax = 0) AS inserted"""

# One statement: count the scope's vectors (up to the exact-scan limit), then
# run exactly one of the two searches (the other's one-time filter is false).
# ``+ 0`` keeps the HNSW index out of the exact branch. The threshold is
# applied outside the search: inside, an iterative scan would walk the whole
# index looking for a match that is not there (most lookups are misses).
_NEAREST = f"""
WITH size AS MATERIALIZED (
    SELECT count(*) AS n FROM (SELECT 1 FROM cache_entries
        WHERE scope = %(scope)s AND embedding IS NOT NULL LIMIT %(exact_below)s) s),
small AS MATERIALIZED (
    SELECT id, embedding <=> %(v)s AS distance FROM cache_entries
    WHERE (SELECT n FROM size) < %(exact_below)s
      AND scope = %(scope)s AND embedding IS NOT NULL
      AND expires_at > %(now)s AND created_at >= %(oldest)s
    ORDER BY (embedding <=> %(v)s) + 0 LIMIT %(k)s),
large AS MATERIALIZED (
    SELECT id, embedding <=> %(v)s AS distance FROM cache_entries
    WHERE (SELECT n FROM size) >= %(exact_below)s
      AND scope = %(scope)s AND embedding IS NOT NULL
      AND expires_at > %(now)s AND created_at >= %(oldest)s
    ORDER BY embedding <=> %(v)s LIMIT %(k)s),
near AS (SELECT * FROM small UNION ALL SELECT * FROM large)
SELECT {_ANSWER}, 1 - near.distance FROM near JOIN cache_entries e ON e.id = near.id
WHERE near.distance <= %(max_distance)s
ORDER BY near.distance LIMIT %(k)s"""


def purge_sql(what: Purge) -> tuple[str, list[Any]]:
    """The DELETE for ``what``, counting the rows (also for ``seawall cache purge``)."""
    where, args = [], []
    for column, value in (("tenant", what.tenant), ("model", what.model),
                          ("prompt_version", what.prompt_version), ("id", what.entry_id)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    return f"WITH d AS (DELETE FROM cache_entries{cond} RETURNING 1) SELECT count(*) FROM d", args


def _answer(row: Any, similarity: float | None = None) -> CachedAnswer:
    return CachedAnswer(id=row[0], completion=orjson.loads(row[1]), created_at=row[2],
                        prompt_tokens=row[3], completion_tokens=row[4], cost_usd=row[5],
                        text=row[6], quarantined=row[7], similarity=similarity)


class PostgresCacheStore:
    def __init__(self, pg: Postgres, max_entries: int,
                 on_evict: Callable[[str, int], None] | None = None,
                 keep_expired_s: float = 0.0, dim: int = DIM, exact_below: int = 512,
                 hint_refresh_s: float = 1.0, hint_rebuild_s: float = 300.0,
                 count_refresh_s: float = 10.0, lookup_timeout_s: float = 1.0) -> None:
        if dim != DIM:
            raise ValueError(f"the shared cache stores {DIM}-dimensional vectors, not {dim}")
        self.pg = pg
        self.max_entries = max_entries
        self.on_evict = on_evict  # (reason, count), for metrics
        self.keep_expired_s = keep_expired_s  # kept after expiry for stale-if-error
        self.exact_below = exact_below
        self.hint_refresh_s = hint_refresh_s
        self.hint_rebuild_s = hint_rebuild_s
        self.count_refresh_s = count_refresh_s
        self.lookup_timeout_s = lookup_timeout_s
        self._lookups_failing = False
        self.evicted = 0  # by this process
        self.expired = 0
        self._touched: dict[int, float] = {}  # hits not yet written to last_used_at
        self._count = 0  # rows at the last count, plus this process's inserts since
        self._scopes: ScopeFilter | None = None  # None: unknown, every scope may match
        self._marks: collections.deque[int] = collections.deque([0], maxlen=3)
        self._hint_ok_at = 0.0  # monotonic time of the last successful refresh
        self._rebuilt_at = 0.0
        self._counted_at = 0.0
        self._refresher: asyncio.Task[None] | None = None

    # -- hints (sync, in process) --

    def __len__(self) -> int:
        """About how many entries the shared table holds (refreshed every
        ``count_refresh_s``, plus this process's inserts since)."""
        return self._count

    def may_have_scope(self, scope: bytes) -> bool:
        """False only if this process's filter of the scopes holding vectors,
        refreshed within the last few ``hint_refresh_s``, has never seen
        ``scope``: an entry stored by another replica becomes a semantic
        candidate here within about ``hint_refresh_s`` (an exact hit at once).
        When the filter is not fresh (Postgres unreachable) every scope may match."""
        scopes = self._scopes
        if scopes is None or time.monotonic() - self._hint_ok_at > 5 * self.hint_refresh_s:
            return True
        return scope in scopes

    def touch(self, entry_id: int, now: float) -> None:
        """Note a served semantic candidate as recently used (written in batches)."""
        self._touched[entry_id] = max(now, self._touched.get(entry_id, now))

    # -- life cycle --

    async def open(self) -> None:
        await self.pg.pool()
        try:
            await self._refresh(time.monotonic(), force=True)
        except psycopg.Error as e:
            log.warning("cache hints not loaded (every scope may match until they are): %s", e)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        log.info("cache opened (postgres)", extra={"entries": self._count})

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        try:
            await self._flush_touched()
        except psycopg.Error as e:
            log.warning("cache hits not written at close: %s", e)

    async def _refresh_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.hint_refresh_s)
            try:
                await self._flush_touched()
                await self._refresh(time.monotonic())
                if failing:
                    log.info("cache hints refreshed again")
                failing = False
            except Exception as e:
                if not failing:  # once per outage, not once a second
                    log.warning("cache hint refresh failed (every scope may match): %s", e)
                failing = True

    async def _refresh(self, mono: float, force: bool = False) -> None:
        """New rows' scopes into the filter; now and then, the count and a
        filter rebuilt from every row (dropping purged and expired scopes)."""
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            if force or mono - self._counted_at >= self.count_refresh_s:
                row = await (await conn.execute("SELECT count(*) FROM cache_entries")).fetchone()
                self._count = int(row[0]) if row else 0
                self._counted_at = mono
            scopes = self._scopes
            if (force or scopes is None or scopes.full
                    or mono - self._rebuilt_at >= self.hint_rebuild_s):
                row = await (await conn.execute(
                    "SELECT COALESCE(max(id), 0) FROM cache_entries")).fetchone()
                top = int(row[0]) if row else 0
                rebuilt = ScopeFilter(2 * self._count)
                async with conn.transaction(), conn.cursor(name="cache_scopes") as named:
                    await named.execute("SELECT DISTINCT scope FROM cache_entries "
                                        "WHERE embedding IS NOT NULL")  # streamed
                    async for (scope,) in named:
                        rebuilt.add(bytes(scope))
                self._scopes, self._rebuilt_at = rebuilt, mono
                # The next refresh reads a little behind: inserts in flight
                # during the rebuild may commit with ids below ``top``.
                self._marks.clear()
                self._marks.append(max(0, top - _LATE_ROWS))
            else:
                # Rows from the oldest of the last few marks: an insert that
                # committed after a later id was seen is still picked up.
                cur = await conn.execute(
                    "SELECT id, scope FROM cache_entries WHERE id > %s "
                    "AND embedding IS NOT NULL ORDER BY id", (self._marks[0],))
                top = self._marks[-1]
                async for id_, scope in cur:
                    scopes.add(bytes(scope))
                    top = max(top, id_)
                self._marks.append(top)
        self._hint_ok_at = mono

    # -- lookups --

    # A lookup waits at most ``lookup_timeout_s`` for a connection (and a
    # search runs at most as long); with Postgres unreachable or that slow it
    # is a miss (logged once per outage), never an error.

    async def get(self, key: bytes, now: float, max_age_s: float | None) -> CachedAnswer | None:
        oldest = float("-inf") if max_age_s is None else now - max_age_s
        try:
            pool = await self.pg.pool()
            async with pool.connection(timeout=self.lookup_timeout_s) as conn:
                cur = await conn.execute(
                    f"SELECT {_ANSWER} FROM cache_entries e WHERE e.key = %s "
                    "AND e.expires_at > %s AND e.created_at >= %s", (key, now, oldest))
                row = await cur.fetchone()
        except psycopg.Error as e:
            self._lookup_failed(e)
            return None
        self._lookups_failing = False
        if row is None:
            return None
        self.touch(row[0], now)
        return _answer(row)

    async def nearest(self, scope: bytes, vector: Vector, k: int, min_similarity: float,
                      now: float, max_age_s: float | None) -> list[CachedAnswer]:
        args = {"scope": scope, "v": HalfVector(vector), "k": k, "now": now,
                "oldest": float("-inf") if max_age_s is None else now - max_age_s,
                "exact_below": self.exact_below, "max_distance": 1.0 - min_similarity}
        try:
            pool = await self.pg.pool()
            # One round trip: BEGIN, the settings (for this transaction only:
            # the pool's connections are shared), the search, COMMIT.
            async with (pool.connection(timeout=self.lookup_timeout_s) as conn,
                        conn.pipeline(), conn.transaction()):
                timeout_ms = max(1, round(self.lookup_timeout_s * 1000))
                await conn.execute(LOOKUP_SETTINGS, (str(timeout_ms),))
                # Never prepared: a generic plan would pick one search for every scope size.
                cur = await conn.execute(_NEAREST, args, prepare=False)
                rows = await cur.fetchall()
        except psycopg.Error as e:
            self._lookup_failed(e)
            return []
        self._lookups_failing = False
        return [_answer(r, float(r[8])) for r in rows]

    def _lookup_failed(self, e: Exception) -> None:
        if not self._lookups_failing:
            log.warning("cache lookups are misses: Postgres is unreachable or slow (%s)", e)
        self._lookups_failing = True

    # -- writes --

    async def put(self, entry: NewEntry) -> None:
        now = time.time()
        vector = None if entry.vector is None else HalfVector(entry.vector)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_PUT, (
                entry.key, entry.scope, entry.tenant, entry.model, entry.prompt_version,
                entry.text, vector, orjson.dumps(entry.completion), entry.prompt_tokens,
                entry.completion_tokens, entry.cost_usd, now, now + entry.ttl_s, now,
                entry.trace_id))
            row = await cur.fetchone()
        if row is None:
            return  # the key's entry is quarantined: kept as it is
        if row[1]:
            self._count += 1
        if vector is not None and self._scopes is not None:
            self._scopes.add(entry.scope)
        if self._count > self.max_entries:
            await self._evict()

    async def _evict(self) -> None:
        """Down to ``max_entries`` (and 1% below, so the count runs once per
        ~1% of puts at capacity), least recently used first; one replica at a
        time (the others skip: the one evicting counts their rows too)."""
        await self._flush_touched()
        pool = await self.pg.pool()
        async with pool.connection() as conn, conn.transaction():
            locked = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                               (_EVICT_LOCK,))).fetchone()
            if not locked or not locked[0]:
                return
            row = await (await conn.execute("SELECT count(*) FROM cache_entries")).fetchone()
            count = int(row[0]) if row else 0
            excess = count - self.max_entries
            if excess > 0:
                excess += self.max_entries // 100
                row = await (await conn.execute(
                    "WITH d AS (DELETE FROM cache_entries WHERE id IN (SELECT id FROM "
                    "cache_entries ORDER BY last_used_at, id LIMIT %s) RETURNING 1) "
                    "SELECT count(*) FROM d", (excess,))).fetchone()
                n = int(row[0]) if row else 0
            else:
                n = 0
        self._count = count - n
        self.evicted += n
        if n and self.on_evict is not None:
            self.on_evict("lru", n)

    async def _flush_touched(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE cache_entries AS e SET last_used_at = GREATEST(e.last_used_at, t.at), "
                "hits = e.hits + 1 FROM unnest(%s::bigint[], %s::float8[]) AS t(id, at) "
                "WHERE e.id = t.id", (list(touched), list(touched.values())))

    async def purge(self, what: Purge, all_entries: bool = False) -> int:
        if what.everything and not all_entries:
            raise ValueError("refusing to purge every entry without all_entries=True")
        sql, args = purge_sql(what)
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            row = await (await conn.execute(sql, args)).fetchone()
        n = int(row[0]) if row else 0
        self._count = max(0, self._count - n)
        return n

    async def quarantine(self, tenant: str, reason: str, entry_id: int | None = None,
                         trace_id: str | None = None) -> list[int]:
        if entry_id is None and trace_id is None:
            return []
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(_QUARANTINE, (reason, time.time(), tenant, entry_id,
                                                   trace_id))
            return [int(r[0]) for r in await cur.fetchall()]

    async def release(self, entry_id: int) -> str | None:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(RELEASE_SQL, (entry_id,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def sweep(self, now: float) -> int:
        await self._flush_touched()
        pool = await self.pg.pool()
        total = 0
        while True:
            async with pool.connection() as conn:
                row = await (await conn.execute(
                    "WITH d AS (DELETE FROM cache_entries WHERE id IN (SELECT id FROM "
                    "cache_entries WHERE expires_at <= %s LIMIT %s) RETURNING 1) "
                    "SELECT count(*) FROM d",
                    (now - self.keep_expired_s, _SWEEP_BATCH))).fetchone()
            n = int(row[0]) if row else 0
            total += n
            if n < _SWEEP_BATCH:
                break
        self._count = max(0, self._count - total)
        self.expired += total
        if total and self.on_evict is not None:
            self.on_evict("expired", total)
        return total

    async def stats(self) -> dict[str, Any]:
        await self._flush_touched()
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT count(*), COALESCE(sum(hits), 0), count(embedding), count(quarantined) "
                "FROM cache_entries")).fetchone()
        assert row is not None
        return {"entries": row[0], "hits": row[1], "semantic_entries": row[2],
                "quarantined": row[3],
                "evicted": self.evicted, "expired": self.expired, "store": "postgres"}
