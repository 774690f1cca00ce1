"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import shutil
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import error_response, json_response, peer_host
from seawall.errors import AuthenticationFailed
from seawall.pipeline.stages import AuthStage, is_loopback

if TYPE_CHECKING:
    from seawall.app import Services

PING_TIMEOUT_S = 1.0


async def health(request: Request) -> Response:
    """Liveness: the process answers. Never touches a dependency."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness (docs/operations.md#health): 200 only when the store answers,
    trace records are being written (not journaled, held or dropped, and the
    writer is not lagging), the disk under data_dir has room, admission is
    not saturated, every provider is started (models loaded) and the
    process is not draining. Otherwise 503 with each failing check's reason.
    ``deployments`` shows each deployment's breaker, in-flight count, TTFT
    and any cool-down: an open breaker does not make the process unready
    (others may serve)."""
    svc: Services = request.app.state.services
    checks: dict[str, dict[str, object]] = {}
    try:
        # The key store's own connection: never queued behind trace writes.
        await asyncio.wait_for(svc.key_store.ping(), PING_TIMEOUT_S)
        checks["store"] = {"ready": True}
    except Exception as e:
        checks["store"] = {"ready": False, "detail": f"{type(e).__name__}: {e}"}
    if svc.redis is not None:
        checks["redis"] = await _redis(svc)
    w = svc.writer.health()
    checks["trace_writer"] = {"ready": w.ok, **({"detail": "; ".join(w.reasons)} if w.reasons
                                               else {}),
                              "queued": w.queued, "held": w.held,
                              "journal_bytes": w.journal_bytes, "lag_s": w.lag_s}
    checks["disk"] = _disk(svc)
    a = svc.admission
    cap = svc.settings.admission.max_inflight
    saturated = bool(cap) and a.inflight >= cap
    checks["admission"] = {"ready": not saturated, "inflight": a.inflight,
                           **({"detail": f"{a.inflight} of {cap} request slots taken"}
                              if saturated else {})}
    for name, st in svc.registry.status().items():
        checks[f"provider:{name}"] = {"ready": st.ready, **({"detail": st.detail} if st.detail
                                                            else {}), **st.extra}
    ok = all(c["ready"] for c in checks.values())
    draining = svc.admission.draining
    started = all(c["ready"] for n, c in checks.items() if n.startswith("provider:"))
    status = ("draining" if draining else "ready" if ok else
              "degraded" if started else "not_ready")
    body = {"status": status, "checks": checks, "deployments": svc.registry.health()}
    return json_response(body, status=200 if ok and not draining else 503)


async def _redis(svc: Services) -> dict[str, object]:
    """Redis answers? Unreachable with ``redis.fail_open`` the replica still
    serves (on per-process limits): ready, with the reason; with fail closed,
    limited requests are refused, so it is not."""
    assert svc.redis is not None
    try:
        await asyncio.wait_for(svc.redis.ping(), PING_TIMEOUT_S)
        return {"ready": True}
    except Exception as e:
        open_ = svc.settings.redis.fail_open
        return {"ready": open_, "reachable": False,
                "detail": f"{type(e).__name__}: {e}; "
                          + ("serving on per-process limits and budgets (redis.fail_open)"
                             if open_ else "limited requests get 503 (redis.fail_open: false)")}


def _disk(svc: Services) -> dict[str, object]:
    need = svc.settings.observe.traces.min_free_disk_mb
    try:
        free = shutil.disk_usage(svc.settings.data_dir).free // (1024 * 1024)
    except OSError as e:
        return {"ready": False, "detail": f"{type(e).__name__}: {e}"}
    if free < need:
        return {"ready": False, "free_mb": free,
                "detail": f"{free} MB free under data_dir, below "
                          f"observe.traces.min_free_disk_mb ({need})"}
    return {"ready": True, "free_mb": free}


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
    local = is_loopback(peer_host(request))
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
