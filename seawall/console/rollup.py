"""Hourly rollups of the trace records, so the overview reads a few
thousand rows instead of millions.

Four tables, one row per hour and: (model, tenant) with counts, tokens,
cost, cache hits and savings, and latency / time-to-first-token histograms
(geometric buckets, 20% wide: a percentile is exact to within one bucket),
read whole for one tenant's view; (model) with the same over all tenants,
for the operator's totals and per-model table; (tenant) with the sums
only, for the operator's per-tenant table; (tenant, dimension, value) with
the sums, for the deployment / key / user tables, capped per hour (see
:func:`fold_dims`). 30 days of 5 models is 3,600
model rows whatever the traffic. (Per-tenant percentiles are in a tenant's
own view.) A background task
folds each hour in once it is ``SETTLE_S`` old (a record is written when its
request ends, so an hour is complete a little after it closes); the overview
adds the hours not folded yet from the raw records. Folding an hour and
moving the watermark are one transaction, taken by one process at a time
(``FOR UPDATE SKIP LOCKED`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite), so
replicas never count an hour twice. A record stored after its hour was
folded (replayed from a journal much later) is in the list but not in the
overview; said in docs/console.md.
"""

from __future__ import annotations

import base64
import bisect
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("seawall.console")

HOUR = 3600.0
SETTLE_S = 300.0
STEP_HOURS = 24  # hours folded per round, so one round stays short

# Bucket i holds values up to EDGES[i] ms; the last one, everything above.
EDGES = [0.5 * 1.2**i for i in range(80)]  # 0.5 ms .. ~1.0e6 ms


def bucket_of(ms: float) -> int:
    return min(bisect.bisect_left(EDGES, ms), len(EDGES) - 1)


def _zeros() -> np.ndarray:
    return np.zeros(len(EDGES), dtype=np.int64)


def percentile(hist: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram: its bucket's upper edge."""
    cum = np.cumsum(hist)
    total = int(cum[-1])
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    return EDGES[int(np.searchsorted(cum, rank))]


def hist_text(hist: np.ndarray) -> str:
    """A histogram as stored: base64 of little-endian int64 counts (decodes
    thousands at once in C, see :func:`hist_matrix`)."""
    return base64.b64encode(hist.astype("<i8").tobytes()).decode()


def hist_matrix(texts: list[str]) -> np.ndarray:
    """Stored histograms -> one (rows x buckets) matrix."""
    if not texts:
        return np.zeros((0, len(EDGES)), dtype=np.int64)
    raw = b"".join(base64.b64decode(t) for t in texts)
    return np.frombuffer(raw, dtype="<i8").reshape(len(texts), len(EDGES)).astype(np.int64)


ROLLUP_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd",
                 "cache_hits", "saved_usd")
RAW_COLUMNS = ("model", "tenant", "status", "latency_ms", "ttft_ms", "prompt_tokens",
               "completion_tokens", "cost_usd", "cache", "saved_usd", "deployment", "key_id",
               '"user"')
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
    # Counts per bucket of EDGES (stored by hist_text); merged with numpy.
    latency: np.ndarray = field(default_factory=_zeros)
    ttft: np.ndarray = field(default_factory=_zeros)

    def add_record(self, r: dict[str, Any]) -> None:
        self.add_sums(r)
        self.latency[bucket_of(r["latency_ms"] or 0.0)] += 1
        if r["ttft_ms"] is not None:
            self.ttft[bucket_of(r["ttft_ms"])] += 1

    def add_sums(self, r: dict[str, Any]) -> None:
        """The sums of :meth:`add_record`, without the histograms."""
        self.requests += 1
        self.errors += r["status"] >= 400
        self.prompt_tokens += r["prompt_tokens"] or 0
        self.completion_tokens += r["completion_tokens"] or 0
        self.cost_usd += r["cost_usd"] or 0.0
        self.cache_hits += r["cache"] in HITS
        self.saved_usd += r["saved_usd"] or 0.0

    def merge(self, other: Agg) -> None:
        for f in ROLLUP_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.latency += other.latency
        self.ttft += other.ttft

    def row_values(self) -> tuple[Any, ...]:
        return (*(getattr(self, f) for f in ROLLUP_FIELDS),
                hist_text(self.latency), hist_text(self.ttft))

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Agg:
        a = cls(**{f: r[f] for f in ROLLUP_FIELDS})
        a.latency, a.ttft = hist_matrix([r["latency"]])[0], hist_matrix([r["ttft"]])[0]
        return a

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f: getattr(self, f) for f in ROLLUP_FIELDS}
        out["hit_rate"] = self.cache_hits / self.requests if self.requests else None
        out["error_rate"] = self.errors / self.requests if self.requests else None
        for name, hist in (("latency", self.latency), ("ttft", self.ttft)):
            for q in (50, 95, 99):
                out[f"{name}_p{q}"] = percentile(hist, q / 100)
        return out


def fold(records: Iterable[dict[str, Any]], hour: bool = True) -> dict[tuple[Any, ...], Agg]:
    """Records grouped by (hour, model, tenant) (``hour`` False: by
    (model, tenant) with the hour 0). Runs in a worker thread."""
    out: dict[tuple[Any, ...], Agg] = {}
    for r in records:
        key = (math.floor(r["started_at"] / HOUR) * HOUR if hour else 0.0,
               r["model"], r["tenant"])
        agg = out.get(key)
        if agg is None:
            agg = out[key] = Agg()
        agg.add_record(r)
    return out


# The generic breakdowns: (dimension, the record's column).
DIMS = (("deployment", "deployment"), ("key", "key_id"), ("user", "user"))
DIM_CAP = 200  # values kept per (hour, tenant, dimension); the rest sum into OTHER
VALUE_MAX = 64  # characters of a value kept (``user`` is the client's own text)
OTHER = "(other)"
NONE = "(none)"


def dim_value(v: Any) -> str:
    text = NONE if v is None or v == "" else str(v)
    return text if len(text) <= VALUE_MAX else text[:VALUE_MAX - 1] + "\u2026"


def fold_dims(records: Iterable[dict[str, Any]], cap: int = DIM_CAP,
              hour: bool = True) -> dict[tuple[Any, ...], Agg]:
    """Sums by (hour, tenant, dimension, value), each (hour, tenant,
    dimension) capped at its ``cap`` costliest values, the rest summed into
    OTHER: a client cycling user ids cannot grow the table. Sums only (no
    histograms). Runs in a worker thread."""
    full: dict[tuple[Any, ...], dict[str, Agg]] = {}
    for r in records:
        h = math.floor(r["started_at"] / HOUR) * HOUR if hour else 0.0
        for dim, col in DIMS:
            values = full.setdefault((h, r["tenant"], dim), {})
            agg = values.get(key := dim_value(r[col]))
            if agg is None:
                agg = values[key] = Agg()
            agg.add_sums(r)
    out: dict[tuple[Any, ...], Agg] = {}
    for (h, tenant, dim), values in full.items():
        ranked = sorted(values.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests, kv[0]))
        for value, agg in ranked[:cap]:
            out[(h, tenant, dim, value)] = agg
        for _value, agg in ranked[cap:]:
            out.setdefault((h, tenant, dim, OTHER), Agg()).merge(agg)
    return out


SQLITE_SCHEMA = """
CREATE INDEX IF NOT EXISTS traces_errors_time ON traces (started_at) WHERE status >= 400;
CREATE TABLE IF NOT EXISTS trace_rollup (
    hour REAL NOT NULL,
    model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    saved_usd REAL NOT NULL,
    latency TEXT NOT NULL,
    ttft TEXT NOT NULL,
    PRIMARY KEY (hour, model, tenant)
);
CREATE INDEX IF NOT EXISTS trace_rollup_by_tenant ON trace_rollup (tenant, hour);
CREATE TABLE IF NOT EXISTS trace_rollup_model (
    hour REAL NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    saved_usd REAL NOT NULL,
    latency TEXT NOT NULL,
    ttft TEXT NOT NULL,
    PRIMARY KEY (hour, model)
);
CREATE TABLE IF NOT EXISTS trace_rollup_tenant (
    hour REAL NOT NULL,
    tenant TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    saved_usd REAL NOT NULL,
    PRIMARY KEY (hour, tenant)
);
CREATE TABLE IF NOT EXISTS trace_rollup_dim (
    hour REAL NOT NULL,
    tenant TEXT NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_hits INTEGER NOT NULL,
    saved_usd REAL NOT NULL,
    PRIMARY KEY (hour, tenant, dim, value)
);
CREATE INDEX IF NOT EXISTS trace_rollup_dim_by_tenant ON trace_rollup_dim (tenant, hour);
CREATE TABLE IF NOT EXISTS trace_rollup_state (
    name TEXT PRIMARY KEY,
    upto REAL NOT NULL
);
"""

def _upsert(table: str, keys: tuple[str, ...], cols: tuple[str, ...]) -> str:
    allc = (*keys, *cols)
    return (f"INSERT INTO {table} ({', '.join(allc)}) VALUES ({', '.join('?' for _ in allc)}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols))


HIST = ("latency", "ttft")
UPSERT_ALL = _upsert("trace_rollup", ("hour", "model", "tenant"), (*ROLLUP_FIELDS, *HIST))
UPSERT_MODEL = _upsert("trace_rollup_model", ("hour", "model"), (*ROLLUP_FIELDS, *HIST))
UPSERT_TENANT = _upsert("trace_rollup_tenant", ("hour", "tenant"), ROLLUP_FIELDS)
UPSERT_DIM = _upsert("trace_rollup_dim", ("hour", "tenant", "dim", "value"), ROLLUP_FIELDS)
SUMS = ", ".join(f"SUM({f}) AS {f}" for f in ROLLUP_FIELDS)


def rollup_rows(groups: dict[tuple[Any, ...], Agg],
                dims: dict[tuple[Any, ...], Agg] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """One fold's rows for each rollup table (upsert statement -> rows);
    ``dims`` from :func:`fold_dims`."""
    models: dict[tuple[Any, ...], Agg] = {}
    tenants: dict[tuple[Any, ...], Agg] = {}
    for (hour, model, tenant), agg in groups.items():
        models.setdefault((hour, model), Agg()).merge(agg)
        tenants.setdefault((hour, tenant), Agg()).merge(agg)
    return {
        UPSERT_ALL: [(*k, *a.row_values()) for k, a in groups.items()],
        UPSERT_MODEL: [(*k, *a.row_values()) for k, a in models.items()],
        UPSERT_TENANT: [(*k, *a.row_values()[:-2]) for k, a in tenants.items()],
        UPSERT_DIM: [(*k, *a.row_values()[:-2]) for k, a in (dims or {}).items()],
    }


def raw_select(where: str) -> str:
    cols = ", ".join(("started_at", *RAW_COLUMNS))
    return f"SELECT {cols} FROM traces WHERE {where}"
