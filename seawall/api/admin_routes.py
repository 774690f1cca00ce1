"""Operator endpoints under /admin: the response cache's stats and purge.

Only the master key may call them (or anyone on loopback when
``auth.allow_anonymous_loopback`` is on: the laptop setup); a virtual key,
whatever its tenant, may not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.cache.store import Purge
from seawall.errors import AuthenticationFailed, InvalidRequest, SeawallError
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import ANONYMOUS_TENANT, MASTER, AuthStage

if TYPE_CHECKING:
    from seawall.app import Services


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, Meta(min_length=1)] | None = None
    model: Annotated[str, Meta(min_length=1)] | None = None
    prompt_version: Annotated[str, Meta(min_length=1)] | None = None
    entry: int | None = None
    all: bool = False  # required to purge everything (no filter)


async def _authorize(request: Request, svc: Services) -> None:
    """The gateway's own authentication, then: the master key, or no key at
    all from loopback when anonymous loopback is on."""
    authorization = request.headers.get("authorization")
    ctx = RequestContext(endpoint="admin", authorization=authorization,
                         client_host=request.client.host if request.client else None)
    try:
        await svc.auth.before(ctx)
    except AuthenticationFailed:
        ctx.key = None
    anonymous = AuthStage.secret_of(authorization) is None and ctx.tenant == ANONYMOUS_TENANT
    if ctx.key is not MASTER and not anonymous:
        raise AuthenticationFailed("The admin endpoints need the master key "
                                   "(Authorization: Bearer <auth.master_key>).")


async def cache_stats(request: Request) -> Response:
    svc: Services = request.app.state.services
    try:
        await _authorize(request, svc)
    except SeawallError as e:
        return error_response(e)
    return json_response({**await svc.cache_store.stats(),
                          "in_flight": len(svc.cache.flights)})


async def cache_purge(request: Request) -> Response:
    """Delete entries by tenant, model, prompt version or entry id (all given
    filters must match); ``{"all": true}`` empties the cache."""
    svc: Services = request.app.state.services
    try:
        await _authorize(request, svc)
        body = await read_body(request, svc.settings.server.max_body_bytes)
        req = convert(decode_json_object(body), PurgeRequest)
        what = Purge(tenant=req.tenant, model=req.model, prompt_version=req.prompt_version,
                     entry_id=req.entry)
        if what.everything and not req.all:
            raise InvalidRequest("Say what to purge: tenant, model, prompt_version or entry; "
                                 "or {\"all\": true} to empty the cache.", code="purge_unscoped")
    except SeawallError as e:
        return error_response(e)
    purged = await svc.cache_store.purge(what, all_entries=req.all)
    return json_response({"purged": purged})


routes = [
    Route("/admin/cache", cache_stats, methods=["GET"]),
    Route("/admin/cache/purge", cache_purge, methods=["POST"]),
]
