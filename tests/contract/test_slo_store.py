"""The SLO store contract (counts per window, evidence, drift samples, alert
state) on SQLite and Postgres: the same trace records, ratings and scores
give the same figures on both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from seawall.config import DriftSettings
from seawall.observe.records import TraceRecord
from seawall.quality.evaluator import DriftEvaluator
from seawall.quality.feedback_store import Feedback
from seawall.quality.score_store import Score
from seawall.quality.slo_store import EventQuery, SloStore
from seawall.store.factory import Stores


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[SloStore]:
    s = stores.slo_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _rec(i: int, at: float, *, status: int = 200, latency: float = 100.0, model: str = "m",
         pv: str | None = "p@1", out_tokens: int = 50) -> TraceRecord:
    return TraceRecord(
        trace_id=f"t{i}", endpoint="chat.completions", started_at=at, tenant="acme",
        model=model, deployment="d", status=status, latency_ms=latency,
        error_code="upstream_error" if status >= 500 else None,
        input=[{"role": "user", "content": f"question {i}"}], output="answer " * 5,
        prompt_tokens=10 + i % 7, completion_tokens=out_tokens, prompt_version=pv)


async def test_counts_per_window_and_evidence_for_each_kind(stores: Stores,
                                                            store: SloStore) -> None:
    now = time.time()
    recs = [_rec(i, now - 30 * i, status=502 if i % 5 == 0 else 200,
                 latency=2000.0 if i % 4 == 0 else 100.0) for i in range(20)]
    recs.append(_rec(99, now - 10, model="other", status=500))
    recs.append(TraceRecord(trace_id="fb", endpoint="feedback", started_at=now - 1,
                            tenant="acme", model="m", status=500))  # not a model call
    await stores.main.write_traces(recs)
    q = EventQuery("availability", model="m")
    # Windows: 100 s holds t0..t3 (t0 bad); 600 s holds t0..t19 (t0, t5, t10, t15 bad).
    got = await store.counts(q, [100.0, 600.0], now + 1)
    assert got == {100.0: (1, 4), 600.0: (4, 20)}
    assert await store.counts(EventQuery("availability"), [600.0], now + 1) == {600.0: (5, 21)}
    worst = await store.worst(q, now - 600, now + 1, 3)
    assert [e["trace_id"] for e in worst] == ["t0", "t5", "t10"]  # newest first at equal status
    assert worst[0]["status"] == 502 and worst[0]["error_code"] == "upstream_error"
    lat = EventQuery("latency", threshold=1000.0, model="m")
    # Of the 16 answers (no 5xx), t4, t8, t12, t16 were slow (t0 failed).
    assert await store.counts(lat, [600.0], now + 1) == {600.0: (4, 16)}
    assert [e["trace_id"] for e in await store.worst(lat, now - 600, now + 1, 2)] == ["t4", "t8"]

    fb = stores.feedback()
    await fb.open()
    try:
        for i in range(6):
            await fb.put(Feedback(trace_id=f"t{i}", user="u", tenant="acme",
                                  score=-1.0 if i < 2 else 1.0, comment=f"c{i}"))
        await fb.put(Feedback(trace_id="t99", user="u", tenant="acme", score=-1.0))
    finally:
        await fb.close()
    fq = EventQuery("feedback", threshold=0.0, model="m")
    assert await store.counts(fq, [600.0], time.time() + 1) == {600.0: (2, 6)}
    assert sorted(e["trace_id"] for e in await store.worst(fq, now - 600, time.time() + 1, 5)
                  ) == ["t0", "t1"]

    scores = stores.scores()
    await scores.open()
    try:
        for i, s in enumerate([5, 4, 2, None]):
            await scores.put(Score(trace_id=f"t{i}", judge="j", rubric="r", tenant="acme",
                                   model="m", score=s, status="ok" if s else "failed",
                                   created_at=now - i))
    finally:
        await scores.close()
    jq = EventQuery("judge", threshold=4.0, model="m", judge="j")
    assert await store.counts(jq, [600.0], now + 1) == {600.0: (1, 3)}  # failed ones skipped
    [worst_score] = await store.worst(jq, now - 600, now + 1, 5)
    assert (worst_score["trace_id"], worst_score["score"]) == ("t2", 2.0)
    assert await store.counts(EventQuery("judge", threshold=4.0, judge="other"), [600.0],
                              now + 1) == {600.0: (0, 0)}


async def test_alert_transitions_are_compare_and_set(store: SloStore) -> None:
    assert await store.transition("k", "resolved") is False  # never fired: nothing to resolve
    assert await store.transition("k", "firing", severity="page", source="slo", title="T",
                                  detail={"evidence": [{"trace_id": "t1"}]}) is True
    assert await store.transition("k", "firing", severity="page", source="slo",
                                  title="T") is False
    [a] = await store.alerts()
    assert (a["key"], a["status"], a["severity"], a["title"]) == ("k", "firing", "page", "T")
    assert a["detail"]["evidence"] == [{"trace_id": "t1"}] and a["resolved_at"] is None
    assert await store.transition("k", "resolved", detail={"why": "ok"}) is True
    assert await store.transition("k", "resolved") is False
    [a] = await store.alerts()
    assert a["status"] == "resolved" and a["resolved_at"] >= a["fired_at"]
    assert await store.transition("k", "firing", severity="ticket", title="T2") is True
    assert [(x["status"], x["severity"]) for x in await store.alerts()] == [("firing", "ticket")]


async def test_drift_on_stored_traffic(stores: Stores, store: SloStore) -> None:
    """Lengths of the answers of one group change in the recent hour: the
    evaluator finds that group (and only it) drifted, from random samples."""
    now = time.time()
    recs = []
    rng = np.random.default_rng(0)
    for i in range(120):  # reference: the hour before the recent one
        at = now - 3600 - 30 * (i + 1)
        recs.append(_rec(i, at, out_tokens=int(rng.integers(40, 60))))
        recs.append(_rec(1000 + i, at, pv="p@2", out_tokens=int(rng.integers(40, 60))))
    for i in range(120, 200):  # recent: answers of p@1 twice as long
        at = now - 30 * (i - 119)
        recs.append(_rec(i, at, out_tokens=int(rng.integers(90, 120))))
        recs.append(_rec(1000 + i, at, pv="p@2", out_tokens=int(rng.integers(40, 60))))
    await stores.main.write_traces(recs)
    assert await store.groups(now - 3600, now + 1, 10) == [("m", "p@1", 80), ("m", "p@2", 80)]
    ev = DriftEvaluator(DriftSettings(recent_s=3600, reference_s=7200, sample=60,
                                      min_samples=30, embeddings=False, permutations=100),
                        store, None, seed=1)
    reports = {r.prompt_version: r for r in await ev.evaluate(now + 1)}
    assert reports["p@1"].drifted and not reports["p@2"].drifted
    failing = {t.name for t in reports["p@1"].tests if t.p_value < reports["p@1"].alpha_each}
    assert failing == {"output_length"}
    assert all(t.n_reference == 60 and t.n_recent == 60 for t in reports["p@1"].tests)
    # Two evaluations in a row (consecutive: 2) fire (and clean ones resolve:
    # the sink sends a resolution only for an alert that fired).
    assert ev.alerts(list(reports.values()), 5) == []
    again = await ev.evaluate(now + 1)
    alerts = {a.key: a for a in ev.alerts(again, 5)}
    assert alerts["drift:m:p@2"].status == "resolved"
    alert = alerts["drift:m:p@1"]
    assert (alert.key, alert.status, alert.source) == ("drift:m:p@1", "firing", "drift")
    assert "output_length" in alert.summary


async def test_drift_on_embeddings_of_stored_inputs(stores: Stores, store: SloStore) -> None:
    """Same lengths, another topic: the MiniLM embedding test finds it and the
    evidence is the recent requests least like the reference."""
    from seawall.ml.embedder import Embedder

    now = time.time()
    cooking = ["how long do I bake {} bread", "what spice goes with {} soup",
               "how do I roast {} vegetables", "a sauce for {} pasta please"]
    code = ["python function to sort {} list", "fix this {} javascript bug",
            "sql query joining {} tables", "regex to match {} email addresses"]
    words = ["sourdough", "rye", "pumpkin", "garlic", "tomato", "spinach", "lemon", "wheat"]
    recs = []
    for i in range(32):
        text = cooking[i % 4].format(words[i % 8])
        r = _rec(i, now - 3600 - 60 * (i + 1))
        r.input = [{"role": "user", "content": text}]
        recs.append(r)
    for i in range(32):
        text = code[i % 4].format(words[i % 8])
        r = _rec(100 + i, now - 60 * (i + 1))
        r.input = [{"role": "user", "content": text}]
        recs.append(r)
    await stores.main.write_traces(recs)
    ev = DriftEvaluator(DriftSettings(recent_s=3600, reference_s=7200, sample=32,
                                      min_samples=20, permutations=300, alpha=0.1),
                        store, Embedder(), seed=2)
    [report] = await ev.evaluate(now + 1)
    failing = {t.name for t in report.tests if t.p_value < report.alpha_each}
    assert report.drifted and "input_embedding" in failing
    assert "output_embedding" not in failing  # the answers did not change
    assert len(report.novel) == 5
    assert all(int(n["trace_id"][1:]) >= 100 and n["input"] for n in report.novel)


async def test_long_windows_are_recounted_every_quarter_hour(stores: Stores,
                                                             store: SloStore) -> None:
    from seawall.config import parse_settings
    from seawall.quality.slo import LONG_REFRESH_S, SloEvaluator

    settings = parse_settings({"quality": {"slos": [
        {"name": "up", "kind": "availability", "objective": 0.99, "period_s": 7 * 86400}]}})
    ev = SloEvaluator(settings, store)
    now = time.time()
    await stores.main.write_traces(
        [_rec(i, now - 100, status=500 if i == 0 else 200) for i in range(10)]
        + [_rec(10 + i, now - 10 * 3600, status=500 if i < 5 else 200) for i in range(10)])
    [st] = await ev.evaluate(now)
    assert (st.bad, st.events) == (6, 20) and st.burn_rates["1h"] == pytest.approx(10.0)
    await stores.main.write_traces([_rec(20 + i, now - 12 * 3600, status=503)
                                    for i in range(10)])
    [st] = await ev.evaluate(now + 1)
    assert (st.bad, st.events) == (6, 20)  # the 7 d period: counted at most every 15 min
    [st] = await ev.evaluate(now + LONG_REFRESH_S + 1)
    assert (st.bad, st.events) == (16, 30)
    assert st.burn_rates["1h"] == pytest.approx(10.0)  # short windows: counted each time
    assert st.budget_remaining == pytest.approx(1 - (16 / 30) / 0.01)


async def test_a_long_window_is_sampled_by_probes_spread_over_it(stores: Stores,
                                                                 store: SloStore) -> None:
    """A window of many more rows than the sample: exactly ``n`` rows, all of
    the group (model, prompt version, answered text requests), from every
    part of the window; a small window still gives every row it has."""
    from seawall.quality.slo_store import SMALL

    now = time.time()
    n, rows, start = 20, 400, now - 4000
    recs = []
    for i in range(rows):  # the group: one request every 10 s over 4,000 s
        at = start + 10 * i
        recs.append(_rec(i, at))
        # Around it, rows that must never be drawn: another model, another
        # prompt version, a failed request, an embeddings call.
        recs.append(_rec(10_000 + i, at + 1, model="other"))
        recs.append(_rec(20_000 + i, at + 2, pv="p@2"))
        recs.append(_rec(30_000 + i, at + 3, status=500))
        emb = _rec(40_000 + i, at + 4)
        emb.endpoint = "embeddings"
        recs.append(emb)
    await stores.main.write_traces(recs)
    assert rows >= SMALL * n  # the probing path, not the sort
    for _ in range(3):  # random each time; the bounds hold every time
        got = await store.sample("traffic", "m", "p@1", start, now, n)
        ids = [int(r[0][1:]) for r in got]
        assert len(ids) == n == len(set(ids))
        assert all(i < 10_000 for i in ids)  # only the group's own rows
        quarters = [sum(1 for i in ids if q * rows // 4 <= i < (q + 1) * rows // 4)
                    for q in range(4)]
        assert min(quarters) >= n // 4 - 2, quarters  # spread over the whole window
    # Scores: the same way, by model and prompt version.
    scores = stores.scores()
    await scores.open()
    try:
        for i in range(rows):
            for model, pv in (("m", "p@1"), ("other", "p@1"), ("m", None)):
                await scores.put(Score(trace_id=f"t{i}", judge=f"j-{model}-{pv}", rubric="r",
                                       tenant="acme", model=model, prompt_version=pv,
                                       score=4.0 if model == "m" and pv else 1.0,
                                       status="ok", created_at=start + 10 * i))
    finally:
        await scores.close()
    got = await store.sample("scores", "m", "p@1", start, now, n)
    assert len(got) == n and all(r[0] == pytest.approx(4.0 / 5.0) for r in got)
    assert min(r[1] for r in got) < start + 1000 and max(r[1] for r in got) > now - 1000
    # A window of 5 rows (fewer than n): all 5.
    few = await store.sample("traffic", "m", "p@1", start, start + 45, n)
    assert sorted(int(r[0][1:]) for r in few) == [0, 1, 2, 3, 4]


async def test_sqlite_probes_use_the_model_time_index(tmp_path: Path) -> None:
    """The probe is an index search per instant, never a scan or a sort."""
    import aiosqlite

    from seawall.quality.slo_store import sample_points_sql
    from seawall.store.sqlite import SqliteStore

    main = SqliteStore(str(tmp_path / "seawall.db"))
    await main.open()
    await main.close()
    sql, args = sample_points_sql("traffic", "m", "p@1", 100.0, [1.0, 2.0, 3.0])
    async with aiosqlite.connect(tmp_path / "seawall.db") as db, \
            db.execute("EXPLAIN QUERY PLAN " + sql, args) as c:
        plan = " | ".join(str(r[-1]) for r in await c.fetchall())
    assert "SEARCH traces USING INDEX traces_model_time (model=? AND started_at>?" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN traces" not in plan, plan
