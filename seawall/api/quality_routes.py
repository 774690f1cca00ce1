"""Feedback on answers (``POST /v1/feedback``) and the whole trace record
with its feedback (``GET /admin/traces/{request_id}``): docs/quality.md.

A rating names the answer by its ``x-request-id`` (or Responses API id,
``resp_`` + the trace id). The answer's record must exist and belong to the
caller's tenant; another tenant's answer is a 404 like an unknown one, so
ids cannot be probed. The record may not be stored yet when a client rates
at once (the trace writer flushes every 0.5 s, and on Postgres another
replica may have served the answer): the route then waits for it, at most
``feedback.trace_wait_s``, flushing this process's writer first.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.admin_routes import serve_tenant_admin
from seawall.api.http import error_response, json_response, peer_host, read_body
from seawall.api.wire import convert, decode_json_object
from seawall.errors import InvalidRequest, NotFound, SeawallError
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import admin_tenant
from seawall.quality.feedback_store import Feedback
from seawall.quality.trace_view import trace_id_of, trace_with_feedback

if TYPE_CHECKING:
    from seawall.app import Services

MAX_REQUEST_ID = 200
MAX_BODY = 256 * 1024  # the largest comment allowed is 100,000 characters
_POLL_S = 0.1


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    request_id: Annotated[str, Meta(min_length=1, max_length=MAX_REQUEST_ID)]
    score: float
    comment: str | None = None
    categories: list[str] = []
    user: str | None = None


def _check(req: FeedbackIn, svc: Services) -> None:
    """The configured limits, each a 400 that names the field."""
    fb = svc.settings.feedback
    if not (math.isfinite(req.score) and fb.scale.min <= req.score <= fb.scale.max):
        raise InvalidRequest(f"score must be between {fb.scale.min:g} and {fb.scale.max:g} "
                             "(feedback.scale).", param="score")
    if req.comment is not None and len(req.comment) > fb.max_comment_chars:
        raise InvalidRequest(f"comment is longer than {fb.max_comment_chars} characters.",
                             param="comment")
    if len(req.categories) > fb.max_categories:
        raise InvalidRequest(f"At most {fb.max_categories} categories.", param="categories")
    if any(not 0 < len(c) <= fb.max_category_chars for c in req.categories):
        raise InvalidRequest(f"A category is 1 to {fb.max_category_chars} characters.",
                             param="categories")
    if req.user is not None and not 0 < len(req.user) <= fb.max_user_chars:
        raise InvalidRequest(f"user is 1 to {fb.max_user_chars} characters.", param="user")


async def _record(svc: Services, trace_id: str) -> dict[str, Any] | None:
    """The stored record, waiting up to ``feedback.trace_wait_s`` for a record
    not stored yet; None when it never appears."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.feedback.trace_wait_s
    while True:
        row = await svc.store.get_trace(trace_id)
        if row is not None:
            return row
        left = deadline - loop.time()
        if left <= 0:
            return None
        await svc.writer.flush(within_s=left)  # ours: returns once nothing is pending
        await asyncio.sleep(min(_POLL_S, max(0.0, deadline - loop.time())))


def _sign(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "zero"


async def feedback(request: Request) -> Response:
    svc: Services = request.app.state.services
    ctx = RequestContext(endpoint="feedback", authorization=request.headers.get("authorization"),
                         client_host=peer_host(request),
                         traceparent=request.headers.get("traceparent"))
    current_trace_id.set(ctx.trace_id)
    headers = {"x-request-id": ctx.trace_id}
    try:
        async with svc.pipeline.scope(ctx):
            body = await read_body(request, min(MAX_BODY, svc.settings.server.max_body_bytes))
            req = convert(decode_json_object(body), FeedbackIn)
            _check(req, svc)
            trace_id = trace_id_of(req.request_id)
            record = await _record(svc, trace_id)
            if record is None or record["tenant"] != ctx.tenant:
                raise NotFound(f"No answer with id {req.request_id!r}.", param="request_id")
            fb = Feedback(trace_id=trace_id, user=req.user or "", tenant=ctx.tenant,
                          score=req.score, key_id=ctx.key.id if ctx.key else None,
                          comment=req.comment, categories=req.categories)
            first = await svc.feedback.put(fb)
            if first:
                svc.metrics.feedback.labels(_sign(req.score)).inc()
            await svc.quality_loop.submit(fb, record, first)  # quarantine, canary: background
            out: dict[str, Any] = {"object": "feedback", "request_id": req.request_id,
                                   "trace_id": trace_id, "user": req.user, "score": req.score,
                                   "replaced": not first, "created_at": time.time()}
            response = json_response(out)
    except SeawallError as e:
        return error_response(e, headers)
    response.headers.update(headers)
    return response


async def trace_show(request: Request) -> Response:
    """The whole record with its feedback and scores (the operator; a
    tenant_admin key: its own tenant's records, others are "not found")."""
    async def handle(request: Request, svc: Services, ctx: RequestContext) -> Response:
        request_id = request.path_params["request_id"]
        if not 0 < len(request_id) <= MAX_REQUEST_ID:
            raise InvalidRequest(f"A request id is 1 to {MAX_REQUEST_ID} characters.")
        mine = admin_tenant(ctx, "admin:traces")
        doc = await trace_with_feedback(svc.store, svc.feedback, request_id, svc.scores)
        if doc is None or (mine is not None and doc.get("tenant") != mine):
            raise NotFound(f"No trace record {request_id!r}.")
        return json_response(doc)
    return await serve_tenant_admin(request, "admin.traces.show", handle)


routes = [
    Route("/v1/feedback", feedback, methods=["POST"]),
    Route("/admin/traces/{request_id}", trace_show, methods=["GET"]),
]
