"""The routing building blocks on their own, with a hand-driven clock:
breaker state machine, retry budget, backoff, balancing, rate-limit headers."""

from __future__ import annotations

import random

import pytest

from seawall.config import BreakerSettings, RetrySettings
from seawall.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from seawall.providers.upstream import rate_limit_info
from seawall.routing.balancer import choose
from seawall.routing.breaker import BreakerState, CircuitBreaker
from seawall.routing.health import DeploymentHealth
from seawall.routing.retry import RetryBudget, Verdict, backoff_s, classify


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> tuple[CircuitBreaker, list[BreakerState]]:
    seen: list[BreakerState] = []
    s = BreakerSettings(**{"consecutive_failures": 3, "open_s": 5, "max_open_s": 15,
                           "min_requests": 10, "error_rate": 0.5, "window_s": 10, **kw})
    return CircuitBreaker(s, seen.append, clock), seen


def test_breaker_opens_after_consecutive_failures_and_recovers_through_a_probe() -> None:
    clock = Clock()
    b, seen = breaker(clock)
    b.record(False, b.on_attempt())
    b.record(True, b.on_attempt())  # a success resets the run
    for _ in range(3):
        b.record(False, b.on_attempt())
    assert b.state is BreakerState.OPEN and not b.available()
    assert b.retry_in() == 5
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN and b.available()
    probe = b.on_attempt()
    assert probe and not b.available()  # one probe at a time
    b.record(True, probe)
    assert b.state is BreakerState.CLOSED
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probe_doubles_the_cool_down_up_to_the_cap() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(3):
        b.record(False, b.on_attempt())
    waits = []
    for _ in range(3):
        clock.now += b.retry_in()
        b.record(False, b.on_attempt())  # the probe fails
        waits.append(b.retry_in())
    assert waits == [10, 15, 15]


def test_breaker_opens_on_error_rate_only_past_min_requests() -> None:
    clock = Clock()
    b, _ = breaker(clock, consecutive_failures=100)
    for i in range(9):
        b.record(i % 2 == 0, b.on_attempt())
    assert b.state is BreakerState.CLOSED  # 4 of 9 failed, and under min_requests
    b.record(False, b.on_attempt())
    assert b.state is BreakerState.OPEN  # 5 of 10


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    b, _ = breaker(clock, consecutive_failures=100, error_rate=0.6)
    for ok in [True] * 5 + [False] * 5:  # 50%: under the 60% threshold
        b.record(ok, b.on_attempt())
    clock.now += 11  # all of that is now older than window_s
    for ok in [True] + [False] * 4:
        b.record(ok, b.on_attempt())
    # Counting the old calls too it would be 9 of 15 = 60% and open; alone, the
    # new ones are under min_requests.
    assert b.state is BreakerState.CLOSED


def test_released_probe_frees_its_slot_without_a_verdict() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(3):
        b.record(False, b.on_attempt())
    clock.now += 5
    probe = b.on_attempt()
    b.release(probe)
    assert b.state is BreakerState.HALF_OPEN and b.available()


def test_classify_separates_bad_requests_rate_limits_and_failures() -> None:
    assert classify(InvalidRequest("x")) is Verdict.FATAL
    assert classify(RateLimited("x")) is Verdict.RATE_LIMITED
    assert classify(UpstreamError("x")) is Verdict.FAILED
    assert classify(UpstreamTimeout("x", code="upstream_idle_timeout")) is Verdict.FAILED


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    s = RetrySettings(base_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(1)
    for retry, cap in ((0, 0.1), (2, 0.4), (10, 1.0)):
        waits = [backoff_s(retry, s, rng) for _ in range(500)]
        assert 0 <= min(waits) < cap * 0.1 and cap * 0.9 < max(waits) <= cap


def test_retry_budget_allows_a_ratio_of_requests_plus_a_floor() -> None:
    clock = Clock()
    budget = RetryBudget(RetrySettings(budget_ratio=0.2, budget_min_per_s=0.5,
                                       budget_window_s=10), clock)
    for _ in range(50):
        budget.on_request()
    granted = sum(budget.try_spend() for _ in range(100))
    assert granted == 0.2 * 50 + 0.5 * 10
    assert budget.refused == 100 - granted
    clock.now += 11  # the window moved on: the floor is back
    assert budget.try_spend()


def test_health_caps_and_cooldowns() -> None:
    clock = Clock()
    h = DeploymentHealth("d", BreakerSettings(), max_concurrency=2, rpm=60, tpm=100,
                         alpha=0.5, clock=clock)
    now = clock.now
    assert h.unavailable_reason(now) is None
    h.inflight = 2
    assert h.unavailable_reason(now) == "at_concurrency_cap"
    h.inflight = 0
    for _ in range(60):  # a minute's burst of 60 rpm, then the cap
        h.take_rpm(now)
    assert h.unavailable_reason(now) == "at_rpm_cap"
    assert h.available_in(now) == pytest.approx(1.0)
    clock.now += 61
    h.observe_tokens(clock.now, 100)
    assert h.unavailable_reason(clock.now) == "at_tpm_cap"
    clock.now += 61
    assert h.unavailable_reason(clock.now) is None
    h.cool_down(clock.now, 2.0, "asked")
    assert h.unavailable_reason(clock.now) == "cooling_down"
    h.observe_ttft(1.0)
    h.observe_ttft(3.0)
    assert h.ewma_ttft_s == 2.0 and h.p95_ttft() is None  # too few samples for a p95


def test_p95_ttft_needs_enough_samples() -> None:
    h = DeploymentHealth("d", BreakerSettings(), max_concurrency=None, rpm=None, tpm=None,
                         alpha=0.3)
    for i in range(1, 101):
        h.observe_ttft(i / 100)
    assert h.p95_ttft() == pytest.approx(0.96)


class Dep:
    def __init__(self, name: str, weight: float, ttft: float | None, inflight: int) -> None:
        self.name = name
        self.weight = weight
        self.health = DeploymentHealth(name, BreakerSettings(), max_concurrency=None, rpm=None,
                                       tpm=None, alpha=1.0)
        self.health.ewma_ttft_s = ttft
        self.health.inflight = inflight


def test_strategies() -> None:
    rng = random.Random(7)
    fast, slow = Dep("fast", 1, 0.1, 0), Dep("slow", 1, 1.0, 0)
    picks = [choose([fast, slow], "latency", rng).name for _ in range(200)]
    assert picks.count("fast") == 200  # two of two: the faster always wins
    busy_fast = Dep("busy", 1, 0.1, 20)
    assert choose([busy_fast, slow], "latency", rng).name == "slow"  # 0.1 x 21 > 1.0 x 1
    heavy, light = Dep("heavy", 9, None, 0), Dep("light", 1, None, 0)
    picks = [choose([heavy, light], "weighted", rng).name for _ in range(2000)]
    assert 0.85 < picks.count("heavy") / 2000 < 0.95
    a, b = Dep("a", 1, None, 3), Dep("b", 2, None, 5)
    assert choose([a, b], "least_inflight", rng).name == "b"  # 5/2 < 3/1


def test_rate_limit_headers_openai_and_anthropic() -> None:
    info = rate_limit_info({"x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "6m0s",
                            "x-ratelimit-remaining-tokens": "1500",
                            "x-ratelimit-reset-tokens": "20ms",
                            "x-ratelimit-limit-requests": "500"})
    assert info is not None
    assert (info.remaining_requests, info.reset_requests_s, info.reset_tokens_s) == (0, 360, 0.02)
    assert info.exhausted_for_s == 360 and info.limit_requests == 500
    a = rate_limit_info({"anthropic-ratelimit-tokens-remaining": "0",
                         "anthropic-ratelimit-tokens-reset": "2000-01-01T00:00:00Z"})
    assert a is not None and a.remaining_tokens == 0 and a.reset_tokens_s == 0.0
    assert rate_limit_info({"content-type": "application/json"}) is None
