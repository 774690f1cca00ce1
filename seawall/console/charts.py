"""The Quality page's charts over time, from the evaluator's history
(seawall/quality/history.py): drift as one series per model x prompt
version, SLOs as one per SLO (burn rate per window, error budget left),
ready for uPlot (``static/quality.js``) as a JSON data attribute (the CSP
allows no inline script)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seawall.quality.history import DriftPoint, SloPoint

RANGES = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
MAX_CHARTS = 20  # groups drawn (the ones with the most recent rounds)
FLOOR_P = 1e-10  # smaller p-values (and 0) are drawn here: a log scale has no 0


def drift_series(points: Sequence[DriftPoint]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per group that some test ran on (oldest point first): times, lowest
    p-values (None where no test ran), the corrected alpha and the drifted
    flags, and each test's p-values (None where it did not run); drifted
    groups first. Also the groups never tested (too little traffic)."""
    groups: dict[tuple[str, str | None], list[DriftPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.prompt_version), []).append(p)
    tested = {k: v for k, v in groups.items() if any(p.min_p is not None for p in v)}
    untested = sorted(f"{m} · {pv or 'none'}" for (m, pv) in groups if (m, pv) not in tested)
    ranked = sorted(tested.items(), key=lambda kv: (not kv[1][-1].drifted, kv[0][0],
                                                    kv[0][1] or ""))
    out = []
    for (model, pv), pts in ranked[:MAX_CHARTS]:
        names = sorted({n for p in pts for n in p.tests})
        out.append({
            "model": model, "prompt_version": pv,
            "at": [p.at for p in pts],
            "min_p": [None if p.min_p is None else max(p.min_p, FLOOR_P) for p in pts],
            "alpha": [p.alpha_each or None for p in pts],
            "drifted": [int(p.drifted) for p in pts],
            "tests": {n: [None if n not in p.tests else max(p.tests[n], FLOOR_P) for p in pts]
                      for n in names},
            "rounds": len(pts), "drifted_rounds": sum(p.drifted for p in pts),
            "last_drifted": pts[-1].drifted,
        })
    return out, untested


def slo_series(points: Sequence[SloPoint]) -> list[dict[str, Any]]:
    """Per SLO (oldest point first, by name): times, error budget left, the
    level, and each window's burn rate (None where a round lacked it)."""
    by: dict[str, list[SloPoint]] = {}
    for p in points:
        by.setdefault(p.name, []).append(p)
    out = []
    for name in sorted(by)[:MAX_CHARTS]:
        pts = by[name]
        windows = sorted({w for p in pts for w in p.burn_rates})
        out.append({
            "name": name, "at": [p.at for p in pts],
            "budget": [p.budget_remaining for p in pts],
            "current": [p.current for p in pts],
            "burn": {w: [p.burn_rates.get(w) for p in pts] for w in windows},
            "points": len(pts), "budget_now": pts[-1].budget_remaining,
        })
    return out
