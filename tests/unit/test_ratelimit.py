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
