"""Service level objectives on quality (judge scores, user feedback) and on
service (availability, latency): error budget, burn rates, alerts.

Each SLO in ``quality.slos`` counts good and bad events per window in SQL
(seawall/quality/slo_store.py) and turns them into the figures of
seawall/quality/burn.py. An alert fires for a severity while any of its
multi-window rules burns (both windows at or above the rate) and resolves
when none does; the alert carries the worst events of the burning window.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge

from seawall.config import Settings, SloSettings
from seawall.quality import burn
from seawall.quality.alerts import Alert
from seawall.quality.slo_store import EventQuery, SloStore

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics

DEFAULT_JUDGE_THRESHOLD = 4.0
# Windows longer than this are counted again at most every LONG_REFRESH_S: a
# 30-day period is one scan of a month of traces; a minute's change in it
# moves its burn rate by under 0.1%, and only ticket rules read such windows.
LONG_WINDOW_S = 6 * 3600.0
LONG_REFRESH_S = 900.0
_GOOD = {"judge": "score >= {t:g}", "feedback": "score >= {t:g}",
         "availability": "status < 500", "latency": "latency_ms <= {t:g}"}


@dataclass(slots=True)
class RuleState:
    severity: str
    long_s: float
    short_s: float
    burn_rate: float
    long_burn: float
    short_burn: float
    firing: bool


@dataclass(slots=True)
class SloStatus:
    name: str
    kind: str
    objective: float
    period_s: float
    good_when: str
    events: int  # in the period
    bad: int
    current: float | None  # share of good events over the period (None: no events)
    budget_remaining: float
    burn_rates: dict[str, float] = field(default_factory=dict)  # window label -> rate
    rules: list[RuleState] = field(default_factory=list)

    def firing(self, severity: str) -> list[RuleState]:
        return [r for r in self.rules if r.severity == severity and r.firing]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def event_query(slo: SloSettings, settings: Settings) -> EventQuery:
    threshold = slo.threshold
    if threshold is None and slo.kind == "judge":
        threshold = DEFAULT_JUDGE_THRESHOLD
    elif threshold is None and slo.kind == "feedback":
        scale = settings.feedback.scale
        threshold = (scale.min + scale.max) / 2
    return EventQuery(kind=slo.kind, threshold=threshold, model=slo.model,
                      prompt_version=slo.prompt_version, tenant=slo.tenant,
                      judge=slo.judge if slo.kind == "judge" else None,
                      rubric=slo.rubric if slo.kind == "judge" else None)


def status_of(slo: SloSettings, query: EventQuery,
              counts: dict[float, tuple[int, int]]) -> SloStatus:
    """The figures of one SLO from (bad, total) per window (pure: unit-tested)."""
    bad, total = counts[slo.period_s]
    rates = {burn.window_label(w): burn.burn_rate(b / t if t else 0.0, slo.objective)
             for w, (b, t) in counts.items()}
    rules = []
    for rule in slo.alerts:
        lw = burn.WindowCounts(rule.long_s, *counts[rule.long_s])
        sw = burn.WindowCounts(rule.short_s, *counts[rule.short_s])
        rules.append(RuleState(
            rule.severity, rule.long_s, rule.short_s, rule.burn_rate,
            burn.burn_rate(lw.error_ratio, slo.objective),
            burn.burn_rate(sw.error_ratio, slo.objective),
            burn.fired(lw, sw, slo.objective, rule.burn_rate)))
    return SloStatus(
        name=slo.name, kind=slo.kind, objective=slo.objective, period_s=slo.period_s,
        good_when=_GOOD[slo.kind].format(t=query.threshold or 0), events=total, bad=bad,
        current=(total - bad) / total if total else None,
        budget_remaining=burn.budget_remaining(bad, total, slo.objective),
        burn_rates=rates, rules=rules)


class SloMetrics:
    """seawall_slo_objective{slo}, seawall_slo_error_budget_remaining{slo},
    seawall_slo_burn_rate{slo,window} (labels: configured names only)."""

    def __init__(self, metrics: Metrics | None) -> None:
        r = metrics.registry if metrics is not None else CollectorRegistry()
        self.objective = Gauge("seawall_slo_objective", "An SLO's target share of good "
                               "events.", ("slo",), registry=r)
        self.budget = Gauge("seawall_slo_error_budget_remaining", "Share of the error budget "
                            "left over the SLO period (1 untouched, 0 spent, < 0 overspent).",
                            ("slo",), registry=r)
        self.burn = Gauge("seawall_slo_burn_rate", "Error ratio over the window divided by "
                          "the error budget (1 = spending exactly the budget).",
                          ("slo", "window"), registry=r)
        self.events = Gauge("seawall_slo_events", "Events counted over the SLO period, by "
                            "verdict (good, bad).", ("slo", "verdict"), registry=r)

    def set(self, s: SloStatus) -> None:
        self.objective.labels(s.name).set(s.objective)
        self.budget.labels(s.name).set(s.budget_remaining)
        for window, rate in s.burn_rates.items():
            self.burn.labels(s.name, window).set(rate)
        self.events.labels(s.name, "good").set(s.events - s.bad)
        self.events.labels(s.name, "bad").set(s.bad)


class SloEvaluator:
    def __init__(self, settings: Settings, store: SloStore,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = SloMetrics(metrics)
        self.slos = settings.quality.slos
        self.queries = {s.name: event_query(s, settings) for s in self.slos}
        self._long: dict[str, tuple[float, dict[float, tuple[int, int]]]] = {}

    async def _counts(self, slo: SloSettings, now: float) -> dict[float, tuple[int, int]]:
        """(bad, total) per window: short windows counted now, long ones
        (over ``LONG_WINDOW_S``) reused for up to ``LONG_REFRESH_S``."""
        q = self.queries[slo.name]
        windows = burn.windows_of([(slo.period_s, slo.period_s)]
                                  + [(r.long_s, r.short_s) for r in slo.alerts])
        short = [w for w in windows if w <= LONG_WINDOW_S]
        long = [w for w in windows if w > LONG_WINDOW_S]
        counts = await self.store.counts(q, short, now) if short else {}
        if long:
            at, cached = self._long.get(slo.name, (0.0, {}))
            if not cached or not 0 <= now - at < LONG_REFRESH_S:
                cached = await self.store.counts(q, long, now)
                self._long[slo.name] = (now, cached)
            counts.update(cached)
        return counts

    async def evaluate(self, now: float | None = None) -> list[SloStatus]:
        """Every SLO's figures now (and the metrics set from them)."""
        now = time.time() if now is None else now
        out = []
        for slo in self.slos:
            status = status_of(slo, self.queries[slo.name], await self._counts(slo, now))
            self.metrics.set(status)
            out.append(status)
        return out

    async def alerts(self, statuses: list[SloStatus], evidence: int,
                     now: float | None = None) -> list[Alert]:
        """One alert per SLO and severity, firing or resolved (the sink's
        :meth:`~seawall.quality.alerts.AlertSink.update` sends only changes)."""
        now = time.time() if now is None else now
        out = []
        by_name = {s.name: s for s in self.slos}
        for st in statuses:
            slo = by_name[st.name]
            for severity in sorted({r.severity for r in slo.alerts}):
                burning = st.firing(severity)
                out.append(await self._alert(st, severity, burning, evidence, now))
        return out

    async def _alert(self, st: SloStatus, severity: str, burning: list[RuleState],
                     evidence: int, now: float) -> Alert:
        what = (f"SLO {st.name} ({st.kind}: {st.good_when}, objective "
                f"{st.objective:.4g} over {burn.window_label(st.period_s)})")
        values: dict[str, Any] = {"objective": st.objective,
                                  "budget_remaining": round(st.budget_remaining, 4),
                                  "events": st.events, "bad": st.bad}
        labels = {"slo": st.name, "kind": st.kind, "severity": severity}
        if not burning:
            return Alert(key=f"slo:{st.name}:{severity}", status="resolved", severity=severity,
                         source="slo", title=f"{what} no longer burning its error budget",
                         summary="Every burn-rate rule of this severity is below its "
                                 "threshold now.", labels=labels, values=values, at=now)
        worst = max(burning, key=lambda r: r.long_s)
        for r in burning:
            values[f"burn_{burn.window_label(r.long_s)}"] = round(r.long_burn, 3)
            values[f"burn_{burn.window_label(r.short_s)}"] = round(r.short_burn, 3)
        rows = await self.store.worst(self.queries[st.name], now - worst.long_s, now, evidence)
        spent = burn.budget_consumed(worst.long_burn, worst.long_s, st.period_s)
        summary = (f"Burn rate {worst.long_burn:.3g} over {burn.window_label(worst.long_s)} "
                   f"and {worst.short_burn:.3g} over {burn.window_label(worst.short_s)} "
                   f"(threshold {worst.burn_rate:g}): {spent:.1%} of the error budget spent in "
                   f"{burn.window_label(worst.long_s)}; {st.budget_remaining:.1%} of the "
                   "period's budget left.")
        return Alert(key=f"slo:{st.name}:{severity}", status="firing", severity=severity,
                     source="slo", title=f"{what} is burning its error budget",
                     summary=summary, labels=labels, values=values, evidence=rows, at=now)
