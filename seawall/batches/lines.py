"""One batch line through the same pipeline as its endpoint.

A line is served as the route would serve the same body, with the batch
creator's identity (looked up again, so a revoked key stops its batch): auth
context, limits and budgets, experiments, prompts, routing, RAG, cache,
resilience and records all apply. Streaming is forced off.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from seawall.api.wire import MAX_MODEL_NAME, ChatCompletionRequest, EmbeddingRequest, convert
from seawall.errors import AuthenticationFailed, SeawallError
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import ANONYMOUS_TENANT, MASTER

if TYPE_CHECKING:
    from seawall.app import Services

ENDPOINTS = {"/v1/chat/completions": "chat.completions", "/v1/embeddings": "embeddings"}


def auth_of(ctx: RequestContext) -> dict[str, Any]:
    """Who is creating a batch, as stored with it (a key's hash, never a secret)."""
    key = ctx.key
    if key is MASTER:
        return {"tenant": ctx.tenant, "master": True}
    if key is not None:
        return {"tenant": ctx.tenant, "key_hash": key.key_hash}
    return {"tenant": ctx.tenant or ANONYMOUS_TENANT}


async def _identify(svc: Services, ctx: RequestContext, auth: dict[str, Any]) -> None:
    ctx.tenant = auth["tenant"]
    ctx.authenticated = True  # AuthStage lets it through as this identity
    if auth.get("master"):
        ctx.key = MASTER
    elif auth.get("key_hash"):
        key = await svc.key_store.key_by_hash(auth["key_hash"])
        if key is None or not key.active:
            raise AuthenticationFailed("The API key that created this batch has been revoked.")
        if key.expired(time.time()):
            raise AuthenticationFailed("The API key that created this batch has expired.")
        ctx.key = key


async def answer(svc: Services, path: str, body: dict[str, Any],
                 auth: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """(status code, response body, request id) for one line's body."""
    from seawall.api.openai_routes import embedding_body

    ctx = RequestContext(endpoint=ENDPOINTS[path])
    try:
        await _identify(svc, ctx, auth)  # before serve(): its auth stage sees the tenant
        async with svc.pipeline.serve(ctx):
            ctx.raw = body
            ctx.body = orjson.dumps(body)
            model = body.get("model")
            ctx.model = model[:MAX_MODEL_NAME] if isinstance(model, str) else ""
            if ctx.endpoint == "embeddings":
                emb: EmbeddingRequest = convert(body, EmbeddingRequest)
                await svc.pipeline.call(ctx)
                return 200, embedding_body(ctx, emb), ctx.trace_id
            body["stream"] = False
            body.pop("stream_options", None)
            req: ChatCompletionRequest = convert(body, ChatCompletionRequest)
            for own in ("seawall", "rag", "prompt"):  # the gateway's options never go upstream
                body.pop(own, None)
            ctx.request = req
            if req.seawall is not None and req.seawall.prompt_version is not None:
                ctx.prompt_version = req.seawall.prompt_version
            stream: AsyncIterator[Any] = await svc.pipeline.open_stream(ctx)
            async for _ in stream:
                pass
            if ctx.error is not None:
                raise ctx.error
            completion = ctx.gatherer.completion()
            if "usage" not in completion:
                completion["usage"] = await svc.estimate_usage(ctx)
            if ctx.rag is not None:
                completion["citations"] = await ctx.rag.answer_citations(ctx.gatherer.text)
            return 200, completion, ctx.trace_id
    except SeawallError as e:
        return e.status, orjson.loads(e.body()), ctx.trace_id
