"""A canary rollout's state machine: promote the candidate step by step while
its guard metrics stay within bounds of the baseline's, roll it back on the
first breach, and say why.

Each step collects a fresh window per arm. Once both arms have
``min_requests`` in the window, the step is judged: the candidate's error
rate may exceed the baseline's by at most ``max_error_rate_increase``, and
its p95 latency may be at most ``max_p95_ratio`` times the baseline's. A
pass moves to the next step (at 100% the candidate has won: "promoted"); a
breach sends all traffic back to the baseline ("rolled_back") and records the
numbers that broke the bound. Judge scores and negative feedback join the
guard metrics when the evaluation issue lands (``observe`` takes them then).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from seawall.config import CanarySettings

__all__ = ["Canary", "CanaryState", "Window"]

Status = Literal["running", "promoted", "rolled_back"]

# Latencies kept per arm and step for the p95 (a bounded sample is enough).
MAX_LATENCIES = 20_000


class Outcomes(Protocol):
    """What a step is judged on: one arm's outcomes (this process's
    :class:`Window`, or every replica's, seawall/experiments/shared_window.py)."""

    @property
    def requests(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def p95_ms(self) -> float: ...
    def summary(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class Window:
    """One arm's outcomes in the current step."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, error: bool, latency_ms: float) -> None:
        self.requests += 1
        self.errors += error
        if not error and len(self.latencies) < MAX_LATENCIES:
            self.latencies.append(latency_ms)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies, 95)) if self.latencies else 0.0

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p95_ms": round(self.p95_ms, 1)}


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

    def observe(self, arm: int, error: bool, latency_ms: float) -> None:
        if self.state.status != "running":
            return
        self.windows[arm].add(error, latency_ms)
        base, cand = self.windows
        if min(base.requests, cand.requests) >= self.settings.min_requests and \
                self.may_decide():
            self._judge(base, cand)

    def judge(self, base: Outcomes, cand: Outcomes) -> bool:
        """Judge the step on outcomes gathered elsewhere (every replica's);
        True if it was judged (enough requests on both arms)."""
        if self.state.status != "running" or \
                min(base.requests, cand.requests) < self.settings.min_requests:
            return False
        self._judge(base, cand)
        return True

    def _judge(self, base: Outcomes, cand: Outcomes) -> None:
        s = self.settings
        measured = {"baseline": base.summary(), "candidate": cand.summary(),
                    "share": self.share}
        breach = None
        if cand.error_rate - base.error_rate > s.max_error_rate_increase:
            breach = (f"error rate {cand.error_rate:.1%} against the baseline's "
                      f"{base.error_rate:.1%} (allowed +{s.max_error_rate_increase:.1%}) over "
                      f"{cand.requests} requests at {self.share:g}%")
        elif base.p95_ms > 0 and cand.p95_ms > s.max_p95_ratio * base.p95_ms:
            breach = (f"p95 latency {cand.p95_ms:.0f} ms against the baseline's "
                      f"{base.p95_ms:.0f} ms (allowed x{s.max_p95_ratio:g}) at "
                      f"{self.share:g}%")
        if breach is not None:
            self._move("rolled_back", self.state.step, breach, measured)
        elif self.state.step + 1 >= len(s.steps) or s.steps[self.state.step + 1] >= 100:
            self._move("promoted", len(s.steps) - 1,
                       f"passed every step up to {self.share:g}%", measured)
        else:
            self._move("running", self.state.step + 1,
                       f"passed {self.share:g}%: now {s.steps[self.state.step + 1]:g}%",
                       measured)

    def _move(self, status: Status, step: int, reason: str, measured: dict[str, Any]) -> None:
        st = self.state
        st.history.append({"at": time.time(), "from_share": self.share, "status": status,
                           "reason": reason, **measured})
        st.status, st.step, st.reason, st.updated_at = status, step, reason, time.time()
        self.windows = (Window(), Window())
        self.on_change(self.name, st)
