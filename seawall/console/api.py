"""Admin API routes the console uses, behind the admin API's check (master
key, or anonymous loopback when allowed):

- ``GET /admin/traces``: the trace list as JSON, the same query the
  console's Traces page runs (seawall/console/queries.py);
- ``POST /admin/prompts/{name}/rollback``: move a prompt's label back to
  where it pointed before its last move (``seawall prompts rollback``), and
  tell every replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import _serve as serve_admin
from seawall.api.admin_routes import serve_tenant_admin
from seawall.api.http import json_response, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.audit.model import ALL_TENANTS
from seawall.console.queries import TraceFilter
from seawall.console.session import CSRF_HEADER
from seawall.errors import InvalidRequest
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import admin_tenant
from seawall.prompts.errors import LabelError

if TYPE_CHECKING:
    from seawall.app import Services

# What the scopes branch will require of each route.
TRACES_SCOPE = "admin:traces"
PROMPTS_SCOPE = "admin:prompts"


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    label: Annotated[str, Meta(min_length=1, max_length=64)] = "production"


async def trace_list(request: Request) -> Response:
    """Newest first; ``cursor`` from the previous page's ``next_cursor``."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        f = TraceFilter.parse(request.query_params)
        mine = admin_tenant(ctx, TRACES_SCOPE)
        if mine is not None:
            f.tenant = mine  # a tenant admin sees its own tenant, whatever the URL says
        page = await svc.console.queries.page(f)
        return json_response({"object": "list", "data": page.rows,
                              "next_cursor": page.next_cursor,
                              "scanned_to": page.scanned_to})
    return await serve_tenant_admin(request, "admin.traces.list", handle)


async def prompt_rollback(request: Request) -> Response:
    async def handle(request: Request, svc: Services) -> Response:
        name = request.path_params["name"]
        body = await read_body(request, 4096)
        req = convert(decode_json_object(body or b"{}"), RollbackIn)
        actor = "console" if request.headers.get(CSRF_HEADER) else "admin-api"
        try:
            move = await asyncio.to_thread(svc.prompts.rollback, name, req.label, actor)
        except LabelError as e:  # nothing to go back to (an unknown prompt is a 404)
            raise InvalidRequest(str(e), code="rollback_refused") from None
        svc.prompts.invalidate()
        await svc.bus.publish({"kind": "prompt_label", "prompt": name})
        await svc.audit.record(request.state.ctx, "prompt.rollback", tenant=ALL_TENANTS,
                               target=f"{name}:{req.label}",
                               before={"version": move.from_version},
                               after={"version": move.to_version})
        return json_response(dataclasses.asdict(move))
    return await serve_admin(request, "admin.prompts.rollback", handle)


routes = [Route("/admin/traces", trace_list, methods=["GET"]),
          Route("/admin/prompts/{name}/rollback", prompt_rollback, methods=["POST"])]
