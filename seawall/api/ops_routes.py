"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response
from seawall.errors import AuthenticationFailed
from seawall.pipeline.stages import AuthStage, is_loopback

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


def metrics_allowed(request: Request, svc: Services) -> bool:
    """``observe.metrics_auth``: "none" lets anyone scrape; "master" wants the
    master key, except from loopback when no master key is set or anonymous
    loopback is allowed (a local Prometheus or curl needs no key)."""
    if svc.settings.observe.metrics_auth == "none":
        return True
    auth = svc.settings.auth
    master = auth.master_key
    secret = AuthStage.secret_of(request.headers.get("authorization"))
    if master and secret is not None and hmac.compare_digest(secret.encode(), master.encode()):
        return True
    local = is_loopback(request.client.host if request.client else None)
    return local and (not master or auth.allow_anonymous_loopback)


async def metrics(request: Request) -> Response:
    svc: Services = request.app.state.services
    if not metrics_allowed(request, svc):
        return error_response(AuthenticationFailed(
            "/metrics needs the master key: send `Authorization: Bearer <auth.master_key>` "
            "(or set observe.metrics_auth: none)."))
    return Response(await svc.metrics.render_async(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
