"""The embedded cache store: entries in a SQLite file of their own, vectors
in in-process indexes saved beside it.

SQLite is the truth: an entry exists while its row does. The in-memory
parts only make lookups fast and are checked against the rows: a set of
the stored keys answers most misses without touching the disk, and the
vector index proposes candidates whose rows are then read (so an entry
deleted behind the index's back, by ``seawall cache purge`` on the file,
is never served). Its own file and connection keep cache writes from
queueing behind trace writes.

Least-recently-used order is kept by ``last_used_at``: hits are noted in
memory and written in batches, eviction deletes the oldest rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import orjson

from seawall.cache.store import CachedAnswer, NewEntry, Purge, Vector
from seawall.cache.vectors import ScopedVectors
from seawall.store.sqlite import connect

log = logging.getLogger("seawall.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL UNIQUE,
    scope BLOB NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT,
    text TEXT,
    vector BLOB,
    completion BLOB NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used_at REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cache_entries_lru ON cache_entries (last_used_at);
CREATE INDEX IF NOT EXISTS cache_entries_expiry ON cache_entries (expires_at);
CREATE INDEX IF NOT EXISTS cache_entries_tenant ON cache_entries (tenant, model);
"""
# Added by the quality loop (the Postgres twin: migration 0015): the answer's
# request, and why the entry is quarantined (NULL: served).
_LOOP_COLUMNS = (("trace_id", "TEXT"), ("quarantined", "TEXT"), ("quarantined_at", "REAL"))

# The index's proposals within this of the threshold are re-scored from the
# stored vectors (its own scores are float32, so this only absorbs rounding).
PROPOSAL_SLACK = 0.02
_LOAD_BATCH = 65_536  # entries converted and indexed at a time when loading

_ANSWER = ("id, completion, created_at, prompt_tokens, completion_tokens, cost_usd, text, "
           "quarantined")
_QUARANTINE = ("UPDATE cache_entries SET quarantined = ?, quarantined_at = ? WHERE tenant = ? "
               "AND (id = ? OR trace_id = ?) AND quarantined IS NULL RETURNING id")
RELEASE_SQL = ("UPDATE cache_entries SET quarantined = NULL, quarantined_at = NULL "
               "WHERE id = ? AND quarantined IS NOT NULL RETURNING tenant")


def purge_sql(what: Purge) -> tuple[str, list[Any]]:
    """The DELETE for ``what`` (shared with ``seawall cache purge``, which edits
    the file directly: a running server checks every candidate against the rows,
    so it never serves what was deleted under it)."""
    where, args = [], []
    for column, value in (("tenant", what.tenant), ("model", what.model),
                          ("prompt_version", what.prompt_version), ("id", what.entry_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return "DELETE FROM cache_entries" + (f" WHERE {' AND '.join(where)}" if where else ""), args


def _answer(row: Any, similarity: float | None = None) -> CachedAnswer:
    return CachedAnswer(id=row[0], completion=orjson.loads(row[1]), created_at=row[2],
                        prompt_tokens=row[3], completion_tokens=row[4], cost_usd=row[5],
                        text=row[6], quarantined=row[7], similarity=similarity)


class SqliteCacheStore:
    def __init__(self, path: str | Path, max_entries: int, dim: int = 384,
                 on_evict: Callable[[str, int], None] | None = None,
                 keep_expired_s: float = 0.0, exact_below: int = 2048) -> None:
        self.path = Path(path)
        self.index_dir = self.path.with_suffix(".index")
        self.max_entries = max_entries
        self.vectors = ScopedVectors(dim, exact_below)
        self._db: aiosqlite.Connection | None = None
        self._keys: set[bytes] = set()  # every stored key: a miss costs no disk read
        self._touched: dict[int, float] = {}  # hits not yet written to last_used_at
        self._write = asyncio.Lock()
        self.on_evict = on_evict  # (reason, count), for metrics
        self.keep_expired_s = keep_expired_s  # kept after expiry for stale-if-error
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("cache store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await connect(self.path)
        await self._db.executescript(_SCHEMA)
        async with self._db.execute("PRAGMA table_info(cache_entries)") as c:
            have = {r[1] async for r in c}
        for column, kind in _LOOP_COLUMNS:
            if column not in have:
                await self._db.execute(f"ALTER TABLE cache_entries ADD COLUMN {column} {kind}")
        await self._db.execute("CREATE INDEX IF NOT EXISTS cache_entries_trace ON "
                               "cache_entries (trace_id) WHERE trace_id IS NOT NULL")
        await self._db.commit()
        async with self._db.execute("SELECT key FROM cache_entries") as c:
            self._keys = {bytes(r[0]) async for r in c}
        await self._load_vectors()
        log.info("cache opened", extra={"entries": len(self._keys),
                                        "vectors": len(self.vectors)})

    async def _load_vectors(self) -> None:
        """Saved graphs from their files; everything else from the rows."""
        watermark, loaded = await asyncio.to_thread(self.vectors.load, self.index_dir)
        db = self.db
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS loaded_scopes (scope BLOB PRIMARY KEY)")
        await db.execute("DELETE FROM loaded_scopes")
        await db.executemany("INSERT INTO loaded_scopes VALUES (?)", [(s,) for s in loaded])
        # Per scope: ids, and the float16 vectors packed in one bytearray (768 B
        # an entry; a list of blob objects tripled the peak memory at 1M).
        by_scope: dict[bytes, tuple[list[int], bytearray]] = {}
        async with db.execute(
                "SELECT id, scope, vector FROM cache_entries WHERE vector IS NOT NULL AND "
                "(id > ? OR scope NOT IN (SELECT scope FROM loaded_scopes)) ORDER BY id",
                (watermark,)) as c:
            async for id_, scope, blob in c:
                ids, packed = by_scope.setdefault(bytes(scope), ([], bytearray()))
                ids.append(id_)
                packed += blob
        dim = self.vectors.dim
        for scope in list(by_scope):
            ids, packed = by_scope.pop(scope)
            halves = np.frombuffer(packed, dtype=np.float16).reshape(len(ids), dim)
            for start in range(0, len(ids), _LOAD_BATCH):  # float32 one batch at a time
                end = start + _LOAD_BATCH
                await asyncio.to_thread(self.vectors.add_many, scope, ids[start:end],
                                        halves[start:end].astype(np.float32))
        if loaded:  # drop what was deleted after the graphs were saved
            async with db.execute("SELECT id FROM cache_entries WHERE vector IS NOT NULL") as c:
                live = {r[0] async for r in c}
            self.vectors.remove(self.vectors.ids() - live)

    async def close(self) -> None:
        if self._db is None:
            return
        await self._flush_touched()
        async with self.db.execute("SELECT COALESCE(MAX(id), 0) FROM cache_entries") as c:
            row = await c.fetchone()
        watermark = row[0] if row else 0
        try:
            await asyncio.to_thread(self.vectors.save, self.index_dir, watermark)
        except OSError:
            log.exception("saving the cache's vector index failed; it is rebuilt at start")
        await self._db.close()
        self._db = None

    # -- lookups --

    def _live(self, max_age_s: float | None, now: float) -> tuple[str, tuple[float, ...]]:
        if max_age_s is None:
            return "expires_at > ?", (now,)
        return "expires_at > ? AND created_at >= ?", (now, now - max_age_s)

    async def get(self, key: bytes, now: float, max_age_s: float | None) -> CachedAnswer | None:
        if key not in self._keys:
            return None
        live, args = self._live(max_age_s, now)
        async with self.db.execute(f"SELECT {_ANSWER} FROM cache_entries WHERE key = ? AND "
                                   f"{live}", (key, *args)) as c:
            row = await c.fetchone()
        if row is None:
            return None
        self._touched[row[0]] = now
        return _answer(row)

    async def nearest(self, scope: bytes, vector: Vector, k: int, min_similarity: float,
                      now: float, max_age_s: float | None) -> list[CachedAnswer]:
        # The index proposes (twice as many, with a little slack); the stored
        # vectors decide.
        slack = min_similarity - PROPOSAL_SLACK
        found = [i for i, s in self.vectors.search(scope, vector, 2 * k) if s >= slack]
        if not found:
            return []
        live, args = self._live(max_age_s, now)
        marks = ",".join("?" * len(found))
        async with self.db.execute(f"SELECT {_ANSWER}, vector FROM cache_entries WHERE id IN "
                                   f"({marks}) AND {live}", (*found, *args)) as c:
            rows = list(await c.fetchall())
        out = []
        for r in rows:
            similarity = float(np.frombuffer(r[8], dtype=np.float16).astype(np.float32) @ vector)
            if similarity >= min_similarity:
                out.append(_answer(r, similarity))
        out.sort(key=lambda a: -(a.similarity or 0.0))
        return out[:k]

    def may_have_scope(self, scope: bytes) -> bool:
        return self.vectors.has_scope(scope)

    def touch(self, entry_id: int, now: float) -> None:
        """Note a served semantic candidate as recently used."""
        self._touched[entry_id] = now

    # -- writes --

    async def put(self, entry: NewEntry) -> None:
        now = time.time()
        blob = None if entry.vector is None else entry.vector.astype(np.float16).tobytes()
        async with self._write:
            async with self.db.execute(
                    "INSERT INTO cache_entries (key, scope, tenant, model, prompt_version, text, "
                    "vector, completion, prompt_tokens, completion_tokens, cost_usd, created_at, "
                    "expires_at, last_used_at, trace_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(key) DO UPDATE SET completion=excluded.completion, "
                    "prompt_tokens=excluded.prompt_tokens, "
                    "completion_tokens=excluded.completion_tokens, cost_usd=excluded.cost_usd, "
                    "created_at=excluded.created_at, expires_at=excluded.expires_at, "
                    "last_used_at=excluded.last_used_at, trace_id=excluded.trace_id "
                    "WHERE cache_entries.quarantined IS NULL RETURNING id",
                    (entry.key, entry.scope, entry.tenant, entry.model, entry.prompt_version,
                     entry.text, blob, orjson.dumps(entry.completion), entry.prompt_tokens,
                     entry.completion_tokens, entry.cost_usd, now, now + entry.ttl_s,
                     now, entry.trace_id)) as c:
                row = await c.fetchone()
            await self.db.commit()
            if row is None:
                return  # the key's entry is quarantined: kept as it is
            self._keys.add(entry.key)
            if entry.vector is not None:
                self.vectors.add(entry.scope, row[0], entry.vector)
            if len(self._keys) > self.max_entries:
                await self._evict(len(self._keys) - self.max_entries)

    async def _evict(self, n: int) -> None:
        await self._flush_touched()
        async with self.db.execute("DELETE FROM cache_entries WHERE id IN (SELECT id FROM "
                                   "cache_entries ORDER BY last_used_at LIMIT ?) "
                                   "RETURNING id, key", (n,)) as c:
            rows = list(await c.fetchall())
        await self.db.commit()
        self._forget(rows)
        self.evicted += len(rows)
        if self.on_evict is not None:
            self.on_evict("lru", len(rows))

    def _forget(self, rows: Any) -> None:
        self._keys.difference_update(bytes(r[1]) for r in rows)
        self.vectors.remove(r[0] for r in rows)
        for r in rows:
            self._touched.pop(r[0], None)

    async def _flush_touched(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        await self.db.executemany(
            "UPDATE cache_entries SET last_used_at = MAX(last_used_at, ?), hits = hits + 1 "
            "WHERE id = ?", [(t, i) for i, t in touched.items()])
        await self.db.commit()

    async def purge(self, what: Purge, all_entries: bool = False) -> int:
        if what.everything and not all_entries:
            raise ValueError("refusing to purge every entry without all_entries=True")
        sql, args = purge_sql(what)
        async with self._write:
            async with self.db.execute(sql + " RETURNING id, key", args) as c:
                rows = list(await c.fetchall())
            await self.db.commit()
            self._forget(rows)
        return len(rows)

    async def quarantine(self, tenant: str, reason: str, entry_id: int | None = None,
                         trace_id: str | None = None) -> list[int]:
        if entry_id is None and trace_id is None:
            return []
        async with self._write:
            async with self.db.execute(_QUARANTINE, (reason, time.time(), tenant, entry_id,
                                                     trace_id)) as c:
                ids = [int(r[0]) for r in await c.fetchall()]
            await self.db.commit()
        return ids

    async def release(self, entry_id: int) -> str | None:
        async with self._write:
            async with self.db.execute(RELEASE_SQL, (entry_id,)) as c:
                row = await c.fetchone()
            await self.db.commit()
        return None if row is None else str(row[0])

    async def sweep(self, now: float) -> int:
        async with self._write:
            await self._flush_touched()
            async with self.db.execute("DELETE FROM cache_entries WHERE expires_at <= ? "
                                       "RETURNING id, key", (now - self.keep_expired_s,)) as c:
                rows = list(await c.fetchall())
            await self.db.commit()
            self._forget(rows)
        self.expired += len(rows)
        if rows and self.on_evict is not None:
            self.on_evict("expired", len(rows))
        return len(rows)

    async def stats(self) -> dict[str, Any]:
        async with self.db.execute("SELECT COUNT(*), COALESCE(SUM(hits), 0), "
                                   "COUNT(vector), COUNT(quarantined) FROM cache_entries") as c:
            row = await c.fetchone()
        assert row is not None
        return {"entries": row[0], "hits": row[1], "semantic_entries": row[2],
                "quarantined": row[3],
                "vector_graphs": self.vectors.graphs, "evicted": self.evicted,
                "expired": self.expired, "path": str(self.path)}
