"""OpenAI Responses API routes: ``POST /v1/responses`` and the stored
responses under ``/v1/responses/{id}`` (retrieve, delete, input items,
cancel).

A Responses request is translated into the internal chat-completions
request (:mod:`seawall.responses.wire`), with the earlier turns of a
``previous_response_id`` conversation rebuilt from the store
(:mod:`seawall.responses.conversation`), and served by the same pipeline as
``/v1/chat/completions`` (auth, limits, budgets, experiments, prompts,
routing, RAG, cache, resilience, records: endpoint ``"responses"``). The
answer is shaped back by :mod:`seawall.responses.output` and stored
(``store``, default true) under the caller's tenant. The response id is
``resp_`` + the request's trace id, so a response leads to its trace record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import JSON, SSEResponse, read_body
from seawall.api.openai_routes import (
    _context,
    _fail,
    _headers,
    first_item,
    run_to_end,
    sse_answer,
)
from seawall.api.wire import MAX_MODEL_NAME, ChatCompletionRequest, convert, decode_json_object
from seawall.errors import InvalidRequest, SeawallError, ServiceUnavailable, ShuttingDown
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext, new_trace_id
from seawall.pipeline.pipeline import Serving
from seawall.providers.base import StreamItem
from seawall.responses import output as out
from seawall.responses.background_log import BackgroundLog
from seawall.responses.conversation import Conversation
from seawall.responses.service import not_found
from seawall.responses.store_api import StoredResponse
from seawall.responses.wire import MAX_ID, ResponsesRequest, chat_request, check, input_items

if TYPE_CHECKING:
    from seawall.app import Services

log = logging.getLogger("seawall.responses")

_DECODE_OFF_LOOP_BYTES = 256 * 1024  # as in openai_routes
# Fields of the response object kept in their own columns; the rest go in ``extra``.
_COLUMN_FIELDS = frozenset({"id", "object", "created_at", "status", "model", "instructions",
                            "output", "usage", "previous_response_id", "metadata"})
MAX_LIST_LIMIT = 100


def _services(request: Request) -> Services:
    return request.app.state.services


def _translate(body: bytes, max_depth: int, max_items: int
               ) -> tuple[dict[str, Any], ResponsesRequest | SeawallError, list[dict[str, Any]]]:
    """(raw, request or the error that refuses it, this turn's input items)."""
    raw = decode_json_object(body, max_depth)
    try:
        req = convert(raw, ResponsesRequest)
        check(req, max_items)
        return raw, req, input_items(req)
    except SeawallError as e:
        return raw, e, []


async def create(request: Request) -> Response:
    svc = _services(request)
    ctx = _context(request, "responses")
    current_trace_id.set(ctx.trace_id)
    try:
        async with svc.pipeline.serve(ctx) as serving:
            return await _create(request, ctx, svc, serving)
    except SeawallError as e:
        return _fail(ctx, e)


async def _create(request: Request, ctx: RequestContext, svc: Services,
                  serving: Serving) -> Response:
    server = svc.settings.server
    ctx.body = await read_body(request, server.max_body_bytes)
    args = (ctx.body, server.max_json_depth, svc.settings.responses.max_input_items)
    if len(ctx.body) > _DECODE_OFF_LOOP_BYTES:  # grows with the body: not on the loop
        raw, req, items = await asyncio.to_thread(_translate, *args)
    else:
        raw, req, items = _translate(*args)
    model = raw.get("model")
    ctx.model = model[:MAX_MODEL_NAME] if isinstance(model, str) else ""
    if isinstance(req, SeawallError):
        raise req
    if req.background:
        return await _enqueue(ctx, svc, req, raw, items)
    t0 = time.time_ns()
    conv = await svc.responses.conversation(ctx.tenant, req.model, req.instructions,
                                            req.previous_response_id, items)
    if req.previous_response_id is not None:
        ctx.span("responses.history", t0)  # loading and trimming the earlier turns
    chat = chat_request(req, raw, conv.messages)
    ctx.request = convert(chat, ChatCompletionRequest)
    for key in ("seawall", "rag", "prompt"):  # the gateway's own options never go upstream
        chat.pop(key, None)
    ctx.raw = chat
    if ctx.request.seawall is not None and ctx.request.seawall.prompt_version is not None:
        ctx.prompt_version = ctx.request.seawall.prompt_version
    response_id = "resp_" + ctx.trace_id
    created = time.time()
    stream = await svc.pipeline.open_stream(ctx)

    if not req.stream:
        if not await run_to_end(request, ctx, stream):  # client went away; nobody to answer
            return Response(status_code=499)
        completion = ctx.gatherer.completion()
        usage = ctx.gatherer.usage or await svc.estimate_usage(ctx)
        body = out.response_object(response_id, req, created, status="completed",
                                   output=out.output_items(completion),
                                   usage=out.usage_of(usage),
                                   finish=out.finish_reason(completion))
        if req.store:
            await _save(svc, ctx, req, items, body, created)
        return Response(await _encode(body), media_type=JSON,
                        headers={**_headers(ctx), **_history(conv)})

    first = await first_item(request, stream)
    if ctx.error is not None:  # the client left before the first token
        return Response(status_code=499)
    tr = out.EventTranslator(response_id, req, created)
    return sse_answer(svc, ctx, serving, stream, _events(ctx, svc, req, items, tr, first, stream),
                      {**_headers(ctx), **_history(conv)}, on_cut=lambda: tr.failed(ShuttingDown(
                          "The gateway shut down before the answer ended "
                          "(shutdown.drain_timeout_s ran out); retry.", retry_after=1.0)))


async def _enqueue(ctx: RequestContext, svc: Services, req: ResponsesRequest,
                   raw: dict[str, Any], items: list[dict[str, Any]]) -> Response:
    """``background: true``: store it ``queued``, enqueue its job, answer at once
    (streamed from its event log when ``stream`` is set)."""
    from seawall.api import responses_background as bg

    if req.previous_response_id is not None:  # a missing one is a 404 now, not a failed job
        await svc.responses.get(ctx.tenant, req.previous_response_id)
    # The id names the trace record of the job's model call (as a direct
    # response's names its request's); the create call keeps its own (x-request-id).
    response_id = "resp_" + new_trace_id()
    created = time.time()
    body = out.response_object(response_id, req, created, status="queued", output=[],
                               usage=None)
    await _save(svc, ctx, req, items, body, created)
    try:
        await svc.jobs.enqueue(bg.KIND, bg.payload(ctx.tenant, ctx.key, raw),
                               tenant=ctx.tenant, job_id=response_id)
    except BaseException:
        with contextlib.suppress(Exception):
            await svc.responses.store.delete(ctx.tenant, response_id)
        raise
    if req.stream:
        return SSEResponse(bg.follow(svc, ctx.tenant, response_id, -1), _headers(ctx))
    return Response(await _encode(body), media_type=JSON, headers=_headers(ctx))


def _history(conv: Conversation) -> dict[str, str]:
    """What the conversation sent: the earlier turns kept and dropped, and their tokens."""
    if not conv.turns_kept and not conv.turns_dropped:
        return {}
    return {"x-seawall-history": f"turns={conv.turns_kept}; dropped={conv.turns_dropped}; "
                                 f"tokens={conv.history_tokens}"}


async def _encode(body: dict[str, Any]) -> bytes:
    """JSON bytes; a response with a long answer is encoded on a worker thread."""
    if _chars(body.get("output") or ()) > _DECODE_OFF_LOOP_BYTES:
        return await asyncio.to_thread(orjson.dumps, body)
    return orjson.dumps(body)


def _chars(items: Any) -> int:
    """The text an answer's items hold (a bound on their JSON size, less the framing)."""
    n = 0
    for it in items:
        n += len(it.get("arguments") or "") + 200
        n += sum(len(p.get("text") or "") for p in it.get("content") or ())
    return n


async def _events(ctx: RequestContext, svc: Services, req: ResponsesRequest,
                  items: list[dict[str, Any]], tr: out.EventTranslator,
                  first: StreamItem | None,
                  stream: AsyncIterator[StreamItem]) -> AsyncIterator[bytes]:
    try:
        head = tr.start()
        yield head + (tr.feed(first) if first is not None else b"")
        async for item in stream:
            if data := tr.feed(item):
                yield data
        usage = ctx.gatherer.usage or await svc.estimate_usage(ctx)
        data, final = tr.finish_events(out.usage_of(usage))
        if req.store:  # stored before the client hears it is complete
            await _save(svc, ctx, req, items, final, tr.created_at)
        yield data
    except SeawallError as e:
        yield tr.failed(e)  # no response.completed: the answer is incomplete
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


async def _save(svc: Services, ctx: RequestContext, req: ResponsesRequest,
                items: list[dict[str, Any]], body: dict[str, Any], created: float) -> None:
    stored = StoredResponse(
        id=body["id"], tenant=ctx.tenant, model=req.model, status=body["status"],
        created_at=created, instructions=req.instructions, input_items=items,
        output=body["output"], usage=body["usage"],
        previous_response_id=req.previous_response_id, metadata=req.metadata,
        extra={k: v for k, v in body.items() if k not in _COLUMN_FIELDS},
        expires_at=svc.responses.expires_at(created))
    try:
        await svc.responses.save(stored)
    except Exception as e:
        log.exception("storing response %s failed", stored.id)
        raise ServiceUnavailable("The answer could not be stored (the response store is "
                                 "unreachable); retry, or send store=false.",
                                 code="store_unavailable", retry_after=1.0) from e


def _body(r: StoredResponse) -> dict[str, Any]:
    """A stored response as the object OpenAI's ``responses.retrieve`` returns."""
    return {**r.extra, "id": r.id, "object": "response", "created_at": int(r.created_at),
            "status": r.status, "model": r.model, "instructions": r.instructions,
            "output": r.output, "usage": r.usage,
            "previous_response_id": r.previous_response_id, "metadata": r.metadata or {}}


async def _stored(request: Request, endpoint: str,
                  answer: Any) -> Response:
    """Authenticate (limits apply), find the caller's response, ``answer`` it."""
    svc = _services(request)
    ctx = _context(request, endpoint)
    current_trace_id.set(ctx.trace_id)
    response_id: str = request.path_params["response_id"]
    try:
        async with svc.pipeline.scope(ctx):
            if len(response_id) > MAX_ID:
                raise not_found(response_id)
            body = await answer(svc, ctx, response_id)
    except SeawallError as e:
        return _fail(ctx, e)
    return Response(await _encode(body), media_type=JSON, headers=_headers(ctx))


async def retrieve(request: Request) -> Response:
    q = request.query_params
    if q.get("stream") == "true":
        return await _replay(request, q.get("starting_after", "-1"))

    async def answer(svc: Services, ctx: RequestContext, rid: str) -> dict[str, Any]:
        from seawall.api.responses_background import settle

        return _body(await settle(svc, await svc.responses.get(ctx.tenant, rid)))

    return await _stored(request, "responses.get", answer)


async def _replay(request: Request, starting_after: str) -> Response:
    """``retrieve(id, stream=True, starting_after=N)``: a background response's
    events after N, then live ones until it ends (from the log, any replica)."""
    from seawall.api import responses_background as bg

    svc = _services(request)
    ctx = _context(request, "responses.get")
    current_trace_id.set(ctx.trace_id)
    rid: str = request.path_params["response_id"]
    try:
        async with svc.pipeline.scope(ctx):
            try:
                after = int(starting_after)
            except ValueError:
                after = -2
            if not -1 <= after < 2**62:
                raise InvalidRequest("`starting_after` must be an integer >= -1.",
                                     param="starting_after", code="invalid_value")
            if len(rid) > MAX_ID:
                raise not_found(rid)
            r = await svc.responses.get(ctx.tenant, rid)
            if not r.extra.get("background"):
                raise InvalidRequest("Only background responses can be streamed from the "
                                     "store; retrieve it without stream.", param="stream",
                                     code="not_background")
    except SeawallError as e:
        return _fail(ctx, e)
    return SSEResponse(bg.follow(svc, ctx.tenant, rid, after), _headers(ctx))


async def delete(request: Request) -> Response:
    async def answer(svc: Services, ctx: RequestContext, rid: str) -> dict[str, Any]:
        if not await svc.responses.store.delete(ctx.tenant, rid):
            raise not_found(rid)
        await BackgroundLog(svc.responses.store).drop(rid)
        return {"id": rid, "object": "response", "deleted": True}

    return await _stored(request, "responses.delete", answer)


async def cancel(request: Request) -> Response:
    """Only background responses can be cancelled (a synchronous one: 400, as
    OpenAI). A queued one is cancelled at once; a running one is flagged and
    its runner cancels the job's task, which closes the upstream stream. One
    that already ended is returned as it is (cancelling is idempotent)."""
    async def answer(svc: Services, ctx: RequestContext, rid: str) -> dict[str, Any]:
        r = await svc.responses.get(ctx.tenant, rid)
        if not r.extra.get("background"):
            raise InvalidRequest("Cannot cancel a synchronous response.", param="response_id",
                                 code="not_cancellable")
        if r.status in ("queued", "in_progress"):
            await svc.jobs.cancel(rid, ctx.tenant)
            await BackgroundLog(svc.responses.store).move(ctx.tenant, rid, "cancelled")
            r = await svc.responses.get(ctx.tenant, rid)
        return _body(r)

    return await _stored(request, "responses.cancel", answer)


def _page_args(request: Request) -> tuple[int, str, str | None]:
    q = request.query_params
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"`limit` must be an integer from 1 to {MAX_LIST_LIMIT}.",
                             param="limit", code="invalid_value")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("`order` must be asc or desc.", param="order", code="invalid_value")
    return limit, order, q.get("after")


async def list_input_items(request: Request) -> Response:
    """This response's input items (not the earlier turns'), paged by ``after``."""
    async def answer(svc: Services, ctx: RequestContext, rid: str) -> dict[str, Any]:
        limit, order, after = _page_args(request)
        items = list((await svc.responses.get(ctx.tenant, rid)).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [it.get("id") for it in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return {"object": "list", "data": page, "has_more": len(items) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    return await _stored(request, "responses.input_items", answer)


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
]
