"""The quality evaluator: a supervised background task of ``seawall serve``
and ``seawall worker`` that evaluates the SLOs every ``quality.interval_s``
and the drift tests every ``quality.drift.interval_s``, sets their metrics
and sends their alerts (seawall/quality/alerts.py).

Every process computes the SLO metrics (cheap SQL sums), so each replica's
``/metrics`` shows them. With ``redis.url`` set only the holder of the
``quality`` lease runs the drift tests and sends alerts; without Redis each
process does, and the alert state's compare-and-set still sends each change
once. SQL runs on the store's connection (a thread for SQLite, the async
pool for Postgres); embeddings and statistics run in a worker thread, never
on the event loop. A failed round is logged and counted
(``seawall_background_restarts_total{task="quality"}``) and retried at the
next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from seawall.config import DriftSettings, Settings
from seawall.quality import drift
from seawall.quality.alerts import Alert, AlertSink
from seawall.quality.history import SLO_EVERY_S, DriftPoint, QualityHistory, SloPoint
from seawall.quality.slo import SloEvaluator, SloStatus
from seawall.quality.slo_store import SloStore

if TYPE_CHECKING:
    from seawall.ml.embedder import Embedder
    from seawall.observe.metrics import Metrics
    from seawall.store.lease import Lease

log = logging.getLogger("seawall.quality")

EMBED_MAX_TOKENS = 128  # drift looks at what a text is about: its start is enough
RETRY_S = 5.0


@dataclass(slots=True)
class DriftReport:
    model: str
    prompt_version: str | None
    requests: int  # in the recent window
    tests: list[drift.TestResult] = field(default_factory=list)
    alpha_each: float = 0.0
    drifted: bool = False
    streak: int = 0  # drifted (> 0) or clean (< 0) evaluations in a row
    novel: list[dict[str, Any]] = field(default_factory=list)
    skipped: str = ""  # why no test ran

    @property
    def key(self) -> str:
        return f"drift:{self.model}:{self.prompt_version or '-'}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "prompt_version": self.prompt_version,
                "requests": self.requests, "drifted": self.drifted, "streak": self.streak,
                "alpha_each": self.alpha_each, "skipped": self.skipped,
                "tests": [t.to_json() for t in self.tests], "novel": self.novel}


class DriftEvaluator:
    def __init__(self, settings: DriftSettings, store: SloStore, embedder: Embedder | None,
                 metrics: Metrics | None = None, seed: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embedder = (embedder.with_max_length(EMBED_MAX_TOKENS)
                         if embedder is not None and settings.embeddings else None)
        self.rng = np.random.default_rng(seed)
        self._streaks: dict[tuple[str, str | None], int] = {}
        # The reference window moves slowly (days): its sample, embeddings
        # included, is drawn again only once per recent window.
        self._refs: dict[tuple[str, str | None], tuple[float, drift.Sample]] = {}
        self._metrics = metrics
        r = metrics.registry if metrics is not None else CollectorRegistry()
        self.p_gauge = Gauge("seawall_drift_p_value", "Lowest p-value of a drift test over a "
                             "model's prompt versions at the last evaluation.",
                             ("model", "test"), registry=r)
        self.alarm_gauge = Gauge("seawall_drift_alarm", "1 while some prompt version of the "
                                 "model drifted at the last evaluation.", ("model",),
                                 registry=r)

    async def _sample(self, model: str, pv: str | None, since: float,
                      until: float) -> drift.Sample:
        n = self.settings.sample
        rows = await self.store.sample("traffic", model, pv, since, until, n)
        scores = await self.store.sample("scores", model, pv, since, until, n)
        ratings = await self.store.sample("feedback", model, pv, since, until, n)
        return await asyncio.to_thread(drift.sample_of, rows, scores, ratings)

    def _embed(self, *samples: drift.Sample) -> None:
        """Embeds the windows' inputs and outputs (one batch each), in a thread."""
        assert self.embedder is not None
        for sample in samples:
            if sample.inputs and sample.input_emb is None:
                sample.input_emb = np.asarray(self.embedder.embed(sample.inputs), np.float64)
            if sample.outputs and sample.output_emb is None:
                sample.output_emb = np.asarray(self.embedder.embed(sample.outputs), np.float64)

    def _test(self, ref: drift.Sample, cur: drift.Sample, report: DriftReport) -> None:
        s = self.settings
        enough = min(len(ref.input_len), len(cur.input_len)) >= s.min_samples
        if self.embedder is not None and enough:
            self._embed(ref, cur)
        report.tests, report.alpha_each, report.drifted = drift.compare(
            ref, cur, alpha=s.alpha, permutations=s.permutations, min_samples=s.min_samples,
            rng=self.rng)
        if ref.input_emb is not None and cur.input_emb is not None:
            report.novel = [{"trace_id": cur.trace_ids[i], "similarity": round(sim, 3),
                             "input": cur.inputs[i][:200]}
                            for i, sim in drift.novel(ref.input_emb, cur.input_emb, 5)]

    async def evaluate(self, now: float | None = None) -> list[DriftReport]:
        s = self.settings
        now = time.time() if now is None else now
        split = now - s.recent_s
        reports = []
        for model, pv, n in await self.store.groups(split, now, s.max_groups):
            report = DriftReport(model, pv, n)
            key = (model, pv)
            drawn_at, ref = self._refs.get(key, (0.0, None))
            if ref is None or not 0 <= now - drawn_at < s.recent_s:
                ref = await self._sample(model, pv, split - s.reference_s, split)
                if len(ref.input_len) >= s.min_samples:  # a young group's grows: draw again
                    self._refs[key] = (now, ref)
            cur = await self._sample(model, pv, split, now)
            await asyncio.to_thread(self._test, ref, cur, report)
            if not report.tests:
                report.skipped = (f"fewer than {s.min_samples} requests (or ratings) in a "
                                  "window")
            old = self._streaks.get(key, 0)
            if report.tests:
                report.streak = max(old, 0) + 1 if report.drifted else min(old, 0) - 1
                self._streaks[key] = report.streak
            reports.append(report)
        seen = {(r.model, r.prompt_version) for r in reports}
        self._refs = {k: v for k, v in self._refs.items() if k in seen}
        self._set_metrics(reports)
        return reports

    def _set_metrics(self, reports: list[DriftReport]) -> None:
        label = self._metrics.model_label if self._metrics is not None else (lambda m: m)
        lowest: dict[tuple[str, str], float] = {}
        alarm: dict[str, int] = {}
        for r in reports:
            m = label(r.model)
            alarm[m] = max(alarm.get(m, 0), int(r.drifted))
            for t in r.tests:
                lowest[(m, t.name)] = min(lowest.get((m, t.name), 1.0), t.p_value)
        for (m, name), p in lowest.items():
            self.p_gauge.labels(m, name).set(p)
        for m, a in alarm.items():
            self.alarm_gauge.labels(m).set(a)

    def alerts(self, reports: list[DriftReport], evidence: int) -> list[Alert]:
        """A firing alert after ``consecutive`` drifted evaluations, a resolved
        one after as many clean ones (the sink sends only changes)."""
        need = self.settings.consecutive
        out = []
        for r in reports:
            status: Literal["firing", "resolved"]
            if r.streak >= need:
                status = "firing"
            elif r.streak <= -need:
                status = "resolved"
            else:
                continue
            failing = sorted((t for t in r.tests if t.p_value < r.alpha_each),
                             key=lambda t: t.p_value)
            where = f"{r.model} (prompt {r.prompt_version or 'none'})"
            values: dict[str, Any] = {t.name: f"p={t.p_value:.2g} ({t.method})"
                                      for t in r.tests}
            values["alpha_each"] = r.alpha_each
            summary = (
                f"Recent traffic differs from the reference window for {abs(r.streak)} "
                f"evaluations in a row: {', '.join(t.name for t in failing)} (p < "
                f"{r.alpha_each:.2g} after Bonferroni over {len(r.tests)} tests)."
                if status == "firing" else
                f"Recent traffic is like the reference window again ({-r.streak} clean "
                "evaluations in a row).")
            out.append(Alert(
                key=r.key, status=status, severity="ticket", source="drift",
                title=f"Drift on {where}" if status == "firing" else f"No drift on {where}",
                summary=summary, labels={"model": r.model,
                                         "prompt_version": r.prompt_version or ""},
                values=values, evidence=r.novel[:evidence] if status == "firing" else []))
        return out


@dataclass(slots=True)
class Snapshot:
    """The last evaluation: what ``seawall quality`` prints."""

    at: float = 0.0
    slos: list[SloStatus] = field(default_factory=list)
    drift: list[DriftReport] = field(default_factory=list)
    drift_at: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "slos": [s.to_json() for s in self.slos],
                "drift_at": self.drift_at, "drift": [d.to_json() for d in self.drift],
                "alerts": self.alerts}


class QualityEvaluator:
    """Owns the loop; the store and the sink are the process's (opened and
    closed by their owner, seawall/app.py)."""

    def __init__(self, settings: Settings, store: SloStore, sink: AlertSink,
                 metrics: Metrics | None = None, embedder: Embedder | None = None,
                 lease: Lease | None = None, history: QualityHistory | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.sink = sink
        self.slo = SloEvaluator(settings, store, metrics)
        d = settings.quality.drift
        self.drift = DriftEvaluator(d, store, embedder, metrics) if d.enabled else None
        self.lease = lease
        # Drift rounds and SLO burn rates over time (the console's charts):
        # opened by start(), written by the process that decides.
        self.history = history
        self._history_open = False
        self._slo_kept_at = 0.0
        self.last = Snapshot()
        self._task: asyncio.Task[None] | None = None

    @property
    def deciding(self) -> bool:
        return self.lease is None or self.lease.held

    async def start(self) -> None:
        if self.history is not None:
            await self.history.open()
            self._history_open = True
        if self.lease is not None:
            await self.lease.start()
        self._task = asyncio.create_task(self._supervise(), name="seawall-quality")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease is not None:
            await self.lease.close()
        if self.history is not None and self._history_open:
            self._history_open = False
            await self.history.close()

    async def evaluate_slos(self, send: bool = True) -> list[SloStatus]:
        now = time.time()
        statuses = await self.slo.evaluate(now)
        self.last.slos, self.last.at = statuses, now
        if send and self.deciding:
            for alert in await self.slo.alerts(statuses, self.settings.quality.evidence, now):
                await self.sink.update(alert)
        if self.deciding and now - self._slo_kept_at >= SLO_EVERY_S:
            self._slo_kept_at = now
            await self._keep(self.remember_slos(statuses, now))
        return statuses

    async def evaluate_drift(self, send: bool = True) -> list[DriftReport]:
        if self.drift is None:
            return []
        reports = await self.drift.evaluate()
        self.last.drift, self.last.drift_at = reports, time.time()
        if send and self.deciding:
            for alert in self.drift.alerts(reports, self.settings.quality.evidence):
                await self.sink.update(alert)
        await self._keep(self.remember(reports, self.last.drift_at))
        return reports

    async def _keep(self, writing: Awaitable[None]) -> None:
        """A history write that fails is logged: the charts miss a point, the
        round and its alerts stand."""
        try:
            await writing
        except Exception:
            log.warning("could not keep the quality history of this round", exc_info=True)

    async def remember(self, reports: list[DriftReport], at: float) -> None:
        """This round's results in the drift history (when it is open)."""
        if self.history is None or not self._history_open or not reports:
            return
        points = [DriftPoint(at=at, model=r.model, prompt_version=r.prompt_version,
                             requests=r.requests,
                             min_p=min((t.p_value for t in r.tests), default=None),
                             drifted=r.drifted, alpha_each=r.alpha_each,
                             tests={t.name: t.p_value for t in r.tests})
                  for r in reports]
        await self.history.add(points, at - self.settings.quality.history_days * 86400)

    async def remember_slos(self, statuses: list[SloStatus], at: float) -> None:
        """This round's SLO levels and burn rates in the history (when open)."""
        if self.history is None or not self._history_open or not statuses:
            return
        points = [SloPoint(at=at, name=s.name, current=s.current,
                           budget_remaining=s.budget_remaining, burn_rates=dict(s.burn_rates))
                  for s in statuses]
        await self.history.add_slo(points, at - self.settings.quality.history_days * 86400)

    async def drift_points(self, since: float) -> list[DriftPoint]:
        """The drift history from ``since`` on, oldest first ([] without one)."""
        if self.history is None or not self._history_open:
            return []
        return await self.history.since(since)

    async def slo_points(self, since: float) -> list[SloPoint]:
        """The SLO history from ``since`` on, oldest first ([] without one)."""
        if self.history is None or not self._history_open:
            return []
        return await self.history.slo_since(since)

    async def snapshot(self, drift_too: bool = True) -> Snapshot:
        """Evaluate everything now without sending (the CLI)."""
        await self.evaluate_slos(send=False)
        if drift_too:
            await self.evaluate_drift(send=False)
        self.last.alerts = await self.store.alerts()
        return self.last

    async def _supervise(self) -> None:
        """Two loops, so a long drift round (embedding) never delays the SLOs."""
        q = self.settings.quality
        loops = []
        if q.slos:
            loops.append(self._every(q.interval_s, 0.0, self.evaluate_slos))
        if self.drift is not None:
            async def drift_round() -> None:
                if self.deciding:
                    await self.evaluate_drift()
            loops.append(self._every(q.drift.interval_s, q.drift.interval_s, drift_round))
        if loops:
            await asyncio.gather(*loops)

    async def _every(self, interval_s: float, first_s: float,
                     work: Callable[[], Awaitable[Any]]) -> None:
        """``work()`` every ``interval_s`` (first after ``first_s``); a failed
        round is counted and retried after a backoff (5 s, doubling)."""
        await asyncio.sleep(first_s)
        delay = RETRY_S
        while True:
            try:
                await work()
                delay = RETRY_S
                await asyncio.sleep(interval_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.metrics is not None:
                    self.metrics.background_restarts.labels("quality").inc()
                log.exception("quality evaluation failed; trying again in %.0fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(interval_s, RETRY_S))
