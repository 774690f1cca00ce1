"""Operator endpoints under /admin: the response cache's stats and purge,
and revoking a key.

Only the master key may call them (or anyone on loopback when
``auth.allow_anonymous_loopback`` is on: the laptop setup); a virtual key,
whatever its tenant, may not. They go through the pipeline's admission and
rate limits and leave a trace record (``admin.cache.stats``,
``admin.cache.purge``, ``admin.keys.revoke``), like every other route.
A revocation or purge is also sent as a change notice, so every replica
acts on it within a second (seawall/store/bus.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.audit.record import key_state, purge_audit
from seawall.cache.store import Purge
from seawall.errors import AuthenticationFailed, InvalidRequest, NotFound, SeawallError
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import ANONYMOUS_TENANT, MASTER, AuthStage

if TYPE_CHECKING:
    from seawall.app import Services


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, Meta(min_length=1)] | None = None
    model: Annotated[str, Meta(min_length=1)] | None = None
    prompt_version: Annotated[str, Meta(min_length=1)] | None = None
    entry: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None  # SQLite's INTEGER
    all: bool = False  # required to purge everything (no filter)


Handler = Callable[[Request, "Services"], Awaitable[Response]]


async def _serve(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run ``handler`` inside the pipeline's scope (authenticated, rate
    limited, recorded as ``endpoint``) once the caller is known to be the
    master key, or no key at all from loopback when anonymous loopback is on."""
    svc: Services = request.app.state.services
    authorization = request.headers.get("authorization")
    ctx = RequestContext(endpoint=endpoint, authorization=authorization,
                         client_host=request.client.host if request.client else None,
                         traceparent=request.headers.get("traceparent"))
    current_trace_id.set(ctx.trace_id)
    request.state.ctx = ctx  # for the handler's audit record
    headers = {"x-request-id": ctx.trace_id}
    try:
        async with svc.pipeline.scope(ctx):
            anonymous = (AuthStage.secret_of(authorization) is None
                         and ctx.tenant == ANONYMOUS_TENANT)
            if ctx.key is not MASTER and not anonymous:
                raise AuthenticationFailed("The admin endpoints need the master key "
                                           "(Authorization: Bearer <auth.master_key>).")
            response = await handler(request, svc)
    except SeawallError as e:
        return error_response(e, headers)
    response.headers.update(headers)
    return response


async def cache_stats(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        return json_response({**await svc.cache_store.stats(),
                              "in_flight": len(svc.cache.flights)})
    return await _serve(request, "admin.cache.stats", handle)


async def cache_purge(request: Request) -> Response:
    """Delete entries by tenant, model, prompt version or entry id (all given
    filters must match); ``{"all": true}`` empties the cache."""
    async def handle(request: Request, svc: Services) -> Response:
        body = await read_body(request, svc.settings.server.max_body_bytes)
        req = convert(decode_json_object(body), PurgeRequest)
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
    return await _serve(request, "admin.cache.purge", handle)


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
    return await _serve(request, "admin.cache.release", handle)  # TODO(scopes): admin:cache


async def key_revoke(request: Request) -> Response:
    """Revoke a virtual key by id or name; every replica refuses it within a second."""
    async def handle(request: Request, svc: Services) -> Response:
        which = request.path_params["key"]
        if not 0 < len(which) <= 200:
            raise InvalidRequest("A key id or name is 1 to 200 characters.")
        try:
            key = await svc.store.revoke_key(which)
        except ValueError as e:  # a name shared by several keys
            raise InvalidRequest(str(e)) from None
        if key is None:
            raise NotFound(f"No active key with id or name {which!r}.")
        await svc.bus.publish({"kind": "key_revoked", "id": key.id})
        await svc.audit.record(request.state.ctx, "key.revoke", tenant=key.tenant,
                               target=key.id, before={**key_state(key), "revoked_at": None},
                               after=key_state(key))
        return json_response({"id": key.id, "name": key.name, "revoked_at": key.revoked_at})
    return await _serve(request, "admin.keys.revoke", handle)


routes = [
    Route("/admin/cache", cache_stats, methods=["GET"]),
    Route("/admin/cache/purge", cache_purge, methods=["POST"]),
    Route("/admin/cache/entries/{entry}/release", cache_release, methods=["POST"]),
    Route("/admin/keys/{key}/revoke", key_revoke, methods=["POST"]),
]
