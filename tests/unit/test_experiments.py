"""Experiment arms and the canary state machine on their own."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.config import CanarySettings, ConfigError, parse_settings
from seawall.experiments.assign import draw, pick
from seawall.experiments.canary import Canary, CanaryState


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    assert draw("exp", "user-1") == draw("exp", "user-1")
    assert draw("exp", "user-1") != draw("other-exp", "user-1")  # experiments are independent
    arms = [pick([70, 30], draw("exp", f"user-{i}")) for i in range(20_000)]
    assert 0.28 < sum(arms) / len(arms) < 0.32
    assert pick([0, 1], 0.0) == 1 and pick([1, 0], 0.9999) == 0
    with pytest.raises(ValueError):
        pick([0, 0], 0.5)


def test_raising_the_candidate_share_only_moves_callers_to_it() -> None:
    users = [f"u{i}" for i in range(5_000)]
    before = {u: pick([95, 5], draw("canary", u)) for u in users}
    after = {u: pick([75, 25], draw("canary", u)) for u in users}
    assert all(after[u] == 1 for u in users if before[u] == 1)
    assert 0.23 < sum(after.values()) / len(users) < 0.27


def _canary(**settings: Any) -> tuple[Canary, list[CanaryState]]:
    changes: list[CanaryState] = []
    c = Canary("c", CanarySettings(**settings), CanaryState("fp"),
               lambda name, st: changes.append(CanaryState(**st.to_dict())))
    return c, changes


def _feed(c: Canary, arm: int, n: int, errors: int = 0, ms: float = 100.0) -> None:
    for i in range(n):
        c.observe(arm, i < errors, ms)


def test_a_healthy_candidate_is_promoted_step_by_step() -> None:
    c, changes = _canary(steps=[10, 50, 100], min_requests=20)
    assert c.weights() == (90, 10)
    _feed(c, 0, 20)
    _feed(c, 1, 19)
    assert not changes  # one request short
    _feed(c, 1, 1)
    assert c.share == 50 and changes[-1].status == "running"
    assert c.windows[0].requests == 0  # a fresh window for the new step
    _feed(c, 0, 20)
    _feed(c, 1, 20)
    assert c.state.status == "promoted" and c.share == 100 and c.weights() == (0, 100)
    assert "passed every step" in (c.state.reason or "")
    _feed(c, 1, 100, errors=100)  # a finished rollout is not judged again
    assert c.state.status == "promoted"


def test_an_erroring_candidate_is_rolled_back_with_the_reason() -> None:
    c, changes = _canary(steps=[10, 50, 100], min_requests=50, max_error_rate_increase=0.02)
    _feed(c, 0, 50, errors=1)
    _feed(c, 1, 50, errors=4)  # 8% vs 2%
    assert c.state.status == "rolled_back" and c.share == 0 and c.weights() == (100, 0)
    assert "error rate 8.0%" in (c.state.reason or "") and "2.0%" in (c.state.reason or "")
    assert changes[-1].history[-1]["candidate"]["errors"] == 4


def test_a_slow_candidate_is_rolled_back() -> None:
    c, _ = _canary(steps=[20, 100], min_requests=30, max_p95_ratio=1.5)
    _feed(c, 0, 30, ms=100)
    _feed(c, 1, 30, ms=180)
    assert c.state.status == "rolled_back" and "p95 latency 180 ms" in (c.state.reason or "")


def test_within_bounds_is_a_pass() -> None:
    c, _ = _canary(steps=[20, 100], min_requests=30, max_p95_ratio=1.5,
                   max_error_rate_increase=0.05)
    _feed(c, 0, 30, errors=1, ms=100)
    _feed(c, 1, 30, errors=2, ms=140)
    assert c.state.status == "promoted"


def _settings(experiments: dict[str, Any]) -> Any:
    return parse_settings({
        "providers": {"f": {"type": "fake"}},
        "models": {"a": {"provider": "f"}, "b": {"provider": "f"}},
        "experiments": experiments}, env={})


def test_experiment_config_is_checked() -> None:
    ok = _settings({"e": {"model": "a", "variants": [{"name": "x"}, {"name": "y", "model": "b"}]}})
    assert ok.experiments["e"].kind == "ab"
    bad = [
        ({"e": {"model": "zz", "variants": [{"name": "x"}, {"name": "y"}]}}, "not a model"),
        ({"e": {"model": "a", "variants": [{"name": "x"}, {"name": "y", "model": "q"}]}},
         "variants.1.model"),
        ({"e": {"model": "a", "kind": "canary",
                "variants": [{"name": "x"}, {"name": "y"}, {"name": "z"}]}}, "exactly two"),
        ({"e": {"model": "a", "variants": [{"name": "x"}, {"name": "x"}]}}, "unique"),
        ({"e": {"model": "a", "variants": [{"name": "x"}, {"name": "y"}]},
          "f": {"model": "a", "variants": [{"name": "x"}, {"name": "y"}]}}, "already takes part"),
        ({"e": {"model": "a", "kind": "canary", "canary": {"steps": [50, 10]},
                "variants": [{"name": "x"}, {"name": "y"}]}}, "rise"),
    ]
    for spec, words in bad:
        with pytest.raises(ConfigError, match=words):
            _settings(spec)


def test_experiment_arms_never_share_cache_entries() -> None:
    from seawall.cache.keys import cache_keys

    raw = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    plain = cache_keys(raw, "t", None, None)
    a, b = (cache_keys(raw, "t", None, None, arm=f"e={x}") for x in "ab")
    assert len({plain.exact, a.exact, b.exact}) == 3 and a.scope != b.scope
    assert cache_keys(raw, "t", None, None, arm=None) == plain  # keys from before experiments


def test_shared_counts_p95_is_within_a_bucket_of_the_exact_one() -> None:
    from seawall.experiments.canary import Window
    from seawall.experiments.shared_window import Counts

    exact, shared = Window(), Counts()
    for i in range(1, 2001):
        ms = 5.0 + (i % 400) * 2.5
        exact.add(i % 50 == 0, ms)
        shared.add(i % 50 == 0, ms)
    assert shared.requests == exact.requests and shared.errors == exact.errors
    assert exact.p95_ms <= shared.p95_ms <= exact.p95_ms * 1.1
    # What Redis hands back (bytes), junk fields ignored, a bucket out of range dropped.
    raw = {k.encode(): str(v).encode() for k, v in shared.fields().items()}
    back = Counts.from_hash({**raw, b"x": b"1", b"b99999": b"5"})
    assert back == shared
    assert Counts().p95_ms == 0.0 and Counts.from_hash({}).requests == 0
