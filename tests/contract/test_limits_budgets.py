"""Rate limits and budgets: one suite, run against the in-process backend and
the Redis one (a real redis-server), with the same assertions; then what
only Redis has: replicas sharing one limit, and Redis going away and back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import LimitSettings, RedisSettings, parse_settings
from seawall.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from seawall.ml.tokens import TokenCounter
from seawall.observe.metrics import Metrics
from seawall.pipeline.budgets import (
    BudgetLimit,
    Budgets,
    InMemoryBudgets,
    RedisBudgets,
    Refusal,
    Reservation,
    SpendLedger,
    period_bounds,
    period_of,
)
from seawall.pipeline.context import RequestContext
from seawall.pipeline.ratelimit import (
    Charge,
    InMemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from seawall.pipeline.spend import BudgetStage
from seawall.pipeline.stages import LimitStage
from seawall.providers.base import make_chunk
from seawall.providers.registry import ModelRegistry
from seawall.store.base import ApiKey
from seawall.store.redis_link import RedisLink
from tests.services import RedisServer

_tokens = TokenCounter()


async def count(messages: list[Any], output: str, body_bytes: int) -> tuple[int, int]:
    return _tokens.count_messages(messages) if messages else 0, _tokens.count(output)


class Backend:
    """Makes limiters and budgets of one kind; for Redis each one is a
    separate client, as a separate replica would have."""

    def __init__(self, kind: str, redis_url: str | None, metrics: Metrics) -> None:
        self.kind = kind
        self.url = redis_url
        self.metrics = metrics
        self.links: list[RedisLink] = []

    def link(self, **settings: Any) -> RedisLink:
        # A generous timeout: these tests are about what is counted, on a
        # shared, loaded machine; the fault test sets its own.
        link = RedisLink(RedisSettings(url=self.url, **{"timeout_s": 5.0, **settings}))
        self.links.append(link)
        return link

    def limiter(self) -> RateLimiter:
        if self.kind == "memory":
            return InMemoryRateLimiter()
        return RedisRateLimiter(self.link(), InMemoryRateLimiter(), self.metrics)

    def budgets(self, ledger: SpendLedger | None = None) -> Budgets:
        if self.kind == "memory":
            return InMemoryBudgets(ledger=ledger)
        return RedisBudgets(self.link(), InMemoryBudgets(), self.metrics, ledger=ledger)

    async def close(self) -> None:
        for link in self.links:
            await link.close()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    b = Backend(request.param, url, Metrics())
    try:
        yield b
    finally:
        await b.close()


def registry(price: tuple[float, float] = (1000.0, 2000.0)) -> ModelRegistry:
    settings = parse_settings({
        "providers": {"fake": {"type": "fake"}},
        "models": {"m": {"provider": "fake", "price": {"input_per_mtok": price[0],
                                                       "output_per_mtok": price[1]}}}}, env={})
    return ModelRegistry(settings)


def key(name: str, tenant: str = "acme", **kw: Any) -> ApiKey:
    return ApiKey(id=f"key_{name}", name=name, tenant=tenant, key_hash="", prefix="",
                  rpm=kw.pop("rpm", None), created_at=0.0, **kw)


def chat(k: ApiKey | None, text: str = "hello there", max_tokens: int | None = None
         ) -> RequestContext:
    raw: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    if max_tokens:
        raw["max_tokens"] = max_tokens
    body = orjson.dumps(raw)
    ctx = RequestContext(endpoint="chat.completions", body=body, raw=raw, model="m",
                         client_host="127.0.0.1")
    ctx.request = convert(raw, ChatCompletionRequest)
    if k is not None:
        ctx.key, ctx.tenant = k, k.tenant
    return ctx


def answered(ctx: RequestContext, reg: ModelRegistry, prompt: int, completion: int) -> None:
    """What the invoke stage leaves behind: the deployment and its usage."""
    ctx.deployment = reg.models["m"].deployments[0]
    ctx.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}


# -- rate limits --

@pytest.mark.parametrize("rpm", [1, 7, 60])
async def test_exactly_the_limit_of_a_burst_is_allowed(backend: Backend, rpm: int) -> None:
    rl = backend.limiter()
    results = [await rl.take([Charge("k", rpm)]) for _ in range(rpm + 5)]
    assert sum(d.allowed for d in results) == rpm
    assert all(d.allowed for d in results[:rpm])
    refused = results[-1]
    assert refused.refused == 0 and 0 < refused.wait_s <= 60.0 / rpm + 0.01
    assert (await rl.take([Charge("other", rpm)])).allowed  # buckets are separate


async def test_the_bucket_refills(backend: Backend) -> None:
    rl = backend.limiter()
    assert (await rl.take([Charge("k", 60, 60)])).allowed  # the whole minute at once
    d = await rl.take([Charge("k", 60)])
    assert not d.allowed and 0 < d.wait_s <= 1.0  # one request refills in a second
    await asyncio.sleep(d.wait_s + 0.2)
    assert (await rl.take([Charge("k", 60)])).allowed


async def test_a_request_takes_every_bucket_or_none(backend: Backend) -> None:
    rl = backend.limiter()
    assert (await rl.take([Charge("tenant", 1)])).allowed
    d = await rl.take([Charge("key", 1), Charge("tenant", 1)])
    assert d.refused == 1  # the tenant's bucket refused ...
    assert (await rl.take([Charge("key", 1)])).allowed  # ... and the key's was not taken


async def test_given_back_tokens_are_taken_again(backend: Backend) -> None:
    rl = backend.limiter()
    assert (await rl.take([Charge("t", 100, 100)])).allowed
    assert not (await rl.take([Charge("t", 100, 10)])).allowed
    await rl.give([Charge("t", 100, -50)])
    assert (await rl.take([Charge("t", 100, 50)])).allowed
    await rl.give([Charge("t", 100, 500)])  # debt: the real count was far higher
    d = await rl.take([Charge("t", 100, 1)])
    assert not d.allowed and d.wait_s > 60  # refused until the debt is paid off


async def test_per_tenant_limit_across_keys(backend: Backend) -> None:
    stage = LimitStage(LimitSettings(tenant_rpm=5), backend.limiter(), Metrics())
    a, b, other = key("a"), key("b"), key("c", tenant="globex")
    for k in (a, b, a, b, a):
        await stage.before(chat(k))
    with pytest.raises(RateLimited) as e:
        await stage.before(chat(b))
    assert "5 requests per minute" in e.value.message and "tenant 'acme'" in e.value.message
    assert e.value.retry_after is not None and e.value.retry_after > 0
    await stage.before(chat(other))  # another tenant is not affected


async def test_a_key_limit_and_a_tenant_override(backend: Backend) -> None:
    settings = LimitSettings(default_rpm=2, tenants={"acme": {"rpm": 3}})
    stage = LimitStage(settings, backend.limiter(), Metrics())
    a, b = key("a"), key("b", rpm=10)
    await stage.before(chat(a))
    await stage.before(chat(a))
    with pytest.raises(RateLimited, match="2 requests per minute reached for this key"):
        await stage.before(chat(a))
    await stage.before(chat(b))
    with pytest.raises(RateLimited, match="3 requests per minute reached for tenant"):
        await stage.before(chat(b))


async def test_tokens_per_minute_estimate_then_real_total(backend: Backend) -> None:
    reg = registry()
    stage = LimitStage(LimitSettings(), backend.limiter(), Metrics(), count)
    k = key("a", tpm=1000)
    first = chat(k)
    await stage.before(first)
    assert first.spend is not None and 0 < (first.spend.prompt_estimate or 0) < 20
    answered(first, reg, 20, 580)  # the real total: 600
    await stage.after(first)
    second = chat(k)
    await stage.before(second)  # 600 + the estimate fit in 1000
    answered(second, reg, 20, 580)
    await stage.after(second)  # 1200 of 1000: in debt
    with pytest.raises(RateLimited, match="1000 tokens per minute reached for this key"):
        await stage.before(chat(k))


async def test_tokens_of_an_answer_from_nowhere_are_given_back(backend: Backend) -> None:
    """A request that never reached a model (failed, cancelled) spent no tokens."""
    stage = LimitStage(LimitSettings(default_tpm=60), backend.limiter(), Metrics(), count)
    text = "word " * 40  # ~40 tokens of 60
    ctx = chat(key("a"), text)
    await stage.before(ctx)
    with pytest.raises(RateLimited):
        await stage.before(chat(key("a"), text))
    await stage.after(ctx)  # no deployment: nothing was spent
    await stage.before(chat(key("a"), text))


# -- budgets --

def limit(usd: float, scope: str = "key:k1", period: str = "month") -> BudgetLimit:
    return BudgetLimit(scope, usd, period, scope)


async def test_reserve_settle_release(backend: Backend) -> None:
    b = backend.budgets()
    lim = [limit(1.0)]
    r1 = await b.reserve(lim, 0.375)
    r2 = await b.reserve(lim, 0.375)
    assert isinstance(r1, Reservation) and isinstance(r2, Reservation)
    refused = await b.reserve(lim, 0.375)  # 0.75 held + 0.375 > 1
    assert isinstance(refused, Refusal)
    assert refused.spent_usd == 0 and refused.reserved_usd == 0.75
    await b.settle(r1, 0.125)  # cheaper than estimated: the difference is released
    assert await b.spent(lim[0]) == (0.125, 0.375)
    r3 = await b.reserve(lim, 0.375)  # 0.125 + 0.375 + 0.375 <= 1
    assert isinstance(r3, Reservation)
    await b.settle(r2, 0.0)  # failed: nothing spent, reservation released
    await b.settle(r3, 0.5)
    assert await b.spent(lim[0]) == (0.625, 0.0)
    assert isinstance(await b.reserve(lim, 0.375), Reservation)
    assert isinstance(await b.reserve(lim, 0.0), Reservation)  # exactly at the limit


async def test_spent_budget_refuses_even_a_free_request_until_it_resets(
        backend: Backend) -> None:
    b = backend.budgets()
    lim = [limit(0.5, period="day")]
    r = await b.reserve(lim, 0.25)
    assert isinstance(r, Reservation)
    await b.settle(r, 0.75)  # dearer than estimated: overspent by what was in flight
    refused = await b.reserve(lim, 0.0)
    assert isinstance(refused, Refusal) and refused.spent_usd == 0.75
    _, end = period_of("day", time.time())
    assert refused.resets_at == end
    assert datetime.fromtimestamp(end, UTC).strftime("%H:%M:%S") == "00:00:00"
    assert 0 < end - time.time() <= 86_400
    other = await b.reserve([limit(0.5, scope="key:k2", period="day")], 0.25)
    assert isinstance(other, Reservation)  # budgets are per scope


async def test_a_request_needs_every_budget(backend: Backend) -> None:
    b = backend.budgets()
    tenant = limit(1.0, scope="tenant:acme")
    r = await b.reserve([limit(1.0, "key:a"), tenant], 0.75)
    assert isinstance(r, Reservation)
    refused = await b.reserve([limit(1.0, "key:b"), tenant], 0.5)
    assert isinstance(refused, Refusal) and refused.limit == tenant
    assert await b.spent(limit(1.0, "key:b")) == (0.0, 0.0)  # not held by the refusal


async def test_concurrent_reservations_never_pass_the_budget(backend: Backend) -> None:
    """Many requests at once (for Redis: through two replicas)."""
    one = backend.budgets()
    stores = [one, backend.budgets() if backend.kind == "redis" else one]
    lim = [limit(1.0)]
    allowed: list[bool] = []

    async def request(i: int) -> None:
        b = stores[i % 2]
        r = await b.reserve(lim, 0.125)
        allowed.append(isinstance(r, Reservation))
        if isinstance(r, Reservation):
            assert not r.local  # decided by the shared count, not a fallback
            await asyncio.sleep(0.001 * (i % 5))
            await b.settle(r, 0.125)

    await asyncio.gather(*(request(i) for i in range(40)))
    assert sum(allowed) == 8  # 8 x 0.125 = 1.0, exactly
    assert await stores[0].spent(lim[0]) == (1.0, 0.0)


async def test_overspend_is_bounded_by_what_is_in_flight(backend: Backend) -> None:
    b = backend.budgets()
    lim = [limit(1.0)]
    held = [await b.reserve(lim, 0.125) for _ in range(12)]
    in_flight = [r for r in held if isinstance(r, Reservation)]
    assert len(in_flight) == 8
    for r in in_flight:
        await b.settle(r, 0.25)  # each cost twice its estimate
    spent, _ = await b.spent(lim[0])
    assert spent - 1.0 <= len(in_flight) * (0.25 - 0.125)
    assert isinstance(await b.reserve(lim, 0.001), Refusal)


async def test_settle_answers_each_budget_spend_after_its_cost(backend: Backend) -> None:
    b = backend.budgets()
    key_lim, tenant_lim = limit(1.0), limit(5.0, scope="tenant:acme")
    first = await b.reserve([key_lim, tenant_lim], 0.125)
    assert isinstance(first, Reservation)
    assert await b.settle(first, 0.25) == [0.25, 0.25]
    other = await b.reserve([tenant_lim], 0.125)  # another key of the tenant
    assert isinstance(other, Reservation)
    assert await b.settle(other, 0.5) == [0.75]
    again = await b.reserve([key_lim, tenant_lim], 0.125)
    assert isinstance(again, Reservation)
    assert await b.settle(again, 0.0) == [0.25, 0.75]  # nothing spent: the spend as it is


def threshold_counts(*metrics: Metrics) -> dict[str, float]:
    """seawall_budget_thresholds_total summed over ``metrics`` (replicas)."""
    out: dict[str, float] = {}
    for m in metrics:
        for fam in m.budget_thresholds.collect():
            for s in fam.samples:
                if s.name.endswith("_total"):
                    t = s.labels["threshold"]
                    out[t] = out.get(t, 0.0) + s.value
    return out


async def test_thresholds_are_marked_by_the_settle_that_passes_them(backend: Backend) -> None:
    reg = registry()  # one prompt token $0.001, one completion token $0.002
    metrics = Metrics()
    stage = BudgetStage(LimitSettings(completion_allowance=1), backend.budgets(), reg,
                        metrics, count)
    k = key("marks", budget_usd=0.1, budget_period="day")
    seen = []
    for completion in (20, 6, 12, 2, 10, 5):  # $0.04 0.052 0.076 0.08 0.1 (refused)
        ctx = chat(k)
        try:
            await stage.before(ctx)
        except BudgetExceeded:
            break
        answered(ctx, reg, 0, completion)
        await stage.after(ctx)
        seen.append(dict(threshold_counts(metrics)))
    assert seen == [{}, {"50%": 1}, {"50%": 1}, {"50%": 1, "80%": 1},
                    {"50%": 1, "80%": 1, "100%": 1}]


async def test_budget_stage_refuses_with_the_limit_and_the_reset(backend: Backend) -> None:
    reg = registry(price=(1000.0, 2000.0))  # $0.001 a prompt token, $0.002 a completion one
    stage = BudgetStage(LimitSettings(completion_allowance=100), backend.budgets(), reg,
                        Metrics(), count)
    k = key("a", budget_usd=1.0, budget_period="day")
    ctx = chat(k, max_tokens=200)
    estimate = await stage.estimate(ctx)
    assert estimate == pytest.approx((ctx.spend.prompt_estimate or 0) * 0.001 + 200 * 0.002)
    assert (await stage.estimate(chat(k))) == pytest.approx(
        (ctx.spend.prompt_estimate or 0) * 0.001 + 100 * 0.002)  # the allowance
    await stage.before(ctx)
    answered(ctx, reg, 10, 300)  # $0.61
    await stage.after(ctx)
    assert await stage.budgets.spent((await stage.limits(ctx))[0]) == (pytest.approx(0.61), 0.0)
    with pytest.raises(BudgetExceeded) as e:
        await stage.before(chat(k, max_tokens=200))  # ~$0.41 more would pass $1
    err = e.value
    assert err.status == 429 and err.code == "budget_exceeded" and err.type == "budget_exceeded"
    _, end = period_of("day", time.time())
    reset = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert "$1.00 per day for key 'a'" in err.message and reset in err.message
    assert err.retry_after is not None and abs(err.retry_after - (end - time.time())) < 5
    assert err.headers()["x-should-retry"] == "false"
    await stage.before(chat(k, max_tokens=50))  # a smaller request still fits


async def test_budget_stage_releases_a_failed_request(backend: Backend) -> None:
    stage = BudgetStage(LimitSettings(tenants={"acme": {"budget_usd": 0.5}}),
                        backend.budgets(), registry(), Metrics(), count)
    ctx = chat(key("a"), max_tokens=200)
    await stage.before(ctx)
    with pytest.raises(BudgetExceeded, match="tenant 'acme'"):
        await stage.before(chat(key("b"), max_tokens=200))
    await stage.after(ctx)  # no deployment answered: nothing spent, all released
    assert await stage.budgets.spent((await stage.limits(ctx))[0]) == (0.0, 0.0)
    await stage.before(chat(key("b"), max_tokens=200))


async def test_settling_survives_the_request_being_cancelled(backend: Backend) -> None:
    """The client left and then the server shut down: the second cancellation
    hits while the answer is being counted; the reservation is settled anyway."""
    reg = registry()

    async def slow_count(messages: list[Any], output: str, n: int) -> tuple[int, int]:
        await asyncio.sleep(0.05)  # a long answer counted in a thread
        return await count(messages, output, n)

    stage = BudgetStage(LimitSettings(), backend.budgets(), reg, Metrics(), slow_count)
    k = key("a", budget_usd=1.0)
    ctx = chat(k, max_tokens=100)
    await stage.before(ctx)
    ctx.deployment = reg.models["m"].deployments[0]  # answered, without a usage block
    ctx.gatherer.add(make_chunk("c1", "m", 0, {"content": "one two three"}))
    settling = asyncio.create_task(stage.after(ctx))
    await asyncio.sleep(0.01)
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settling
    await asyncio.sleep(0.2)
    spent, reserved = await stage.budgets.spent((await stage.limits(ctx))[0])
    assert ctx.spend is not None and ctx.spend.real == (ctx.spend.prompt_estimate, 3)
    assert reserved == 0
    assert spent == pytest.approx((ctx.spend.prompt_estimate or 0) * 0.001 + 3 * 0.002)


async def test_budgets_start_from_the_trace_records(backend: Backend, tmp_path: Any) -> None:
    """A budget the backend does not hold yet (the process, or Redis, was
    restarted) starts from what the records say was spent this period."""
    from seawall.observe.records import TraceRecord
    from seawall.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "seawall.db")
    await store.open()
    try:
        now = time.time()
        _, month_start, _ = period_bounds("month", now)
        await store.write_traces([
            TraceRecord(trace_id=f"t{i}", endpoint="chat.completions", started_at=at,
                        tenant=tenant, key_id=key_id, cost_usd=usd)
            for i, (at, tenant, key_id, usd) in enumerate([
                (now - 5, "acme", "key_a", 0.25), (now - 4, "acme", "key_a", 0.5),
                (now - 3, "acme", "key_b", 0.125), (now - 2, "globex", "key_c", 9.0),
                (month_start - 1, "acme", "key_a", 9.0)])])  # last month: not counted
        budgets = backend.budgets(ledger=store)
        key_a = BudgetLimit("key:key_a", 1.0, "month", "key a", "acme", "key_a")
        tenant = BudgetLimit("tenant:acme", 1.0, "month", "tenant acme", "acme")
        r = await asyncio.gather(*(budgets.reserve([key_a, tenant], 0.0625) for _ in range(2)))
        assert all(isinstance(x, Reservation) for x in r)
        assert await budgets.spent(key_a) == (0.75, 0.125)
        assert await budgets.spent(tenant) == (0.875, 0.125)
        assert isinstance(await budgets.reserve([key_a, tenant], 0.0625), Refusal)  # tenant
        await store.write_traces([TraceRecord(trace_id="t9", endpoint="chat.completions",
                                              started_at=now, tenant="acme", key_id="key_a",
                                              cost_usd=5.0)])
        assert await budgets.spent(key_a) == (0.75, 0.125)  # read once, then counted here
        for x in r:
            assert isinstance(x, Reservation)
            await budgets.settle(x, 0.0625)
        assert await budgets.spent(key_a) == (0.875, 0.0)
        if backend.kind == "redis":  # Redis restarted empty: started again from the records
            await backend.links[0].client.flushall()
            other = BudgetLimit("key:key_b", 1.0, "month", "key b", "acme", "key_b")
            assert isinstance(await budgets.reserve([other], 0.0625), Reservation)
            assert await budgets.spent(other) == (0.125, 0.0625)
            assert await budgets.spent(key_a) == (0.0, 0.0)  # not needed yet: not read
            refused = await budgets.reserve([key_a], 0.0625)
            assert isinstance(refused, Refusal) and refused.spent_usd == 0.75 + 5.0
    finally:
        await store.close()


# -- Redis only: replicas, and Redis going away --

async def test_two_replicas_share_one_limit_exactly(redis_url: str) -> None:
    b = Backend("redis", redis_url, Metrics())
    try:
        one, two = b.limiter(), b.limiter()
        results = [await (one if i % 2 else two).take([Charge("k", 20)]) for i in range(30)]
        assert sum(d.allowed for d in results) == 20
        both = await asyncio.gather(*(r.take([Charge("burst", 10)])
                                      for r in [one, two] * 10))
        assert sum(d.allowed for d in both) == 10
    finally:
        await b.close()


async def test_replicas_mark_each_threshold_once_without_reading_the_spend(
        redis_url: str) -> None:
    """Many requests settled at once on two replicas: each of 50/80/100% is
    counted once in all, and no settle reads the spend back (one round trip)."""
    import redis.asyncio as aredis

    b = Backend("redis", redis_url, Metrics())
    reg = registry()
    metrics = [Metrics(), Metrics()]
    stages = [BudgetStage(LimitSettings(completion_allowance=1), b.budgets(), reg, m, count)
              for m in metrics]
    k = key("shared", budget_usd=0.2, budget_period="month")
    admin = aredis.Redis.from_url(redis_url)
    try:
        await admin.config_resetstat()

        async def one(i: int) -> None:
            stage = stages[i % 2]
            ctx = chat(k)
            try:
                await stage.before(ctx)
            except BudgetExceeded:
                return
            answered(ctx, reg, 0, 10)  # $0.02: more than estimated, so the spend gets to 100%
            await stage.after(ctx)

        await asyncio.gather(*(one(i) for i in range(30)))
        assert threshold_counts(*metrics) == {"50%": 1, "80%": 1, "100%": 1}
        stats = await admin.info("commandstats")
        assert "cmdstat_hmget" not in stats  # the read-back of the spend (Budgets.spent)
        spent, reserved = await stages[0].budgets.spent((await stages[0].limits(chat(k)))[0])
        assert spent >= 0.2 and reserved == 0
    finally:
        await admin.aclose()
        await b.close()


async def test_a_reservation_never_settled_is_released_after_its_ttl(redis_url: str) -> None:
    """A replica killed mid-request never settles: its hold expires."""
    b = Backend("redis", redis_url, Metrics())
    try:
        budgets = RedisBudgets(b.link(), InMemoryBudgets(), reservation_ttl_s=0.3)
        lim = [limit(1.0)]
        lost = await budgets.reserve(lim, 0.75)  # its replica dies now
        assert isinstance(lost, Reservation)
        assert isinstance(await budgets.reserve(lim, 0.5), Refusal)
        await asyncio.sleep(0.5)
        late = await budgets.reserve(lim, 0.5)
        assert isinstance(late, Reservation)
        assert await budgets.spent(lim[0]) == (0.0, 0.5)  # the lost hold is gone
        await budgets.settle(lost, 0.25)  # settled after all (very late): counted once
        await budgets.settle(late, 0.5)
        assert await budgets.spent(lim[0]) == (0.75, 0.0)
    finally:
        await b.close()


def _sample(metrics: Metrics, name: str, what: str) -> float:
    return metrics.registry.get_sample_value(name, {"what": what}) or 0.0


async def test_redis_down_fails_open_or_closed_and_recovers(
        redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    b = Backend("redis", redis_url, metrics)
    fast = {"timeout_s": 0.5, "retry_after_s": 0.5}
    open_rl = RedisRateLimiter(b.link(**fast), InMemoryRateLimiter(), metrics)
    open_budget = RedisBudgets(b.link(**fast), InMemoryBudgets(), metrics)
    closed_rl = RedisRateLimiter(b.link(fail_open=False, **fast), InMemoryRateLimiter(),
                                 metrics)
    closed_budget = RedisBudgets(b.link(fail_open=False, **fast), InMemoryBudgets(), metrics)
    lim = [limit(1.0)]
    try:
        d = await open_rl.take([Charge("k", 100)])
        assert d.allowed and not d.local
        assert not (await closed_budget.reserve(lim, 0.25)).local  # type: ignore[union-attr]
        redis_server.stop()
        caplog.set_level(logging.WARNING, "seawall.redis")
        for _ in range(3):  # the first call fails, the next ones skip Redis
            d = await open_rl.take([Charge("k", 100)])
            assert d.allowed and d.local
        assert _sample(metrics, "seawall_redis_errors_total", "limits") == 1
        assert _sample(metrics, "seawall_redis_fallbacks_total", "limits") == 3
        await asyncio.sleep(0.6)  # retry_after_s: Redis is tried (and fails) again
        assert (await open_rl.take([Charge("k", 100)])).local
        assert _sample(metrics, "seawall_redis_errors_total", "limits") == 2
        r = await open_budget.reserve(lim, 0.25)
        assert isinstance(r, Reservation) and r.local
        await open_budget.settle(r, 0.25)
        assert await open_budget.fallback.spent(lim[0]) == (0.25, 0.0)
        assert _sample(metrics, "seawall_redis_errors_total", "budgets") == 1
        with pytest.raises(ServiceUnavailable) as e:
            await closed_rl.take([Charge("k", 100)])
        assert e.value.status == 503 and e.value.code == "limits_unavailable"
        assert e.value.retry_after == 0.5
        with pytest.raises(ServiceUnavailable, match="fail_open: false"):
            await closed_budget.reserve(lim, 0.25)
        outages = [r for r in caplog.records if "redis unreachable" in r.getMessage()]
        assert len(outages) == 4  # one line per outage per client, not per request
    finally:
        redis_server.start_again()
    await asyncio.sleep(0.6)  # redis.retry_after_s
    d = await open_rl.take([Charge("k", 100)])
    assert d.allowed and not d.local
    assert [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    r = await closed_budget.reserve(lim, 0.25)
    assert isinstance(r, Reservation) and not r.local
    await b.close()
