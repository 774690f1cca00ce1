"""What a request takes before its call (tokens per minute, budget) and
settles after it, when the real usage is known (docs/limits.md).

Both are estimates before the call: the prompt's tokens are counted, the
completion is the request's ``max_tokens`` (or ``limits.completion_allowance``
for a budget; nothing for tokens per minute). After the call the real counts
replace them. Settling runs in a stage's ``after``, which the pipeline runs
for every request that started, however it ended (error, cancel, hang-up),
so what was taken is always given back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from seawall.config import LimitSettings
from seawall.errors import BudgetExceeded
from seawall.observe.metrics import Metrics
from seawall.pipeline.budget_admin import BudgetLimits, Thresholds
from seawall.pipeline.budgets import BudgetLimit, Budgets, Refusal, Reservation
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.pipeline.ratelimit import Charge
from seawall.providers.registry import ModelRegistry

if TYPE_CHECKING:
    from seawall.quality.alerts import AlertSink

# (messages, output, request body bytes) -> (prompt, completion) tokens
TokenCount = Callable[[list[Any], str, int], Awaitable[tuple[int, int]]]

TOKEN_ENDPOINTS = CHAT_ENDPOINTS | {"embeddings"}


@dataclass(slots=True)
class Spend:
    """A request's share of its limits, from before the call until settled."""

    prompt_estimate: int | None = None
    counted: Any = None  # the messages the estimate was counted from
    tpm: list[Charge] = field(default_factory=list)  # token buckets charged the estimate
    tpm_local: bool = False
    reservation: Reservation | None = None
    limits: list[BudgetLimit] = field(default_factory=list)  # the budgets reserved against
    real: tuple[int, int] | None = None  # (prompt, completion) once known


def spend_of(ctx: RequestContext) -> Spend:
    if ctx.spend is None:
        ctx.spend = Spend()
    return ctx.spend


async def prompt_estimate(ctx: RequestContext, count: TokenCount | None) -> int:
    """The prompt's tokens: counted for chat (in a thread when long), about a
    token per four bytes for embeddings, 0 for anything else."""
    spend = spend_of(ctx)
    messages = ctx.raw.get("messages") if ctx.raw and ctx.endpoint in CHAT_ENDPOINTS else None
    if spend.prompt_estimate is not None and spend.counted is messages:
        return spend.prompt_estimate
    if ctx.endpoint not in TOKEN_ENDPOINTS:
        n = 0
    elif messages is not None and count is not None:
        n = (await count(messages, "", len(ctx.body)))[0]
    else:
        n = len(ctx.body) // 4 + 1
    spend.prompt_estimate, spend.counted = n, messages
    return n


async def real_usage(ctx: RequestContext, count: TokenCount | None) -> tuple[int, int]:
    """(prompt, completion) tokens the request really spent upstream: 0 for
    an answer from the cache or a request that never reached a model; the
    upstream's usage, else counted from the text."""
    spend = spend_of(ctx)
    if spend.real is not None:
        return spend.real
    cache = ctx.cache
    if (cache is not None and cache.served) or ctx.deployment is None:
        spend.real = (0, 0)
        return spend.real
    usage = ctx.usage or ctx.gatherer.usage
    if usage:
        spend.real = (int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))
        return spend.real
    prompt = await prompt_estimate(ctx, count)
    text = ctx.gatherer.text
    if count is not None and text:
        completion = (await count([], text, len(text)))[1]
    else:
        completion = len(text) // 4
    spend.real = (prompt, completion)
    return spend.real


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


class BudgetStage:
    """Reserves a request's estimated cost against its key's and tenant's
    budgets just before the model is called (after the cache: an answer from
    the cache costs nothing), and settles with the real cost after."""

    name = "budget"
    traced = False  # a span only when a budget applied (added in before)

    def __init__(self, settings: LimitSettings, budgets: Budgets, registry: ModelRegistry,
                 metrics: Metrics, count: TokenCount | None = None,
                 limits: BudgetLimits | None = None, alerts: AlertSink | None = None) -> None:
        self.settings = settings
        self.budgets = budgets
        self.registry = registry
        self.count = count
        self._refused = metrics.rate_limited.labels("budget")
        # Key budgets and tenant budgets (stored ones first, then the config's).
        self.budget_limits = limits if limits is not None else BudgetLimits(settings, None)
        self.thresholds = Thresholds(budgets, metrics, alerts)

    async def limits(self, ctx: RequestContext) -> list[BudgetLimit]:
        return await self.budget_limits.for_request(ctx)

    def _prices(self, model: str) -> tuple[float, float]:
        """The dearest (input, output) price per million tokens among the
        deployments that may answer ``model`` (its own, then its fallbacks')."""
        found = self.registry.models.get(model)
        if found is None:
            return 0.0, 0.0
        deps = list(found.deployments)
        for name in found.fallbacks:
            fb = self.registry.models.get(name)
            if fb is not None:
                deps += fb.deployments
        return (max((d.price.input_per_mtok for d in deps), default=0.0),
                max((d.price.output_per_mtok for d in deps), default=0.0))

    async def estimate(self, ctx: RequestContext) -> float:
        prompt = await prompt_estimate(ctx, self.count)
        completion = 0
        req = ctx.request
        if ctx.endpoint in CHAT_ENDPOINTS:
            limit = req.output_limit if req is not None else None
            completion = (limit or self.settings.completion_allowance) * (
                (req.n or 1) if req is not None else 1)
        pin, pout = self._prices(ctx.model)
        return (prompt * pin + completion * pout) / 1e6

    async def before(self, ctx: RequestContext) -> None:
        limits = await self.limits(ctx)
        if not limits:
            return
        t0 = time.time_ns()
        try:
            usd = await self.estimate(ctx)
            found = await self.budgets.reserve(limits, usd)
        finally:
            ctx.span(self.name, t0)
        if isinstance(found, Refusal):
            self._refused.inc()
            lim = found.limit
            raise BudgetExceeded(
                f"The budget of ${lim.usd:.2f} per {lim.period} for {lim.label} is spent "
                f"(${found.spent_usd:.4f} spent, ${found.reserved_usd:.4f} held by requests "
                f"in flight, this one needs about ${usd:.4f}); it resets at "
                f"{_when(found.resets_at)}.", retry_after=found.resets_at - time.time(),
                resets_at=found.resets_at)
        spend = spend_of(ctx)
        spend.reservation, spend.limits = found, limits

    async def after(self, ctx: RequestContext) -> None:
        spend = ctx.spend
        if spend is None or spend.reservation is None:
            return
        reservation, spend.reservation = spend.reservation, None
        # Shielded: a second cancellation of the request (the client left,
        # then shutdown) must not leave the reservation held.
        await asyncio.shield(self._settle(ctx, reservation))

    async def _settle(self, ctx: RequestContext, reservation: Reservation) -> None:
        cost = 0.0
        dep = ctx.deployment
        if dep is not None:
            prompt, completion = await real_usage(ctx, self.count)
            cost = dep.cost(prompt, completion)
        after = await self.budgets.settle(reservation, cost)
        spend = ctx.spend
        if cost and spend is not None:
            for lim, (bucket, _), spent in zip(spend.limits, reservation.buckets, after,
                                               strict=False):
                if spent is not None:  # Redis away: the refusals still hold the budget
                    await self.thresholds.check(lim, spent, cost, bucket)
