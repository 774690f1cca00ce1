"""Error budgets and burn rates, as in the Google SRE workbook, chapter 5
("Alerting on SLOs"). Pure arithmetic, so it is tested against the book's
worked examples (tests/unit/test_slo_burn.py).

- The error budget of an SLO with objective ``o`` is ``1 - o`` of the events.
- The burn rate over a window is the window's error ratio divided by the
  budget: 1 spends the whole budget in exactly one SLO period; 14.4 spends
  2% of a 30-day budget in one hour.
- A multi-window alert fires while the burn rate over the long window AND
  over the short window (1/12 of it) are both at or above the threshold: the
  long window makes it significant, the short one makes it reset soon after
  the errors stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WindowCounts", "budget_consumed", "burn_rate", "burn_rate_for",
           "budget_remaining", "detection_time_s", "fired", "window_label"]


@dataclass(slots=True, frozen=True)
class WindowCounts:
    """Events in one window ending now: how many, how many bad."""

    window_s: float
    bad: int
    total: int

    @property
    def error_ratio(self) -> float:
        return self.bad / self.total if self.total else 0.0


def burn_rate(error_ratio: float, objective: float) -> float:
    """How many times faster than sustainable the budget is being spent."""
    return error_ratio / (1.0 - objective)


def burn_rate_for(budget_fraction: float, window_s: float, period_s: float) -> float:
    """The burn rate that spends ``budget_fraction`` of the budget in
    ``window_s`` (workbook: 2% in 1 h of 30 d -> 14.4)."""
    return budget_fraction * period_s / window_s


def budget_consumed(rate: float, window_s: float, period_s: float) -> float:
    """The share of the period's budget a burn rate spends in ``window_s``."""
    return rate * window_s / period_s


def budget_remaining(bad: int, total: int, objective: float) -> float:
    """The share of the error budget left over the SLO period: 1 = untouched,
    0 = spent, negative = overspent. No events: untouched."""
    if total <= 0:
        return 1.0
    return 1.0 - (bad / total) / (1.0 - objective)


def detection_time_s(error_ratio: float, objective: float, window_s: float,
                     rate: float) -> float:
    """How long an error ratio (steady, starting from a clean window) takes
    to fire an alert at burn rate ``rate`` over ``window_s`` (workbook:
    ``(1 - SLO) / error_ratio * window * burn_rate``)."""
    return (1.0 - objective) / error_ratio * window_s * rate


def fired(long: WindowCounts, short: WindowCounts, objective: float, rate: float) -> bool:
    """Both windows burn at least ``rate`` (a window with no events does not)."""
    return (long.total > 0 and short.total > 0
            and burn_rate(long.error_ratio, objective) >= rate
            and burn_rate(short.error_ratio, objective) >= rate)


def window_label(seconds: float) -> str:
    """5m, 1h, 3d...: the metric label of a window."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def windows_of(pairs: Iterable[tuple[float, float]]) -> list[float]:
    """Every distinct window of a set of (long, short) pairs, shortest first."""
    return sorted({w for pair in pairs for w in pair})
