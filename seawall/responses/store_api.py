"""What a stored response is, and the Protocol both backends implement
(SQLite: :mod:`seawall.responses.sqlite_store`; Postgres:
:mod:`seawall.responses.pg_store`; one contract suite runs against each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Columns, in the order both backends read and write them.
COLUMNS = ("id", "tenant", "model", "status", "created_at", "expires_at",
           "previous_response_id", "instructions", "input_items", "output", "usage",
           "metadata", "extra", "tokens")
JSON_COLUMNS = ("input_items", "output", "usage", "metadata", "extra")


@dataclass(slots=True)
class StoredResponse:
    """One response as stored: this turn's input items and output items (the
    conversation is the chain of ``previous_response_id``), its usage, and
    ``extra`` (the rest of the response object: tools, temperature, ...)."""

    id: str
    tenant: str
    model: str
    status: str
    created_at: float
    instructions: str | None = None
    input_items: list[dict[str, Any]] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None
    metadata: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # deleted by retention after this time
    tokens: int | None = None  # of the turn (input + output as chat messages), counted once


class ResponseStore(Protocol):
    """Tenant-scoped: every read and delete names the tenant, and another
    tenant's response is simply not found."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, r: StoredResponse) -> None:
        """Insert (or replace, same id and tenant) one response."""

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The response, unless missing, another tenant's, or expired."""

    async def delete(self, tenant: str, response_id: str) -> bool:
        """True if it existed (for this tenant) and is now gone."""

    async def chain(self, tenant: str, response_id: str,
                    max_turns: int) -> list[StoredResponse]:
        """The conversation ending at ``response_id``, oldest first: it and its
        ``previous_response_id`` ancestors, at most ``max_turns`` of them (the
        newest). Empty when ``response_id`` itself is not found; the chain
        stops at a missing, expired or foreign ancestor."""

    async def purge_expired(self, now: float) -> int:
        """Delete responses whose ``expires_at`` has passed; how many."""
