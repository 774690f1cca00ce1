"""OpenAI-compatible routes: chat completions, embeddings, models.

This layer parses and validates the wire format and shapes the answer;
everything else happens in the pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seawall.api.http import (
    DisconnectWatch,
    LastEvent,
    SSEResponse,
    error_response,
    header_value,
    json_response,
    peer_host,
    read_body,
)
from seawall.api.wire import (
    MAX_MODEL_NAME,
    ChatCompletionRequest,
    EmbeddingRequest,
    convert,
    decode_json_object,
)
from seawall.errors import ModelNotFound, SeawallError, ShuttingDown
from seawall.observe.logs import current_trace_id
from seawall.pipeline.context import RequestContext
from seawall.pipeline.permissions import may_use_model, role_of
from seawall.pipeline.pipeline import Serving
from seawall.providers.base import Chunk, RawBatch, StreamItem, make_chunk, usage_chunk

if TYPE_CHECKING:
    from seawall.app import Services

DONE = LastEvent(b"data: [DONE]\n\n")
# Bodies larger than this are decoded (and depth-checked) in a worker thread:
# below it decoding takes well under a millisecond, above it the thread hop is
# cheap next to the decoding.
_DECODE_OFF_LOOP_BYTES = 256 * 1024


def _services(request: Request) -> Services:
    return request.app.state.services


def _context(request: Request, endpoint: str) -> RequestContext:
    h = request.headers
    return RequestContext(
        endpoint=endpoint,
        authorization=h.get("authorization"),
        client_host=peer_host(request),
        traceparent=h.get("traceparent"),
        cache_control=h.get("cache-control"),
        prompt_version=h.get("x-seawall-prompt-version"),
    )


def shows_experiment(ctx: RequestContext) -> bool:
    """Only an operator learns which arm served a request: an arm a client can
    see is an arm it can aim at (docs/experiments.md). The master key, or a
    keyless loopback caller when anonymous loopback is on (the laptop setup).
    Not a tenant_admin: experiments are gateway-wide, not its tenant's."""
    return role_of(ctx) == "operator"


def _headers(ctx: RequestContext) -> dict[str, str]:
    out = {"x-request-id": ctx.trace_id}
    if ctx.deployment is not None:
        out["x-seawall-deployment"] = ctx.deployment.name
    if ctx.attempts_started > 1:
        out["x-seawall-attempts"] = str(ctx.attempts_started)
    if ctx.degraded is not None:
        out["x-seawall-degraded"] = ctx.degraded
    if ctx.experiment is not None and shows_experiment(ctx):
        out["x-seawall-experiment"] = ctx.experiment.label
    if ctx.prompt_version is not None:
        out["x-seawall-prompt-version"] = header_value(ctx.prompt_version)
    route = ctx.route
    if route is not None:
        out["x-seawall-route"] = route.route
        out["x-seawall-route-tier"] = f"{route.tier}:{route.model}"
        out["x-seawall-route-score"] = f"{route.score:.4f}"
        # Header values are latin-1: keep the reason plain.
        out["x-seawall-route-reason"] = route.reason.encode("ascii", "replace").decode()
    cache = ctx.cache
    if cache is not None:
        out["x-seawall-cache"] = cache.status
        if cache.answer is not None:
            out["age"] = str(max(0, int(time.time() - cache.answer.created_at)))
    return out


def _fail(ctx: RequestContext, err: SeawallError) -> Response:
    return error_response(err, _headers(ctx))


async def _parse(request: Request, ctx: RequestContext, svc: Services, typ: type[Any]) -> Any:
    """Body → validated struct, for an admitted request (inside ``pipeline.serve``,
    which records failures and releases what the request took)."""
    server = svc.settings.server
    ctx.body = await read_body(request, server.max_body_bytes)
    if len(ctx.body) > _DECODE_OFF_LOOP_BYTES:  # decoding grows with the body: not on the loop
        ctx.raw = await asyncio.to_thread(decode_json_object, ctx.body, server.max_json_depth)
    else:
        ctx.raw = decode_json_object(ctx.body, server.max_json_depth)
    model = ctx.raw.get("model")
    # Recorded even when validation refuses it: never more than a name's worth.
    ctx.model = model[:MAX_MODEL_NAME] if isinstance(model, str) else ""
    req = convert(ctx.raw, typ)
    ctx.raw.pop("seawall", None)  # the gateway's own options never go upstream
    ctx.raw.pop("rag", None)
    ctx.raw.pop("prompt", None)
    return req


def _sse(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _is_usage_only(chunk: Chunk) -> bool:
    return "usage" in chunk and not chunk.get("choices")


def _encode(item: StreamItem, want_usage: bool) -> bytes:
    """SSE bytes for one chunk or batch; drops the usage chunk we asked
    upstream for when the client did not. A batch as the upstream sent it
    goes out as it came (orjson would write the same JSON, ~1 us a chunk)."""
    if type(item) is RawBatch and (want_usage or not any(_is_usage_only(c) for c in item)):
        return item.sse
    if isinstance(item, list):
        return b"".join(_sse(c) for c in item if want_usage or not _is_usage_only(c))
    chunk: Chunk = item
    return _sse(chunk) if want_usage or not _is_usage_only(chunk) else b""


async def chat_completions(request: Request) -> Response:
    svc = _services(request)
    ctx = _context(request, "chat.completions")
    current_trace_id.set(ctx.trace_id)
    try:
        async with svc.pipeline.serve(ctx) as serving:
            return await _chat(request, ctx, svc, serving)
    except SeawallError as e:
        return _fail(ctx, e)


async def _chat(request: Request, ctx: RequestContext, svc: Services,
                serving: Serving) -> Response:
    req: ChatCompletionRequest = await _parse(request, ctx, svc, ChatCompletionRequest)
    ctx.request = req
    if req.seawall is not None and req.seawall.prompt_version is not None:
        ctx.prompt_version = req.seawall.prompt_version
    stream = await svc.pipeline.open_stream(ctx)

    if not req.stream:
        if not await run_to_end(request, ctx, stream):  # client went away; nobody to answer
            return Response(status_code=499)
        completion = ctx.gatherer.completion()
        if "usage" not in completion:
            completion["usage"] = await svc.estimate_usage(ctx)
        if ctx.rag is not None:  # an extension field: the OpenAI SDK keeps unknown fields
            completion["citations"] = await ctx.rag.answer_citations(ctx.gatherer.text)
        return Response(orjson.dumps(completion), media_type="application/json",
                        headers=_headers(ctx))

    first = await first_item(request, stream)
    if ctx.error is not None:  # the client left before the first token
        return Response(status_code=499)
    return sse_answer(svc, ctx, serving, stream,
                      _events(ctx, svc, first, stream, req.wants_usage_chunk), _headers(ctx),
                      on_cut=lambda: _cut_events(ctx))


async def run_to_end(request: Request, ctx: RequestContext,
                     stream: AsyncIterator[StreamItem]) -> bool:
    """Drive a non-streamed answer to its end; False if the client left."""
    async with DisconnectWatch(request.receive):
        async for _ in stream:
            pass
    return ctx.error is None


async def first_item(request: Request, stream: AsyncIterator[StreamItem]) -> StreamItem | None:
    """A stream's first item, read before the response starts, so a failure
    before any output is a proper HTTP error, not a 200 stream carrying one."""
    try:
        async with DisconnectWatch(request.receive):
            return await anext(stream)
    except StopAsyncIteration:
        pass
    return None  # ended empty, or the client left (ctx.error says so)


def sse_answer(svc: Services, ctx: RequestContext, serving: Serving,
               stream: AsyncIterator[StreamItem], events: AsyncIterator[bytes],
               headers: dict[str, str], on_cut: Callable[[], bytes]) -> SSEResponse:
    """The SSE response that owns the request from here on: it closes the
    stream and finishes the request when it ends, however it ends, and is
    ended with ``on_cut`` at the drain deadline."""

    async def close() -> None:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
        await svc.pipeline.finish(ctx)  # a no-op when the stream already finished it

    response = SSEResponse(events, headers, on_close=close, live=svc.live_streams,
                           on_cut=on_cut)
    serving.hand_off()
    return response


def _cut_events(ctx: RequestContext) -> bytes:
    """How a stream cut by shutdown ends: as one cut by its upstream does, a
    ``finish_reason: "error"`` chunk and an error event, no ``[DONE]``."""
    g = ctx.gatherer
    err = ShuttingDown("The gateway shut down before the answer ended "
                       "(shutdown.drain_timeout_s ran out); retry.", retry_after=1.0)
    chunk = make_chunk(g.id or "", g.model, g.created or int(time.time()), finish_reason="error")
    return _sse(chunk) + b"data: " + err.body() + b"\n\n"


def _with_citations(item: StreamItem, citations: list[dict[str, Any]]) -> StreamItem:
    """The first chunk, carrying the sources (a copy: chunks may be shared with
    other requests on the same cache flight)."""
    if isinstance(item, list):
        return [{**item[0], "citations": citations}, *item[1:]] if item else item
    return {**item, "citations": citations}


async def _events(ctx: RequestContext, svc: Services, first: StreamItem | None,
                  stream: AsyncIterator[StreamItem], want_usage: bool) -> AsyncIterator[bytes]:
    if first is not None and ctx.rag is not None:
        first = _with_citations(first, ctx.rag.citations())
    try:
        if first is not None and (data := _encode(first, want_usage)):
            yield data
        async for item in stream:
            if data := _encode(item, want_usage):
                yield data
        if want_usage and ctx.gatherer.usage is None:
            u = await svc.estimate_usage(ctx)
            g = ctx.gatherer
            yield _sse(usage_chunk(g.id or "", g.model, g.created or 0,
                                   u["prompt_tokens"], u["completion_tokens"]))
        yield DONE
    except SeawallError as e:
        # Output was already sent: end with an explicit error event and no
        # [DONE], so no client mistakes a cut answer for a complete one.
        yield b"data: " + e.body() + b"\n\n"
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


async def embeddings(request: Request) -> Response:
    svc = _services(request)
    ctx = _context(request, "embeddings")
    current_trace_id.set(ctx.trace_id)
    try:
        async with svc.pipeline.serve(ctx):
            req: EmbeddingRequest = await _parse(request, ctx, svc, EmbeddingRequest)
            await svc.pipeline.call(ctx)
    except SeawallError as e:
        return _fail(ctx, e)
    return json_response(embedding_body(ctx, req), headers=_headers(ctx))


def embedding_body(ctx: RequestContext, req: EmbeddingRequest) -> dict[str, Any]:
    """The embeddings answer for a served request (also a batch line's)."""
    vectors = ctx.result.vectors
    if req.dimensions is not None:
        # Matryoshka-style truncation then re-normalisation, as OpenAI does.
        arr = np.asarray(vectors, dtype=np.float32)[:, : req.dimensions]
        arr /= np.linalg.norm(arr, axis=1, keepdims=True) + 1e-12
        vectors = arr.tolist()
    data = []
    for i, v in enumerate(vectors):
        emb: Any = v
        if req.encoding_format == "base64":
            emb = base64.b64encode(np.asarray(v, dtype=np.float32).tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": req.model,
            "usage": {"prompt_tokens": ctx.result.prompt_tokens,
                      "total_tokens": ctx.result.prompt_tokens}}


def _model_entries(svc: Services, ctx: RequestContext) -> list[dict[str, Any]]:
    """Every model and route the caller may name (its key's --models), as
    OpenAI's model objects."""
    data = [{"id": name, "object": "model", "created": svc.started_at,
             "owned_by": m.deployments[0].provider.name}
            for name, m in svc.registry.models.items()]
    data += [{"id": name, "object": "model", "created": svc.started_at,
              "owned_by": "seawall", "tiers": r.tiers}
             for name, r in svc.settings.routes.items()]
    return [m for m in data if may_use_model(ctx, str(m["id"]))]


async def list_models(request: Request) -> Response:
    svc = _services(request)
    ctx = _context(request, "models")
    try:
        async with svc.pipeline.serve(ctx):
            data = _model_entries(svc, ctx)
    except SeawallError as e:
        return _fail(ctx, e)
    return json_response({"object": "list", "data": data}, headers=_headers(ctx))


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: the same object as the list's entry, or 404."""
    svc = _services(request)
    ctx = _context(request, "models")
    model_id: str = request.path_params["model_id"]
    try:
        async with svc.pipeline.serve(ctx):
            found = next((m for m in _model_entries(svc, ctx) if m["id"] == model_id), None)
            if found is None:
                shown = model_id[:MAX_MODEL_NAME]
                raise ModelNotFound(f"The model {shown!r} does not exist on this gateway; "
                                    "GET /v1/models lists the models it serves.",
                                    param="model")
    except SeawallError as e:
        return _fail(ctx, e)
    return json_response(found, headers=_headers(ctx))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    # ``:path``: model ids may contain slashes ("org/model").
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
