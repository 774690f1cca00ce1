"""Persistence behind narrow async interfaces.

Callers depend on these protocols only, so the SQLite implementation used by
the embedded deployment and the Postgres/Redis one of the distributed
deployment are interchangeable (the same contract tests run on each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore(Protocol):
    async def create_key(self, key: ApiKey) -> None: ...
    async def key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def list_keys(self, include_revoked: bool = False) -> list[ApiKey]: ...
    async def revoke_key(self, id_or_name: str) -> ApiKey | None: ...


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
