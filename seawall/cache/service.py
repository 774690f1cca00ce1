"""The response cache: exact lookups, semantic lookups behind the false-hit
guard, single-flight coalescing, and storing finished answers.

Order of a lookup (docs/caching.md): policy (may this request use the
cache at all?) → exact entry → an identical request in flight (join it) →
semantic neighbours, best first, each checked by the guard and the verifier → miss. A miss
becomes the leader of a flight that identical requests join; its answer is
stored once complete, off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from seawall.cache.flight import Flight
from seawall.cache.guard import FalseHitGuard
from seawall.cache.keys import CacheKeys, cache_keys
from seawall.cache.model_verify import Ask, ModelVerifier
from seawall.cache.policy import Controls, ModelCachePolicy, bypass_reason, parse_cache_control
from seawall.cache.replay import replay, replay_chunks
from seawall.cache.store import CachedAnswer, CacheStore, NewEntry, Vector
from seawall.cache.verify import CandidateVerifier
from seawall.config import CacheSettings, Settings
from seawall.ml.embedder import Embedder
from seawall.ml.tokens import is_long
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext
from seawall.providers.base import Chunk, Gatherer, StreamItem

log = logging.getLogger("seawall.cache")

# Finish reasons of answers worth keeping: complete ones (``length`` is complete
# for the max_tokens asked, which is part of the key).
_STORABLE_FINISH = frozenset({"stop", "length", "tool_calls", "function_call"})


@dataclass(slots=True)
class CacheState:
    """What the cache did for one request (read by the headers and the record)."""

    status: str  # hit | semantic-hit | coalesced | stale | miss | quarantined | bypass
    policy: ModelCachePolicy
    controls: Controls
    keys: CacheKeys | None = None
    reason: str | None = None  # why bypassed
    vector: Vector | None = None
    answer: CachedAnswer | None = None
    flight: Flight | None = None
    leader: bool = False
    guard_failed: str | None = None  # the guard/verifier check that refused the best candidate
    quarantined: CachedAnswer | None = None  # the entry it would have served, refused
    saved_tokens: int = 0
    saved_usd: float = 0.0

    @property
    def served(self) -> bool:
        return self.status in ("hit", "semantic-hit", "coalesced", "stale")


class ResponseCache:
    def __init__(self, settings: Settings, store: CacheStore, metrics: Metrics,
                 count_tokens: Callable[[list[Any], str], tuple[int, int]],
                 ask: Ask | None = None) -> None:
        self.settings: CacheSettings = settings.cache
        self.store = store
        self.metrics = metrics
        self.count_tokens = count_tokens
        self.policies = {name: ModelCachePolicy.resolve(settings.cache, m.cache)
                         for name, m in settings.models.items() if m.kind == "chat"}
        # Keys may turn the cache on (`seawall keys create --cache`), so it is
        # always ready; "configured" is whether any model has it on by default.
        self.configured = any(p.enabled for p in self.policies.values())
        self.guards: dict[tuple[str, ...] | None, FalseHitGuard] = {
            p.guard: FalseHitGuard(p.guard) for p in self.policies.values()}
        self.verifiers: dict[tuple[str, ...], CandidateVerifier] = {
            p.verify: CandidateVerifier(p.verify) for p in self.policies.values()}
        # The verifier model (cache.semantic.verify.model), called through ``ask``.
        self.model_verifier = (ModelVerifier(ask, settings.cache.semantic.verify.timeout_s)
                               if ask is not None else None)
        self.embedder = Embedder()
        self._embed_slots = asyncio.Semaphore(2)
        self.flights: dict[bytes, Flight] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- life cycle --

    async def start(self) -> None:
        await self.store.open()
        if any(p.enabled and p.semantic for p in self.policies.values()):
            await asyncio.to_thread(self.embedder.warm_up)  # else on first use
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.settle()
        await self.store.close()

    async def settle(self, within_s: float = 10.0) -> None:
        """Wait for answers being stored (at shutdown; tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=within_s)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.store.sweep(time.time())
            except Exception:
                log.exception("cache sweep failed")

    # -- lookup --

    def _decide(self, ctx: RequestContext) -> CacheState | None:
        policy = self.policies.get(ctx.model)
        if policy is None:
            return None
        key_says = ctx.key.cache if ctx.key is not None else None
        if not (policy.enabled if key_says is None or policy.locked else key_says):
            return None
        req = ctx.request
        assert req is not None and ctx.raw is not None
        opts = req.seawall
        controls = parse_cache_control(ctx.cache_control, opts.cache if opts else None)
        state = CacheState(status="bypass", policy=policy, controls=controls)
        state.reason = (bypass_reason(req, self.settings.policy.max_temperature)
                        or (None if controls.write else "no-store"))
        if state.reason is None:
            user = req.user if self.settings.policy.per_user else None
            arm = ctx.experiment.label if ctx.experiment is not None else None
            state.keys = cache_keys(ctx.raw, ctx.tenant, ctx.prompt_version, user, arm)
        return state

    def _semantic_text(self, ctx: RequestContext, state: CacheState) -> str | None:
        assert state.keys is not None and ctx.request is not None
        text = state.keys.text
        if (not state.policy.semantic or text is None
                or len(text) > self.settings.semantic.max_chars):
            return None
        if ctx.request.tools and not self.settings.policy.semantic_with_tools:
            return None
        return text

    async def embed(self, text: str) -> Vector:
        async with self._embed_slots:
            vectors = await asyncio.to_thread(self.embedder.embed, [text])
        return np.ascontiguousarray(vectors[0], dtype=np.float32)

    async def lookup(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None:
        """The cached answer's stream, a flight to join, or None (ask upstream)."""
        state = self._decide(ctx)
        ctx.cache = state
        if state is None or state.keys is None:
            return None
        keys = state.keys
        if state.controls.read:
            now = time.time()
            max_age = state.controls.max_age_s
            answer = await self.store.get(keys.exact, now, max_age)
            if answer is not None and answer.quarantined is None:
                return self._serve(state, "hit", answer)
            state.quarantined = answer  # rejected by feedback or a judge: not served
            flight = self.flights.get(keys.exact) if self.settings.coalesce else None
            if flight is not None:
                state.status, state.flight = "coalesced", flight
                return flight.read()
            text = self._semantic_text(ctx, state)
            if text is not None and answer is None and self.store.may_have_scope(keys.scope):
                state.vector = await self.embed(text)
                found = await self.store.nearest(
                    keys.scope, state.vector, self.settings.semantic.candidates,
                    state.policy.threshold, now, max_age)
                guard = self.guards[state.policy.guard]
                verifier = self.verifiers[state.policy.verify]
                judge = state.policy.verify_model if self.model_verifier is not None else None
                last = False
                for candidate in found:
                    if candidate.quarantined is not None:
                        state.quarantined = state.quarantined or candidate
                        continue
                    failed = guard.check(text, candidate.text or "")
                    if failed is None and (verifier.checks or judge):
                        started = time.perf_counter()
                        failed = verifier.check(text, candidate.text or "")
                        if failed is None and judge is not None:
                            assert self.model_verifier is not None
                            failed = await self.model_verifier.check(
                                judge, text, candidate.text or "")
                            # One model call per lookup: if it refused, no weaker candidate
                            # is asked about (nor served unasked).
                            last = True
                        self.metrics.cache_verify_seconds.observe(time.perf_counter() - started)
                    if failed is None:
                        self.store.touch(candidate.id, now)
                        return self._serve(state, "semantic-hit", candidate)
                    state.guard_failed = state.guard_failed or failed
                    self.metrics.cache_guard_rejections.labels(
                        self.metrics.model_label(ctx.model), failed).inc()
                    if last:
                        break
            state.status = "miss" if state.quarantined is None else "quarantined"
        else:
            state.reason = "no-cache"
        if self.settings.coalesce and keys.exact not in self.flights:
            state.flight, state.leader = Flight(keys.exact, ctx), True
            self.flights[keys.exact] = state.flight
        return None

    async def stale_answer(self, ctx: RequestContext) -> list[Chunk] | None:
        """For the router's last resort: the stored answer to this exact request,
        whatever its controls asked, expired up to ``stale_if_error_s`` ago."""
        state: CacheState | None = ctx.cache
        if state is None or state.keys is None:
            return None  # no cache for this request, or no-store
        answer = await self.store.get(state.keys.exact,
                                      time.time() - self.settings.stale_if_error_s, None)
        if answer is None or answer.quarantined is not None:
            return None
        state.status, state.answer = "stale", answer
        return replay_chunks(answer.completion)

    def _serve(self, state: CacheState, status: str,
               answer: CachedAnswer) -> AsyncIterator[StreamItem]:
        state.status, state.answer = status, answer
        return replay(answer.completion)

    def lead(self, ctx: RequestContext, stream: AsyncIterator[StreamItem]
             ) -> AsyncIterator[StreamItem]:
        """The upstream answer of a miss: run it as a flight others can join."""
        state: CacheState | None = ctx.cache
        if state is None or not state.leader or state.flight is None:
            return stream
        state.flight.start(stream)
        return state.flight.read()

    # -- after the answer --

    def finish(self, ctx: RequestContext) -> None:
        """Account for the request and store its answer if it may be kept."""
        state: CacheState | None = ctx.cache
        if state is None:
            return
        self.metrics.cache_requests.labels(self.metrics.model_label(ctx.model),
                                           state.status.replace("-", "_")).inc()
        if state.served:
            self._account_saved(ctx, state)
            return
        flight = state.flight if state.leader else None
        if flight is not None and ctx.error is not None:
            # The leader's client left; the flight may still have finished (or
            # finish) the answer for others: keep what they got.
            self._spawn(self._store_when_landed(ctx, state, flight))
            return
        # With guardrails masking, the answer as the upstream gave it (placeholders),
        # not as this client got it (its values put back): never store those.
        guard = ctx.guard
        answer = guard.upstream if guard is not None and guard.upstream is not None \
            else ctx.gatherer
        entry = self._entry(ctx, state, answer, failed=ctx.error is not None)
        if entry is not None:
            self._spawn(self._put(*entry, flight))
        elif flight is not None:
            self._land(flight)

    async def _store_when_landed(self, ctx: RequestContext, state: CacheState,
                                 flight: Flight) -> None:
        await flight.landed()
        entry = None
        if flight.complete:
            gathered = Gatherer()
            for item in flight.items:
                gathered.add_item(item)
            entry = self._entry(ctx, state, gathered, failed=False)
        if entry is None:
            self._land(flight)
        else:
            await self._put(*entry, flight)

    def _account_saved(self, ctx: RequestContext, state: CacheState) -> None:
        usage = ctx.gatherer.usage or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        if state.answer is not None:
            state.saved_usd = state.answer.cost_usd
        elif state.flight is not None and state.flight.leader.deployment is not None:
            state.saved_usd = state.flight.leader.deployment.cost(prompt, completion)
        state.saved_tokens = prompt + completion
        self.metrics.cache_saved_tokens.labels(self.metrics.model_label(ctx.model)).inc(state.saved_tokens)
        if state.saved_usd:
            self.metrics.cache_saved_usd.labels(self.metrics.model_label(ctx.model)).inc(state.saved_usd)

    def _entry(self, ctx: RequestContext, state: CacheState, g: Gatherer,
               failed: bool) -> tuple[NewEntry, Callable[[], None] | None] | None:
        """The entry to store, if the answer ``g`` is complete and safe to keep,
        and, when its tokens are still to be counted, the function that counts
        them (off the event loop, in :meth:`_put`)."""
        if (failed or ctx.degraded is not None or not state.controls.write
                or state.keys is None or g.finish_reason not in _STORABLE_FINISH):
            return None
        completion = g.completion()
        if len(completion["choices"]) != 1:
            return None
        message = completion["choices"][0]["message"]
        if not message.get("content") and not message.get("tool_calls"):
            return None
        usage = g.usage or ctx.usage
        dep = ctx.deployment
        text = self._semantic_text(ctx, state)
        entry = NewEntry(
            key=state.keys.exact, scope=state.keys.scope, tenant=ctx.tenant, model=ctx.model,
            prompt_version=ctx.prompt_version, text=text,
            vector=state.vector if text is not None else None, completion=completion,
            prompt_tokens=0, completion_tokens=0, cost_usd=0.0, ttl_s=state.policy.ttl_s,
            trace_id=ctx.trace_id)

        def account(prompt: int, output: int) -> None:
            entry.prompt_tokens, entry.completion_tokens = prompt, output
            entry.cost_usd = dep.cost(prompt, output) if dep is not None else 0.0
            completion["usage"] = {"prompt_tokens": prompt, "completion_tokens": output,
                                   "total_tokens": prompt + output}

        if usage:
            entry.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            entry.completion_tokens = int(usage.get("completion_tokens") or 0)
            entry.cost_usd = (dep.cost(entry.prompt_tokens, entry.completion_tokens)
                              if dep is not None else 0.0)
            completion["usage"] = usage
            return entry, None
        assert ctx.raw is not None
        messages, answer = ctx.raw["messages"], g.text

        def count() -> None:
            account(*self.count_tokens(messages, answer))

        if is_long(answer, len(ctx.body)):
            return entry, count  # counted by _put, in a thread: too long for the event loop
        count()
        return entry, None

    async def _put(self, entry: NewEntry, count: Callable[[], None] | None,
                   flight: Flight | None) -> None:
        try:
            if count is not None:
                await asyncio.to_thread(count)
            if entry.text is not None and entry.vector is None:
                entry.vector = await self.embed(entry.text)
            await self.store.put(entry)
        except Exception:
            log.exception("storing a cache entry failed")
        finally:
            if flight is not None:
                self._land(flight)

    def _land(self, flight: Flight) -> None:
        """The flight is over (and its answer stored): later requests look it up."""
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
