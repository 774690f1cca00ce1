"""Retrieval as a pipeline stage: find the chunks for the question, pack them
into a system message, and send the model that prompt.

It runs before the cache on purpose: the cache then keys on the prompt the
model actually sees, sources included, so a cached answer can never outlive
the documents it was grounded in (re-ingesting a document changes the
context, hence the key).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from seawall.api.wire import Message, RagOptions
from seawall.config import Settings
from seawall.errors import InvalidRequest
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.pipeline.permissions import require_collection
from seawall.rag.packing import Source, cited_numbers, pack, render
from seawall.rag.service import RagService, SearchRequest

__all__ = ["RagState", "RetrieveStage"]

_SCAN_ON_LOOP_CHARS = 64 * 1024  # a regex pass over this takes well under 1 ms


@dataclass(slots=True)
class RagState:
    collection: str
    query: str
    top_k: int
    sources: list[Source]
    candidates: int  # chunks the search returned, before packing
    system: str  # the rendered system message
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_error: str | None = None

    def citations(self, answer: str | None = None) -> list[dict[str, Any]]:
        """One entry per source given to the model; with the answer, whether it cited it."""
        cited = cited_numbers(answer) if answer is not None else None
        return [s.citation(None if cited is None else s.number in cited)
                for s in self.sources]

    async def answer_citations(self, answer: str) -> list[dict[str, Any]]:
        """:meth:`citations` of a finished answer; a long answer (up to
        ``server.max_answer_chars``) is scanned on a thread, not the loop."""
        if len(answer) <= _SCAN_ON_LOOP_CHARS:
            return self.citations(answer)
        return await asyncio.to_thread(self.citations, answer)

    def record(self, with_text: bool) -> dict[str, Any]:
        """The trace record's ``rag`` field."""
        chunks = []
        for s in self.sources:
            c = s.citation()
            c["tokens"] = s.tokens
            if with_text:
                c["text"] = s.chunk.text
            chunks.append(c)
        out: dict[str, Any] = {"collection": self.collection, "top_k": self.top_k,
                               "candidates": self.candidates, "chunks": chunks,
                               "context_tokens": sum(s.tokens for s in self.sources),
                               "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}
        if self.rerank_error is not None:
            out["rerank_error"] = self.rerank_error
        if with_text:
            out["query"] = self.query
            out["system"] = self.system
        return out


def _last_user_text(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            if isinstance(m.content, str):
                return m.content
            if isinstance(m.content, list):
                return " ".join(p.get("text", "") for p in m.content
                                if isinstance(p, dict) and p.get("type") == "text")
    return ""


class RetrieveStage:
    name = "retrieve"
    traced = False  # a span only when it ran (added in before)

    def __init__(self, settings: Settings, rag: RagService) -> None:
        self.settings = settings
        self.rag = rag
        self.count = rag.tokens.count

    def _options(self, ctx: RequestContext) -> RagOptions | None:
        req = ctx.request
        asked = req.rag if req is not None else None
        model = self.settings.models.get(ctx.model)
        route = model.rag if model is not None else None
        if route is None:
            return asked
        fixed = RagOptions(collection=route.collection, top_k=route.top_k, filter=route.filter)
        if asked is None:
            return fixed
        # The request may tune the route's retrieval, not switch its collection.
        return msgspec.structs.replace(asked, collection=route.collection,
                                       filter=asked.filter or route.filter)

    async def before(self, ctx: RequestContext) -> None:
        if ctx.endpoint not in CHAT_ENDPOINTS:
            return None
        opts = self._options(ctx)
        if opts is None:
            return None
        require_collection(ctx, opts.collection)  # the key may read it (--collections-read)
        t0 = time.time_ns()
        req = ctx.request
        assert req is not None and ctx.raw is not None
        query = opts.query or _last_user_text(req.messages)
        if not query.strip():
            raise InvalidRequest("rag needs a question: the last user message is empty "
                                 "(or give rag.query)", param="rag.query")
        cfg = self.settings.rag
        top_k = opts.top_k or cfg.top_k
        result = await self.rag.search(ctx.tenant, opts.collection, SearchRequest(
            query=query, top_k=top_k, filter=opts.filter, mode=opts.mode, fusion=opts.fusion,
            rerank=opts.rerank))
        sources = pack([(h.chunk, h.score) for h in result.hits],
                       opts.context_tokens or cfg.context_tokens, top_k, self.count)
        system = render(cfg.template, sources)
        # After the caller's own leading system messages, before the conversation.
        lead = 0
        while lead < len(req.messages) and req.messages[lead].role in ("system", "developer"):
            lead += 1
        raw_messages = list(ctx.raw["messages"])
        raw_messages.insert(lead, {"role": "system", "content": system})
        ctx.raw["messages"] = raw_messages
        messages = list(req.messages)
        messages.insert(lead, Message(role="system", content=system))
        ctx.request = msgspec.structs.replace(req, messages=messages, rag=None)
        ctx.rag = RagState(opts.collection, query, top_k, sources, len(result.hits), system,
                           result.timings_ms, result.rerank_error)
        ctx.span(self.name, t0)
        return None

    async def after(self, ctx: RequestContext) -> None:
        return None
