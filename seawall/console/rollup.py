"""Rollups of the trace records, so the overview reads a few thousand rows
instead of millions.

Five rollups, each an hourly table and a daily one (``<table>_day``), all
with the same columns (:data:`SUM_COLUMNS` and :data:`HIST_COLUMNS`, one
definition): counts, tokens, cost, cache hits and savings, and latency /
time-to-first-token histograms (geometric buckets, 20% wide: a percentile is
exact to within one bucket). Keyed by the period and:

- (model, tenant): a tenant's own view, read whole;
- (model) and (tenant): the operator's totals, per-model and per-tenant tables;
- (tenant, dimension, value): the deployment / key / user tables, capped per
  period (see :func:`cap_dims`);
- (tenant, route, model): the routing shares, with ``strong_usd``, what the
  same requests would have cost on the route's strongest tier.

A background task folds each hour in once it is ``SETTLE_S`` old (a record
is written when its request ends, so an hour is complete a little after it
closes), and each UTC day from its 24 hourly rows once its last hour is
folded; the overview reads days for ranges over a day, hours for the rest,
and adds the hours not folded yet from the raw records. Folding a period and
moving its watermark are one transaction, taken by one process at a time
(``FOR UPDATE SKIP LOCKED`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite), so
replicas never count a period twice. A record stored after its hour was
folded (replayed from a journal much later) is in the list but not in the
overview; said in docs/console.md.
"""

from __future__ import annotations

import bisect
import logging
import math
from binascii import a2b_base64, b2a_base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

log = logging.getLogger("seawall.console")

HOUR = 3600.0
DAY = 86400.0
SETTLE_S = 300.0
STEP_HOURS = 24  # hours folded per round, so one round stays short

# Bucket i holds values up to EDGES[i] ms; the last one, everything above.
EDGES = [0.5 * 1.2**i for i in range(80)]  # 0.5 ms .. ~1.0e6 ms


def bucket_of(ms: float) -> int:
    return min(bisect.bisect_left(EDGES, ms), len(EDGES) - 1)


_ZEROS = np.zeros(len(EDGES), dtype=np.int64)
_ZEROS.flags.writeable = False  # shared by every Agg without a histogram: never added to in place


def _zeros() -> np.ndarray:
    return _ZEROS


def percentile(hist: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram: its bucket's upper edge."""
    cum = np.cumsum(hist)
    total = int(cum[-1])
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    return EDGES[int(np.searchsorted(cum, rank))]


def hist_text(hist: np.ndarray) -> str:
    """A histogram as stored: ``"<first bucket>:<base64 of the little-endian
    int64 counts from it to the last non-zero one>"`` (an hour of one user
    fills a bucket or two: a few bytes, not all 80 buckets); ``""`` when
    empty. Rows written before this format hold all 80 counts, no colon."""
    nz = np.flatnonzero(hist)
    if not len(nz):
        return ""
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    return f"{lo}:" + b2a_base64(hist[lo:hi].astype("<i8").tobytes(), newline=False).decode()


def hist_matrix(texts: list[str | None]) -> np.ndarray:
    """Stored histograms -> one (rows x buckets) matrix; an empty text (no
    values, or a row folded before its table kept histograms) is zeros."""
    out = np.zeros((len(texts), len(EDGES)), dtype=np.int64)
    for i, t in enumerate(texts):
        if not t:
            continue
        lo, sep, b64 = t.partition(":")
        if not sep:  # the older full form
            lo, b64 = "0", t
        counts = np.frombuffer(a2b_base64(b64), dtype="<i8")
        start = int(lo)
        out[i, start:start + len(counts)] = counts
    return out


# -- the columns, defined once --
# (name, kind): every rollup table has these, after its keys.
SUM_COLUMNS = (("requests", "int"), ("errors", "int"), ("prompt_tokens", "int"),
               ("completion_tokens", "int"), ("cost_usd", "real"), ("cache_hits", "int"),
               ("saved_usd", "real"))
HIST_COLUMNS = ("latency", "ttft")
ROLLUP_FIELDS = tuple(n for n, _ in SUM_COLUMNS)
EXTRA_FIELDS = ("strong_usd",)  # the route rollup's
SUM_FIELDS = (*ROLLUP_FIELDS, *EXTRA_FIELDS)
_TYPES = {"int": ("INTEGER", "BIGINT"), "real": ("REAL", "DOUBLE PRECISION"),
          "text": ("TEXT", "TEXT")}


@dataclass(frozen=True)
class Rollup:
    """One rollup: its hourly table (``hour`` first), its daily table
    (``<name>_day``, ``day`` first), its keys and any extra sums."""

    name: str
    keys: tuple[str, ...]
    extra: tuple[str, ...] = ()
    covering: bool = False  # an index holding the sums: GROUP BY reads no histograms

    def table(self, daily: bool) -> str:
        return f"{self.name}_day" if daily else self.name

    @property
    def sums(self) -> tuple[str, ...]:
        return (*ROLLUP_FIELDS, *self.extra)

    @property
    def columns(self) -> tuple[str, ...]:
        """The value columns, in row order (see :meth:`Agg.row`)."""
        return (*self.sums, *HIST_COLUMNS)

    def column_def(self, name: str, postgres: bool = False) -> str:
        """One value column's definition (also what an upgrade adds)."""
        p = int(postgres)
        kinds = dict(SUM_COLUMNS)
        if name in kinds:
            return f"{name} {_TYPES[kinds[name]][p]} NOT NULL"
        if name in self.extra:
            return f"{name} {_TYPES['real'][p]} NOT NULL DEFAULT 0"
        return f"{name} TEXT NOT NULL DEFAULT ''"  # a histogram; '' = none kept

    def ddl(self, daily: bool, postgres: bool = False) -> str:
        """CREATE TABLE and its tenant index (the Postgres migrations say the
        same; tests/contract/test_console_queries.py checks it)."""
        period = "day" if daily else "hour"
        cols = [f"{period} {_TYPES['real'][int(postgres)]} NOT NULL",
                *(f"{k} TEXT NOT NULL" for k in self.keys),
                *(self.column_def(n, postgres) for n in self.columns),
                f"PRIMARY KEY ({period}, {', '.join(self.keys)})"]
        table = self.table(daily)
        sql = f"CREATE TABLE IF NOT EXISTS {table} (\n    " + ",\n    ".join(cols) + "\n);\n"
        if "tenant" in self.keys:
            sql += (f"CREATE INDEX IF NOT EXISTS {table}_by_tenant ON {table} "
                    f"(tenant, {period});\n")
        if self.covering:
            sql += (f"CREATE INDEX IF NOT EXISTS {table}_sums ON {table} "
                    f"({', '.join((period, *self.keys[1:], self.keys[0], *self.sums))});\n")
        return sql

    def upsert(self, daily: bool) -> str:
        keys = ("day" if daily else "hour", *self.keys)
        allc = (*keys, *self.columns)
        return (f"INSERT INTO {self.table(daily)} ({', '.join(allc)}) "
                f"VALUES ({', '.join('?' for _ in allc)}) "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in self.columns))


BY_MODEL_TENANT = Rollup("trace_rollup", ("model", "tenant"))
BY_MODEL = Rollup("trace_rollup_model", ("model",))
BY_TENANT = Rollup("trace_rollup_tenant", ("tenant",))
BY_DIM = Rollup("trace_rollup_dim", ("tenant", "dim", "value"), covering=True)
BY_ROUTE = Rollup("trace_rollup_route", ("tenant", "route", "model"), EXTRA_FIELDS)
ROLLUPS = (BY_MODEL_TENANT, BY_MODEL, BY_TENANT, BY_DIM, BY_ROUTE)

RAW_COLUMNS = ("model", "tenant", "status", "latency_ms", "ttft_ms", "prompt_tokens",
               "completion_tokens", "cost_usd", "cache", "saved_usd", "deployment", "key_id",
               '"user"', "route")
HITS = frozenset({"hit", "semantic-hit", "coalesced"})


@dataclass
class Agg:
    """Sums and histograms of a set of records."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    saved_usd: float = 0.0
    strong_usd: float = 0.0  # routed: the cost on the route's strongest tier
    # Counts per bucket of EDGES (stored by hist_text); merged with numpy.
    latency: np.ndarray = field(default_factory=_zeros)
    ttft: np.ndarray = field(default_factory=_zeros)

    def merge(self, other: Agg) -> None:
        for f in SUM_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.latency = self.latency + other.latency
        self.ttft = self.ttft + other.ttft

    def row(self, rollup: Rollup) -> tuple[Any, ...]:
        """The values of ``rollup.columns``."""
        return (*(getattr(self, f) for f in rollup.sums),
                hist_text(self.latency), hist_text(self.ttft))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f: getattr(self, f) for f in SUM_FIELDS}
        out["hit_rate"] = self.cache_hits / self.requests if self.requests else None
        out["error_rate"] = self.errors / self.requests if self.requests else None
        for name, hist in (("latency", self.latency), ("ttft", self.ttft)):
            for q in (50, 95, 99):
                out[f"{name}_p{q}"] = percentile(hist, q / 100)
        return out


def merge_rows(rows: list[dict[str, Any]], keys: tuple[str, ...],
               hists: bool = True) -> dict[tuple[Any, ...], Agg]:
    """Rollup rows (or SQL sums) grouped by ``keys``: the sums added, the
    histograms decoded as one matrix and summed per group with numpy
    (thousands of rows: not one by one). SUM() of integers is numeric, a
    Decimal, on Postgres: back to int/float."""
    out: dict[tuple[Any, ...], Agg] = {}
    groups = np.empty(len(rows), dtype=np.int64)
    index: dict[tuple[Any, ...], int] = {}
    for i, r in enumerate(rows):
        key = tuple(r[k] for k in keys)
        agg = out.get(key)
        if agg is None:
            agg = out[key] = Agg()
            index[key] = len(index)
        groups[i] = index[key]
        for f in SUM_FIELDS:
            v = r.get(f)
            if v:
                setattr(agg, f, getattr(agg, f) + (float(v) if f.endswith("usd") else int(v)))
    if hists and rows:
        aggs = list(out.values())
        order = np.argsort(groups, kind="stable")
        starts = np.searchsorted(groups[order], np.arange(len(aggs)))
        for h in HIST_COLUMNS:
            matrix = hist_matrix([rows[i][h] for i in order])
            for agg, hist in zip(aggs, np.add.reduceat(matrix, starts, axis=0), strict=True):
                setattr(agg, h, hist)
    return out


# -- folding records --
# The generic breakdowns: (dimension, the record's column).
DIMS = (("deployment", "deployment"), ("key", "key_id"), ("user", "user"))
DIM_CAP = 200  # values kept per (period, tenant, dimension); the rest sum into OTHER
VALUE_MAX = 64  # characters of a value kept (``user`` is the client's own text)
OTHER = "(other)"
NONE = "(none)"

# route name -> (its strongest tier, USD per prompt token, per completion token)
StrongPrices = dict[str, tuple[str, float, float]]


def dim_value(v: Any) -> str:
    text = NONE if v is None or v == "" else str(v)
    return text if len(text) <= VALUE_MAX else text[:VALUE_MAX - 1] + "\u2026"


def strong_cost(r: dict[str, Any], route: str, strong: StrongPrices) -> float:
    """What a routed record would have cost on its route's strongest tier:
    its own cost when it went there, was a cache hit (the cache is not the
    router's saving) or the route is no longer configured; otherwise its
    tokens at the strong tier's price (the same tokens: an estimate)."""
    s = strong.get(route)
    cost = float(r["cost_usd"] or 0.0)
    if s is None or r["model"] == s[0] or r["cache"] in HITS:
        return cost
    return (r["prompt_tokens"] or 0) * s[1] + (r["completion_tokens"] or 0) * s[2]


def fold(records: list[dict[str, Any]], cap: int = DIM_CAP, strong: StrongPrices | None = None,
         period: float | None = HOUR) -> dict[Rollup, dict[tuple[Any, ...], Agg]]:
    """Raw records -> each rollup's groups, keyed (period start, *keys)
    (``period`` None: start 0.0, the whole set). The sums and histograms are
    counted with numpy (bincount per group), so Python only builds the keys.
    Runs in a worker thread."""
    strong = strong or {}
    n = len(records)
    col = {f: np.fromiter(((r[f] or 0) for r in records), dtype=np.float64, count=n)
           for f in ("prompt_tokens", "completion_tokens", "cost_usd", "saved_usd")}
    col["requests"] = np.ones(n)
    col["errors"] = np.fromiter((r["status"] >= 400 for r in records), dtype=np.float64, count=n)
    col["cache_hits"] = np.fromiter((r["cache"] in HITS for r in records), dtype=np.float64,
                                    count=n)
    lat = np.fromiter((r["latency_ms"] or 0.0 for r in records), dtype=np.float64, count=n)
    ttft = np.fromiter((np.nan if r["ttft_ms"] is None else r["ttft_ms"] for r in records),
                       dtype=np.float64, count=n)
    buckets = {"latency": _buckets(lat), "ttft": _buckets(np.nan_to_num(ttft))}
    has = {"latency": np.ones(n, dtype=bool), "ttft": ~np.isnan(ttft)}
    per = [math.floor(r["started_at"] / period) * period if period else 0.0 for r in records]
    tenants = [r["tenant"] for r in records]
    models = [r["model"] for r in records]
    everyone = np.arange(n)

    def group(keys: list[tuple[Any, ...]], rows: np.ndarray,
              strong_usd: np.ndarray | None = None) -> dict[tuple[Any, ...], Agg]:
        index: dict[tuple[Any, ...], int] = {}
        g = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64,
                        count=len(keys))
        size = len(index)
        sums = {f: np.bincount(g, weights=col[f][rows], minlength=size) for f in ROLLUP_FIELDS}
        if strong_usd is not None:
            sums["strong_usd"] = np.bincount(g, weights=strong_usd, minlength=size)
        hists = {h: np.bincount((g * len(EDGES) + buckets[h][rows])[has[h][rows]],
                                minlength=size * len(EDGES)).reshape(size, len(EDGES))
                 for h in HIST_COLUMNS}
        out: dict[tuple[Any, ...], Agg] = {}
        for key, i in index.items():
            agg = out[key] = Agg()
            for f, v in sums.items():
                setattr(agg, f, float(v[i]) if f.endswith("usd") else int(round(v[i])))
            agg.latency, agg.ttft = hists["latency"][i], hists["ttft"][i]
        return out

    out = {BY_MODEL_TENANT: group(list(zip(per, models, tenants, strict=True)), everyone),
           BY_MODEL: group(list(zip(per, models, strict=True)), everyone),
           BY_TENANT: group(list(zip(per, tenants, strict=True)), everyone)}
    dim_keys = [(p, t, dim, dim_value(r[c]))
                for dim, c in DIMS for p, t, r in zip(per, tenants, records, strict=True)]
    out[BY_DIM] = cap_dims(group(dim_keys, np.tile(everyone, len(DIMS))), cap)
    routed = [(i, name) for i, r in enumerate(records)
              if r.get("route") and (name := _route_name(r["route"])) is not None]
    idx = np.array([i for i, _ in routed], dtype=np.int64)
    out[BY_ROUTE] = group(
        [(per[i], tenants[i], name, models[i]) for i, name in routed], idx,
        np.array([strong_cost(records[i], name, strong) for i, name in routed])) if routed else {}
    return out


def _buckets(ms: np.ndarray) -> np.ndarray:
    """:func:`bucket_of` of many values at once."""
    return np.minimum(np.searchsorted(EDGES, ms, side="left"), len(EDGES) - 1)


def _route_name(stored: Any) -> str | None:
    """The route's name from a stored decision (JSON text, or a dict)."""
    try:
        d = orjson.loads(stored) if isinstance(stored, str | bytes) else stored
    except orjson.JSONDecodeError:
        return None
    name = d.get("route") if isinstance(d, dict) else None
    return dim_value(name) if name else None


def cap_dims(groups: dict[tuple[Any, ...], Agg], cap: int) -> dict[tuple[Any, ...], Agg]:
    """Each (period, tenant, dimension) keeps its ``cap`` costliest values;
    the rest are summed into OTHER: a client cycling user ids cannot grow the
    table."""
    full: dict[tuple[Any, ...], list[tuple[str, Agg]]] = {}
    for (p, tenant, dim, value), agg in groups.items():
        full.setdefault((p, tenant, dim), []).append((value, agg))
    out: dict[tuple[Any, ...], Agg] = {}
    for (p, tenant, dim), values in full.items():
        if len(values) <= cap:
            out.update({(p, tenant, dim, v): a for v, a in values})
            continue
        ranked = sorted(values, key=lambda va: (-va[1].cost_usd, -va[1].requests, va[0]))
        out.update({(p, tenant, dim, v): a for v, a in ranked[:cap]})
        other = out.setdefault((p, tenant, dim, OTHER), Agg())
        for _v, agg in ranked[cap:]:
            other.merge(agg)
    return out


def fold_days(rows: dict[Rollup, list[dict[str, Any]]],
              cap: int) -> dict[Rollup, dict[tuple[Any, ...], Agg]]:
    """Hourly rollup rows -> the daily rows (UTC days). Runs in a worker thread."""
    out: dict[Rollup, dict[tuple[Any, ...], Agg]] = {}
    for rollup, hourly in rows.items():
        for r in hourly:
            r["day"] = math.floor(float(r["hour"]) / DAY) * DAY
        out[rollup] = merge_rows(hourly, ("day", *rollup.keys))
    out[BY_DIM] = cap_dims(out.get(BY_DIM, {}), cap)
    return out


def upserts(folded: dict[Rollup, dict[tuple[Any, ...], Agg]],
            daily: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Rows to write: upsert statement -> rows."""
    return {rollup.upsert(daily): [(*k, *a.row(rollup)) for k, a in groups.items()]
            for rollup, groups in folded.items()}


def schema(postgres: bool = False) -> str:
    """Every rollup table, hourly and daily, and the watermarks (SQLite
    creates them at open; Postgres migrations 0014, 0017 and 0018 hold the
    same)."""
    sql = ("CREATE INDEX IF NOT EXISTS traces_errors_time ON traces (started_at) "
           "WHERE status >= 400;\n")
    for rollup in ROLLUPS:
        sql += rollup.ddl(False, postgres) + rollup.ddl(True, postgres)
    return sql + ("CREATE TABLE IF NOT EXISTS trace_rollup_state (\n    name TEXT PRIMARY KEY,\n"
                  f"    upto {_TYPES['real'][int(postgres)]} NOT NULL\n);\n")


SQLITE_SCHEMA = schema()


def raw_select(where: str) -> str:
    cols = ", ".join(("started_at", *RAW_COLUMNS))
    return f"SELECT {cols} FROM traces WHERE {where}"
