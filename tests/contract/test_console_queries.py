"""The console's reads (seawall/console/): the keyset-paged trace list with
its filters, and the hourly rollups behind the overview, on SQLite and on
Postgres, checked against the records themselves."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from seawall.config import Settings
from seawall.console.queries import TraceFilter
from seawall.console.rollup import DAY, EDGES, HOUR, ROLLUPS, SETTLE_S, bucket_of
from seawall.console.service import Console
from seawall.errors import InvalidRequest
from seawall.observe.records import TraceRecord
from seawall.quality.feedback_store import Feedback
from seawall.quality.score_store import Score
from seawall.store.factory import Stores

T0 = 1_700_000_000.0 - (1_700_000_000.0 % HOUR)  # an hour boundary
N = 240
# (trace, judge score, judge): two judges on t0020, a failed judging on t0030.
SCORES = [("t0012", 1.0, "j1"), ("t0020", 2.0, "j1"), ("t0020", 5.0, "j2"),
          ("t0021", 4.5, "j1"), ("t0030", None, "j1")]
FEEDBACK = {"t0003": [-1.0], "t0010": [1.0], "t0011": [1.0, -1.0]}


def _records() -> list[TraceRecord]:
    out = []
    for i in range(N):
        out.append(TraceRecord(
            trace_id=f"t{i:04d}", endpoint="chat.completions",
            # Four hours of records, a few sharing one timestamp (ties on started_at).
            started_at=T0 + (i // 2) * 120.0, tenant=("acme", "globex")[i % 2],
            model=("gpt-a", "gpt-b", "gpt-c")[i % 3], deployment="d", status=500 if i % 10 == 0
            else 200, input=[{"role": "user", "content": f"question {i} about Needle" if i % 7 == 0
                              else f"question {i}"}],
            output=f"answer {i}", prompt_tokens=10, completion_tokens=i, cost_usd=0.001 * i,
            latency_ms=10.0 + i, ttft_ms=5.0 + i / 2, cache="hit" if i % 4 == 0 else "miss",
            saved_usd=0.01 if i % 4 == 0 else 0.0, user=f"u{i % 5}",
            key_id=f"k{i % 3}", prompt_version=f"greet@{i % 4}",
            experiment=("exp=a", "exp=b")[i % 2] if i % 3 else None,
            route={"route": ("auto", "auto_x")[i % 2], "tier": "small", "model": "gpt-a",
                   "reason": "score"} if i % 5 == 0 else None))
    return out


@pytest.fixture
async def console(stores: Stores, backend: Settings) -> AsyncIterator[Console]:
    await stores.main.write_traces(_records())
    fb = stores.feedback()
    await fb.open()
    await fb.put(Feedback(trace_id="t0003", user="", tenant="globex", score=-1.0))
    await fb.put(Feedback(trace_id="t0010", user="", tenant="acme", score=1.0))
    await fb.put(Feedback(trace_id="t0011", user="a", tenant="globex", score=1.0))
    await fb.put(Feedback(trace_id="t0011", user="b", tenant="globex", score=-1.0))
    sc = stores.scores()
    await sc.open()
    for tid, score, judge in SCORES:
        await sc.put(Score(trace_id=tid, judge=judge, rubric="r", tenant="acme", model="gpt-a",
                           score=score, created_at=T0))
    await sc.close()
    c = Console(backend, stores.pg)
    await c.start(roll=False)
    try:
        yield c
    finally:
        await c.close()
        await fb.close()


async def _all(c: Console, limit: int = 7, **filters: Any) -> list[str]:
    """Every trace id the list gives for ``filters``, following the cursor."""
    f = TraceFilter(limit=limit, **filters)
    ids: list[str] = []
    for _ in range(1000):
        page = await c.queries.page(f)
        ids += [r["trace_id"] for r in page.rows]
        if page.next_cursor is None:
            return ids
        f.cursor = tuple(map(float, page.next_cursor.split("_")))  # type: ignore[assignment]
        f.cursor = (f.cursor[0], int(f.cursor[1]))
    raise AssertionError("the cursor never ended")


def _expected(pred: Any) -> list[str]:
    recs = sorted(_records(), key=lambda r: (r.started_at, int(r.trace_id[1:])), reverse=True)
    return [r.trace_id for r in recs if pred(r)]


async def test_pages_walk_every_record_once_newest_first(console: Console) -> None:
    assert await _all(console) == _expected(lambda r: True)
    assert await _all(console, limit=200) == _expected(lambda r: True)


@pytest.mark.parametrize(("filters", "pred"), [
    ({"model": "gpt-b"}, lambda r: r.model == "gpt-b"),
    ({"tenant": "acme"}, lambda r: r.tenant == "acme"),
    ({"tenant": "acme", "model": "gpt-a"}, lambda r: r.tenant == "acme" and r.model == "gpt-a"),
    ({"status": "error"}, lambda r: r.status >= 400),
    ({"status": "ok", "model": "gpt-c"}, lambda r: r.status < 400 and r.model == "gpt-c"),
    ({"cache": "hit"}, lambda r: r.cache == "hit"),
    ({"q": "needle"}, lambda r: "needle" in str(r.input).lower()),
    ({"q": "100%"}, lambda r: False),  # LIKE wildcards are matched literally
    ({"user": "u3", "since": T0 + 3600, "until": T0 + 9000},
     lambda r: r.user == "u3" and T0 + 3600 <= r.started_at < T0 + 9000),
    ({"key_id": "k1"}, lambda r: r.key_id == "k1"),
    ({"key_id": "k1", "model": "gpt-b"}, lambda r: r.key_id == "k1" and r.model == "gpt-b"),
    ({"prompt_version": "greet@2"}, lambda r: r.prompt_version == "greet@2"),
    ({"experiment": "exp=b"}, lambda r: r.experiment == "exp=b"),
    ({"route": "auto"}, lambda r: r.route is not None and r.route["route"] == "auto"),
    ({"route": "auto_x", "tenant": "globex"}, lambda r: r.route is not None
     and r.route["route"] == "auto_x" and r.tenant == "globex"),
    ({"route": "aut%"}, lambda r: False),  # no wildcard: the route's exact name
    ({"score_below": 3.0}, lambda r: any(t == r.trace_id and s is not None and s < 3.0
                                         for t, s, _ in SCORES)),
    ({"score_above": 4.0}, lambda r: any(t == r.trace_id and s is not None and s > 4.0
                                         for t, s, _ in SCORES)),
    ({"score_above": 1.5, "score_below": 2.5}, lambda r: r.trace_id == "t0020"),
    ({"feedback": "down"}, lambda r: any(v < 0 for v in FEEDBACK.get(r.trace_id, []))),
    ({"feedback": "up"}, lambda r: any(v > 0 for v in FEEDBACK.get(r.trace_id, []))),
    ({"feedback": "any"}, lambda r: r.trace_id in FEEDBACK),
    ({"feedback": "down", "model": "gpt-a"}, lambda r: r.model == "gpt-a"
     and any(v < 0 for v in FEEDBACK.get(r.trace_id, []))),
])
async def test_filters_match_the_records(console: Console, filters: dict[str, Any],
                                         pred: Any) -> None:
    assert await _all(console, **filters) == _expected(pred)


async def test_unindexed_filters_scan_a_bounded_window_and_continue(console: Console) -> None:
    """With a scan bound of 50 records, a rare match takes several pages; each
    partial page says where it stopped, and together they find every match."""
    console.queries.scan_rows = 50
    page = await console.queries.page(TraceFilter(q="needle", limit=20))
    assert page.scanned_to is not None and page.next_cursor is not None
    assert len(page.rows) < 20
    assert await _all(console, limit=20, q="needle") == _expected(
        lambda r: "needle" in str(r.input).lower())


async def test_feedback_counts_of_a_page(console: Console) -> None:
    counts = await console.queries.feedback_counts(["t0003", "t0004", "t0011"])
    assert counts == {"t0003": (0, 1), "t0011": (1, 1)}


def test_new_filters_parse_and_refuse_bad_values() -> None:
    f = TraceFilter.parse({"route": "auto", "score_below": "3", "feedback": "down"})
    assert (f.route, f.score_below, f.feedback) == ("auto", 3.0, "down")
    for bad in ({"feedback": "sideways"}, {"score_below": "nan"}, {"score_above": "x"},
                {"route": "r" * 201}):
        with pytest.raises(InvalidRequest):
            TraceFilter.parse(bad)


async def test_overview_from_rollups_equals_the_records(console: Console) -> None:
    now = T0 + 4 * HOUR + SETTLE_S + 1  # every hour of records has settled
    before = await console.overview("24h", None, now=now)  # all from the raw records
    while await console.roll_step(now=now):
        pass
    assert await console.rollup_upto() == T0 + 4 * HOUR
    assert await console.roll_step(now=now) is False  # nothing twice
    after = await console.overview("24h", None, now=now)
    recs = _records()
    for view in (before, after):
        t = view["total"]
        assert t["requests"] == N and t["errors"] == sum(r.status >= 400 for r in recs)
        assert t["completion_tokens"] == sum(r.completion_tokens for r in recs)
        assert math.isclose(t["cost_usd"], sum(r.cost_usd for r in recs))
        assert t["cache_hits"] == N // 4 and math.isclose(t["saved_usd"], 0.01 * N / 4)
        # p95 of the latencies: the histogram bucket that holds the true value.
        lat = sorted(r.latency_ms for r in recs)
        assert t["latency_p95"] == EDGES[bucket_of(lat[math.ceil(0.95 * N) - 1])]
        assert view["by_model"]["gpt-b"]["requests"] == N // 3
        assert sum(view["series"]["requests"]) == N
    for part in ("total", "by_model", "by_tenant"):  # the same, but for float sums' order
        assert _approx(before[part]) == _approx(after[part])
    assert before["series"] == after["series"]
    acme = await console.overview("24h", "acme", now=now)
    assert set(acme["by_tenant"]) == {"acme"} and acme["total"]["requests"] == N // 2


def _approx(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _approx(v) for k, v in d.items()}
    return round(d, 9) if isinstance(d, float) else d


def _by(recs: list[TraceRecord], attr: str) -> dict[str, tuple[int, int, float]]:
    """(requests, completion tokens, cost) per value of ``attr``, from the records."""
    out: dict[str, tuple[int, int, float]] = {}
    for r in recs:
        n, tok, cost = out.get(getattr(r, attr), (0, 0, 0.0))
        out[getattr(r, attr)] = (n + 1, tok + r.completion_tokens, cost + r.cost_usd)
    return out


def _table(view: dict[str, Any], dim: str) -> dict[str, tuple[int, int, float]]:
    return {k: (s["requests"], s["completion_tokens"], round(s["cost_usd"], 9))
            for k, s in view["by_dim"][dim].items()}


async def test_breakdowns_by_deployment_key_and_user_equal_the_records(
        console: Console) -> None:
    now = T0 + 4 * HOUR + SETTLE_S + 1
    before = await console.overview("24h", None, now=now)  # from the raw records
    while await console.roll_step(now=now):
        pass
    after = await console.overview("24h", None, now=now)  # from trace_rollup_dim
    acme = await console.overview("24h", "acme", now=now)
    recs = _records()
    for dim, attr in (("deployment", "deployment"), ("key", "key_id"), ("user", "user")):
        want = {k: (n, tok, round(cost, 9)) for k, (n, tok, cost) in _by(recs, attr).items()}
        assert _table(before, dim) == want and _table(after, dim) == want
        mine = _by([r for r in recs if r.tenant == "acme"], attr)
        assert {k: v[0] for k, v in _table(acme, dim).items()} == {
            k: v[0] for k, v in mine.items()}
    costs = [s["cost_usd"] for s in after["by_dim"]["user"].values()]
    assert costs == sorted(costs, reverse=True)  # costliest first
    # Longer ranges: whole days from the daily rollup, complete.
    for rng, at in (("7d", now), ("7d", T0 + 3 * DAY), ("30d", T0 + 20 * DAY)):
        while await console.roll_step(now=at):
            pass
        later = await console.overview(rng, None, now=at)
        assert later["total"]["requests"] == N
        for dim, attr in (("deployment", "deployment"), ("key", "key_id"), ("user", "user")):
            want = {k: (n, tok, round(cost, 9)) for k, (n, tok, cost) in _by(recs, attr).items()}
            assert _table(later, dim) == want
    assert await console.rollup_upto("traces_day") == _day(T0 + 20 * DAY)


async def test_each_hour_keeps_its_costliest_values_and_sums_the_rest(
        console: Console) -> None:
    console.dim_cap = 3
    now = T0 + 4 * HOUR + SETTLE_S + 1
    while await console.roll_step(now=now):
        pass
    rows = await console.queries.fetch(
        "SELECT hour, tenant, value, requests, cost_usd FROM trace_rollup_dim "
        "WHERE dim = 'user'")
    recs = _records()
    groups = {(float(r["hour"]), r["tenant"]) for r in rows}
    assert len(groups) == 8  # four hours, two tenants
    for hour, tenant in groups:
        mine = [r for r in recs if r.tenant == tenant and hour <= r.started_at < hour + HOUR]
        users = _by(mine, "user")
        assert len(users) == 5  # five users each hour: two fold into "(other)"
        top = sorted(users, key=lambda u: (-users[u][2], -users[u][0], u))[:3]
        got = {r["value"]: r for r in rows if (float(r["hour"]), r["tenant"]) == (hour, tenant)}
        assert set(got) == {*top, "(other)"}
        assert int(got["(other)"]["requests"]) == sum(users[u][0] for u in users
                                                       if u not in top)
        assert sum(int(r["requests"]) for r in got.values()) == len(mine)
    view = await console.overview("24h", None, now=now)
    assert sum(s["requests"] for s in view["by_dim"]["user"].values()) == N
    assert "(other)" in view["by_dim"]["user"]


def _day(t: float) -> float:
    return math.floor(t / DAY) * DAY


def _p95(values: list[float]) -> float:
    """The p95 a histogram gives: the upper edge of the true value's bucket."""
    v = sorted(values)
    return EDGES[bucket_of(v[math.ceil(0.95 * len(v)) - 1])]


async def test_percentiles_by_tenant_deployment_key_and_user_in_every_period(
        console: Console) -> None:
    """Latency and TTFT percentiles per tenant (operator's view) and per
    deployment / key / user: from the records, the hourly rollups and the
    daily ones alike (the records cross a UTC midnight)."""
    recs = _records()
    assert _day(recs[0].started_at) != _day(recs[-1].started_at)
    views = [await console.overview("24h", None, now=T0 + 4 * HOUR + SETTLE_S + 1)]
    for at in (T0 + 4 * HOUR + SETTLE_S + 1, T0 + 3 * DAY):
        while await console.roll_step(now=at):
            pass
        views.append(await console.overview("7d", None, now=at))
    views.append(await console.overview("24h", None, now=T0 + 4 * HOUR + SETTLE_S + 1))
    assert await console.rollup_upto("traces_day") == _day(T0 + 3 * DAY)
    for view in views:
        for tenant in ("acme", "globex"):
            mine = [r for r in recs if r.tenant == tenant]
            s = view["by_tenant"][tenant]
            assert s["latency_p95"] == _p95([r.latency_ms for r in mine])
            assert s["ttft_p95"] == _p95([r.ttft_ms for r in mine])
        for dim, attr in (("deployment", "deployment"), ("key", "key_id"), ("user", "user")):
            for value, s in view["by_dim"][dim].items():
                mine = [r for r in recs if getattr(r, attr) == value]
                assert s["latency_p95"] == _p95([r.latency_ms for r in mine]), (dim, value)
                assert s["ttft_p95"] == _p95([r.ttft_ms for r in mine])
                assert s["latency_p50"] is not None and s["latency_p99"] is not None
    acme = await console.overview("7d", "acme", now=T0 + 3 * DAY)
    assert set(acme["by_tenant"]) == {"acme"}
    assert acme["by_dim"]["key"]["k1"]["latency_p95"] == _p95(
        [r.latency_ms for r in recs if r.tenant == "acme" and r.key_id == "k1"])


async def test_routing_shares_and_savings_against_all_strong(console: Console) -> None:
    """Per route, each model's share of its requests, and the cost saved
    against the route's strongest tier (cache hits and the strong tier's own
    requests count at their cost): from the records and from the rollups."""
    console.strong = {"auto": ("gpt-c", 2e-6, 4e-6)}  # gpt-c is auto's strongest tier
    recs = [r for r in _records() if r.route is not None]
    views = [await console.overview("24h", None, now=T0 + 4 * HOUR + SETTLE_S + 1)]
    while await console.roll_step(now=T0 + 3 * DAY):
        pass
    views.append(await console.overview("7d", None, now=T0 + 3 * DAY))
    for view in views:
        assert set(view["routes"]) == {"auto", "auto_x"}
        for name in ("auto", "auto_x"):
            mine = [r for r in recs if r.route is not None and r.route["route"] == name]
            got = view["routes"][name]
            assert got["requests"] == len(mine)
            for model in ("gpt-a", "gpt-b", "gpt-c"):
                n = sum(r.model == model for r in mine)
                assert got["models"][model]["requests"] == n
                assert math.isclose(got["models"][model]["share"], n / len(mine))
        auto = [r for r in recs if r.route is not None and r.route["route"] == "auto"]
        strong = sum(r.cost_usd if r.model == "gpt-c" or r.cache == "hit"
                     else r.prompt_tokens * 2e-6 + r.completion_tokens * 4e-6 for r in auto)
        got = view["routes"]["auto"]
        assert math.isclose(got["strong_usd"], strong)
        assert math.isclose(got["saved_usd"], strong - sum(r.cost_usd for r in auto))
        x = view["routes"]["auto_x"]  # not configured now: no saving claimed
        assert math.isclose(x["saved_usd"], 0.0, abs_tol=1e-12)
    tenant = await console.overview("7d", "globex", now=T0 + 3 * DAY)
    assert set(tenant["routes"]) == {"auto_x"}  # odd records: globex, all auto_x


async def test_rollup_tables_match_their_one_definition(console: Console) -> None:
    """Every rollup table, hourly and daily, on this backend (Postgres: the
    migrations; SQLite: made at open) has the columns rollup.py defines."""
    pg = console.pg is not None
    for rollup in ROLLUPS:
        for daily in (False, True):
            table = rollup.table(daily)
            if pg:
                rows = await console.queries.fetch(
                    "SELECT column_name AS name, data_type AS type FROM "
                    "information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    (table,))
            else:
                rows = await console.queries.fetch(
                    "SELECT name, type FROM pragma_table_info(?) ORDER BY cid", (table,))
            want = ["day" if daily else "hour", *rollup.keys, *rollup.columns]
            assert [r["name"] for r in rows] == want, table
            types = {r["name"]: r["type"].lower() for r in rows}
            assert types["requests"] in ("integer", "bigint")
            assert types["cost_usd"] in ("real", "double precision")
            assert types["latency"] == "text"


OLD_DIM_TABLE = """CREATE TABLE trace_rollup_dim (
    hour REAL NOT NULL, tenant TEXT NOT NULL, dim TEXT NOT NULL, value TEXT NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, cache_hits INTEGER NOT NULL,
    saved_usd REAL NOT NULL, PRIMARY KEY (hour, tenant, dim, value));
CREATE TABLE trace_rollup_state (name TEXT PRIMARY KEY, upto REAL NOT NULL);
INSERT INTO trace_rollup_dim VALUES (?, 'acme', 'user', 'old-user', 3, 0, 30, 6, 0.5, 0, 0);
INSERT INTO trace_rollup_state VALUES ('traces', ?);"""


async def test_sqlite_tables_of_an_older_version_gain_the_new_columns(tmp_path: Any) -> None:
    """A SQLite store whose dimension rollup was made before it kept
    histograms: opening adds them ('' in the old rows), the old hours fold
    into the daily rollup, and a 7-day overview shows their sums (no
    percentiles: none were kept)."""
    import sqlite3

    from tests.contract.conftest import backend_settings

    settings = backend_settings("sqlite", tmp_path)
    stores = Stores(settings)
    await stores.open()
    await stores.close()
    db = sqlite3.connect(settings.db_path)
    for stmt, args in zip(OLD_DIM_TABLE.split(";")[:4], ((), (), (T0,), (T0 + HOUR,)),
                          strict=True):
        db.execute(stmt, args)
    db.commit()
    db.close()
    c = Console(settings, None)
    await c.start(roll=False)
    try:
        cols = [r["name"] for r in await c.queries.fetch(
            "SELECT name FROM pragma_table_info('trace_rollup_dim') ORDER BY cid")]
        assert cols[-2:] == ["latency", "ttft"]
        async with c._transaction() as (run, _many):  # every folded hour has its model row
            await run("INSERT INTO trace_rollup_model (hour, model, requests, errors, "
                      "prompt_tokens, completion_tokens, cost_usd, cache_hits, saved_usd, "
                      "latency, ttft) VALUES (?, 'm', 3, 0, 30, 6, 0.5, 0, 0, '', '')", (T0,))
        while await c.roll_step(now=T0 + 3 * DAY):
            pass
        view = await c.overview("7d", None, now=T0 + 3 * DAY)
        old = view["by_dim"]["user"]["old-user"]
        assert (old["requests"], old["cost_usd"], old["latency_p95"]) == (3, 0.5, None)
    finally:
        await c.close()


async def test_repeated_reads_of_partly_folded_hours_stay_right(console: Console) -> None:
    """Half the hours folded, half still raw: the overview is the records'
    truth, and stays so when asked again (the rolled part is remembered; the
    raw part must be added to a copy, never into what is remembered)."""
    now = T0 + 2 * HOUR + SETTLE_S + 1
    while await console.roll_step(now=now):
        pass
    assert await console.rollup_upto() == T0 + 2 * HOUR
    recs = _records()
    views = [await console.overview(rng, None, now=now) for rng in ("24h", "7d", "24h", "7d")]
    for view in views:
        assert view["total"]["requests"] == N
        assert view["by_tenant"]["acme"]["latency_p95"] == _p95(
            [r.latency_ms for r in recs if r.tenant == "acme"])
        for dim, attr in (("deployment", "deployment"), ("key", "key_id"), ("user", "user")):
            want = {k: (n, tok, round(cost, 9)) for k, (n, tok, cost) in _by(recs, attr).items()}
            assert _table(view, dim) == want
        assert view["by_dim"]["key"]["k1"]["latency_p95"] == _p95(
            [r.latency_ms for r in recs if r.key_id == "k1"])
        assert view["routes"]["auto"]["requests"] == sum(
            r.route is not None and r.route["route"] == "auto" for r in recs)
    assert views[0] == views[2] and views[1] == views[3]
