"""deploy/prometheus/seawall-alerts.yml: well-formed rule groups (promtool's
structure), every metric it reads is one Seawall exports, and its burn-rate
thresholds are the defaults of quality.slos[].alerts. (promtool itself is not
installed here: its package is ~100 MB; run `promtool check rules` in CI.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from seawall.config import DEFAULT_BURN_ALERTS, AlertSettings, DriftSettings
from seawall.observe.metrics import Metrics
from seawall.quality.alerts import AlertSink
from seawall.quality.burn import window_label
from seawall.quality.evaluator import DriftEvaluator
from seawall.quality.slo import SloMetrics

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "seawall-alerts.yml"


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        rules += group["rules"]
    return rules


def _exported() -> set[str]:
    metrics = Metrics(models=["m"])
    slo = SloMetrics(metrics)
    slo.burn.labels("s", "1h").set(1)
    slo.budget.labels("s").set(1)
    slo.objective.labels("s").set(0.9)
    drift = DriftEvaluator(DriftSettings(), None, None, metrics)  # type: ignore[arg-type]
    drift.alarm_gauge.labels("m").set(0)
    AlertSink(AlertSettings(), metrics).deliveries.labels("sent").inc()
    metrics.background_restarts.labels("quality").inc()
    text = generate_latest(metrics.registry).decode()
    return set(re.findall(r"^(seawall_[a-z_]+)", text, re.M))


def test_rules_are_well_formed() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in ("page", "ticket")  # type: ignore[index]
        assert r["annotations"]["summary"]  # type: ignore[index]
        expr = str(r["expr"])
        for a, b in ("()", "{}", "[]"):
            assert expr.count(a) == expr.count(b), (r["alert"], a)
        if "for" in r:
            assert re.fullmatch(r"\d+[smhd]", str(r["for"]))


def test_every_metric_read_is_exported() -> None:
    exported = _exported()
    for r in _rules():
        for name in re.findall(r"\bseawall_[a-z_]+", str(r["expr"])):
            assert name in exported, (r["alert"], name)


def test_burn_thresholds_are_the_configured_defaults() -> None:
    found = set()
    for r in _rules():
        for window, rate in re.findall(r'window="(\w+)"\}\) >= ([\d.]+)', str(r["expr"])):
            found.add((r["labels"]["severity"], window, float(rate)))  # type: ignore[index]
    expected = set()
    for rule in DEFAULT_BURN_ALERTS:
        for w in (rule.long_s, rule.short_s):
            expected.add((rule.severity, window_label(w), rule.burn_rate))
    assert found == expected
