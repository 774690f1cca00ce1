"""The score store contract: one suite, run against SQLite and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from seawall.quality.score_store import Score, ScoreStore
from seawall.store.factory import Stores


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[ScoreStore]:
    s = stores.scores()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _s(trace: str = "t1", rubric: str = "helpfulness", score: float | None = 4.0,
       at: float = 1000.0, model: str = "cheap", **kw: object) -> Score:
    return Score(trace_id=trace, judge="j", rubric=rubric, tenant="acme", model=model,
                 score=score, created_at=at, **kw)  # type: ignore[arg-type]


async def test_put_then_read_every_field(store: ScoreStore) -> None:
    full = _s(rubric_version="3", judge_model="strong", route="auto", prompt_version="faq@2",
              experiment="exp=canary", reasoning="clear é", attempts=2, cost_usd=0.001,
              scale_max=5.0)
    await store.put(full)
    [got] = await store.for_trace("t1")
    assert got == full
    assert got.fraction == 0.8
    assert await store.for_trace("t2") == []


async def test_a_second_score_of_the_same_rubric_replaces_the_first(store: ScoreStore) -> None:
    await store.put(_s(score=None, status="failed", reasoning="timeout"))
    await store.put(_s(score=2.0, attempts=3))
    await store.put(_s(rubric="safety", score=5.0))
    got = await store.for_trace("t1")
    assert [(g.rubric, g.score, g.status, g.attempts) for g in got] == [
        ("helpfulness", 2.0, "ok", 3), ("safety", 5.0, "ok", 1)]


async def test_window_filters_and_orders_newest_first(store: ScoreStore) -> None:
    await store.put(_s("a", at=100.0))
    await store.put(_s("b", at=200.0, model="strong"))
    await store.put(_s("c", at=300.0, experiment="exp=canary"))
    await store.put(_s("d", at=400.0, score=None, status="failed"))
    assert [s.trace_id for s in await store.window(150.0)] == ["d", "c", "b"]
    assert [s.trace_id for s in await store.window(0.0, 300.0)] == ["b", "a"]
    assert [s.trace_id for s in await store.window(0.0, model="strong")] == ["b"]
    assert [s.trace_id for s in await store.window(0.0, experiment="exp=canary")] == ["c"]
    assert [s.trace_id for s in await store.window(0.0, status="ok", model=None)] == ["c", "b", "a"]
    assert [s.trace_id for s in await store.window(0.0, limit=2)] == ["d", "c"]
    with pytest.raises(ValueError):
        await store.window(0.0, **{"1=1; --": "x"})


async def test_cost_since_sums_in_the_database(store: ScoreStore) -> None:
    await store.put(_s("a", at=100.0, cost_usd=0.25))
    await store.put(_s("b", at=200.0, cost_usd=0.5))
    await store.put(Score(trace_id="c", judge="other", rubric="r", tenant="t", model="m",
                          score=1.0, created_at=300.0, cost_usd=2.0))
    assert await store.cost_since(0.0) == 2.75
    assert await store.cost_since(150.0, judge="j") == 0.5
    assert await store.cost_since(0.0, judge="nobody") == 0.0
