"""What the one-trace page draws from a stored record: the stage spans as a
waterfall, the upstream attempts on a timeline, and the request a replay
starts from. Bars are placed with CSS classes in whole percent (``o0``..
``o99`` offset, ``w1``..``w100`` width, in console.css): the CSP allows no
inline style, and a percent is finer than the eye reads a bar."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_BARS = 200  # a record holds a handful; a hostile one is cut here


@dataclass(frozen=True, slots=True)
class Bar:
    name: str
    start_ms: float  # from the request's start
    ms: float
    offset: int  # percent of the whole, 0..99
    width: int  # percent of the whole, 1..100
    note: str = ""


def _place(start: float, length: float, total: float) -> tuple[int, int]:
    offset = min(99, max(0, int(100 * start / total))) if total > 0 else 0
    width = max(1, min(100 - offset, round(100 * length / total))) if total > 0 else 100
    return offset, width


def waterfall(spans: Any) -> list[Bar]:
    """Stage spans ``[name, start_ns, end_ns]`` (the request itself first) as
    bars against the request's own span; [] when the record has none."""
    if not isinstance(spans, list) or not spans:
        return []
    good = [s for s in spans[:MAX_BARS] if isinstance(s, list | tuple) and len(s) == 3
            and isinstance(s[1], int | float) and isinstance(s[2], int | float)]
    if not good:
        return []
    t0 = min(s[1] for s in good)
    total = (max(s[2] for s in good) - t0) / 1e6
    bars = []
    for name, start, end in good:
        start_ms, ms = (start - t0) / 1e6, max(0.0, (end - start) / 1e6)
        bars.append(Bar(str(name)[:100], start_ms, ms, *_place(start_ms, ms, total)))
    return bars


def attempt_bars(attempts: Any, latency_ms: Any, origin_ms: float = 0.0) -> list[Bar]:
    """Upstream attempts in the order made, against the request's latency,
    the first at ``origin_ms`` (where the upstream stage began). Each starts
    where the previous one ended, except a hedge, which runs alongside the
    attempt before it (its own start is not recorded)."""
    if not isinstance(attempts, list):
        return []
    rows = [a for a in attempts[:MAX_BARS] if isinstance(a, dict)]
    laid: list[tuple[dict[str, Any], float, float]] = []
    at = prev = origin_ms
    for a in rows:
        ms = _ms(a.get("ms"))
        start = prev if a.get("hedge") else at
        laid.append((a, start, ms))
        prev, at = start, max(at, start + ms)
    total = max(_ms(latency_ms), at, 1e-9)
    return [Bar(str(a.get("deployment", ""))[:200], start, ms, *_place(start, ms, total),
                note=f"{a.get('outcome', '')}{' (hedge)' if a.get('hedge') else ''}")
            for a, start, ms in laid]


def _ms(v: Any) -> float:
    """A duration from a stored record; anything else counts as 0."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


def replay_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The model and messages a trace's request sent, to prefill the
    playground. A RAG request's stored input is the assembled prompt; the
    replay sends the user's question with the same collection instead, so the
    retrieval runs again. A registry prompt's stored input is already the
    rendered messages, so the prompt is not chosen again."""
    out: dict[str, Any] = {"model": doc.get("model") or ""}
    route = doc.get("route")
    if isinstance(route, dict) and isinstance(route.get("route"), str):
        out["route"] = route["route"]
    msgs = doc.get("input")
    if isinstance(msgs, list):
        out["messages"] = [{"role": str(m.get("role", "user")), "content": m.get("content")}
                           for m in msgs[:MAX_BARS] if isinstance(m, dict)]
    elif isinstance(msgs, str):
        out["messages"] = [{"role": "user", "content": msgs}]
    rag = doc.get("rag")
    if isinstance(rag, dict):
        if isinstance(rag.get("collection"), str):
            out["collection"] = rag["collection"]
        if isinstance(rag.get("query"), str):
            out["messages"] = [{"role": "user", "content": rag["query"]}]
    return out
