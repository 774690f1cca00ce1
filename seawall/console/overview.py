"""The overview's data: folding the rollups (hourly from the records, daily
from the hours) and reading a range from them (seawall/console/rollup.py).

A range of a day or less reads the hourly rollups from the hour it starts
in; a longer one starts at the UTC midnight it starts in and reads whole
days, then the hours after the last folded day; both add the records not
folded yet. So a 30-day overview reads ~30 daily rows per key, never 720
hourly ones.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from seawall.config import Settings
from seawall.console.queries import TraceQueries, range_seconds
from seawall.console.rollup import (
    BY_DIM,
    BY_MODEL,
    BY_MODEL_TENANT,
    BY_ROUTE,
    BY_TENANT,
    DAY,
    DIMS,
    HIST_COLUMNS,
    HOUR,
    ROLLUPS,
    SETTLE_S,
    STEP_HOURS,
    Agg,
    Rollup,
    StrongPrices,
    fold,
    fold_days,
    merge_rows,
    raw_select,
    upserts,
)

TOP_N = 20  # rows shown per deployment / key / user table
MEMO_ROWS = 100_000  # rollup rows whose reads are remembered, at most (see Memo)
Transaction = Callable[[], AbstractAsyncContextManager[Any]]


class Memo:
    """The answers of rollup reads, by their exact SQL and arguments. Every
    such read is bounded below the watermarks (its arguments hold them), and
    rows below a watermark never change once folded, so an answer stays
    right until the watermark moves, which changes the arguments: the live
    overview, asked every 10 s, reads only the records not folded yet.
    Bounded by the rows behind the answers kept (least recently used out; an
    answer of more than a quarter of them is not kept)."""

    def __init__(self, q: TraceQueries, max_rows: int = MEMO_ROWS) -> None:
        self.q = q
        self.max_rows = max_rows
        self._kept: OrderedDict[tuple[Any, ...], tuple[int, Any]] = OrderedDict()
        self._rows = 0

    async def fetch(self, sql: str, args: tuple[Any, ...],
                    keys: tuple[str, ...] | None = None, hists: bool = True) -> Any:
        """The rows; with ``keys``, :func:`merge_rows` of them (kept merged,
        so a repeat costs nothing; callers never change them)."""
        key = (sql, args, keys, hists)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][1]
        rows = await self.q.fetch(sql, args)
        got = rows if keys is None else await asyncio.to_thread(merge_rows, rows, keys, hists)
        if len(rows) <= self.max_rows // 4:
            self._kept[key] = (len(rows), got)
            self._rows += len(rows)
            while self._rows > self.max_rows:
                self._rows -= self._kept.popitem(last=False)[1][0]
        return got


def strong_prices(settings: Settings) -> StrongPrices:
    """Each route's strongest tier and its price per token (its first
    deployment's price, else the model's)."""
    out: StrongPrices = {}
    for name, route in settings.routes.items():
        strong = route.tiers[-1]
        m = settings.models.get(strong)
        if m is None:
            continue
        deps = m.all_deployments
        price = deps[0].price if deps and deps[0].price is not None else m.price
        out[name] = (strong, price.input_per_mtok / 1e6, price.output_per_mtok / 1e6)
    return out


# -- folding --

async def watermark(q: TraceQueries, name: str) -> float | None:
    rows = await q.fetch("SELECT upto FROM trace_rollup_state WHERE name = ?", (name,))
    return float(rows[0]["upto"]) if rows else None


async def _advance(run: Any, name: str, upto: float | None, end: float) -> bool:
    """Move watermark ``name`` from ``upto`` to ``end`` inside the caller's
    transaction; False when another process moved it meanwhile."""
    if upto is None:
        await run("INSERT INTO trace_rollup_state (name, upto) VALUES (?, ?) "
                  "ON CONFLICT (name) DO NOTHING", (name, -1.0))
        upto = -1.0
    return bool(await run("UPDATE trace_rollup_state SET upto = ? WHERE name = ? AND upto = ?",
                          (end, name, upto)))


async def _write(transaction: Transaction, name: str, upto: float | None, end: float,
                 rows: dict[str, list[tuple[Any, ...]]]) -> bool:
    async with transaction() as (run, many):
        if not await _advance(run, name, upto, end):
            return False  # another process's round
        for sql, values in rows.items():
            if values:
                await many(sql, values)
    return True


async def roll_hours(q: TraceQueries, transaction: Transaction, now: float, cap: int,
                     strong: StrongPrices) -> bool:
    """Fold up to ``STEP_HOURS`` settled hours; True when more are waiting."""
    target = math.floor((now - SETTLE_S) / HOUR) * HOUR
    upto = await watermark(q, "traces")
    first = await q.fetch("SELECT MIN(started_at) AS m FROM traces WHERE started_at >= ?",
                          (upto if upto is not None else 0.0,))
    start = upto
    if first and first[0]["m"] is not None:
        begin = math.floor(float(first[0]["m"]) / HOUR) * HOUR
        start = begin if upto is None else max(upto, begin)
    elif upto is None:
        start = target
    assert start is not None
    start = min(start, target)
    end = min(target, start + STEP_HOURS * HOUR)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    if end > start:
        records = await q.fetch(raw_select("started_at >= ? AND started_at < ?"), (start, end))
        rows = await asyncio.to_thread(lambda: upserts(fold(records, cap, strong)))
    return await _write(transaction, "traces", upto, end, rows) and end < target


async def roll_days(q: TraceQueries, transaction: Transaction, cap: int) -> bool:
    """Fold one whole UTC day of hourly rows into the daily tables once its
    hours are all folded; True when more are waiting."""
    hours_upto = await watermark(q, "traces")
    if hours_upto is None:
        return False
    target = math.floor(hours_upto / DAY) * DAY
    upto = await watermark(q, "traces_day")
    start = upto
    if upto is None:  # first run (or after an upgrade): from the first folded hour
        first = await q.fetch("SELECT MIN(hour) AS m FROM trace_rollup_model")
        m = first[0]["m"] if first else None
        start = math.floor(float(m) / DAY) * DAY if m is not None else target
    assert start is not None
    start = min(start, target)
    end = min(target, start + DAY)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    if end > start:
        hourly = {r: await q.fetch(f"SELECT * FROM {r.table(False)} WHERE hour >= ? AND hour < ?",
                                   (start, end)) for r in ROLLUPS}
        rows = await asyncio.to_thread(lambda: upserts(fold_days(hourly, cap), daily=True))
    return await _write(transaction, "traces_day", upto, end, rows) and end < target


# -- reading --

@dataclass
class Span:
    """The rows of a range: days [first, day_end), hours [hour_from,
    hour_end), then raw records from ``raw_from``; ``tenant`` filters all."""

    first: float
    day_end: float
    hour_end: float
    raw_from: float
    tenant: str | None

    @property
    def hour_from(self) -> float:
        return max(self.first, self.day_end)

    def parts(self, rollup: Rollup, where: str = "",
              args: tuple[Any, ...] = ()) -> list[tuple[str, tuple[Any, ...]]]:
        """``FROM ... WHERE ...`` over the daily rows of ``rollup``, then over
        its hourly rows, each filtered by ``where``/``args`` too. Read apart
        (and remembered apart, see Memo): the hourly part changes every hour,
        the daily part once a day."""
        extra = (" AND tenant = ?" if self.tenant is not None else "") + (
            f" AND ({where})" if where else "")
        tenant = (self.tenant,) if self.tenant is not None else ()
        out = []
        if self.day_end > self.first:
            out.append((f"FROM {rollup.table(True)} WHERE day >= ? AND day < ?{extra}",
                        (self.first, self.day_end, *tenant, *args)))
        out.append((f"FROM {rollup.table(False)} WHERE hour >= ? AND hour < ?{extra}",
                    (self.hour_from, self.hour_end, *tenant, *args)))
        return out

    async def read(self, memo: Memo, rollup: Rollup, select: str, keys: tuple[str, ...],
                   hists: bool = True, group: bool = False, where: str = "",
                   args: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Agg]:
        """Each part's rows merged by ``keys`` (``group``: summed in SQL)."""
        out: dict[tuple[Any, ...], Agg] = {}
        tail = f" GROUP BY {', '.join(keys)}" if group else ""
        for src, a in self.parts(rollup, where, args):
            out = plus(out, await memo.fetch(f"SELECT {select} {src}{tail}", a, keys, hists))
        return out


async def make_span(q: TraceQueries, range_name: str, tenant: str | None, now: float) -> Span:
    seconds = range_seconds(range_name)
    since = now - seconds
    hour_end = await watermark(q, "traces") or 0.0
    if seconds <= DAY:
        first = math.floor(since / HOUR) * HOUR
        return Span(first, first, hour_end, max(since, hour_end), tenant)
    first = math.floor(since / DAY) * DAY
    day_end = max(first, min(await watermark(q, "traces_day") or 0.0, hour_end))
    return Span(first, day_end, hour_end, max(first, hour_end), tenant)


async def read(q: TraceQueries, memo: Memo, range_name: str, tenant: str | None,
               now: float | None, strong: StrongPrices, cap: int) -> dict[str, Any]:
    """Totals; per model, tenant, deployment, key and user; routing shares;
    an hourly series, over the range."""
    now = time.time() if now is None else now
    span = await make_span(q, range_name, tenant, now)
    raw_where, raw_args = "started_at >= ?", list[Any]([span.raw_from])
    if tenant is not None:
        raw_where += " AND tenant = ?"
        raw_args.append(tenant)
    raw = await q.fetch(raw_select(raw_where), tuple(raw_args))
    folded = await asyncio.to_thread(fold, raw, cap, strong)  # by hour: for the series
    models = BY_MODEL if tenant is None else BY_MODEL_TENANT
    grouped: dict[str, dict[tuple[Any, ...], Agg]] = {}
    for name, rollup, keys in (("model", models, ("model",)), ("tenant", BY_TENANT, ("tenant",)),
                               ("route", BY_ROUTE, ("route", "model"))):
        rolled = await span.read(memo, rollup, ", ".join((*keys, *rollup.columns)), keys)
        idx = [rollup.keys.index(k) + 1 for k in keys]  # +1: the period comes first
        fresh: dict[tuple[Any, ...], Agg] = {}
        for k, agg in folded[rollup].items():
            fresh.setdefault(tuple(k[i] for i in idx), Agg()).merge(agg)
        grouped[name] = plus(rolled, fresh)
    # The series: requests and errors per hour from the hourly table, whole range.
    hw, ha = "hour >= ? AND hour < ?", list[Any]([span.first, span.hour_end])
    if tenant is not None:
        hw += " AND tenant = ?"
        ha.append(tenant)
    hours = await memo.fetch(f"SELECT hour, SUM(requests) AS requests, SUM(errors) AS errors "
                             f"FROM {models.table(False)} WHERE {hw} GROUP BY hour", tuple(ha))
    by_hour = {float(r["hour"]): [int(r["requests"]), int(r["errors"])] for r in hours}
    for (hour, _model, _tenant), agg in folded[BY_MODEL_TENANT].items():
        cell = by_hour.setdefault(hour, [0, 0])
        cell[0] += agg.requests
        cell[1] += agg.errors
    by_dim = await _dims(memo, span, folded[BY_DIM])
    total = Agg()
    for agg in grouped["model"].values():
        total.merge(agg)
    grid = [span.first + i * HOUR for i in range(int((now - span.first) // HOUR) + 1)]
    return {
        "total": total.summary(),
        "by_model": {k[0]: v.summary() for k, v in sorted(grouped["model"].items())},
        "by_tenant": {k[0]: v.summary() for k, v in sorted(grouped["tenant"].items())},
        "by_dim": {dim: {v: a.summary() for v, a in values.items()}
                   for dim, values in by_dim.items()},
        "routes": _routes(grouped["route"]),
        "since": span.first,
        "series": {"hour": grid,
                   "requests": [by_hour.get(h, [0, 0])[0] for h in grid],
                   "errors": [by_hour.get(h, [0, 0])[1] for h in grid]},
    }


def plus(base: dict[tuple[Any, ...], Agg],
         extra: dict[tuple[Any, ...], Agg]) -> dict[tuple[Any, ...], Agg]:
    """``base`` and ``extra`` together. No Agg of either is changed (they
    may be remembered, see Memo): a key in both gets a new one."""
    out = dict(base)
    for key, agg in extra.items():
        if key in out:
            merged = Agg()
            merged.merge(out[key])
            merged.merge(agg)
            agg = merged
        out[key] = agg
    return out


async def _dims(memo: Memo, span: Span,
                raw: dict[tuple[Any, ...], Agg]) -> dict[str, dict[str, Agg]]:
    """Per dimension, the TOP_N values by cost over the range, with their
    histograms: sums in SQL pick them (with many users the rollup holds many
    rows per period), then only their rows' histograms are read."""
    sums_cols = ", ".join(f"SUM({f}) AS {f}" for f in BY_DIM.sums)
    rolled = await span.read(memo, BY_DIM, f"dim, value, {sums_cols}", ("dim", "value"),
                             hists=False, group=True)
    fresh: dict[tuple[Any, ...], Agg] = {}
    for (_p, _tenant, dim, value), agg in raw.items():
        fresh.setdefault((dim, value), Agg()).merge(agg)
    totals = plus(rolled, fresh)
    top: dict[str, list[str]] = {}
    for dim, _col in DIMS:
        ranked = sorted(((v, a) for (d, v), a in totals.items() if d == dim),
                        key=lambda va: (-va[1].cost_usd, -va[1].requests, va[0]))
        top[dim] = [v for v, _a in ranked[:TOP_N]]
    wanted = [(d, vs) for d, vs in top.items() if vs]
    hists: dict[tuple[Any, ...], Agg] = {}
    if wanted:
        where = " OR ".join(f"(dim = ? AND value IN ({', '.join('?' for _ in vs)}))"
                            for _d, vs in wanted)
        wargs = tuple(x for d, vs in wanted for x in (d, *vs))
        hists = await span.read(memo, BY_DIM, "dim, value, " + ", ".join(HIST_COLUMNS),
                                ("dim", "value"), where=where, args=wargs)
    out: dict[str, dict[str, Agg]] = {}
    for dim, values in top.items():
        out[dim] = {}
        for v in values:
            agg = Agg()  # the sums (and the raw part's histograms), plus the rolled histograms
            agg.merge(totals[(dim, v)])
            h = hists.get((dim, v))
            if h is not None:
                agg.latency, agg.ttft = agg.latency + h.latency, agg.ttft + h.ttft
            out[dim][v] = agg
    return out


def _routes(groups: dict[tuple[Any, ...], Agg]) -> dict[str, dict[str, Any]]:
    """Per route: each model's share of its requests, and the cost saved
    against sending them all to the strongest tier."""
    out: dict[str, dict[str, Any]] = {}
    for (route, model), agg in sorted(groups.items()):
        r = out.setdefault(route, {"requests": 0, "cost_usd": 0.0, "strong_usd": 0.0,
                                   "models": {}})
        r["requests"] += agg.requests
        r["cost_usd"] += agg.cost_usd
        r["strong_usd"] += agg.strong_usd
        r["models"][model] = agg.summary()
    for r in out.values():
        for s in r["models"].values():
            s["share"] = s["requests"] / r["requests"] if r["requests"] else None
        r["saved_usd"] = r["strong_usd"] - r["cost_usd"]
        r["saved_share"] = r["saved_usd"] / r["strong_usd"] if r["strong_usd"] else None
    return out
