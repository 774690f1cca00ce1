"""The cache's storage interface and the values that cross it.

The embedded implementation (:mod:`seawall.cache.sqlite_store`) keeps entries
in SQLite and vectors in in-process indexes; the shared one
(:mod:`seawall.cache.pg_store`) keeps both in Postgres (pgvector), for any
number of replicas. tests/contract/test_cache_store.py holds both to one suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(slots=True)
class NewEntry:
    """An answer to store, with what it cost to get."""

    key: bytes
    scope: bytes
    tenant: str
    model: str
    prompt_version: str | None
    text: str | None  # the semantic text (None: exact matches only)
    vector: Vector | None
    completion: dict[str, Any]  # the whole ``chat.completion``
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    ttl_s: float
    trace_id: str | None = None  # the request whose answer this is (quarantine by feedback)


@dataclass(slots=True)
class CachedAnswer:
    id: int
    completion: dict[str, Any]
    created_at: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    text: str | None = None
    similarity: float | None = None  # set by :meth:`CacheStore.nearest`
    quarantined: str | None = None  # why it is no longer served (None: servable)


@dataclass(slots=True, frozen=True)
class Purge:
    """Which entries to delete; unset fields match everything (all unset: refused)."""

    tenant: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    entry_id: int | None = None

    @property
    def everything(self) -> bool:
        return (self.tenant is None and self.model is None and self.prompt_version is None
                and self.entry_id is None)


class CacheStore(Protocol):
    def __len__(self) -> int:
        """About how many entries are stored (for a gauge)."""
        ...

    def may_have_scope(self, scope: bytes) -> bool:
        """False only if no entry of ``scope`` can match: the query is then not
        even embedded (most multi-turn scopes are empty)."""
        ...

    def touch(self, entry_id: int, now: float) -> None:
        """Note an entry served from :meth:`nearest` as recently used."""
        ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def get(self, key: bytes, now: float, max_age_s: float | None) -> CachedAnswer | None:
        """The live entry stored under ``key``, if any (quarantined ones too,
        marked: the caller says why it is not served)."""
        ...

    async def nearest(self, scope: bytes, vector: Vector, k: int, min_similarity: float,
                      now: float, max_age_s: float | None) -> list[CachedAnswer]:
        """Up to ``k`` live entries of ``scope`` at least ``min_similarity`` close,
        best first, with their text and similarity."""
        ...

    async def put(self, entry: NewEntry) -> None:
        """Store ``entry``, replacing the answer under its key unless that one
        is quarantined (a rejected answer's request stays uncached until
        released or expired)."""
        ...

    async def quarantine(self, tenant: str, reason: str, entry_id: int | None = None,
                         trace_id: str | None = None) -> list[int]:
        """Stop serving the tenant's entry ``entry_id`` and the one stored from
        the answer of ``trace_id``; the ids newly quarantined."""
        ...

    async def release(self, entry_id: int) -> str | None:
        """Serve a quarantined entry again; its tenant, or None if none such."""
        ...

    async def purge(self, what: Purge, all_entries: bool = False) -> int: ...
    async def sweep(self, now: float) -> int:
        """Delete expired entries (and apply deferred bookkeeping); returns how many."""
        ...

    async def stats(self) -> dict[str, Any]: ...
