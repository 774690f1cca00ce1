"""``GET /admin/audit``: the audit log, newest first (docs/security.md#audit-log).

Needs :data:`SCOPE` (an endpoint ``admin.audit.*``: seawall/pipeline/
permissions.py). Only the operator may look across tenants: a tenant_admin
key's tenant filter is its own tenant, whatever it asks for (a request
naming another tenant gets a 403).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import serve_tenant_admin
from seawall.api.http import json_response
from seawall.audit.query import build_query
from seawall.audit.record import actor_of
from seawall.errors import InvalidRequest, SeawallError
from seawall.pipeline.context import RequestContext

if TYPE_CHECKING:
    from seawall.app import Services

SCOPE = "admin:audit"
_PARAMS = frozenset({"tenant", "action", "since", "limit", "before_id"})


class Forbidden(SeawallError):
    status = 403
    type = "permission_error"
    code = "forbidden"


def tenant_filter(ctx: RequestContext, asked: str | None) -> str | None:
    """The tenant the query is confined to: what the operator asks (None =
    every tenant); any other caller's own tenant."""
    if actor_of(ctx).role == "operator":
        return asked
    if asked is not None and asked != ctx.tenant:
        raise Forbidden(f"This key may read the audit log of its own tenant only "
                        f"(scope {SCOPE}).")
    return ctx.tenant


async def audit_list(request: Request) -> Response:
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        params = request.query_params
        unknown = sorted(set(params.keys()) - _PARAMS)
        if unknown:
            raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}; known: "
                                 + ", ".join(sorted(_PARAMS)), param=unknown[0])
        if any(len(params.getlist(k)) > 1 for k in params):
            raise InvalidRequest("Give each query parameter once.")
        try:
            q = build_query(params.get("tenant"), params.get("action"), params.get("since"),
                            params.get("limit"), params.get("before_id"))
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        q = type(q)(tenant=tenant_filter(ctx, q.tenant), action=q.action, since=q.since,
                    limit=q.limit, before_id=q.before_id)
        rows = await svc.audit.query(q)
        return json_response({"object": "list", "data": [e.to_json() for e in rows],
                              "has_more": len(rows) == q.limit,
                              "last_id": rows[-1].id if rows else None})
    return await serve_tenant_admin(request, "admin.audit.list", handle)


routes = [Route("/admin/audit", audit_list, methods=["GET"])]
