"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import json_response

if TYPE_CHECKING:
    from seawall.app import Services


async def health(request: Request) -> Response:
    """Liveness: the process answers. Never touches a dependency."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: the store answers, every provider is started (models loaded),
    and the process is not draining for shutdown. ``deployments`` shows each
    deployment's breaker, in-flight count, TTFT and any cool-down: an open
    breaker does not make the process unready (others may serve)."""
    svc: Services = request.app.state.services
    checks: dict[str, dict[str, object]] = {}
    try:
        await svc.store.ping()
        checks["store"] = {"ready": True}
    except Exception as e:
        checks["store"] = {"ready": False, "detail": f"{type(e).__name__}: {e}"}
    for name, st in svc.registry.status().items():
        checks[f"provider:{name}"] = {"ready": st.ready, **({"detail": st.detail} if st.detail
                                                            else {}), **st.extra}
    ok = all(c["ready"] for c in checks.values())
    draining = svc.admission.draining
    body = {"status": "draining" if draining else "ready" if ok else "not_ready",
            "checks": checks, "deployments": svc.registry.health()}
    return json_response(body, status=200 if ok and not draining else 503)


async def metrics(request: Request) -> Response:
    svc: Services = request.app.state.services
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
