"""What the audit log holds (no database code here, so the CLI loads it
cheaply; the backends are in seawall/audit/store.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

# Keys never stored in before/after, whatever a caller passes (hashes and
# secrets); a key is shown by its ``prefix`` only.
SECRET_FIELDS = frozenset({"key_hash", "secret", "api_key", "password", "token",
                           "authorization", "master_key"})
ALL_TENANTS = "*"  # the tenant of a gateway-wide action (prompts, purging everything)


@dataclass(slots=True, frozen=True)
class Actor:
    """Who acted: ``id`` is a key id, ``master``, ``anonymous`` or ``cli:<login>``."""

    id: str
    name: str
    role: str  # operator | tenant_admin | app (the scopes' vocabulary)


@dataclass(slots=True)
class AuditEvent:
    action: str
    actor: Actor
    tenant: str
    target: str
    source: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    request_id: str | None = None
    at: float = 0.0  # set when recorded
    id: int | None = None  # set by the store: grows with every row

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["actor"] = asdict(self.actor)
        return out


@dataclass(slots=True, frozen=True)
class AuditQuery:
    """A filter; every field given must match. ``action`` is exact, or a
    prefix when it ends in ``.*`` (``key.*``)."""

    tenant: str | None = None
    action: str | None = None
    since: float | None = None
    limit: int = 100
    before_id: int | None = None  # the next page: rows older than this id


class AuditLog(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(self, event: AuditEvent) -> AuditEvent:
        """Store ``event`` (its ``at`` and ``id`` filled in) and return it."""
        ...

    async def query(self, q: AuditQuery) -> list[AuditEvent]:
        """Matching rows, newest first, at most ``q.limit``."""
        ...


class SyncAuditLog(Protocol):
    def open(self) -> Any: ...
    def close(self) -> None: ...
    def append(self, event: AuditEvent) -> AuditEvent: ...
    def query(self, q: AuditQuery) -> list[AuditEvent]: ...


def scrub(value: Any) -> Any:
    """``value`` without any field named like a secret, at any depth."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if str(k).lower() not in SECRET_FIELDS}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
