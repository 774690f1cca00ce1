"""The cache as a pipeline stage: look up before the model is called, lead
the upstream call as a flight others can join, account and store after."""

from __future__ import annotations

from collections.abc import AsyncIterator

from seawall.cache.service import ResponseCache
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.providers.base import StreamItem


class CacheStage:
    name = "cache"
    traced = True

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        # No span per request when only keys can turn the cache on (rare).
        self.traced = cache.configured

    async def before(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None:
        if ctx.endpoint not in CHAT_ENDPOINTS:
            return None
        return await self.cache.lookup(ctx)

    def wrap(self, ctx: RequestContext,
             stream: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
        return self.cache.lead(ctx, stream)

    async def after(self, ctx: RequestContext) -> None:
        self.cache.finish(ctx)
