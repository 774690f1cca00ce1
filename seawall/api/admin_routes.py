"""Admin endpoints under /admin: the response cache's stats and purge, and
keys (list, create, show, revoke, rotate).

Each needs the admin scope of its area (``admin.keys.*`` needs
``admin:keys``: seawall/pipeline/permissions.py). The operator (the master
key, or anyone on loopback when ``auth.allow_anonymous_loopback`` is on: the
laptop setup) may call them all; a tenant_admin key only those that confine
it to its own tenant (another tenant's objects are 404, as if absent); an
app key none. They go through the pipeline's admission and rate limits and
leave a trace record (``admin.cache.stats``, ``admin.keys.create``...), like
every other route.
A revocation or purge is also sent as a change notice, so every replica
acts on it within a second (seawall/store/bus.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response, peer_host, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.audit.record import AuditWriteFailed, budget_state, key_state, purge_audit
from seawall.cache.store import Purge
from seawall.errors import InvalidRequest, NotFound, SeawallError
from seawall.keys import make_key, parse_duration, parse_expires, public, rotated_secret
from seawall.observe.logs import current_trace_id
from seawall.pipeline.budget_admin import spend_line
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import admin_tenant, confine, grantable, require_operator
from seawall.store.base import ApiKey, TenantBudget

if TYPE_CHECKING:
    from seawall.app import Services


MAX_KEY_BODY = 64 * 1024
MAX_GRACE_S = 30 * 86400


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, Meta(min_length=1)] | None = None
    model: Annotated[str, Meta(min_length=1)] | None = None
    prompt_version: Annotated[str, Meta(min_length=1)] | None = None
    entry: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None  # SQLite's INTEGER
    all: bool = False  # required to purge everything (no filter)


Handler = Callable[[Request, "Services"], Awaitable[Response]]
TenantHandler = Callable[[Request, "Services", RequestContext], Awaitable[Response]]


async def _run(request: Request, endpoint: str,
               handler: Callable[[Request, Services, RequestContext], Awaitable[Response]],
               operator_only: bool) -> Response:
    svc: Services = request.app.state.services
    ctx = RequestContext(endpoint=endpoint, authorization=request.headers.get("authorization"),
                         client_host=peer_host(request),
                         traceparent=request.headers.get("traceparent"))
    current_trace_id.set(ctx.trace_id)
    request.state.ctx = ctx  # for the handler's audit record
    headers = {"x-request-id": ctx.trace_id}
    try:
        # The permissions stage checks the endpoint's admin scope
        # (seawall/pipeline/permissions.py: "admin.<area>" needs "admin:<area>").
        async with svc.pipeline.scope(ctx):
            if operator_only:
                require_operator(ctx, f"{endpoint} (across every tenant)")
            response = await handler(request, svc, ctx)
    except SeawallError as e:
        return error_response(e, headers)
    response.headers.update(headers)
    return response


async def _serve(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run ``handler`` inside the pipeline's scope (authenticated, rate
    limited, recorded as ``endpoint``) for the operator only: the master key,
    or no key at all from loopback when anonymous loopback is on. For admin
    routes that do not confine themselves to a tenant (use
    :func:`serve_tenant_admin` for those that do)."""
    return await _run(request, endpoint, lambda r, s, _c: handler(r, s), operator_only=True)


async def serve_tenant_admin(request: Request, endpoint: str, handler: TenantHandler) -> Response:
    """Like :func:`_serve`, for a route that confines a tenant_admin key to
    its own tenant itself (``permissions.admin_tenant(ctx, scope)``)."""
    return await _run(request, endpoint, handler, operator_only=False)


async def cache_stats(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        return json_response({**await svc.cache_store.stats(),
                              "in_flight": len(svc.cache.flights)})
    return await _serve(request, "admin.cache.stats", handle)


async def cache_purge(request: Request) -> Response:
    """Delete entries by tenant, model, prompt version or entry id (all given
    filters must match); ``{"all": true}`` empties the cache."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        body = await read_body(request, svc.settings.server.max_body_bytes)
        req = convert(decode_json_object(body), PurgeRequest)
        mine = admin_tenant(ctx, "admin:cache")
        if mine is not None:  # a tenant_admin purges its own tenant's entries only
            if req.tenant not in (None, mine):
                raise NotFound(f"No tenant {req.tenant!r}.")
            req = msgspec.structs.replace(req, tenant=mine, all=False)
        what = Purge(tenant=req.tenant, model=req.model, prompt_version=req.prompt_version,
                     entry_id=req.entry)
        if what.everything and not req.all:
            raise InvalidRequest("Say what to purge: tenant, model, prompt_version or entry; "
                                 "or {\"all\": true} to empty the cache.", code="purge_unscoped")
        purged = await svc.cache_store.purge(what, all_entries=req.all)
        await svc.bus.publish({"kind": "cache_purge", "tenant": req.tenant, "model": req.model,
                               "prompt_version": req.prompt_version, "entry": req.entry,
                               "all": req.all})
        await svc.audit.record(request.state.ctx, "cache.purge", **purge_audit(req, purged))
        return json_response({"purged": purged})
    return await serve_tenant_admin(request, "admin.cache.purge", handle)


def _which(request: Request) -> str:
    which: str = request.path_params["key"]
    if not 0 < len(which) <= 200:
        raise InvalidRequest("A key id or name is 1 to 200 characters.")
    return which


async def _find(svc: Services, ctx: RequestContext, which: str,
                include_revoked: bool = False) -> ApiKey:
    """The key ``which`` (id or name) the caller may manage: a tenant_admin's
    own tenant only; another tenant's key is "not found" like a missing one."""
    tenant = admin_tenant(ctx, "admin:keys")
    try:
        key = await svc.store.find_key(which, tenant=tenant, include_revoked=include_revoked)
    except ValueError as e:  # a name shared by several keys
        raise InvalidRequest(str(e)) from None
    if key is None:
        raise NotFound(f"No {'' if include_revoked else 'active '}key with id or name "
                       f"{which!r}.")
    return key


async def cache_release(request: Request) -> Response:
    """Serve a quarantined entry again (docs/caching.md, quarantine)."""
    async def handle(request: Request, svc: Services) -> Response:
        raw = request.path_params["entry"]
        if not (raw.isdigit() and len(raw) <= 19):
            raise InvalidRequest("An entry id is a number (a trace's cache_entry).")
        tenant = await svc.cache_store.release(int(raw))
        if tenant is None:
            raise NotFound(f"No quarantined cache entry {raw}.")
        await svc.audit.record(request.state.ctx, "cache.release", tenant=tenant,
                               target=f"entry={raw}", before={"quarantined": True},
                               after={"quarantined": False})
        return json_response({"entry": int(raw), "released": True})
    # Operator only: the entry's tenant is known only once it is released.
    return await _serve(request, "admin.cache.release", handle)


async def key_revoke(request: Request) -> Response:
    """Revoke a virtual key by id or name; every replica refuses it within a second."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        found = await _find(svc, ctx, _which(request))
        key = await svc.store.revoke_key(found.id)
        if key is None:
            raise NotFound(f"No active key with id or name {found.id!r}.")
        await svc.bus.publish({"kind": "key_revoked", "id": key.id})
        await svc.audit.record(request.state.ctx, "key.revoke", tenant=key.tenant,
                               target=key.id, before={**key_state(key), "revoked_at": None},
                               after=key_state(key))
        return json_response({"id": key.id, "name": key.name, "revoked_at": key.revoked_at})
    return await serve_tenant_admin(request, "admin.keys.revoke", handle)


class RotateRequest(msgspec.Struct, forbid_unknown_fields=True):
    grace: Annotated[str, Meta(max_length=32)] = "1h"  # how long the old secret still works


async def key_rotate(request: Request) -> Response:
    """A new secret for a key; the old one keeps working for ``grace``
    (default 1h, at most 30d). The new secret is in the answer, once."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        body = await read_body(request, MAX_KEY_BODY)
        req = convert(decode_json_object(body), RotateRequest) if body.strip() else \
            RotateRequest()
        try:
            grace = parse_duration(req.grace)
        except ValueError as e:
            raise InvalidRequest(str(e), param="grace") from None
        if grace > MAX_GRACE_S:
            raise InvalidRequest("grace is at most 30d.", param="grace")
        key = await _find(svc, ctx, _which(request))
        secret, key_hash, prefix = rotated_secret()
        rotated = await svc.store.rotate_key(key.id, key_hash, prefix, time.time() + grace)
        if rotated is None:
            raise NotFound(f"No active key with id or name {key.id!r}.")
        await svc.bus.publish({"kind": "key_changed", "id": key.id})
        await svc.audit.record(ctx, "key.rotate", tenant=key.tenant, target=key.id,
                               before=key_state(key), after=key_state(rotated))
        return json_response({**public(rotated), "secret": secret})
    return await serve_tenant_admin(request, "admin.keys.rotate", handle)


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    tenant: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    role: Literal["app", "tenant_admin"] = "app"
    scopes: Annotated[list[str], Meta(max_length=64)] | None = None
    models: Annotated[list[str], Meta(max_length=100)] | None = None
    collections_read: Annotated[list[str], Meta(max_length=100)] | None = None
    collections_write: Annotated[list[str], Meta(max_length=100)] | None = None
    expires: Annotated[str, Meta(max_length=64)] | None = None  # "30d" or an ISO date
    rpm: Annotated[int, Meta(ge=1, le=10**9)] | None = None
    tpm: Annotated[int, Meta(ge=1, le=10**12)] | None = None
    priority: Annotated[int, Meta(ge=-1000, le=1000)] | None = None
    cache: bool | None = None
    budget_usd: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    budget_period: Literal["day", "month"] = "month"


async def key_create(request: Request) -> Response:
    """Make a key; the answer holds its secret, the only time it is shown.
    A tenant_admin makes keys of its own tenant, with scopes it holds."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        req = convert(decode_json_object(await read_body(request, MAX_KEY_BODY)), KeyIn)
        mine = admin_tenant(ctx, "admin:keys")
        tenant = req.tenant if req.tenant is not None else mine
        try:
            expires_at = parse_expires(req.expires) if req.expires is not None else None
            key, secret = make_key(
                req.name, tenant, role=req.role, scopes=req.scopes, models=req.models,
                collections_read=req.collections_read, collections_write=req.collections_write,
                expires_at=expires_at, rpm=req.rpm, tpm=req.tpm, priority=req.priority,
                cache=req.cache, budget_usd=req.budget_usd,
                budget_period=req.budget_period if req.budget_usd is not None else None)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        grantable(ctx, key.role, key.tenant, key.scopes or ())
        await svc.store.create_key(key)
        try:
            await svc.audit.record(ctx, "key.create", tenant=key.tenant, target=key.id,
                                   after=key_state(key))
        except AuditWriteFailed:  # unrecorded: take it back before anyone sees the secret
            await svc.store.revoke_key(key.id)
            raise
        return json_response({**public(key), "secret": secret}, status=201)
    return await serve_tenant_admin(request, "admin.keys.create", handle)


async def key_list(request: Request) -> Response:
    """Keys (a tenant_admin: of its tenant); ``?all=true`` includes revoked ones.
    Never a secret or its hash: the prefix identifies a key."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        everything = request.query_params.get("all", "").lower() in ("1", "true", "yes")
        rows = await svc.store.list_keys(everything, tenant=admin_tenant(ctx, "admin:keys"))
        return json_response({"object": "list", "data": [public(k) for k in rows]})
    return await serve_tenant_admin(request, "admin.keys.list", handle)


async def key_show(request: Request) -> Response:
    """One key with its spend against its budget (and its tenant's) this period."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        key = await _find(svc, ctx, _which(request), include_revoked=True)
        budgets = [await spend_line(svc.budgets, lim)
                   for lim in await svc.budget_limits.for_key(key)]
        return json_response({**public(key), "budgets": budgets})
    return await serve_tenant_admin(request, "admin.keys.show", handle)


class BudgetIn(msgspec.Struct, forbid_unknown_fields=True):
    usd: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    period: Literal["day", "month"] | None = None
    none: bool = False  # remove the budget
    reset: bool = False  # count spend from now on for this period


def _budget_changes(req: BudgetIn, usd: float | None, period: str | None
                    ) -> tuple[float | None, str | None]:
    """(usd, period) after ``req``, from the current ones."""
    if req.none:
        return None, None
    if req.usd is None and req.period is None:
        if not req.reset:
            raise InvalidRequest("Say what to change: usd, period, none or reset.")
        return usd, period
    if req.usd is None and usd is None:
        raise InvalidRequest("There is no budget yet: give usd.", param="usd")
    return (usd if req.usd is None else req.usd), (req.period or period or "month")


async def key_budget(request: Request) -> Response:
    """Set, remove or reset a key's budget (``{"usd": 20, "period": "month"}``,
    ``{"none": true}``, ``{"reset": true}``); answers the key with its spend."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        req = convert(decode_json_object(await read_body(request, MAX_KEY_BODY)), BudgetIn)
        key = await _find(svc, ctx, _which(request))
        usd, period = _budget_changes(req, key.budget_usd, key.budget_period)
        changes: dict[str, object] = {"budget_usd": usd, "budget_period": period}
        if req.reset:
            changes["budget_reset_at"] = time.time()
        updated = await svc.store.update_key(key.id, **changes)
        if updated is None:
            raise NotFound(f"No active key with id or name {key.id!r}.")
        await svc.bus.publish({"kind": "key_changed", "id": key.id})
        await svc.audit.record(
            ctx, "key.budget", tenant=key.tenant, target=key.id,
            before=budget_state(key.budget_usd, key.budget_period, key.budget_reset_at),
            after=budget_state(updated.budget_usd, updated.budget_period,
                               updated.budget_reset_at))
        budgets = [await spend_line(svc.budgets, lim)
                   for lim in await svc.budget_limits.for_key(updated)]
        return json_response({**public(updated), "budgets": budgets})
    return await serve_tenant_admin(request, "admin.keys.budget", handle)


def _tenant(request: Request) -> str:
    tenant: str = request.path_params["tenant"]
    if not 0 < len(tenant) <= 200:
        raise InvalidRequest("A tenant name is 1 to 200 characters.")
    return tenant


async def _tenant_doc(svc: Services, tenant: str) -> dict[str, object]:
    lim = await svc.budget_limits.tenant(tenant)
    stored = await svc.store.tenant_budget(tenant)
    return {"object": "tenant", "tenant": tenant,
            "budget_source": "store" if stored is not None else "config" if lim else None,
            "budgets": [] if lim is None else [await spend_line(svc.budgets, lim)],
            "keys": len(await svc.store.list_keys(False, tenant=tenant))}


async def tenant_show(request: Request) -> Response:
    """A tenant's budget and spend this period (a tenant_admin: its own)."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        tenant = _tenant(request)
        confine(ctx, "admin:keys", tenant, f"tenant {tenant!r}")
        return json_response(await _tenant_doc(svc, tenant))
    return await serve_tenant_admin(request, "admin.keys.tenant", handle)


async def tenant_budget(request: Request) -> Response:
    """Set, remove or reset a tenant's budget: the operator only (a tenant's
    cap is not its own admin's to raise)."""
    async def handle(request: Request, svc: Services) -> Response:
        tenant = _tenant(request)
        req = convert(decode_json_object(await read_body(request, MAX_KEY_BODY)), BudgetIn)
        old = await svc.store.tenant_budget(tenant)
        now = time.time()
        base_usd: float | None
        base_period: str | None
        if old is not None:
            base_usd, base_period = old.budget_usd, old.budget_period
        else:
            current = await svc.budget_limits.tenant(tenant)
            base_usd = current.usd if current is not None else None
            base_period = current.period if current is not None else None
        usd, period = _budget_changes(req, base_usd, base_period)
        reset_at = now if req.reset else old.reset_at if old is not None else None
        new = TenantBudget(tenant, usd, period or "month", reset_at, now)
        await svc.store.set_tenant_budget(new)
        svc.budget_limits.changed({"tenant": tenant})
        await svc.bus.publish({"kind": "tenant_budget", "tenant": tenant})
        await svc.audit.record(
            request.state.ctx, "tenant.budget", tenant=tenant, target=tenant,
            before=budget_state(base_usd, base_period, old.reset_at if old else None),
            after=budget_state(new.budget_usd, new.budget_period, new.reset_at))
        return json_response(await _tenant_doc(svc, tenant))
    return await _serve(request, "admin.keys.tenant_budget", handle)


routes = [
    Route("/admin/cache", cache_stats, methods=["GET"]),
    Route("/admin/cache/purge", cache_purge, methods=["POST"]),
    Route("/admin/cache/entries/{entry}/release", cache_release, methods=["POST"]),
    Route("/admin/keys", key_list, methods=["GET"]),
    Route("/admin/keys", key_create, methods=["POST"]),
    Route("/admin/keys/{key}", key_show, methods=["GET"]),
    Route("/admin/keys/{key}/revoke", key_revoke, methods=["POST"]),
    Route("/admin/keys/{key}/rotate", key_rotate, methods=["POST"]),
    Route("/admin/keys/{key}/budget", key_budget, methods=["POST"]),
    Route("/admin/tenants/{tenant}", tenant_show, methods=["GET"]),
    Route("/admin/tenants/{tenant}/budget", tenant_budget, methods=["POST"]),
]
