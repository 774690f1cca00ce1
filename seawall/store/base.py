"""Persistence behind narrow async interfaces.

Callers depend on these protocols only, so the SQLite implementation used by
the embedded deployment and the Postgres/Redis one of the distributed
deployment are interchangeable (the same contract tests run on each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from seawall.observe.records import TraceRecord


@dataclass(slots=True, frozen=True)
class ApiKey:
    id: str
    name: str
    tenant: str
    key_hash: str
    prefix: str  # the first characters of the secret, to recognise it in lists
    rpm: int | None  # requests per minute; None = the configured default
    created_at: float
    revoked_at: float | None = None
    # Admission order when requests must wait for a slot: lower goes first.
    # None = the default tier (admission.default_priority).
    priority: int | None = None
    # Response cache for this key's requests: None = as configured per model,
    # False = never (a key whose callers must always reach the model).
    cache: bool | None = None
    # Tokens per minute (prompt + completion); None = the configured default.
    tpm: int | None = None
    # Spend limit in USD per budget_period ("day" or "month", UTC); None = none.
    budget_usd: float | None = None
    budget_period: str | None = None
    # Roles and scopes (docs/security.md). role: "app" or "tenant_admin"
    # (the operator is only the master key). scopes None: a key made before
    # scopes existed, which keeps every non-admin scope (its old behaviour).
    role: str = "app"
    scopes: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None  # models/routes it may call; None = any
    collections_read: tuple[str, ...] | None = None  # None = every one of its tenant
    collections_write: tuple[str, ...] | None = None
    expires_at: float | None = None  # Unix time; None = never
    # Rotation: the previous secret's hash stays valid until prev_expires_at.
    prev_hash: str | None = None
    prev_expires_at: float | None = None
    # Spend before this time does not count against the budget ("reset").
    budget_reset_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


# Columns holding a list, stored as JSON text (same on both backends).
KEY_LIST_FIELDS = ("scopes", "models", "collections_read", "collections_write")
# What update_key may change.
KEY_UPDATABLE = frozenset({"budget_usd", "budget_period", "budget_reset_at", "expires_at",
                           "scopes", "models", "collections_read", "collections_write", "rpm",
                           "tpm", "priority", "cache"})


@dataclass(slots=True, frozen=True)
class TenantBudget:
    """A tenant's spend limit set with `seawall tenants budget` (overrides
    limits.tenants.<name>.budget_usd from the config file)."""

    tenant: str
    budget_usd: float | None
    budget_period: str
    reset_at: float | None
    updated_at: float


class KeyStore(Protocol):
    async def create_key(self, key: ApiKey) -> None: ...
    async def key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def list_keys(self, include_revoked: bool = False,
                        tenant: str | None = None) -> list[ApiKey]: ...
    async def revoke_key(self, id_or_name: str, tenant: str | None = None) -> ApiKey | None:
        """Revoke the one active key with that id or name (of ``tenant`` when
        given); None: no such key; ValueError: the name is ambiguous."""
        ...

    async def find_key(self, id_or_name: str, tenant: str | None = None,
                       include_revoked: bool = False) -> ApiKey | None:
        """The key with that id, else the one with that name (ValueError when
        several match; of ``tenant`` only when given)."""
        ...

    async def rotate_key(self, key_id: str, key_hash: str, prefix: str,
                         old_valid_until: float) -> ApiKey | None:
        """A new secret for an active key; the current one stays valid until
        ``old_valid_until``. None: no such active key."""
        ...

    async def update_key(self, key_id: str, **changes: Any) -> ApiKey | None:
        """Change fields of :data:`KEY_UPDATABLE`; the updated key, or None."""
        ...

    async def tenant_budget(self, tenant: str) -> TenantBudget | None: ...
    async def tenant_budgets(self) -> list[TenantBudget]: ...
    async def set_tenant_budget(self, budget: TenantBudget) -> None: ...


class TraceStore(Protocol):
    async def write_traces(self, records: list[TraceRecord]) -> None: ...
    async def recent_traces(self, limit: int = 20, after_rowid: int = 0) -> list[dict[str, Any]]:
        ...
    async def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...
    async def delete_traces_before(self, started_before: float, batch: int = 5000) -> int:
        """Retention: delete older records in batches; returns how many."""
        ...


class ExperimentStore(Protocol):
    """Canary rollouts' state (step, verdict, history), one JSON object each."""

    async def experiment_states(self) -> dict[str, dict[str, Any]]: ...
    async def experiment_state(self, name: str) -> tuple[dict[str, Any] | None, int]:
        """One state and its revision ((None, 0): never saved)."""
        ...

    async def save_experiment_state(self, name: str, state: dict[str, Any],
                                    expect_revision: int | None = None) -> int | None:
        """Save and return the new revision. With ``expect_revision``, only if
        the stored one is still that (0: none saved yet): compare-and-set, so
        two replicas never both move a canary; None = someone else did."""
        ...


class Store(KeyStore, TraceStore, ExperimentStore, Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...


KEY_COLUMNS = ("id", "name", "tenant", "key_hash", "prefix", "rpm", "created_at", "revoked_at",
               "priority", "cache", "tpm", "budget_usd", "budget_period", "role", "scopes",
               "models", "collections_read", "collections_write", "expires_at", "prev_hash",
               "prev_expires_at", "budget_reset_at")


def _list_column(value: tuple[str, ...] | None) -> str | None:
    return None if value is None else orjson.dumps(list(value)).decode()


def key_row(key: ApiKey) -> tuple[Any, ...]:
    """``key`` as the values of :data:`KEY_COLUMNS` (lists as JSON text)."""
    return tuple(_list_column(getattr(key, c)) if c in KEY_LIST_FIELDS else getattr(key, c)
                 for c in KEY_COLUMNS)


def key_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Checked ``update_key`` changes, as column values."""
    bad = set(changes) - KEY_UPDATABLE
    if bad:
        raise ValueError(f"cannot change {sorted(bad)} of a key")
    return {c: _list_column(v) if c in KEY_LIST_FIELDS else v for c, v in changes.items()}


def key_of(row: dict[str, Any]) -> ApiKey:
    """An :class:`ApiKey` from a row of either backend."""
    d: dict[str, Any] = {c: row.get(c) for c in KEY_COLUMNS}
    for c in KEY_LIST_FIELDS:
        if d[c] is not None:
            d[c] = tuple(orjson.loads(d[c]))
    if d["cache"] is not None:
        d["cache"] = bool(d["cache"])
    if d["role"] is None:
        d["role"] = "app"
    return ApiKey(**d)
