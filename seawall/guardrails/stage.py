"""Guardrails as a pipeline stage: scan the request's text before the model is
called (flag, mask or block), ask the moderation hook, restore placeholders
in the answer (and scan it), and count what was found.

It runs after retrieval (so retrieved sources are masked too) and before the
cache (so the cache keys on, and stores, masked text). A request no policy
applies to costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import Counter

from seawall.api.wire import Message
from seawall.config import GuardrailSettings
from seawall.errors import InvalidRequest, ServiceUnavailable, UpstreamTooLarge
from seawall.guardrails.detectors import Finding
from seawall.guardrails.masking import StreamRestorer, Vault, redacted, replace
from seawall.guardrails.moderation import Moderation
from seawall.guardrails.policy import Policies, Policy, Side
from seawall.guardrails.scanner import scan_texts
from seawall.guardrails.texts import Slot, embedding_slots, message_slots, rewrite
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.providers.base import Chunk, Gatherer, StreamItem

log = logging.getLogger("seawall.guardrails")


class GuardrailBlocked(InvalidRequest):
    code = "guardrail_blocked"


@dataclass(slots=True)
class GuardState:
    """What the guardrails did for one request (kept in its trace record)."""

    policy: Policy
    vault: Vault | None = None
    findings: dict[tuple[str, str, str], int] = field(default_factory=dict)
    moderation: str | None = None  # "pass", "flagged", "blocked", "error"
    categories: tuple[str, ...] = ()
    output_scanned: bool = False
    # The answer as the upstream gave it (placeholders, nothing redacted), when
    # the client's differs: what the cache must store, never the restored one.
    upstream: Gatherer | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"findings": [
            {"direction": d, "detector": det, "action": a, "count": n}
            for (d, det, a), n in sorted(self.findings.items())]}
        if self.vault:
            out["masked"] = len(self.vault.by_token)
        if self.moderation is not None:
            out["moderation"] = self.moderation
            if self.categories:
                out["categories"] = list(self.categories)
        return out


def _what(detectors: list[str]) -> str:
    return ", ".join(detectors)


class GuardrailStage:
    name = "guardrails"
    traced = True

    def __init__(self, settings: GuardrailSettings, policies: Policies, metrics: Metrics,
                 moderation: Moderation | None = None,
                 max_answer_chars: int = 8_000_000) -> None:
        self.settings = settings
        self.policies = policies
        self.moderation = moderation
        self.max_answer_chars = max_answer_chars
        self.traced = policies.configured  # no span per request when nothing can apply
        self._findings = Counter(
            "seawall_guardrail_findings", "Values found by guardrail detectors, by detector, "
            "action taken and direction (input/output).", ["detector", "action", "direction"],
            registry=metrics.registry)

    # -- before the model --------------------------------------------------------
    async def before(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None:
        if not self.policies.configured or ctx.raw is None:
            return None
        chat = ctx.endpoint in CHAT_ENDPOINTS
        if not chat and ctx.endpoint != "embeddings":
            return None
        # A routed request: the route's own policy if it has one, else its tier model's.
        model = ctx.model
        if ctx.route is not None and ctx.route.route in self.settings.models:
            model = ctx.route.route
        policy = self.policies.of(model, ctx.key.name if ctx.key is not None else None)
        if not policy.active:
            return None
        state = ctx.guard = GuardState(policy)
        side = policy.input
        if side.active:
            await self._input(ctx, state, side, chat)
        if policy.moderate and chat and self.moderation is not None:
            await self._moderate(ctx, state)
        return None

    def _slots(self, ctx: RequestContext, chat: bool) -> list[Slot]:
        assert ctx.raw is not None
        return message_slots(ctx.raw["messages"]) if chat else embedding_slots(ctx.raw)

    async def _input(self, ctx: RequestContext, state: GuardState, side: Side,
                     chat: bool) -> None:
        slots = self._slots(ctx, chat)
        if not slots:
            return
        texts = [box[key] for box, key in slots]
        s = self.settings
        acting = side.has("mask") or side.has("block")
        total = sum(map(len, texts))
        if acting and total > s.max_scan_chars:
            raise InvalidRequest(
                f"The request's text ({total} characters) is longer than the guardrails scan "
                f"({s.max_scan_chars} characters, guardrails.max_scan_chars); send less text.",
                status=413, code="guardrail_scan_limit")
        found, _ = await scan_texts(texts, side.find, s.max_scan_chars, s.thread_chars)
        seen = self._count(state, "input", side, found)
        blocked = {d for d in seen if side.actions[d] == "block"}
        mask = any(side.actions[d] == "mask" for d in seen)
        if blocked:
            raise GuardrailBlocked(
                f"The request was blocked by a guardrail: it contains {_what(sorted(blocked))} "
                "(guardrails input policy). Remove it and retry.", param="messages"
                if chat else "input")
        if mask:
            await self._mask(ctx, state, side, chat, found, total)

    @staticmethod
    def _masked(raw: dict[str, Any], vault: Vault, side: Side, chat: bool,
                found: list[list[Finding]]) -> tuple[dict[str, Any], list[Message] | None]:
        """A copy of the request with masked values replaced (the client's
        objects are not changed), and its messages typed again."""
        raw = dict(raw)
        key = "messages" if chat else "input"
        raw[key] = copy.deepcopy(raw[key])
        slots = message_slots(raw["messages"]) if chat else embedding_slots(raw)
        rewrite(slots, lambda i, text: vault.mask(
            text, [f for f in found[i] if side.actions[f.detector] == "mask"]))
        messages = msgspec.convert(raw["messages"], list[Message]) if chat else None
        return raw, messages

    async def _mask(self, ctx: RequestContext, state: GuardState, side: Side, chat: bool,
                    found: list[list[Finding]], total: int) -> None:
        assert ctx.raw is not None
        vault = state.vault = Vault()
        if total > self.settings.thread_chars:  # the copy grows with the request
            raw, messages = await asyncio.to_thread(self._masked, ctx.raw, vault, side, chat,
                                                    found)
        else:
            raw, messages = self._masked(ctx.raw, vault, side, chat, found)
        ctx.raw = raw
        if messages is not None and ctx.request is not None:
            ctx.request = msgspec.structs.replace(ctx.request, messages=messages)

    async def _moderate(self, ctx: RequestContext, state: GuardState) -> None:
        assert self.moderation is not None and ctx.raw is not None
        mod = self.moderation.settings
        try:
            verdict = await self.moderation.check(ctx, ctx.raw["messages"])
        except Exception as e:
            state.moderation = "error"
            log.warning("moderation hook failed: %s", type(e).__name__,
                        extra={"trace": ctx.trace_id})
            if not mod.fail_open:
                raise ServiceUnavailable(
                    "The moderation check could not be made, and guardrails.moderation."
                    "fail_open is false; retry shortly.", code="moderation_unavailable",
                    retry_after=1.0) from e
            return
        if not verdict.flagged:
            state.moderation = "pass"
            return
        state.categories = verdict.categories
        self._findings.labels("moderation", mod.action, "input").inc()
        if mod.action == "block":
            state.moderation = "blocked"
            cats = f" ({_what(list(verdict.categories))})" if verdict.categories else ""
            raise GuardrailBlocked(f"The request was blocked by the moderation guardrail{cats}.",
                                   param="messages")
        state.moderation = "flagged"

    def _count(self, state: GuardState, direction: str, side: Side,
               found: list[list[Finding]], action: str | None = None) -> set[str]:
        """Record the findings (state and metric, once per detector); the
        detectors seen. ``action``: the one taken, when not the policy's."""
        per: dict[str, int] = {}
        for hits in found:
            for f in hits:
                per[f.detector] = per.get(f.detector, 0) + 1
        for detector, n in per.items():
            act = action or side.actions[detector]
            k = (direction, detector, act)
            state.findings[k] = state.findings.get(k, 0) + n
            self._findings.labels(detector, act, direction).inc(n)
        return set(per)

    # -- the answer ---------------------------------------------------------------
    def wrap(self, ctx: RequestContext,
             stream: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
        state = ctx.guard
        if state is None:
            return stream
        out = state.policy.output
        if out.has("mask") or out.has("block"):
            state.upstream = Gatherer()
            return self._buffered(ctx, state, stream)
        if state.vault:
            state.upstream = Gatherer()
            return _restored(state.vault, stream, state.upstream)
        return stream

    async def _buffered(self, ctx: RequestContext, state: GuardState,
                        stream: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
        """The whole answer, scanned before any of it is sent: output mask and
        block cannot let a value through first (a stream loses its
        incremental delivery for such a policy; docs/guardrails.md)."""
        chunks: list[Chunk] = []
        texts: dict[int, list[str]] = {}
        size = 0
        upstream = state.upstream
        async for item in stream:
            if upstream is not None:
                upstream.add_item(item)
            for c in item if isinstance(item, list) else (item,):
                chunks.append(c)
                for ch in c.get("choices") or ():
                    content = (ch.get("delta") or {}).get("content")
                    if type(content) is str and content:
                        texts.setdefault(ch.get("index", 0), []).append(content)
                        size += len(content)
                if size > self.max_answer_chars:
                    raise UpstreamTooLarge(f"The answer exceeds {self.max_answer_chars} "
                                           "characters (server.max_answer_chars).")
        order = sorted(texts)
        whole = ["".join(texts[i]) for i in order]
        side = state.policy.output
        s = self.settings
        found, _ = await scan_texts(whole, side.find, s.max_scan_chars, s.thread_chars)
        state.output_scanned = True
        seen = self._count(state, "output", side, found)
        blocked = {d for d in seen if side.actions[d] == "block"}
        if blocked:
            raise GuardrailBlocked(
                f"The answer was blocked by a guardrail: it contains {_what(sorted(blocked))} "
                "(guardrails output policy).")
        vault = state.vault
        final: dict[int, str] = {}
        for i, text, hits in zip(order, whole, found, strict=True):
            masked = replace(text, [f for f in hits if side.actions[f.detector] == "mask"],
                             lambda f, v: redacted(f.detector))
            final[i] = vault.restore(masked) if vault else masked
        for c in chunks:
            yield _with_text(c, final)

    async def after(self, ctx: RequestContext) -> None:
        state = ctx.guard
        if state is None:
            return
        text = ctx.gatherer.text if ctx.endpoint in CHAT_ENDPOINTS else ""
        if not text:
            return
        side = state.policy.output
        if side.active and not state.output_scanned:  # flag only: the answer has gone
            s = self.settings
            found, _ = await scan_texts([text], side.find, s.max_scan_chars, s.thread_chars)
            self._count(state, "output", side, found, action="flag")
        mod = self.moderation
        if (state.policy.moderate and mod is not None and mod.settings.check_output
                and ctx.error is None):
            try:
                verdict = await mod.check(ctx, [{"role": "assistant", "content": text}])
            except Exception as e:
                log.warning("moderation hook failed on the answer: %s", type(e).__name__,
                            extra={"trace": ctx.trace_id})
                return
            if verdict.flagged:
                self._findings.labels("moderation", "flag", "output").inc()
                k = ("output", "moderation", "flag")
                state.findings[k] = state.findings.get(k, 0) + 1


def _with_text(chunk: Chunk, final: dict[int, str]) -> Chunk:
    """``chunk`` with each choice's first content delta replaced by that
    choice's whole final text and later ones emptied (``final`` is consumed)."""
    choices = chunk.get("choices")
    if not choices:
        return chunk
    new = []
    for ch in choices:
        delta = ch.get("delta") or {}
        content = delta.get("content")
        if type(content) is str and content:
            i = ch.get("index", 0)
            ch = {**ch, "delta": {**delta, "content": final.pop(i, "")}}
        new.append(ch)
    return {**chunk, "choices": new}


async def _restored(vault: Vault, stream: AsyncIterator[StreamItem],
                    upstream: Gatherer | None = None) -> AsyncIterator[StreamItem]:
    r = StreamRestorer(vault)
    last: Chunk | None = None
    async for item in stream:
        if upstream is not None:
            upstream.add_item(item)
        if isinstance(item, list):
            batch = [_restore_chunk(r, c) for c in item]
            if item:
                last = item[-1]
            if any(b is not c for b, c in zip(batch, item, strict=True)):
                yield batch  # a plain list: encoded afresh, not the upstream's bytes
            else:
                yield item
        else:
            last = item
            yield _restore_chunk(r, item)
    if r.pending and last is not None:  # the stream ended without a finish_reason
        choices = [{"index": i, "delta": {"content": r.flush((i, t))}, "finish_reason": None}
                   for i, t in list(r.pending) if t == -1]
        if choices:
            yield {**last, "choices": choices}


def _restore_chunk(r: StreamRestorer, chunk: Chunk) -> Chunk:
    choices = chunk.get("choices")
    if not choices:
        return chunk
    new: list[dict[str, Any]] | None = None
    for n, ch in enumerate(choices):
        delta = ch.get("delta")
        fin = ch.get("finish_reason")
        content = delta.get("content") if delta else None
        calls = delta.get("tool_calls") if delta else None
        if content is None and not calls and not (fin and r.pending):
            continue
        i = ch.get("index", 0)
        d = dict(delta or {})
        if type(content) is str:
            d["content"] = r.feed((i, -1), content)
        if calls:
            d["tool_calls"] = [_restore_call(r, i, c) for c in calls]
        if fin:
            tail = r.flush((i, -1))
            if tail:
                d["content"] = (d.get("content") or "") + tail
            for (ci, k) in [w for w in r.pending if w[0] == i]:
                d.setdefault("tool_calls", []).append(
                    {"index": k, "function": {"arguments": r.flush((ci, k))}})
        if new is None:
            new = list(choices)
        new[n] = {**ch, "delta": d}
    return chunk if new is None else {**chunk, "choices": new}


def _restore_call(r: StreamRestorer, i: int, call: Any) -> Any:
    fn = call.get("function") if type(call) is dict else None
    if type(fn) is not dict:
        return call
    args = fn.get("arguments")
    if type(args) is not str:
        return call
    return {**call, "function": {**fn, "arguments": r.feed((i, call.get("index", 0)), args)}}
