"""The quality loop's thresholds on their own (the loop's effects are tested
through a real gateway in tests/integration/test_quality_loop.py)."""

from __future__ import annotations

from typing import Any

from seawall.config import parse_settings
from seawall.experiments.service import parse_label
from seawall.quality.loop import QualityLoop


def _loop(**config: Any) -> QualityLoop:
    settings = parse_settings(config, env={})
    # Thresholds only: no store, cache or experiments are reached.
    return QualityLoop(settings, None, None, None, None)  # type: ignore[arg-type]


def test_a_negative_rating_is_below_the_middle_of_the_scale_unless_configured() -> None:
    thumbs = _loop()
    assert thumbs.negative(-1) and not thumbs.negative(0) and not thumbs.negative(1)
    stars = _loop(feedback={"scale": {"min": 1, "max": 5}})
    assert [stars.negative(s) for s in (1, 2, 2.9, 3, 5)] == [True, True, True, False, False]
    strict = _loop(feedback={"scale": {"min": 1, "max": 5}},
                   quality={"loop": {"feedback_threshold": 4}})
    assert strict.negative(3.5) and not strict.negative(4)


def test_arm_labels_of_trace_records_and_scores() -> None:
    assert parse_label("rollout=next") == ("rollout", "next")
    assert parse_label("rollout:next") == ("rollout", "next")
    assert parse_label("rollout") is None and parse_label("=next") is None
    assert parse_label("a=b=next") == ("a=b", "next")
