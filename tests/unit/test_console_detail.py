"""What the one-trace page draws (seawall/console/detail.py): bars placed in
whole percent of the request, attempts laid out in order from the upstream
stage, hostile or old records drawn as far as they make sense, and the
request a replay starts from."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.console.detail import MAX_BARS, attempt_bars, replay_of, waterfall

MS = 1_000_000  # nanoseconds


def test_waterfall_places_each_stage_against_the_request() -> None:
    t0 = 1_700_000_000 * 10**9
    bars = waterfall([["chat.completions", t0, t0 + 200 * MS], ["auth", t0, t0 + 2 * MS],
                      ["retrieve", t0 + 10 * MS, t0 + 60 * MS],
                      ["upstream", t0 + 100 * MS, t0 + 200 * MS]])
    assert [(b.name, b.offset, b.width) for b in bars] == [
        ("chat.completions", 0, 100), ("auth", 0, 1), ("retrieve", 5, 25), ("upstream", 50, 50)]
    assert bars[2].start_ms == 10.0 and bars[2].ms == 50.0


@pytest.mark.parametrize("spans", [None, "x", [], [["a"]], [["a", "b", "c"]], {"a": 1}])
def test_waterfall_of_no_or_broken_spans_is_empty(spans: Any) -> None:
    assert waterfall(spans) == []


def test_waterfall_of_a_hostile_record_is_bounded_and_in_range() -> None:
    spans = [["s" * 10_000, i, i - 5] for i in range(10_000)]  # ends before it starts
    bars = waterfall(spans)
    assert len(bars) == MAX_BARS
    assert all(0 <= b.offset <= 99 and 1 <= b.width <= 100 - b.offset and b.ms == 0
               and len(b.name) == 100 for b in bars)


def test_attempts_follow_each_other_from_the_upstream_stage_and_a_hedge_runs_alongside() -> None:
    attempts = [{"deployment": "a", "outcome": "upstream_error", "ms": 10.0},
                {"deployment": "b", "outcome": "hedge_lost", "ms": 30.0},
                {"deployment": "c", "outcome": "ok", "ms": 20.0, "hedge": True}]
    bars = attempt_bars(attempts, 100.0, origin_ms=50.0)
    assert [(b.start_ms, b.offset, b.width) for b in bars] == [
        (50.0, 50, 10), (60.0, 60, 30), (60.0, 60, 20)]
    assert bars[2].note == "ok (hedge)"
    assert attempt_bars(None, 10.0) == [] and attempt_bars(["x", 3], 10.0) == []
    odd = attempt_bars([{"deployment": "a", "ms": "soon"}, {"deployment": "b", "ms": "inf"}],
                       None)
    assert [(b.ms, b.offset, b.width) for b in odd] == [(0.0, 0, 1), (0.0, 0, 1)]


def test_replay_of_a_chat_and_of_a_rag_request() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert replay_of({"model": "gpt-x", "input": msgs}) == {"model": "gpt-x", "messages": msgs}
    routed = replay_of({"model": "small", "input": msgs, "route": {"route": "auto"}})
    assert routed["route"] == "auto"
    rag = replay_of({"model": "gpt-x", "input": [{"role": "system", "content": "[1] ctx"},
                                                 {"role": "user", "content": "q?"}],
                     "rag": {"collection": "docs", "query": "q?"}})
    assert rag == {"model": "gpt-x", "collection": "docs",
                   "messages": [{"role": "user", "content": "q?"}]}
    assert replay_of({"model": "m", "input": None}) == {"model": "m"}
