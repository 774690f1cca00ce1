"""Who may do what: roles, scopes, allowed models and collections
(docs/security.md). Every route asks here, through :class:`PermissionStage`
(the endpoint's scope and the model, first of the pipeline's stages) and the
``require_*`` helpers (a collection, an admin action's tenant).

* operator: the master key (and keyless loopback callers when
  ``auth.allow_anonymous_loopback`` is on: the laptop setup). Everything.
* tenant_admin: every scope, admin ones included, for its own tenant only;
  another tenant's objects are "not found", so their names do not leak.
* app: the scopes it was given (by default :data:`DEFAULT_APP_SCOPES`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from seawall.errors import NotFound, SeawallError
from seawall.pipeline.context import RequestContext
from seawall.store.base import ApiKey

ROLES = ("operator", "tenant_admin", "app")
KEY_ROLES = ("tenant_admin", "app")  # the operator is the master key only
USE_SCOPES = ("chat", "embeddings", "rag:read", "rag:write", "jobs", "feedback")
ADMIN_SCOPES = ("admin:keys", "admin:prompts", "admin:experiments", "admin:collections",
                "admin:traces", "admin:cache", "admin:audit", "admin:quality")
SCOPES = USE_SCOPES + ADMIN_SCOPES
DEFAULT_APP_SCOPES = ("chat", "embeddings", "rag:read", "feedback", "jobs")
# A key made before scopes existed (scopes NULL) keeps what every key could do then.
LEGACY_SCOPES = USE_SCOPES
# Tenants no key may belong to: the master key's, keyless loopback callers',
# and names kept for the gateway's own use.
RESERVED_TENANTS = frozenset({"default", "anonymous", "operator", "master", "system", "seawall",
                              "internal", "admin"})

# The scope each endpoint (RequestContext.endpoint) needs. Admin endpoints
# ("admin.<area>...") need "admin:<area>"; an endpoint not listed needs none
# beyond a valid key (models, health).
ENDPOINT_SCOPES = {
    "chat.completions": "chat", "messages": "chat", "messages.count_tokens": "chat",
    "responses": "chat", "responses.get": "chat", "responses.delete": "chat",
    "responses.cancel": "chat", "responses.input_items": "chat",
    "embeddings": "embeddings",
    "rag.collections.list": "rag:read", "rag.collections.get": "rag:read",
    "rag.documents.list": "rag:read", "rag.documents.get": "rag:read", "rag.search": "rag:read",
    "rag.ingest": "rag:write", "rag.documents.delete": "rag:write",
    "rag.collections.delete": "rag:write",
    "files": "jobs", "batches": "jobs",
    "feedback": "feedback",
}
# The collection-writing endpoints (checked against collections_write).
WRITE_ENDPOINTS = frozenset({"rag.ingest", "rag.documents.delete", "rag.collections.delete"})


# The master key's identity (the operator), tenant "default".
MASTER = ApiKey(id="master", name="master", tenant="default", key_hash="", prefix="",
                rpm=None, created_at=0.0, priority=0, role="operator")


class PermissionDenied(SeawallError):
    """403: the key is valid but may not do this; the message names what it lacks."""

    status = 403
    type = "permission_error"
    code = "missing_scope"


def role_of(ctx: RequestContext) -> str:
    key = ctx.key
    if key is MASTER or key is None:  # None: keyless loopback (anonymous on)
        return "operator"
    return key.role if key.role in KEY_ROLES else "app"


def scopes_of(key: ApiKey) -> tuple[str, ...]:
    if key.role == "tenant_admin" and key.scopes is None:
        return SCOPES
    return LEGACY_SCOPES if key.scopes is None else key.scopes


def holds(ctx: RequestContext, scope: str) -> bool:
    if role_of(ctx) == "operator":
        return True
    assert ctx.key is not None
    return scope in scopes_of(ctx.key)


def scope_for(endpoint: str) -> str | None:
    if endpoint.startswith("admin."):
        return "admin:" + endpoint.split(".")[1]
    return ENDPOINT_SCOPES.get(endpoint)


def require(ctx: RequestContext, scope: str) -> None:
    if not holds(ctx, scope):
        assert ctx.key is not None
        raise PermissionDenied(
            f"This API key ({ctx.key.name!r}, role {role_of(ctx)}) lacks the scope {scope!r} "
            f"this endpoint needs; it holds: {', '.join(scopes_of(ctx.key)) or 'none'}.",
            param="scope")


def require_model(ctx: RequestContext, model: str) -> None:
    key = ctx.key
    if role_of(ctx) == "operator" or key is None or key.models is None or model in key.models:
        return
    raise PermissionDenied(
        f"This API key ({key.name!r}) may not use the model {model!r}; it may use: "
        f"{', '.join(key.models) or 'none'} (its --models).", param="model",
        code="model_not_allowed")


def may_use_model(ctx: RequestContext, model: str) -> bool:
    key = ctx.key
    return role_of(ctx) == "operator" or key is None or key.models is None or model in key.models


def require_collection(ctx: RequestContext, name: str, write: bool = False) -> None:
    """Collection ``name`` of the caller's tenant, for reading or writing."""
    require(ctx, "rag:write" if write else "rag:read")
    key = ctx.key
    if role_of(ctx) != "app" or key is None:
        return
    allowed = key.collections_write if write else key.collections_read
    if allowed is not None and name not in allowed:
        raise PermissionDenied(
            f"This API key ({key.name!r}) may not {'write to' if write else 'read'} the "
            f"collection {name!r}; it may {'write' if write else 'read'}: "
            f"{', '.join(allowed) or 'none'}.", param="collection",
            code="collection_not_allowed")


def may_read_collection(ctx: RequestContext, name: str) -> bool:
    key = ctx.key
    if role_of(ctx) != "app" or key is None or key.collections_read is None:
        return True
    return name in key.collections_read


def admin_tenant(ctx: RequestContext, scope: str) -> str | None:
    """For an admin action needing ``scope``: the tenant the caller is
    confined to (None: every tenant, the operator)."""
    require(ctx, scope)
    return None if role_of(ctx) == "operator" else ctx.tenant


def require_operator(ctx: RequestContext, what: str) -> None:
    if role_of(ctx) != "operator":
        raise PermissionDenied(f"{what} is for the operator (the master key) only.",
                               code="operator_only")


def confine(ctx: RequestContext, scope: str, tenant: str | None, what: str) -> None:
    """Refuse (404, as if absent) an admin action on another tenant's object."""
    mine = admin_tenant(ctx, scope)
    if mine is not None and tenant != mine:
        raise NotFound(f"No {what}.")


def grantable(ctx: RequestContext, role: str, tenant: str, scopes: Iterable[str]) -> None:
    """May the caller make a key of ``role`` in ``tenant`` holding ``scopes``?
    A tenant_admin only in its tenant and only scopes it holds itself."""
    if role not in KEY_ROLES:
        raise PermissionDenied(f"No key can have the role {role!r}: the operator is the "
                               "master key (auth.master_key) only.", code="role_not_allowed")
    if role_of(ctx) == "operator":
        return
    if tenant != ctx.tenant:
        raise PermissionDenied("A tenant_admin key makes keys of its own tenant only.",
                               param="tenant", code="tenant_not_allowed")
    assert ctx.key is not None
    held = set(scopes_of(ctx.key))
    missing = [s for s in scopes if s not in held]
    if missing:
        raise PermissionDenied(f"This key cannot grant scopes it does not hold: "
                               f"{', '.join(missing)}.", param="scopes")


def check_key_fields(role: str, tenant: str, scopes: Sequence[str] | None) -> tuple[str, ...]:
    """The scopes a new key gets, or ValueError saying what is wrong (shared
    by the CLI and POST /admin/keys)."""
    if role not in KEY_ROLES:
        raise ValueError(f"role must be one of {', '.join(KEY_ROLES)} (the operator is the "
                         "master key only)")
    check_tenant(tenant)
    if scopes is None:
        return SCOPES if role == "tenant_admin" else DEFAULT_APP_SCOPES
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    admin = [s for s in scopes if s.startswith("admin:")]
    if admin and role != "tenant_admin":
        raise ValueError(f"admin scopes ({', '.join(admin)}) need --role tenant_admin")
    return tuple(dict.fromkeys(scopes))


def check_tenant(tenant: str) -> None:
    """A tenant a key may belong to: not reserved, a plain name."""
    if tenant.lower() in RESERVED_TENANTS or tenant.startswith(("_", "seawall")):
        raise ValueError(f"the tenant name {tenant!r} is reserved for the gateway "
                         f"({', '.join(sorted(RESERVED_TENANTS))}); choose another")
    if not 0 < len(tenant) <= 64 or not all(c.isalnum() or c in "._-" for c in tenant):
        raise ValueError("a tenant name is 1-64 letters, digits, '.', '_' or '-'")


def key_usable(key: ApiKey, key_hash: str, now: float | None = None) -> str | None:
    """Why a stored key cannot be used with the secret of ``key_hash`` now
    (None: it can): revoked, expired, or a rotated-out secret past its grace."""
    now = time.time() if now is None else now
    if not key.active:
        return "revoked"
    if key.expired(now):
        return "expired"
    if key.key_hash != key_hash and (key.prev_expires_at is None or key.prev_expires_at <= now):
        return "rotated"
    return None


class PermissionStage:
    """The endpoint's scope and the model asked for, before anything else of
    the request runs (limits, cache, retrieval, the call)."""

    name = "permissions"
    traced = False

    async def before(self, ctx: RequestContext) -> None:
        if role_of(ctx) == "operator":
            return None
        scope = scope_for(ctx.endpoint)
        if scope is not None:
            require(ctx, scope)
        if ctx.model and ctx.endpoint in MODEL_ENDPOINTS and ctx.model != MODEL_FROM_PROMPT:
            require_model(ctx, ctx.model)
        return None

    async def after(self, ctx: RequestContext) -> None:
        return None


MODEL_ENDPOINTS = frozenset({"chat.completions", "messages", "responses", "embeddings"})
MODEL_FROM_PROMPT = "prompt"  # seawall.prompts: the model comes from the prompt (checked there)
