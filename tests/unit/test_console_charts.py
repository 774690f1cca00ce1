"""The Quality page's drift series: one per tested group, drifted groups
first, p-values floored for a log scale, untested groups named apart."""

from __future__ import annotations

from seawall.console.charts import FLOOR_P, drift_series
from seawall.quality.history import DriftPoint


def _pt(at: float, pv: str | None, min_p: float | None, drifted: bool = False) -> DriftPoint:
    tests = {} if min_p is None else {"output_length": min_p}
    return DriftPoint(at=at, model="m", prompt_version=pv, requests=50, min_p=min_p,
                      drifted=drifted, alpha_each=0.005, tests=tests)


def test_series_per_tested_group_drifted_first() -> None:
    points = [_pt(1, "a@1", 0.5), _pt(1, "b@1", 0.4), _pt(1, None, None),
              _pt(2, "a@1", None), _pt(2, "b@1", 0.0, drifted=True), _pt(2, None, None)]
    series, untested = drift_series(points)
    assert [g["prompt_version"] for g in series] == ["b@1", "a@1"]
    assert untested == ["m · none"]
    b, a = series
    assert b["at"] == [1, 2] and b["min_p"] == [0.4, FLOOR_P] and b["drifted"] == [0, 1]
    assert b["tests"] == {"output_length": [0.4, FLOOR_P]} and b["last_drifted"]
    assert a["min_p"] == [0.5, None] and a["tests"]["output_length"] == [0.5, None]
    assert (a["rounds"], a["drifted_rounds"]) == (2, 0)
