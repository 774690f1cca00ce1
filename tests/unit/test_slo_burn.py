"""Error budgets and burn rates against the worked examples of the Google SRE
workbook, chapter 5 "Alerting on SLOs" (SLO 99.9% over 30 days)."""

from __future__ import annotations

import pytest

from seawall.config import DEFAULT_BURN_ALERTS, SloSettings
from seawall.quality import burn
from seawall.quality.slo import status_of
from seawall.quality.slo_store import EventQuery

DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0
PERIOD = 30 * DAY
SLO = 0.999


@pytest.mark.parametrize(("consumed", "window", "rate"), [
    (0.02, HOUR, 14.4),      # Table 5-8: page, 2% of the budget in 1 h
    (0.05, 6 * HOUR, 6.0),   # page, 5% in 6 h
    (0.10, 3 * DAY, 1.0),    # ticket, 10% in 3 d
    (0.10, DAY, 3.0),        # ticket, 10% in 1 d (the 1 d / 2 h pair)
])
def test_workbook_burn_rate_table(consumed: float, window: float, rate: float) -> None:
    assert burn.burn_rate_for(consumed, window, PERIOD) == pytest.approx(rate)
    assert burn.budget_consumed(rate, window, PERIOD) == pytest.approx(consumed)


def test_burn_rate_of_an_error_ratio() -> None:
    # 1.44% errors against a 0.1% budget is the page threshold 14.4.
    assert burn.burn_rate(0.0144, SLO) == pytest.approx(14.4)
    assert burn.burn_rate(0.001, SLO) == pytest.approx(1.0)  # spends exactly the budget
    assert burn.burn_rate(0.0, SLO) == 0.0


def test_workbook_detection_times() -> None:
    # Approach 1: error rate >= SLO over 10 min: a 100% outage fires in 0.6 s.
    assert burn.detection_time_s(1.0, SLO, 10 * MINUTE, 1.0) == pytest.approx(0.6)
    # Approach 2: a 36 h window: 2 min 10 s (129.6 s).
    assert burn.detection_time_s(1.0, SLO, 36 * HOUR, 1.0) == pytest.approx(129.6)
    # Burn rate 14.4 over 1 h: a 100% outage fires after 51.84 s; 1.44% errors
    # (exactly the threshold) only after the whole hour.
    assert burn.detection_time_s(1.0, SLO, HOUR, 14.4) == pytest.approx(51.84)
    assert burn.detection_time_s(0.0144, SLO, HOUR, 14.4) == pytest.approx(HOUR)


def test_budget_remaining() -> None:
    assert burn.budget_remaining(0, 1_000_000, SLO) == 1.0
    assert burn.budget_remaining(500, 1_000_000, SLO) == pytest.approx(0.5)
    assert burn.budget_remaining(1000, 1_000_000, SLO) == pytest.approx(0.0)
    assert burn.budget_remaining(2000, 1_000_000, SLO) == pytest.approx(-1.0)  # overspent
    assert burn.budget_remaining(0, 0, SLO) == 1.0  # no events: untouched


def _simulate(outage: tuple[int, int], error_ratio: float, horizon_s: int,
              long_s: float = HOUR, short_s: float = 5 * MINUTE,
              rate: float = 14.4) -> list[bool]:
    """One request a second; errors at ``error_ratio`` during ``outage``
    [start, end) seconds; whether the multi-window alert fires each second."""
    bad = [0.0] * horizon_s
    for t in range(*outage):
        bad[t] = error_ratio
    prefix = [0.0]
    for b in bad:
        prefix.append(prefix[-1] + b)
    out = []
    for now in range(1, horizon_s + 1):
        def window(w: float, now: int = now) -> burn.WindowCounts:
            start = max(0, now - int(w))
            # Fractional "bad" counts model a ratio; WindowCounts wants ints, so scale.
            return burn.WindowCounts(w, round((prefix[now] - prefix[start]) * 1000),
                                     (now - start) * 1000)
        out.append(burn.fired(window(long_s), window(short_s), SLO, rate))
    return out


def test_multiwindow_alert_detects_and_resets_like_the_workbook() -> None:
    # A 100% outage from t=2 h for 10 min, after 2 h of clean traffic.
    start, end = int(2 * HOUR), int(2 * HOUR + 10 * MINUTE)
    fires = _simulate((start, end), 1.0, int(4 * HOUR))
    first = fires.index(True) + 1
    # Detected after 51.84 s of outage (the 1 h window needs 1.44% errors).
    assert first - start == pytest.approx(51.84, abs=1)
    last = len(fires) - fires[::-1].index(True)
    # The short window resets the alert within 5 minutes of the end, although
    # the 1 h window still burns at 10/60 / 0.001 = 167 for the next hour.
    assert 0 < last - end <= 5 * MINUTE
    assert not any(fires[:start])


def test_small_error_ratio_never_pages() -> None:
    # 1% errors (burn 10) for hours: below 14.4, no page.
    assert not any(_simulate((0, int(6 * HOUR)), 0.01, int(6 * HOUR)))


def _slo(**kw: object) -> SloSettings:
    return SloSettings.model_validate({"name": "s", "kind": "availability",
                                       "objective": SLO, **kw})


def test_status_of_an_slo_from_window_counts() -> None:
    slo = _slo()
    windows = burn.windows_of([(PERIOD, PERIOD)] + [(r.long_s, r.short_s)
                                                    for r in DEFAULT_BURN_ALERTS])
    # 1,000,000 events over the period, 400 bad; a burst in the last hour:
    # 100 of 3,600 bad (burn 27.8), 60 of 300 in the last 5 min (burn 200).
    counts = {w: (400, 1_000_000) for w in windows}
    counts[HOUR] = (100, 3600)
    counts[5 * MINUTE] = (60, 300)
    counts[30 * MINUTE] = (90, 1800)
    counts[2 * HOUR] = (110, 7200)
    counts[6 * HOUR] = (150, 21600)
    st = status_of(slo, EventQuery("availability"), counts)
    assert st.budget_remaining == pytest.approx(0.6)
    assert st.current == pytest.approx(0.9996)
    assert st.burn_rates["1h"] == pytest.approx(100 / 3600 / 0.001)
    assert st.burn_rates["5m"] == pytest.approx(200.0)
    page = st.firing("page")
    # 1h/5m at 14.4 fires; 6h (burn 6.94) and 30m (burn 50) at 6 fires too.
    assert {(r.long_s, r.short_s) for r in page} == {(HOUR, 5 * MINUTE),
                                                     (6 * HOUR, 30 * MINUTE)}
    # Ticket: 1 d burns 0.4 (< 3), 3 d burns 0.4 (< 1): quiet.
    assert st.firing("ticket") == []


def test_no_events_is_no_alert_and_a_full_budget() -> None:
    slo = _slo()
    windows = burn.windows_of([(PERIOD, PERIOD)] + [(r.long_s, r.short_s)
                                                    for r in DEFAULT_BURN_ALERTS])
    st = status_of(slo, EventQuery("availability"), {w: (0, 0) for w in windows})
    assert st.current is None and st.budget_remaining == 1.0
    assert not any(r.firing for r in st.rules)


def test_window_labels() -> None:
    assert [burn.window_label(w) for w in (300, 1800, 3600, 7200, 86400, 259200, 45)] == [
        "5m", "30m", "1h", "2h", "1d", "3d", "45s"]


def test_latency_slo_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        _slo(kind="latency")
