"""The labelled set of bench/guardrails_eval.py as a regression floor: a change
that makes a detector miss more, or flag more look-alikes, fails here (the
table in docs/guardrails.md comes from the same run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "guardrails_eval.py"


def test_every_detector_keeps_its_precision_and_recall() -> None:
    spec = importlib.util.spec_from_file_location("guardrails_eval", BENCH)
    assert spec is not None and spec.loader is not None
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    items = ev.load()
    assert len(items) >= 400 and sum(1 for i in items if not i["labels"]) >= 100
    stats = ev.evaluate(items)
    for detector, s in stats.items():
        precision = s["tp"] / (s["tp"] + s["fp"])
        recall = s["tp"] / s["n"]
        assert s["n"] >= 40, detector
        assert precision >= 0.85 and recall >= 0.75, (detector, precision, recall)
