"""The quality history contract on SQLite and Postgres: drift rounds per
model x prompt version and SLO burn rates, read back oldest first, bounded,
pruned by age; and the evaluator writing its rounds into it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from seawall.config import DriftSettings, Settings, SloSettings, parse_settings
from seawall.observe.records import TraceRecord
from seawall.quality.alerts import AlertSink
from seawall.quality.evaluator import QualityEvaluator
from seawall.quality.history import DriftPoint, QualityHistory, SloPoint
from seawall.store.factory import Stores


@pytest.fixture
async def history(stores: Stores) -> AsyncIterator[QualityHistory]:
    h = stores.quality_history()
    await h.open()
    try:
        yield h
    finally:
        await h.close()


def _pt(at: float, pv: str | None = "p@1", min_p: float | None = 0.2,
        drifted: bool = False) -> DriftPoint:
    tests = {} if min_p is None else {"output_length": min_p, "refusal_rate": 0.9}
    return DriftPoint(at=at, model="m", prompt_version=pv, requests=80, min_p=min_p,
                      drifted=drifted, alpha_each=0.005, tests=tests)


async def test_rounds_read_back_oldest_first(history: QualityHistory) -> None:
    now = time.time()
    await history.add([_pt(now - 120), _pt(now - 120, pv=None, min_p=None)], now - 86400)
    await history.add([_pt(now - 60, min_p=0.0001, drifted=True)], now - 86400)
    got = await history.since(now - 3600)
    assert [(p.at, p.prompt_version) for p in got][0][0] == now - 120
    assert [p.at for p in got] == sorted(p.at for p in got)
    by = {(p.at, p.prompt_version): p for p in got}
    assert by[(now - 120, None)].min_p is None and by[(now - 120, None)].tests == {}
    latest = by[(now - 60, "p@1")]
    assert latest.drifted and latest.min_p == 0.0001 and latest.requests == 80
    assert latest.tests == {"output_length": 0.0001, "refusal_rate": 0.9}
    assert latest.alpha_each == 0.005
    # Bounded: the newest ``limit`` points, still oldest first.
    assert [p.at for p in await history.since(now - 3600, limit=1)] == [now - 60]
    assert await history.since(now - 30) == []


async def test_old_rounds_are_pruned_as_a_round_is_written(history: QualityHistory) -> None:
    now = time.time()
    await history.add([_pt(now - 40 * 86400), _pt(now - 10 * 86400)], now - 365 * 86400)
    assert len(await history.since(0)) == 2
    await history.add([_pt(now)], keep_after=now - 30 * 86400)
    assert [p.at for p in await history.since(0)] == [now - 10 * 86400, now]
    # The same round written twice (a retry) is kept once.
    await history.add([_pt(now)], keep_after=now - 30 * 86400)
    assert len(await history.since(0)) == 2


async def test_evaluator_writes_each_round(backend: Settings, stores: Stores) -> None:
    """Two drift rounds over stored traffic give two points of the group."""
    drift = DriftSettings(embeddings=False, min_samples=10, sample=30, recent_s=3600,
                          reference_s=7200)
    settings = backend.model_copy(update={"quality": backend.quality.model_copy(
        update={"drift": drift})})
    now = time.time()
    recs = [TraceRecord(trace_id=f"t{i}", endpoint="chat.completions",
                        started_at=now - (5000 if i < 30 else 600) + i, tenant="acme",
                        model="m", deployment="d", status=200, latency_ms=50.0,
                        input=[{"role": "user", "content": f"q {i}"}], output="answer",
                        prompt_tokens=10, completion_tokens=20 + (200 if i >= 30 else 0),
                        prompt_version="p@1") for i in range(60)]
    await stores.main.write_traces(recs)
    slo = stores.slo_store()
    await slo.open()
    ev = QualityEvaluator(settings, slo, AlertSink(settings.alerts),
                          history=stores.quality_history())
    await ev.start()
    try:
        await ev.evaluate_drift(send=False)
        await ev.evaluate_drift(send=False)
        assert ev.history is not None
        points = await ev.history.since(now - 3600)
    finally:
        await ev.close()
        await slo.close()
    assert len(points) == 2 and {(p.model, p.prompt_version) for p in points} == {("m", "p@1")}
    assert all(p.drifted and p.min_p is not None and p.min_p < p.alpha_each for p in points)
    assert "output_length" in points[0].tests


async def test_slo_points_read_back_and_are_pruned(history: QualityHistory) -> None:
    now = time.time()
    await history.add_slo([
        SloPoint(at=now - 600, name="avail", current=0.999, budget_remaining=0.9,
                 burn_rates={"1h": 0.5, "5m": 2.0}),
        SloPoint(at=now - 600, name="judged", current=None, budget_remaining=1.0,
                 burn_rates={})], keep_after=now - 86400)
    await history.add_slo([SloPoint(at=now - 300, name="avail", current=0.98,
                                    budget_remaining=0.4, burn_rates={"1h": 6.0})],
                          keep_after=now - 86400)
    got = await history.slo_since(now - 3600)
    assert [(p.at, p.name) for p in got][-1] == (now - 300, "avail")
    first = next(p for p in got if p.name == "avail" and p.at == now - 600)
    assert first.burn_rates == {"1h": 0.5, "5m": 2.0} and first.current == 0.999
    assert next(p for p in got if p.name == "judged").current is None
    assert [p.at for p in await history.slo_since(now - 3600, limit=1)] == [now - 300]
    await history.add_slo([], keep_after=now - 400)  # pruning alone
    assert [p.at for p in await history.slo_since(0)] == [now - 300]
    assert await history.since(0) == []  # the drift table is another


async def test_evaluator_keeps_slo_rounds_every_five_minutes_at_most(
        backend: Settings, stores: Stores) -> None:
    slo_cfg = SloSettings.model_validate({
        "name": "avail", "kind": "availability", "objective": 0.99, "period_s": 3600,
        "alerts": [{"severity": "page", "long_s": 600, "short_s": 60, "burn_rate": 2.0}]})
    settings = backend.model_copy(update={"quality": backend.quality.model_copy(
        update={"slos": [slo_cfg]})})
    now = time.time()
    await stores.main.write_traces([TraceRecord(
        trace_id=f"s{i}", endpoint="chat.completions", started_at=now - 30 - i,
        tenant="acme", model="m", deployment="d", status=503 if i % 4 == 0 else 200,
        latency_ms=10.0, input=[], output="", prompt_tokens=1, completion_tokens=1)
        for i in range(20)])
    slo = stores.slo_store()
    await slo.open()
    ev = QualityEvaluator(settings, slo, AlertSink(settings.alerts),
                          history=stores.quality_history())
    await ev.start()
    try:
        await ev.evaluate_slos(send=False)
        await ev.evaluate_slos(send=False)  # within five minutes: not kept again
        points = await ev.slo_points(now - 3600)
    finally:
        await ev.close()
        await slo.close()
    assert [p.name for p in points] == ["avail"]
    assert points[0].current == 0.75 and points[0].burn_rates
    assert max(points[0].burn_rates.values()) > 1  # a quarter failed: burning fast


async def test_a_failed_history_write_leaves_the_round_standing(tmp_path: Path) -> None:
    """The history's connection gone (SQLite: closed under the evaluator):
    the drift round still answers; only the chart misses a point."""
    settings = parse_settings({"data_dir": str(tmp_path), "quality": {"drift": {
        "embeddings": False}}})
    stores = Stores(settings)
    await stores.open()
    now = time.time()
    await stores.main.write_traces([TraceRecord(
        trace_id=f"f{i}", endpoint="chat.completions", started_at=now - 60 - i, tenant="acme",
        model="m", deployment="d", status=200, latency_ms=10.0, input=[], output="",
        prompt_tokens=1, completion_tokens=1) for i in range(3)])
    slo = stores.slo_store()
    await slo.open()
    history = stores.quality_history()
    ev = QualityEvaluator(settings, slo, AlertSink(settings.alerts, state=slo),
                          history=history)
    await ev.start()
    try:
        await history.close()  # every write now fails
        reports = await ev.evaluate_drift()
        assert [(r.model, r.requests) for r in reports] == [("m", 3)]
        assert ev.last.drift == reports
    finally:
        await ev.close()
        await slo.close()
        await stores.close()
