import pytest

from seawall.pipeline.ratelimit import InMemoryRateLimiter


async def test_allows_a_minute_of_burst_then_refuses_with_wait() -> None:
    rl = InMemoryRateLimiter()
    for _ in range(3):
        assert await rl.acquire("k", 3) is None
    wait = await rl.acquire("k", 3)
    assert wait is not None and 0 < wait <= 20.0 + 1e-6
    assert await rl.acquire("other", 3) is None  # buckets are per key


@pytest.mark.parametrize("rpm", [1, 60, 600])
async def test_burst_equals_limit(rpm: int) -> None:
    rl = InMemoryRateLimiter()
    allowed = sum([await rl.acquire("k", rpm) is None for _ in range(rpm + 5)])
    assert allowed == rpm


async def test_a_charge_over_the_whole_bucket_passes_when_full_then_is_owed() -> None:
    from seawall.pipeline.ratelimit import Charge

    rl = InMemoryRateLimiter()
    assert (await rl.take([Charge("t", 100, 500)])).allowed  # taken as a full bucket
    await rl.give([Charge("t", 100, 400)])  # the rest is owed
    d = await rl.take([Charge("t", 100, 1)])
    assert not d.allowed and d.wait_s > 4 * 60  # five minutes' worth taken


def test_budget_periods_are_utc_days_and_months() -> None:
    from datetime import UTC, datetime

    from seawall.pipeline.budgets import period_of

    def at(*args: int) -> float:
        return datetime(*args, tzinfo=UTC).timestamp()

    assert period_of("day", at(2026, 12, 31, 23, 59, 59)) == ("2026-12-31", at(2027, 1, 1))
    assert period_of("month", at(2026, 12, 6, 12)) == ("2026-12", at(2027, 1, 1))
    assert period_of("month", at(2028, 2, 29, 23)) == ("2028-02", at(2028, 3, 1))
    assert period_of("month", at(2027, 1, 31)) == ("2027-01", at(2027, 2, 1))
    with pytest.raises(ValueError, match="week"):
        period_of("week", at(2026, 1, 1))
