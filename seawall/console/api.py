"""``GET /admin/traces``: the trace list as JSON, the same query the
console's Traces page runs (seawall/console/queries.py), behind the admin
API's check (master key, or anonymous loopback when allowed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import _serve as serve_admin
from seawall.api.http import json_response
from seawall.console.queries import TraceFilter

if TYPE_CHECKING:
    from seawall.app import Services

SCOPE = "admin:traces"  # what the scopes branch will require of this route


async def trace_list(request: Request) -> Response:
    """Newest first; ``cursor`` from the previous page's ``next_cursor``."""
    async def handle(request: Request, svc: Services) -> Response:
        f = TraceFilter.parse(request.query_params)
        page = await svc.console.queries.page(f)
        return json_response({"object": "list", "data": page.rows,
                              "next_cursor": page.next_cursor,
                              "scanned_to": page.scanned_to})
    return await serve_admin(request, "admin.traces.list", handle)


routes = [Route("/admin/traces", trace_list, methods=["GET"])]
