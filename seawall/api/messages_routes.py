"""Anthropic Messages API routes: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``, for the Anthropic SDK and Claude Code.

A Messages request is translated into the internal chat-completions request
(:mod:`seawall.api.anthropic_wire`) and served by the same pipeline as
``/v1/chat/completions`` (auth, admission, limits, experiments, prompts,
routing, RAG, cache, invoke, record: endpoint ``"messages"``); its chunk
stream is translated back (:mod:`seawall.api.anthropic_stream`). Errors use
Anthropic's shape. The key is read from ``x-api-key`` or
``Authorization: Bearer``; ``anthropic-version`` and ``anthropic-beta`` are
accepted and not needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api import anthropic_stream as out
from seawall.api.anthropic_wire import (
    CountTokensRequest,
    MessagesRequest,
    chat_messages,
    chat_request,
    chat_tools,
    error_body,
    error_status,
    model_of,
)
from seawall.api.http import JSON, LastEvent, peer_host, read_body
from seawall.api.openai_routes import _headers, first_item, run_to_end, sse_answer
from seawall.api.wire import ChatCompletionRequest, convert, decode_json_object
from seawall.errors import SeawallError, ShuttingDown
from seawall.ml.tokens import LONG_TEXT_CHARS, is_long
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext
from seawall.pipeline.pipeline import Serving
from seawall.providers.base import StreamItem

if TYPE_CHECKING:
    from seawall.app import Services

_DECODE_OFF_LOOP_BYTES = 256 * 1024  # as in openai_routes


def _services(request: Request) -> Services:
    return request.app.state.services


def _context(request: Request, endpoint: str) -> RequestContext:
    h = request.headers
    key = h.get("x-api-key")
    return RequestContext(
        endpoint=endpoint,
        # Anthropic's SDK sends x-api-key (api_key) or a bearer token (auth_token).
        authorization=f"Bearer {key}" if key else h.get("authorization"),
        client_host=peer_host(request),
        traceparent=h.get("traceparent"),
        cache_control=h.get("cache-control"),
        prompt_version=h.get("x-seawall-prompt-version"),
    )


def _response_headers(ctx: RequestContext) -> dict[str, str]:
    return {**_headers(ctx), "request-id": ctx.trace_id}


def _fail(ctx: RequestContext, err: SeawallError) -> Response:
    return Response(error_body(err), status_code=error_status(err), media_type=JSON,
                    headers={**err.headers(), **_response_headers(ctx)})


def _translate(body: bytes, max_depth: int
               ) -> tuple[dict[str, Any], MessagesRequest | SeawallError, dict[str, Any]]:
    """(raw, Messages request or the error that refuses it, internal chat body)."""
    raw = decode_json_object(body, max_depth)
    try:
        req = convert(raw, MessagesRequest)
        return raw, req, chat_request(req, raw)
    except SeawallError as e:
        return raw, e, {}


def _count(body: bytes, max_depth: int, svc: Services) -> tuple[dict[str, Any], int | SeawallError]:
    """(raw, estimated input tokens or the error that refuses the request)."""
    raw = decode_json_object(body, max_depth)
    try:
        req = convert(raw, CountTokensRequest)
        tools = orjson.dumps(chat_tools(req.tools)).decode() if req.tools else ""
        return raw, svc.tokens.count_messages(chat_messages(req)) + svc.tokens.count(tools)
    except SeawallError as e:
        return raw, e


async def _off_loop_if_large(ctx: RequestContext, fn: Any, *args: Any,
                             limit: int = _DECODE_OFF_LOOP_BYTES) -> Any:
    """Decoding, validating, translating and counting grow with the body: past
    ``limit`` bytes they run in a worker thread."""
    if len(ctx.body) > limit:
        return await asyncio.to_thread(fn, ctx.body, *args)
    return fn(ctx.body, *args)


async def _parse(request: Request, ctx: RequestContext, svc: Services) -> MessagesRequest:
    """Body → validated Messages request; ``ctx.raw``/``ctx.request`` become the
    internal chat request that the stages and providers take."""
    server = svc.settings.server
    ctx.body = await read_body(request, server.max_body_bytes)
    raw, req, chat = await _off_loop_if_large(ctx, _translate, server.max_json_depth)
    ctx.model = model_of(raw)  # recorded even when the request is refused
    if isinstance(req, SeawallError):
        raise req
    ctx.request = convert(chat, ChatCompletionRequest)
    for key in ("seawall", "rag", "prompt"):  # the gateway's own options never go upstream
        chat.pop(key, None)
    ctx.raw = chat
    if ctx.request.seawall is not None and ctx.request.seawall.prompt_version is not None:
        ctx.prompt_version = ctx.request.seawall.prompt_version
    return req


async def messages(request: Request) -> Response:
    svc = _services(request)
    ctx = _context(request, "messages")
    current_trace_id.set(ctx.trace_id)
    try:
        async with svc.pipeline.serve(ctx) as serving:
            return await _messages(request, ctx, svc, serving)
    except SeawallError as e:
        return _fail(ctx, e)


async def _input_tokens(svc: Services, ctx: RequestContext) -> int:
    """An estimate for ``message_start`` (the upstream reports usage at the end)."""
    msgs = ctx.raw.get("messages", []) if ctx.raw else []
    if is_long("", len(ctx.body)):
        return await asyncio.to_thread(svc.tokens.count_messages, msgs)
    return svc.tokens.count_messages(msgs)


async def _messages(request: Request, ctx: RequestContext, svc: Services,
                    serving: Serving) -> Response:
    req = await _parse(request, ctx, svc)
    stream = await svc.pipeline.open_stream(ctx)
    message_id = "msg_" + ctx.trace_id

    if not req.stream:
        if not await run_to_end(request, ctx, stream):  # client went away; nobody to answer
            return Response(status_code=499)
        usage = ctx.gatherer.usage or await svc.estimate_usage(ctx)
        body = out.message(ctx.gatherer.completion(), message_id, req.model, usage)
        return Response(orjson.dumps(body), media_type=JSON, headers=_response_headers(ctx))

    first = await first_item(request, stream)
    if ctx.error is not None:
        return Response(status_code=499)
    translator = out.EventTranslator(message_id, req.model)
    return sse_answer(svc, ctx, serving, stream, _events(ctx, svc, translator, first, stream),
                      _response_headers(ctx), on_cut=_cut_event)


def _cut_event() -> bytes:
    return out.error_event(ShuttingDown(
        "The gateway shut down before the answer ended (shutdown.drain_timeout_s ran out); "
        "retry.", retry_after=1.0))


async def _events(ctx: RequestContext, svc: Services, translator: out.EventTranslator,
                  first: StreamItem | None,
                  stream: AsyncIterator[StreamItem]) -> AsyncIterator[bytes]:
    try:
        head = translator.start(await _input_tokens(svc, ctx))
        yield head + (translator.feed(first) if first is not None else b"")
        async for item in stream:
            if data := translator.feed(item):
                yield data
        usage = ctx.gatherer.usage or await svc.estimate_usage(ctx)
        yield LastEvent(translator.finish(usage))
    except SeawallError as e:
        yield out.error_event(e)  # no message_stop: the answer is incomplete
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


async def count_tokens(request: Request) -> Response:
    """``{"input_tokens": N}``: an estimate with the gateway's tokenizer
    (tiktoken o200k_base over the translated messages and tools), not the
    upstream model's own count."""
    svc = _services(request)
    ctx = _context(request, "messages.count_tokens")
    current_trace_id.set(ctx.trace_id)
    try:
        async with svc.pipeline.scope(ctx):
            server = svc.settings.server
            ctx.body = await read_body(request, server.max_body_bytes)
            raw, n = await _off_loop_if_large(ctx, _count, server.max_json_depth, svc,
                                              limit=LONG_TEXT_CHARS)  # counting is slower
            ctx.model = model_of(raw)
            if isinstance(n, SeawallError):
                raise n
    except SeawallError as e:
        return _fail(ctx, e)
    return Response(orjson.dumps({"input_tokens": n}), media_type=JSON,
                    headers=_response_headers(ctx))


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
