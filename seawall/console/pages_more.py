"""The console's Experiments, Collections and Jobs pages.

Experiments and Jobs read what their admin endpoints answer
(seawall/console/api_more.py: the same functions), and Roll back / Promote
are calls from the page to ``POST /admin/experiments/{name}/rollback`` and
``/promote``. Collections is a shell: its list, documents and search are
calls from the page to the public RAG API (``/v1/collections...``),
made by ``collections.js`` with the session, exactly as a client's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.console.api_more import experiments_status, list_batches, list_jobs
from seawall.console.session import Identity
from seawall.jobs.queue import JobState

if TYPE_CHECKING:
    from seawall.app import Services

NAV = [("experiments", "Experiments"), ("collections", "Collections"), ("jobs", "Jobs")]
# Gateway-wide pages (every tenant's rows): the operator's only, so a key's
# navigation leaves them out (the pages refuse it anyway: _operators_only).
OPERATOR_ONLY = frozenset({"experiments", "jobs"})


def _operators_only(request: Request, ident: Identity, active: str) -> Response | None:
    """Experiments and jobs are gateway-wide, so (like their admin endpoints)
    the operator's only: a tenant admin gets a 403 page, not another tenant's rows."""
    from seawall.console.routes import render

    if ident.role == "operator":
        return None
    return render(request, "error.html", ident, status=403, active=active,
                  message="This page shows every tenant's data: the operator's only.")


async def experiments(request: Request, svc: Services, ident: Identity) -> Response:
    from seawall.console.routes import render

    if (refused := _operators_only(request, ident, "experiments")) is not None:
        return refused
    rows = experiments_status(svc)
    for row in rows:  # newest first, the last 20 moves
        row["recent"] = list(reversed(row.get("history") or []))[:20]
    return render(request, "experiments.html", ident, active="experiments", experiments=rows)


async def collections(request: Request, svc: Services, ident: Identity) -> Response:
    from seawall.console.routes import render

    return render(request, "collections.html", ident, active="collections",
                  tenant=ident.tenant or "default")


async def jobs(request: Request, svc: Services, ident: Identity) -> Response:
    from seawall.console.routes import render

    if (refused := _operators_only(request, ident, "jobs")) is not None:
        return refused
    job_page = await list_jobs(svc, request)
    batch_page = await list_batches(svc, request)
    params = {k: v for k, v in request.query_params.items() if k in ("state", "kind", "tenant")
              and v}
    older = (("?" + urlencode({**params, "cursor": job_page["next_cursor"]}))
             if job_page["next_cursor"] else None)
    stats = await svc.jobs.stats()
    return render(request, "jobs.html", ident, active="jobs", jobs=job_page["data"],
                  batches=batch_page["data"], older=older, params=params,
                  states=[s.value for s in JobState], stats=stats)


def routes(page: Any) -> list[Route]:
    """``page``: seawall/console/routes.py's wrapper (sign-in, scope, errors)."""
    return [Route("/ui/experiments", page("experiments", experiments), methods=["GET"]),
            Route("/ui/collections", page("collections", collections), methods=["GET"]),
            Route("/ui/jobs", page("jobs", jobs), methods=["GET"])]
