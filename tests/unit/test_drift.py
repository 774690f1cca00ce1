"""Drift tests on synthetic distributions: the false-alarm rate stays at or
below alpha when nothing changed (over many seeds), and each kind of shift is
found by the test meant for it."""

from __future__ import annotations

import numpy as np
import pytest

from seawall.quality import drift

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sample(rng: np.random.Generator, n: int, *, emb_shift: float = 0.0,
            length_scale: float = 1.0, refusal: float = 0.05, score_mean: float = 0.8,
            cyrillic: float = 0.0) -> drift.Sample:
    centre = np.zeros(DIM)
    centre[0] = 1.0
    centre[1] = emb_shift
    emb = _unit(centre + rng.normal(0, 0.5, (n, DIM)))
    out = _unit(centre + rng.normal(0, 0.5, (n, DIM)))
    return drift.Sample(
        input_len=np.round(rng.lognormal(4, 0.6, n) * length_scale),
        output_len=np.round(rng.lognormal(5, 0.5, n)),
        refusal=rng.random(n) < refusal,
        script=["cyrillic" if c else "latin" for c in rng.random(n) < cyrillic],
        scores=np.clip(np.round(rng.normal(score_mean * 5, 0.8, n)), 1, 5) / 5,
        ratings=np.where(rng.random(n) < 0.1, -1.0, 1.0),
        input_emb=emb, output_emb=out)


def _compare(ref: drift.Sample, cur: drift.Sample, seed: int,
             alpha: float = 0.05) -> tuple[list[drift.TestResult], float, bool]:
    return drift.compare(ref, cur, alpha=alpha, permutations=300, min_samples=20,
                         rng=np.random.default_rng(seed))


def test_false_alarm_rate_at_most_alpha_on_the_same_distribution() -> None:
    alpha, runs, alarms = 0.05, 100, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        results, each, drifted = _compare(_sample(rng, 60), _sample(rng, 60), seed, alpha)
        # Every test ran but chi-square (one script only) and, when no answer
        # in either window refused, Fisher's.
        assert len(results) in (7, 8)
        assert each == pytest.approx(alpha / len(results))
        alarms += drifted
    # Expected at most alpha * runs = 5 (Bonferroni is conservative); the
    # bound leaves room for chance: P(Binomial(100, 0.05) > 12) < 0.3%.
    assert alarms <= 12, alarms


def test_mmd_p_values_under_the_null_are_not_small() -> None:
    rejected = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        x, y = _unit(rng.normal(0, 1, (50, DIM))), _unit(rng.normal(0, 1, (50, DIM)))
        _, p = drift.mmd_test(x, y, 200, rng)
        assert 0 < p <= 1
        rejected += p < 0.05
    assert rejected <= 12, rejected  # about 5 expected


@pytest.mark.parametrize(("change", "test"), [
    ({"emb_shift": 0.8}, "input_embedding"),
    ({"length_scale": 2.0}, "input_length"),
    ({"refusal": 0.4}, "refusal_rate"),
    ({"score_mean": 0.5}, "judge_score"),
    ({"cyrillic": 0.4}, "output_script"),
])
def test_each_shift_is_found_by_its_test(change: dict[str, float], test: str) -> None:
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        results, each, drifted = _compare(_sample(rng, 100), _sample(rng, 100, **change), seed)
        assert drifted
        assert {r.name for r in results if r.p_value < each} >= {test}


def test_too_few_samples_run_no_test() -> None:
    rng = np.random.default_rng(1)
    results, _, drifted = drift.compare(_sample(rng, 10), _sample(rng, 10), alpha=0.01,
                                        permutations=100, min_samples=20, rng=rng)
    assert results == [] and not drifted


def test_novel_points_are_the_ones_unlike_the_reference() -> None:
    rng = np.random.default_rng(3)
    ref = _unit(np.tile(np.eye(DIM)[0], (30, 1)) + rng.normal(0, 0.1, (30, DIM)))
    cur = ref[:5].copy()
    cur[2] = np.eye(DIM)[5]  # orthogonal to everything in the reference
    assert drift.novel(ref, cur, 1)[0][0] == 2


def test_text_helpers() -> None:
    assert drift.text_of([{"role": "system", "content": "be nice"},
                          {"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == "hi"
    assert drift.text_of("plain") == "plain"
    assert drift.script_of("Привет, как дела?") == "cyrillic"
    assert drift.script_of("hello") == "latin"
    assert drift.script_of("123 !!") == "none"
    assert drift.is_refusal("I'm sorry, but I can't help with that.")
    assert not drift.is_refusal("Sure: the answer is 42.")


def test_cusum_finds_a_drop_that_started_inside_the_recent_window() -> None:
    found = 0
    for seed in range(5):
        rng = np.random.default_rng(300 + seed)
        ref = np.clip(rng.normal(0.8, 0.15, 200), 0, 1)
        recent = np.concatenate([np.clip(rng.normal(0.8, 0.15, 150), 0, 1),
                                 np.clip(rng.normal(0.6, 0.15, 50), 0, 1)])  # last quarter
        _, p = drift.cusum_test(ref, recent, 500, rng)
        found += p < 0.01
        # The same scores in the reverse order (a drop that recovered at once,
        # long ago) weigh less: CUSUM reads the order.
        _, p_start = drift.cusum_test(ref, np.concatenate([recent[150:], recent[:150]]), 500,
                                      rng)
        assert p_start >= p
    assert found >= 4


def test_cusum_under_the_null_is_not_small() -> None:
    rejected = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        ref, recent = rng.random(100), rng.random(100)
        _, p = drift.cusum_test(ref, recent, 200, rng)
        rejected += p < 0.05
    assert rejected <= 12, rejected  # about 5 expected
