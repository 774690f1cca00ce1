"""A canary rollout's state machine: promote the candidate step by step while
its guard metrics stay within bounds of the baseline's, roll it back on the
first breach, and say why.

Each step collects a fresh window per arm. Once both arms have
``min_requests`` in the window, the step is judged: the candidate's error
rate may exceed the baseline's by at most ``max_error_rate_increase``; its
p95 latency (per output token by default) may be at most ``max_p95_ratio``
times the baseline's; once enough answers are judged or rated, its mean
judge score may fall at most ``max_quality_drop`` below the baseline's and
its thumbs-down rate rise at most ``max_negative_rate_increase`` above it.
Quality figures arrive after the answers (judges and users take time), so
they are also checked as they arrive: a quality breach rolls back at once.

Not steerable by one caller (docs/experiments.md): error rates, latency and
quality are figured per tenant first (a client picks its ``user`` but not its
tenant). The baseline's figure is the median of its tenants'; a breach counts only
when more than half of the candidate arm's tenants (and at least
``min_tenants``) see it, so one tenant's outliers (long prompts, unfair
ratings, requests that make the model fail) cannot roll back a rollout that
serves others too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from seawall.config import CanarySettings

__all__ = ["Canary", "CanaryState", "Quality", "Status", "Window", "robust_breach"]

Status = Literal["running", "promoted", "rolled_back"]

# Latencies kept per arm and step for the p95 (a bounded sample is enough).
MAX_LATENCIES = 20_000
MAX_TENANTS = 1_000  # per arm and step; more are counted together as OTHER
OTHER = "~other"


def per_token(latency_ms: float, output_tokens: int, normalise: bool) -> float:
    """What latency is compared as: per output token, so a long answer (or a
    caller asking for long ones) is not a slow model."""
    return latency_ms / max(1, output_tokens) if normalise else latency_ms


@dataclass(slots=True)
class Quality:
    """One tenant's judged and rated answers in one arm and step."""

    judged: int = 0
    score_sum: float = 0.0  # of score fractions (0..1)
    rated: int = 0
    negative: int = 0

    def add(self, other: Quality) -> None:
        self.judged += other.judged
        self.score_sum += other.score_sum
        self.rated += other.rated
        self.negative += other.negative


class Outcomes(Protocol):
    """What a step is judged on: one arm's outcomes (this process's
    :class:`Window`, or every replica's, seawall/experiments/shared_window.py)."""

    @property
    def requests(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    def tenant_errors(self) -> dict[str, tuple[int, int]]:
        """(requests, errors) per tenant."""
        ...

    def tenant_p95(self) -> dict[str, float]: ...
    def quality(self) -> dict[str, Quality]: ...
    def summary(self) -> dict[str, Any]: ...


def tenant_slot(known: dict[str, Any], tenant: str) -> str:
    """The tenant's own slot, or OTHER once an arm has MAX_TENANTS (bounded memory)."""
    return tenant if tenant in known or len(known) < MAX_TENANTS else OTHER


@dataclass(slots=True)
class Window:
    """One arm's outcomes in the current step (this process)."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # all tenants, for the summary
    by_tenant: dict[str, list[float]] = field(default_factory=dict)  # normalised
    qualities: dict[str, Quality] = field(default_factory=dict)
    outcomes: dict[str, list[int]] = field(default_factory=dict)  # tenant -> [requests, errors]
    kept: int = 0

    def add(self, error: bool, latency_ms: float, tenant: str = "",
            normalised_ms: float | None = None, attempted: bool = True) -> None:
        self.requests += 1
        self.errors += error
        if attempted:  # see Canary.observe
            mine = self.outcomes.setdefault(tenant_slot(self.outcomes, tenant), [0, 0])
            mine[0] += 1
            mine[1] += error
        if not error and self.kept < MAX_LATENCIES:
            self.kept += 1
            self.latencies.append(latency_ms)
            own = self.by_tenant.setdefault(tenant_slot(self.by_tenant, tenant), [])
            own.append(latency_ms if normalised_ms is None else normalised_ms)

    def add_quality(self, tenant: str, q: Quality) -> None:
        self.qualities.setdefault(tenant_slot(self.qualities, tenant), Quality()).add(q)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies, 95)) if self.latencies else 0.0

    def tenant_errors(self) -> dict[str, tuple[int, int]]:
        return {t: (n, e) for t, (n, e) in self.outcomes.items()}

    def tenant_p95(self) -> dict[str, float]:
        return {t: float(np.percentile(v, 95)) for t, v in self.by_tenant.items() if v}

    def quality(self) -> dict[str, Quality]:
        return self.qualities

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p95_ms": round(self.p95_ms, 1),
                "tenants": len(self.by_tenant), **quality_summary(self.qualities)}


def quality_summary(q: dict[str, Quality]) -> dict[str, Any]:
    judged = sum(x.judged for x in q.values())
    rated = sum(x.rated for x in q.values())
    out: dict[str, Any] = {"judged": judged, "rated": rated}
    if judged:
        out["mean_score"] = round(sum(x.score_sum for x in q.values()) / judged, 4)
    if rated:
        out["negative_rate"] = round(sum(x.negative for x in q.values()) / rated, 4)
    return out


def robust_breach(candidate: dict[str, float], worse: Callable[[float], bool],
                  min_tenants: int) -> tuple[bool, int, int]:
    """(breach, tenants that see it, tenants): a breach needs at least
    ``min_tenants`` tenants in the candidate arm and more than half of them
    seeing it, so one tenant of several never decides alone."""
    n = len(candidate)
    bad = sum(1 for v in candidate.values() if worse(v))
    return n >= min_tenants and bad > n // 2 and bad > 0, bad, n


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return float(statistics.median(vals)) if vals else 0.0


@dataclass(slots=True)
class CanaryState:
    """What is persisted: where the rollout stands and how it got there."""

    fingerprint: str  # of the experiment's config; a changed config starts over
    step: int = 0
    status: Status = "running"
    reason: str | None = None
    updated_at: float = field(default_factory=time.time)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CanaryState:
        return cls(**d)


class Canary:
    def __init__(self, name: str, settings: CanarySettings, state: CanaryState,
                 on_change: Callable[[str, CanaryState], None],
                 may_decide: Callable[[], bool] = lambda: True) -> None:
        self.name = name
        self.settings = settings
        self.state = state
        self.on_change = on_change
        # With several replicas only the lease holder judges (seawall/store/lease.py);
        # the others keep their windows, ready should the lease come to them.
        self.may_decide = may_decide
        self.windows = (Window(), Window())  # baseline, candidate

    def replace_state(self, state: CanaryState) -> None:
        """Another replica moved the rollout: take its state, start a fresh window."""
        self.state = state
        self.windows = (Window(), Window())

    @property
    def share(self) -> float:
        """The candidate's share of traffic now, in percent."""
        if self.state.status == "promoted":
            return 100.0
        if self.state.status == "rolled_back":
            return 0.0
        return self.settings.steps[self.state.step]

    def weights(self) -> tuple[float, float]:
        return 100.0 - self.share, self.share

    def observe(self, arm: int, error: bool, latency_ms: float, tenant: str = "",
                output_tokens: int = 0, attempted: bool = True) -> None:
        """One request's outcome. ``attempted``: it was answered or reached
        an upstream. A failure refused before that (the deployment's circuit
        breaker open, which one tenant's failing requests can do to every
        tenant) counts in the step's requests but not in its tenant's error
        rate: it says nothing new about the candidate, and would let that
        tenant's failures speak for others."""
        if self.state.status != "running":
            return
        self.windows[arm].add(error, latency_ms, tenant,
                              per_token(latency_ms, output_tokens, self.settings.per_token),
                              attempted)
        base, cand = self.windows
        if min(base.requests, cand.requests) >= self.settings.min_requests and \
                self.may_decide():
            self._judge(base, cand)

    def observe_quality(self, arm: int, tenant: str, q: Quality) -> None:
        """A judge score or a rating of an answer of ``arm`` arrived: a quality
        breach rolls back at once (a pass waits for the step's requests)."""
        if self.state.status != "running":
            return
        self.windows[arm].add_quality(tenant, q)
        if self.may_decide():
            self.check_quality(*self.windows)

    def judge(self, base: Outcomes, cand: Outcomes) -> bool:
        """Judge the step on outcomes gathered elsewhere (every replica's);
        True if it was judged (enough requests on both arms)."""
        if self.state.status != "running":
            return False
        if min(base.requests, cand.requests) < self.settings.min_requests:
            self.check_quality(base, cand)
            return False
        self._judge(base, cand)
        return True

    def check_quality(self, base: Outcomes, cand: Outcomes) -> bool:
        """Roll back on a quality breach; True if it did."""
        if self.state.status != "running":
            return False
        breach = self._quality_breach(base, cand)
        if breach is None:
            return False
        self._move("rolled_back", self.state.step, breach, self._measured(base, cand))
        return True

    def _measured(self, base: Outcomes, cand: Outcomes) -> dict[str, Any]:
        return {"baseline": base.summary(), "candidate": cand.summary(), "share": self.share}

    def _error_breach(self, base: Outcomes, cand: Outcomes) -> str | None:
        """The candidate's error rate, per tenant, above the baseline's (the
        median of its tenants') by more than ``max_error_rate_increase``."""
        s = self.settings
        base_fig = median(e / n for n, e in base.tenant_errors().values() if n)
        cand_rates = {t: e / n for t, (n, e) in cand.tenant_errors().items() if n}
        ceiling = base_fig + s.max_error_rate_increase
        hit, bad, n = robust_breach(cand_rates, lambda v: v > ceiling, s.min_tenants)
        if not hit:
            return None
        return (f"error rate {cand.error_rate:.1%} against the baseline's {base_fig:.1%} "
                f"(allowed +{s.max_error_rate_increase:.1%}) in {bad} of {n} tenants over "
                f"{cand.requests} requests at {self.share:g}%")

    def _latency_breach(self, base: Outcomes, cand: Outcomes) -> str | None:
        s = self.settings
        base_fig = median(base.tenant_p95().values())
        if base_fig <= 0:
            return None
        limit = s.max_p95_ratio * base_fig
        cand_p95 = cand.tenant_p95()
        hit, bad, n = robust_breach(cand_p95, lambda v: v > limit, s.min_tenants)
        if not hit:
            return None
        worst = median(v for v in cand_p95.values() if v > limit)
        unit = "ms per output token" if s.per_token else "ms"
        return (f"p95 latency {worst:.0f} {unit} against the baseline's {base_fig:.0f} {unit} "
                f"(allowed x{s.max_p95_ratio:g}) in {bad} of {n} tenants at {self.share:g}%")

    def _quality_breach(self, base: Outcomes, cand: Outcomes) -> str | None:
        s = self.settings
        bq, cq = base.quality(), cand.quality()
        judged = (sum(q.judged for q in bq.values()), sum(q.judged for q in cq.values()))
        if s.min_judged and min(judged) >= s.min_judged:
            base_fig = median(q.score_sum / q.judged for q in bq.values() if q.judged)
            cand_means = {t: q.score_sum / q.judged for t, q in cq.items() if q.judged}
            floor = base_fig - s.max_quality_drop
            hit, bad, n = robust_breach(cand_means, lambda v: v < floor, s.min_tenants)
            if hit:
                mean = sum(q.score_sum for q in cq.values()) / judged[1]
                return (f"judged quality {mean:.2f} against the baseline's {base_fig:.2f} "
                        f"(allowed -{s.max_quality_drop:g}) in {bad} of {n} tenants over "
                        f"{judged[1]} judged answers at {self.share:g}%")
        rated = (sum(q.rated for q in bq.values()), sum(q.rated for q in cq.values()))
        if s.min_rated and min(rated) >= s.min_rated:
            base_fig = median(q.negative / q.rated for q in bq.values() if q.rated)
            cand_rates = {t: q.negative / q.rated for t, q in cq.items() if q.rated}
            ceiling = base_fig + s.max_negative_rate_increase
            hit, bad, n = robust_breach(cand_rates, lambda v: v > ceiling, s.min_tenants)
            if hit:
                rate = sum(q.negative for q in cq.values()) / rated[1]
                return (f"thumbs-down rate {rate:.1%} against the baseline's {base_fig:.1%} "
                        f"(allowed +{s.max_negative_rate_increase:.1%}) in {bad} of {n} "
                        f"tenants over {rated[1]} rated answers at {self.share:g}%")
        return None

    def _judge(self, base: Outcomes, cand: Outcomes) -> None:
        s = self.settings
        measured = self._measured(base, cand)
        breach = (self._error_breach(base, cand) or self._latency_breach(base, cand)
                  or self._quality_breach(base, cand))
        if breach is not None:
            self._move("rolled_back", self.state.step, breach, measured)
        elif sum(1 for n, _ in cand.tenant_errors().values() if n) < s.min_tenants:
            return  # too few tenants' requests reached the candidate to pass it: wait
        elif self.state.step + 1 >= len(s.steps) or s.steps[self.state.step + 1] >= 100:
            self._move("promoted", len(s.steps) - 1,
                       f"passed every step up to {self.share:g}%", measured)
        else:
            self._move("running", self.state.step + 1,
                       f"passed {self.share:g}%: now {s.steps[self.state.step + 1]:g}%",
                       measured)

    def override(self, status: Status, reason: str, by: str,
                 seen: Sequence[Outcomes] | None = None) -> None:
        """An operator's decision (``POST /admin/experiments/{name}/rollback``
        or ``/promote``): moved like a verdict, with this step's figures so far
        (``seen``: every replica's, when shared; else this process's window)."""
        step = self.state.step if status == "rolled_back" else len(self.settings.steps) - 1
        base, cand = seen or self.windows
        self._move(status, step, reason, {**self._measured(base, cand), "by": by})

    def _move(self, status: Status, step: int, reason: str, measured: dict[str, Any]) -> None:
        st = self.state
        st.history.append({"at": time.time(), "from_share": self.share, "status": status,
                           "reason": reason, **measured})
        st.status, st.step, st.reason, st.updated_at = status, step, reason, time.time()
        self.windows = (Window(), Window())
        self.on_change(self.name, st)
