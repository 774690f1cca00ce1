"""The resilient path from a logical model to an answer.

Order of resort for one request (docs/resilience.md):

1. the model's deployments, chosen by its balancing strategy among those
   whose breaker is closed (or half-open with a probe slot), that are not
   cooling down after a 429 and are under their concurrency / RPM / TPM caps;
   a failed deployment is not tried again while another one is untried;
2. the model's ``fallbacks``, in order, the same way;
3. the last model in the chain again, after backoff with full jitter (or the
   Retry-After the upstream sent, if it is short enough);
4. a degraded answer (the cached answer to this exact request, even if
   expired up to ``cache.stale_if_error_s`` ago; a rule; a static answer),
   marked as such;
5. a structured error with Retry-After.

Every attempt after the first takes one token from a process-wide retry
budget. Nothing is sent to the client before an attempt produced content,
so any failure up to then is invisible. A failure after content was sent
ends the stream with ``finish_reason: "error"`` and an error event (or,
with ``resume_streams``, continues on another deployment).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from seawall.api.wire import ChatCompletionRequest, EmbeddingInputs, convert
from seawall.config import ResilienceSettings
from seawall.errors import (
    DeadlineExceeded,
    RateLimited,
    SeawallError,
    ServiceUnavailable,
    UpstreamError,
)
from seawall.observe.records import AttemptRecord
from seawall.providers.base import ChatCall, Chunk, Embeddings, StreamItem, make_chunk
from seawall.providers.registry import Deployment, LogicalModel, ModelRegistry
from seawall.routing.attempt import Attempt, ChatAttempt
from seawall.routing.balancer import choose
from seawall.routing.degraded import DegradedAnswers
from seawall.routing.retry import RetryBudget, Verdict, backoff_s
from seawall.routing.timeouts import Deadlines

if TYPE_CHECKING:
    from seawall.pipeline.context import RequestContext

RESUME_PROMPT = ("Continue your previous answer exactly where it stopped, "
                 "without repeating anything.")


class _Plan:
    """Which deployment to try next for one request, and why it gave up."""

    def __init__(self, router: Router, model: LogicalModel, prefer: str | None = None,
                 deadline: float | None = None) -> None:
        self.router = router
        self.deadline = deadline  # the request's, time.monotonic() clock
        self.prefer = prefer  # a deployment to try first (an experiment's arm), if healthy
        self.chain = model.chain  # the model, then its fallbacks (theirs are not followed)
        self.index = 0
        self.tried: set[Deployment] = set()
        self.failures: list[tuple[Deployment, SeawallError]] = []
        self.skipped: dict[str, str] = {}  # deployment -> why it was not tried
        self.attempts = 0
        self.retries_same = 0
        self.budget_exhausted = False

    def _candidates(self, model: LogicalModel, exclude: set[Deployment]) -> list[Deployment]:
        now = time.monotonic()
        out = []
        for d in model.deployments:
            if d in exclude:
                continue
            why = d.health.unavailable_reason(now)
            if why is None:
                out.append(d)
            else:
                self.skipped[d.name] = why
        return out

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _may_attempt(self) -> bool:
        s = self.router.settings.retries
        if self.attempts >= s.max_attempts or self.out_of_time():
            return False
        if self.attempts > 0 and not self.router.budget.try_spend():
            self.budget_exhausted = True
            self.router.on_budget_refused()
            return False
        return True

    async def next(self) -> Deployment | None:
        """The deployment for the next attempt; None when there is none left."""
        router = self.router
        while self.index < len(self.chain):
            model = self.chain[self.index]
            found = self._candidates(model, self.tried)
            if found:
                if not self._may_attempt():
                    return None
                preferred = [d for d in found if d.name == self.prefer] if self.prefer else ()
                dep = preferred[0] if preferred else choose(found, model.strategy, router.rng)
                self.tried.add(dep)
                self.attempts += 1
                return dep
            if self.index < len(self.chain) - 1:
                self.index += 1
                continue
            return await self._retry_last(model)
        return None

    async def _retry_last(self, model: LogicalModel) -> Deployment | None:
        """Every deployment of the last model was tried: try one again after
        backoff, if one failed in a way worth retrying and it will be able to
        take a request soon enough."""
        if not any(d.logical == model.name for d, _ in self.failures):
            return None
        s = self.router.settings.retries
        now = time.monotonic()
        best: tuple[float, Deployment] | None = None
        for d in model.deployments:
            h = d.health
            if not h.breaker.available() or h.at_concurrency_cap():
                continue
            wait = h.available_in(now)
            if best is None or wait < best[0]:
                best = (wait, d)
        if best is None or best[0] > s.max_retry_after_s:
            return None
        if not self._may_attempt():
            return None
        delay = max(best[0], backoff_s(self.retries_same, s, self.router.rng))
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None  # the wait alone would outlast the request's deadline
        self.retries_same += 1
        if delay > 0:
            await asyncio.sleep(delay)
        if best[1].health.unavailable_reason(time.monotonic()) is not None:
            return None
        self.attempts += 1
        return best[1]

    def hedge_partner(self, primary: Deployment) -> Deployment | None:
        """Another deployment of the same model for a hedged request, if the
        budget allows one more upstream call."""
        model = self.router.registry.models[primary.logical]
        found = self._candidates(model, self.tried | {primary})
        if not found or not self._may_attempt():
            return None
        dep = choose(found, model.strategy, self.router.rng)
        self.tried.add(dep)
        self.attempts += 1
        return dep

    def failed(self, dep: Deployment, err: SeawallError) -> None:
        self.failures.append((dep, err))

    def error(self, first: LogicalModel) -> SeawallError:
        """The honest answer when everything failed."""
        if self.out_of_time():
            tried = "; ".join(f"{d.name}: {e.code}" for d, e in self.failures)
            return DeadlineExceeded(
                f"The request's deadline ran out before {first.name!r} answered"
                f"{f' ({tried})' if tried else ''} (resilience.timeouts.request_s).")
        now = time.monotonic()
        waits = [d.health.available_in(now) for m in self.chain for d in m.deployments]
        retry_after = min(60.0, max(1.0, min(waits) if waits else 1.0))
        budget = "; the retry budget is spent" if self.budget_exhausted else ""
        if not self.failures:
            reasons = ", ".join(f"{n}: {why}" for n, why in self.skipped.items())
            if self.skipped and all(w != "circuit_open" for w in self.skipped.values()):
                return RateLimited(
                    f"Every deployment of {first.name!r} and its fallbacks is at capacity "
                    f"({reasons}); retry after {retry_after:.0f}s.",
                    code="deployments_at_capacity", retry_after=retry_after)
            return ServiceUnavailable(
                f"No deployment of {first.name!r} or its fallbacks can take a request now "
                f"({reasons or 'none configured'}){budget}.",
                code="no_healthy_deployment", retry_after=retry_after)
        last = self.failures[-1][1]
        tried = "; ".join(f"{d.name}: {e.code}" for d, e in self.failures)
        if len({e.code for _, e in self.failures}) == 1:
            # One kind of failure: say exactly that (its status and code).
            if len(self.failures) > 1:
                last.message = f"{last.message} (after {len(self.failures)} attempts{budget})"
            if last.retry_after is None:
                last.retry_after = retry_after
            return last
        return ServiceUnavailable(
            f"All deployments of {first.name!r} and its fallbacks failed ({tried}){budget}.",
            code="all_deployments_failed", retry_after=retry_after)


class StreamCut(UpstreamError):
    """The upstream failed after part of the answer was sent to the client;
    the code is the cause's (e.g. ``upstream_idle_timeout``)."""

    code = "stream_interrupted"


class Router:
    def __init__(self, registry: ModelRegistry, settings: ResilienceSettings,
                 on_budget_refused: Any = None, rng: random.Random | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.budget = RetryBudget(settings.retries)
        self.degraded = DegradedAnswers()
        # Set by the response cache: the stored answer to this request, if any.
        self.stale_answer: Callable[[RequestContext], Awaitable[list[Chunk] | None]] | None = None
        self.rng = rng or random.Random()
        self._on_budget_refused = on_budget_refused
        self._chain_total: dict[str, float] = {}

    def on_budget_refused(self) -> None:
        if self._on_budget_refused is not None:
            self._on_budget_refused()

    def deadline(self, ctx: RequestContext, first: LogicalModel) -> float:
        """The request's deadline on the ``time.monotonic()`` clock: from its
        start, ``timeouts.request_s``, or else twice the longest ``total_s``
        of any deployment in the model's chain (room for one fallback after
        an attempt that used all of its own; retries never add more)."""
        limit = self.settings.timeouts.request_s
        if limit is None:
            limit = self._chain_total.get(first.name)
            if limit is None:
                limit = self._chain_total[first.name] = 2 * max(
                    (d.timeouts.total_s for m in first.chain for d in m.deployments),
                    default=self.settings.timeouts.total_s)
        elapsed = (time.time_ns() - ctx.started_ns) / 1e9
        return time.monotonic() + limit - elapsed

    # -- chat ------------------------------------------------------------------

    def _call(self, ctx: RequestContext, dep: Deployment,
              request: ChatCompletionRequest | None = None,
              raw: dict[str, Any] | None = None) -> ChatCall:
        req = request or ctx.request
        assert req is not None and ctx.raw is not None
        return ChatCall(request=req, raw=raw or ctx.raw, model=dep.upstream_model,
                        stream=req.stream, connect_timeout_s=dep.timeouts.connect_s)

    def _note(self, ctx: RequestContext, rec: AttemptRecord | None) -> None:
        if rec is not None:
            ctx.attempts.append(rec)

    async def chat(self, ctx: RequestContext,
                   first: LogicalModel) -> AsyncGenerator[StreamItem, None]:
        """The answer's chunks, from whichever deployment gives it (see module doc)."""
        self.budget.on_request()
        plan = _Plan(self, first, ctx.prefer_deployment, self.deadline(ctx, first))
        resume: tuple[ChatCompletionRequest, dict[str, Any]] | None = None
        sent_id: str | None = None  # the completion id the client has seen
        while (dep := await plan.next()) is not None:
            request, raw = resume if resume is not None else (None, None)
            att = await self._prime(ctx, plan, dep, request, raw)
            if att is None:
                continue
            ctx.deployment = att.dep
            try:
                items = att.head
                if resume is not None:
                    items = [_continuation(i, sent_id) for i in items if _keep_on_resume(i)]
                for item in items:
                    yield item
                if not att.done:
                    # The rest of the stream. Inlined (not att.next()): two fewer
                    # coroutines per chunk is most of the cost of this layer.
                    it, dl = att.it, att.deadlines
                    assert dl is not None
                    while True:
                        dl.reading()
                        try:
                            more_item = await it.__anext__()
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            dl.check()  # our own timeout: raises UpstreamTimeout instead
                            raise
                        dl.progress()
                        yield more_item if resume is None else _continuation(more_item, sent_id)
            except SeawallError as e:
                verdict, rec = att.failed(e)
                self._note(ctx, rec)
                plan.failed(att.dep, e)
                if verdict is Verdict.FATAL:
                    raise
                sent_id = sent_id or ctx.gatherer.id
                if self.settings.resume_streams and (more := _resumed(ctx)) is not None:
                    resume = more  # continue on the next deployment (or fallback)
                    continue
                yield _cut_chunk(ctx)
                raise StreamCut(f"The answer was cut after it had started: {e.message}",
                                code=e.code) from e
            except BaseException:
                self._note(ctx, att.abandoned())
                raise
            else:
                usage = ctx.gatherer.usage or {}
                self._note(ctx, att.succeeded(int(usage.get("total_tokens") or 0)))
                return
            finally:
                await att.close()
        if resume is not None:
            yield _cut_chunk(ctx)
            raise StreamCut("The answer was cut and no deployment could continue it.")
        if self.stale_answer is not None and (stale := await self.stale_answer(ctx)):
            ctx.degraded = "cache"
            yield stale
            return
        answer = self.degraded.answer(first, ctx.raw)
        if answer is not None:
            ctx.degraded, text = answer
            for chunk in _static_chunks(first.name, text):
                yield chunk
            return
        raise plan.error(first)

    async def _prime(self, ctx: RequestContext, plan: _Plan, dep: Deployment,
                     request: ChatCompletionRequest | None,
                     raw: dict[str, Any] | None) -> ChatAttempt | None:
        """Start an attempt (hedged if configured) and read it up to its first
        content; None if it failed (recorded), raises only fatal errors."""
        att = ChatAttempt(dep, self._call(ctx, dep, request, raw), deadline=plan.deadline)
        ctx.attempts_started += 1
        delay = (dep.hedge_after_s or dep.health.p95_ttft()) if dep.hedge else None
        try:
            if not delay:
                await att.prime()
                return att
            return await self._prime_hedged(ctx, plan, att, delay, request, raw)
        except SeawallError as e:
            verdict, rec = att.failed(e)
            self._note(ctx, rec)
            await att.close()
            if verdict is Verdict.FATAL:
                raise
            plan.failed(dep, e)
            return None
        except BaseException:
            self._note(ctx, att.abandoned())
            await att.close()
            raise

    async def _prime_hedged(self, ctx: RequestContext, plan: _Plan, att: ChatAttempt,
                            delay: float,
                            request: ChatCompletionRequest | None,
                            raw: dict[str, Any] | None) -> ChatAttempt | None:
        """After ``delay`` with no first token, race a second deployment; the
        first to produce content wins and the other is cancelled. Records the
        failures of a race itself; a primary that fails before the hedge
        starts is left to the caller."""
        first = asyncio.create_task(att.prime())
        racing: dict[asyncio.Task[None], ChatAttempt] = {first: att}
        try:
            done, _ = await asyncio.wait({first}, timeout=delay)
            partner = None if done else plan.hedge_partner(att.dep)
            if partner is None:
                await asyncio.wait({first})
                racing.clear()
                first.result()  # the primary's error, if any, goes to the caller
                att.adopt()
                return att
            other = ChatAttempt(partner, self._call(ctx, partner, request, raw), hedge=True,
                                deadline=plan.deadline)
            ctx.attempts_started += 1
            racing[asyncio.create_task(other.prime())] = other
            while racing:
                done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    a = racing.pop(task)
                    err = task.exception()
                    if err is None:
                        await self._stop(ctx, racing, "hedge_lost")
                        a.adopt()
                        return a
                    if not isinstance(err, SeawallError):
                        raise err
                    verdict, rec = a.failed(err)
                    self._note(ctx, rec)
                    await a.close()
                    if verdict is Verdict.FATAL:
                        raise err
                    plan.failed(a.dep, err)
            return None
        finally:
            await self._stop(ctx, racing, "cancelled")

    async def _stop(self, ctx: RequestContext, racing: dict[asyncio.Task[None], ChatAttempt],
                    outcome: str) -> None:
        for task, a in list(racing.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._note(ctx, a.abandoned(outcome))
            await a.close()
        racing.clear()

    # -- embeddings ------------------------------------------------------------

    async def embed(self, ctx: RequestContext, first: LogicalModel,
                    inputs: EmbeddingInputs) -> Embeddings:
        """Embeddings take the same chain, retries and breakers (no hedging:
        they are short and cheap to repeat)."""
        self.budget.on_request()
        plan = _Plan(self, first, deadline=self.deadline(ctx, first))
        while (dep := await plan.next()) is not None:
            att = Attempt(dep, deadline=plan.deadline)
            ctx.attempts_started += 1
            dl = att.deadlines = Deadlines(dep.timeouts, False, dep.name, plan.deadline)
            dl.reading()
            try:
                try:
                    result = await dep.provider.embed(inputs, dep.upstream_model,
                                                      dep.timeouts.connect_s)
                except asyncio.CancelledError:
                    dl.check()  # our own timeout: raises UpstreamTimeout instead
                    raise
            except SeawallError as e:
                verdict, rec = att.failed(e)
                self._note(ctx, rec)
                if verdict is Verdict.FATAL:
                    raise
                plan.failed(dep, e)
                continue
            except BaseException:
                self._note(ctx, att.abandoned())
                raise
            self._note(ctx, att.succeeded())
            ctx.deployment = dep
            return result
        raise plan.error(first)


def _keep_on_resume(item: StreamItem) -> bool:
    """On a resumed stream, drop the new attempt's opening role chunk."""
    if isinstance(item, list):
        return True
    choices: list[Any] = item.get("choices") or []
    return not (len(choices) == 1 and choices[0].get("delta") == {"role": "assistant",
                                                                  "content": ""})


def _continuation(item: StreamItem, cid: str | None) -> StreamItem:
    """A resumed stream keeps the completion id the client already saw."""
    if cid is None:
        return item
    if isinstance(item, list):
        return [{**c, "id": cid} for c in item]
    return {**item, "id": cid}


def _resumed(ctx: RequestContext) -> tuple[ChatCompletionRequest, dict[str, Any]] | None:
    """The request again, with the partial answer as context and an ask to go on."""
    if ctx.raw is None or ctx.gatherer.text == "":
        return None
    if ctx.request is not None and ctx.request.choices > 1:
        return None  # one continuation prompt cannot carry several answers
    raw = dict(ctx.raw)
    partial = ctx.gatherer.text  # as the client saw it: masked values put back
    if ctx.guard is not None and ctx.guard.vault:
        partial = ctx.guard.vault.remask(partial)  # the upstream must not see them
    raw["messages"] = [*raw["messages"], {"role": "assistant", "content": partial},
                       {"role": "user", "content": RESUME_PROMPT}]
    return convert(raw, ChatCompletionRequest), raw


def _cut_chunk(ctx: RequestContext) -> Chunk:
    """The last chunk of a cut stream: ``finish_reason: "error"``, so a client
    that ignores the error event still cannot take the answer as complete."""
    g = ctx.gatherer
    return make_chunk(g.id or "", g.model, g.created or int(time.time()), finish_reason="error")


def _static_chunks(model: str, text: str) -> list[Chunk]:
    from seawall.providers.base import completion_id
    cid, created = completion_id(), int(time.time())
    return [make_chunk(cid, model, created, {"role": "assistant", "content": text}),
            make_chunk(cid, model, created, finish_reason="stop")]

