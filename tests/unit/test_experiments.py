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


# -- the quality guard and decisions one tenant cannot steer (docs/experiments.md) --

def test_a_breach_needs_more_than_half_the_candidate_tenants() -> None:
    from seawall.experiments.canary import robust_breach

    slow = lambda v: v > 10  # noqa: E731
    assert robust_breach({"a": 50}, slow, 1) == (True, 1, 1)  # one tenant: its own call
    assert robust_breach({"a": 50}, slow, 2) == (False, 1, 1)  # too few tenants
    assert robust_breach({"a": 50, "b": 5}, slow, 1) == (False, 1, 2)  # one of two: no
    assert robust_breach({"a": 50, "b": 15}, slow, 1) == (True, 2, 2)
    assert robust_breach({"a": 50, "b": 15, "c": 1}, slow, 1) == (True, 2, 3)
    assert robust_breach({}, slow, 1) == (False, 0, 0)


def test_latency_is_compared_per_output_token_and_per_tenant() -> None:
    c, _ = _canary(steps=[50, 100], min_requests=20, max_p95_ratio=2)
    for i in range(20):  # the baseline: 20 ms a token, two tenants
        c.observe(0, False, 200.0, "ops" if i % 2 else "app", 10)
    for i in range(20):  # a long answer is not a slow model: 1000 ms for 50 tokens
        c.observe(1, False, 1000.0, "ops" if i % 2 else "app", 50)
    assert c.state.status == "promoted"
    c, _ = _canary(steps=[50, 100], min_requests=20, max_p95_ratio=2)
    for i in range(20):
        c.observe(0, False, 200.0, "ops" if i % 2 else "app", 10)
    for i in range(20):  # 100 ms a token for both tenants: a slow model
        c.observe(1, False, 1000.0, "ops" if i % 2 else "app", 10)
    assert c.state.status == "rolled_back"
    assert "per output token" in (c.state.reason or "") and "2 of 2 tenants" in c.state.reason


def test_one_tenants_slow_requests_do_not_roll_back_the_canary() -> None:
    """The hostile-tenant finding of issue 17: one tenant's long prompts made the
    candidate's p95 a hundred times the baseline's."""
    c, _ = _canary(steps=[50, 100], min_requests=40, max_p95_ratio=1.5)
    for _ in range(40):
        c.observe(0, False, 14.0, "app", 10)
    for _ in range(15):
        c.observe(1, False, 14.0, "app", 10)
    for _ in range(25):
        c.observe(1, False, 1554.0, "mallory", 10)
    assert c.state.status == "promoted", c.state.reason
    measured = c.state.history[-1]
    # By the request-level figure of old it would have been rolled back.
    assert measured["candidate"]["p95_ms"] > 1.5 * measured["baseline"]["p95_ms"]
    assert measured["candidate"]["tenants"] == 2


def test_one_tenants_errors_do_not_roll_back_the_canary() -> None:
    """Error rates are per tenant too: one tenant whose requests make the
    candidate fail is one voice, not the verdict."""
    c, _ = _canary(steps=[50, 100], min_requests=40, max_error_rate_increase=0.02)
    for i in range(40):
        c.observe(0, False, 14.0, "app" if i % 2 else "ops", 10)
    for i in range(10):
        c.observe(1, False, 14.0, "app" if i % 2 else "ops", 10)
    for _ in range(30):
        c.observe(1, True, 14.0, "mallory", 0)
    assert c.state.status == "promoted", c.state.reason
    judged = c.state.history[-1]
    # By the request-level figure of old (75% against 0%) it would have been rolled back.
    assert judged["candidate"]["error_rate"] == 0.75 and judged["baseline"]["error_rate"] == 0


def test_requests_refused_before_the_candidate_are_nobodys_errors() -> None:
    """One tenant's failures open the candidate's circuit breaker; the others'
    requests refused by it say nothing about the candidate: not their errors,
    and a step with too few tenants reaching the candidate waits."""
    c, _ = _canary(steps=[50, 100], min_requests=40, min_tenants=2)
    for i in range(40):
        c.observe(0, False, 14.0, "app" if i % 2 else "ops", 10)
    for _ in range(10):
        c.observe(1, True, 14.0, "mallory", 0)
    for i in range(30):  # refused by the open breaker: never reached an upstream
        c.observe(1, True, 1.0, "app" if i % 2 else "ops", 0, attempted=False)
    assert c.state.status == "running" and not c.state.history  # one tenant reached it
    c.observe(1, False, 14.0, "app", 10)  # a second tenant: mallory's breach is no majority
    assert c.state.status == "promoted", c.state.reason
    assert c.state.history[-1]["candidate"]["errors"] == 40  # all counted in the figures


def test_errors_across_tenants_roll_back_the_canary() -> None:
    c, _ = _canary(steps=[50, 100], min_requests=40, max_error_rate_increase=0.02)
    for i in range(40):
        c.observe(0, i == 0, 14.0, "app" if i % 2 else "ops", 10)  # ops 5%, app 0%
    for i in range(40):  # 20% of each tenant's requests fail
        c.observe(1, i % 10 < 2, 14.0, "app" if i % 2 else "ops", 10)
    assert c.state.status == "rolled_back"
    reason = c.state.reason or ""
    assert reason.startswith("error rate 20.0% against the baseline's 2.5%"), reason
    assert "in 2 of 2 tenants" in reason


def _quality(c: Canary, arm: int, scores: list[float], tenant: str = "t") -> None:
    from seawall.experiments.canary import Quality

    for s in scores:
        c.observe_quality(arm, tenant, Quality(judged=1, score_sum=s))


def test_judged_quality_below_the_baseline_rolls_back_as_scores_arrive() -> None:
    c, _ = _canary(steps=[50, 100], min_requests=1000, min_judged=10, max_quality_drop=0.2)
    _quality(c, 0, [0.9] * 10)
    _quality(c, 1, [0.8] * 10)  # 0.1 below: within the margin
    assert c.state.status == "running"
    _quality(c, 1, [0.2])  # mean 0.75: still within
    assert c.state.status == "running"
    _quality(c, 1, [0.0])  # 8.2 / 12 = 0.68: rolled back as it arrives
    assert c.state.status == "rolled_back"
    reason = c.state.reason or ""
    assert "judged quality 0.68" in reason and "0.90" in reason and "-0.2" in reason
    assert "over 12 judged answers" in reason
    assert c.state.history[-1]["candidate"]["judged"] == 12
    assert c.state.history[-1]["baseline"]["mean_score"] == 0.9


def test_too_few_judged_answers_or_one_tenants_ratings_decide_nothing() -> None:
    from seawall.experiments.canary import Quality

    c, _ = _canary(steps=[50, 100], min_requests=1000, min_judged=10, min_rated=10,
                   max_negative_rate_increase=0.1)
    _quality(c, 0, [0.9] * 10)
    _quality(c, 1, [0.0] * 9)  # one short of min_judged
    assert c.state.status == "running"
    for arm, tenant, neg in ((0, "app", 0), (1, "app", 0), (1, "mallory", 1)):
        for _ in range(10):
            c.observe_quality(arm, tenant, Quality(rated=1, negative=neg))
    assert c.state.status == "running"  # mallory's thumbs-down: one tenant of two
    for _ in range(10):
        c.observe_quality(1, "app", Quality(rated=1, negative=1))
    assert c.state.status == "rolled_back" and "thumbs-down rate" in (c.state.reason or "")


def test_shared_counts_keep_tenants_and_quality_through_redis_fields() -> None:
    from seawall.experiments.canary import Quality
    from seawall.experiments.shared_window import Counts

    c = Counts()
    for i in range(100):
        c.add(False, 10.0 + i, "a|b", normalised_ms=0.25)  # a tenant name with the separator
        c.add(i % 10 == 0, 10.0, "other", normalised_ms=0.5)
    c.add_quality("a|b", Quality(judged=3, score_sum=2.25, rated=4, negative=1))
    raw = {k.encode(): str(v).encode() for k, v in c.fields().items()}
    back = Counts.from_hash(raw)
    assert back == c
    p95 = back.tenant_p95()
    assert 0.25 <= p95["a|b"] <= 0.25 * 1.1 and 0.5 <= p95["other"] <= 0.5 * 1.1
    assert back.quality()["a|b"] == Quality(judged=3, score_sum=2.25, rated=4, negative=1)
    assert back.tenant_errors() == {"a|b": (100, 0), "other": (100, 10)}
    merged = Counts()
    merged.merge(c)
    merged.merge(c)
    assert merged.requests == 400 and merged.quality()["a|b"].judged == 6
    assert merged.tenant_errors()["other"] == (200, 20)


def test_a_salt_changes_every_arm_and_is_needed_to_compute_one() -> None:
    users = [f"u{i}" for i in range(2_000)]
    plain = [pick([50, 50], draw("exp", u)) for u in users]
    salted = [pick([50, 50], draw("exp", u, "s" * 32)) for u in users]
    assert draw("exp", "u1", "s" * 32) == draw("exp", "u1", "s" * 32)  # still sticky
    chosen = [s for p, s in zip(plain, salted, strict=True) if p == 1]  # picked without it
    assert 0.4 < sum(chosen) / len(chosen) < 0.6  # land in either arm alike


def test_reserved_experiment_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        _settings({"_seawall_salt": {"model": "a", "variants": [{"name": "x"},
                                                                {"name": "y"}]}})


def test_new_canary_settings_at_their_defaults_keep_a_running_rollouts_fingerprint() -> None:
    """An upgrade must not restart a rollout (or re-run a rolled-back one)."""
    from seawall.experiments.service import fingerprint

    def fp(**canary: Any) -> str:
        s = _settings({"e": {"model": "a", "kind": "canary", "canary": canary,
                             "variants": [{"name": "x"}, {"name": "y"}]}})
        return fingerprint(s.experiments["e"])

    assert fp() == "4e2ce2d26c9808bc"  # as computed before these settings existed
    assert fp(min_tenants=2) != fp() and fp(min_judged=0) != fp()
