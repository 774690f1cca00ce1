"""Recording an admin action: one call, and it never drops silently.

``await svc.audit.record(ctx, "key.revoke", tenant=..., target=..., before=...,
after=...)`` on the server; ``auditor.record("key.revoke", ...)`` in the CLI.
A write is tried twice; if it still fails, the full event goes to the log at
ERROR and :class:`AuditWriteFailed` is raised, so the admin request answers
500 (the CLI exits 1) saying the change was applied but not recorded. Admin
actions are rare: an operator who must know what happened is better served
by a loud failure than by a gateway that carries on with a hole in its history.
"""

from __future__ import annotations

import getpass
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from seawall.audit.model import ALL_TENANTS, Actor, AuditEvent, AuditLog, AuditQuery, SyncAuditLog
from seawall.errors import SeawallError

if TYPE_CHECKING:
    from seawall.pipeline.context import RequestContext
    from seawall.store.base import ApiKey

log = logging.getLogger("seawall.audit")

ANONYMOUS = Actor("anonymous", "anonymous loopback", "operator")


class AuditWriteFailed(SeawallError):
    status = 500
    type = "server_error"
    code = "audit_write_failed"


def _failed(event: AuditEvent, exc: BaseException) -> AuditWriteFailed:
    log.error("audit write failed (%s: %s); the action WAS applied: %s",
              type(exc).__name__, exc, orjson.dumps(event.to_json(), default=str).decode(),
              extra={"audit_action": event.action})
    return AuditWriteFailed(
        f"The {event.action} was applied, but its audit record could not be written "
        f"({type(exc).__name__}); the full record was logged at ERROR (the server log; "
        "stderr for the CLI). Check the store.")


def key_state(key: ApiKey) -> dict[str, Any]:
    """What the log keeps of a key: everything but its hash (the prefix names it)."""
    return {"id": key.id, "name": key.name, "tenant": key.tenant, "prefix": key.prefix,
            "role": key.role, "scopes": None if key.scopes is None else list(key.scopes),
            "models": None if key.models is None else list(key.models),
            "collections_read": (None if key.collections_read is None
                                 else list(key.collections_read)),
            "collections_write": (None if key.collections_write is None
                                  else list(key.collections_write)),
            "rpm": key.rpm, "tpm": key.tpm, "priority": key.priority, "cache": key.cache,
            "budget_usd": key.budget_usd, "budget_period": key.budget_period,
            "budget_reset_at": key.budget_reset_at, "expires_at": key.expires_at,
            "previous_secret_valid_until": key.prev_expires_at,
            "created_at": key.created_at, "revoked_at": key.revoked_at}


def budget_state(usd: float | None, period: str | None, reset_at: float | None
                 ) -> dict[str, Any]:
    """A key's or tenant's budget as the log keeps it."""
    return {"budget_usd": usd, "budget_period": period, "budget_reset_at": reset_at}


def collection_state(info: Any) -> dict[str, Any]:
    """A RAG collection as the log keeps it (its size, not its documents)."""
    return {"id": info.id, "tenant": info.tenant, "name": info.name,
            "documents": info.documents, "chunks": info.chunks,
            "generation": info.generation}


def purge_audit(what: Any, purged: int) -> dict[str, Any]:
    """A cache purge's tenant, target (its filters, ``tenant=acme model=echo``,
    or ``all``) and outcome; ``what`` has the purge's filters as attributes."""
    filters = {k: getattr(what, k) for k in ("tenant", "model", "prompt_version", "entry")}
    target = " ".join(f"{k}={v}" for k, v in filters.items() if v is not None) or "all"
    return {"tenant": filters["tenant"] or ALL_TENANTS, "target": target,
            "after": {**filters, "all": bool(getattr(what, "all", False)), "purged": purged}}


def actor_of(ctx: RequestContext) -> Actor:
    """The authenticated caller of a request (after the pipeline's auth stage)."""
    from seawall.pipeline.stages import MASTER

    key = ctx.key
    if key is None:
        return ANONYMOUS
    if key is MASTER:
        return Actor("master", "master", "operator")
    return Actor(key.id, key.name, getattr(key, "role", None) or "app")


def cli_actor() -> Actor:
    """``cli:<login>``; its name is $SEAWALL_ACTOR when set (CI names itself)."""
    try:
        login = getpass.getuser()
    except Exception:  # no user database entry (containers)
        login = "unknown"
    return Actor(f"cli:{login}", os.environ.get("SEAWALL_ACTOR") or login, "operator")


class Auditor:
    """The server's audit log: records a request's admin action, answers queries."""

    def __init__(self, store: AuditLog) -> None:
        self.store = store

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def record(self, ctx: RequestContext, action: str, *, tenant: str, target: str,
                     before: dict[str, Any] | None = None,
                     after: dict[str, Any] | None = None) -> AuditEvent:
        event = AuditEvent(action=action, actor=actor_of(ctx), tenant=tenant, target=target,
                           source=ctx.client_host or "unknown", before=before, after=after,
                           request_id=ctx.trace_id)
        return await self.append(event)

    async def append(self, event: AuditEvent) -> AuditEvent:
        for attempt in (1, 2):
            try:
                return await self.store.append(event)
            except Exception as e:
                if attempt == 2:
                    raise _failed(event, e) from e
        raise AssertionError("unreachable")

    async def query(self, q: AuditQuery) -> list[AuditEvent]:
        return await self.store.query(q)


class CliAuditor:
    """A CLI command's audit log: actor ``cli:<login>``, source ``cli``, and one
    request id for every row the command writes."""

    def __init__(self, store: SyncAuditLog) -> None:
        self.store = store
        self.request_id = "cli-" + uuid.uuid4().hex[:16]
        self.actor = cli_actor()

    def record(self, action: str, *, tenant: str, target: str,
               before: dict[str, Any] | None = None,
               after: dict[str, Any] | None = None) -> AuditEvent:
        event = AuditEvent(action=action, actor=self.actor, tenant=tenant, target=target,
                           source="cli", before=before, after=after,
                           request_id=self.request_id)
        for attempt in (1, 2):
            try:
                return self.store.append(event)
            except Exception as e:
                if attempt == 2:
                    raise _failed(event, e) from e
        raise AssertionError("unreachable")
