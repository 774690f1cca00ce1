"""The console's reads of the trace records: a filtered list paged with a
keyset cursor, and the overview's aggregates. One SQL text for both
backends ("?" becomes "%s" on Postgres).

Fast at millions of records by construction: a list page walks one index
in time order (``traces_tenant_time``, ``traces_model_time``,
``traces_errors_time`` or ``traces_time``) from the cursor, and the filters
no index serves (text, cache result, user, key...) are applied along the
same walk, which stops ``console.scan_rows`` records on (that position is
found on the index alone); a page that found fewer rows says where it
stopped, and "older" continues from there. No query materialises more than
a page. The overview reads
the rollups (seawall/console/rollup.py) plus the few minutes it has not
folded in yet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from seawall.errors import InvalidRequest

Fetch = Callable[[str, tuple[Any, ...]], Awaitable[list[dict[str, Any]]]]

LIST_COLUMNS = ("rowid", "trace_id", "started_at", "endpoint", "tenant", "key_id", "model",
                "deployment", "status", "error_code", "latency_ms", "ttft_ms", "prompt_tokens",
                "completion_tokens", "cost_usd", "cache", "user", "prompt_version",
                "experiment", "stream")
PAGE_MAX = 200
MAX_TEXT = 200
CACHE_RESULTS = ("hit", "semantic-hit", "coalesced", "miss", "bypass")
HITS = ("hit", "semantic-hit", "coalesced")
FEEDBACK = ("down", "up", "any")


@dataclass
class TraceFilter:
    """What a list page asks for; every field comes from the query string
    (bounded in :meth:`parse`), ``tenant`` may be forced by the identity."""

    since: float | None = None
    until: float | None = None
    model: str | None = None
    tenant: str | None = None
    key_id: str | None = None
    user: str | None = None
    status: str | None = None  # ok | error
    cache: str | None = None
    prompt_version: str | None = None
    experiment: str | None = None
    route: str | None = None  # the route a routed request went through
    score_below: float | None = None  # a judge scored it below this (raw score)
    score_above: float | None = None  # a judge scored it above this
    feedback: str | None = None  # down | up | any: has such a rating
    q: str | None = None
    limit: int = 50
    cursor: tuple[float, int] | None = None

    @classmethod
    def parse(cls, params: Any) -> TraceFilter:
        """From query parameters; a bad value is a 400 naming it."""
        f = cls()
        for name in ("model", "tenant", "key_id", "user", "prompt_version", "experiment", "route",
                     "q"):
            v = (params.get(name) or "").strip()
            if len(v) > MAX_TEXT:
                raise InvalidRequest(f"{name} is at most {MAX_TEXT} characters.", param=name)
            if "\x00" in v:  # Postgres text cannot hold NUL
                raise InvalidRequest(f"{name} cannot contain NUL characters.", param=name)
            setattr(f, name, v or None)
        status = params.get("status") or None
        if status not in (None, "ok", "error"):
            raise InvalidRequest("status is ok or error.", param="status")
        f.status = status
        cache = params.get("cache") or None
        if cache not in (None, *CACHE_RESULTS):
            raise InvalidRequest(f"cache is one of {', '.join(CACHE_RESULTS)}.", param="cache")
        f.cache = cache
        feedback = params.get("feedback") or None
        if feedback not in (None, *FEEDBACK):
            raise InvalidRequest(f"feedback is one of {', '.join(FEEDBACK)}.", param="feedback")
        f.feedback = feedback
        for name in ("since", "until", "score_below", "score_above"):
            v = params.get(name)
            if v:
                setattr(f, name, _number(v, name))
        if params.get("range"):
            f.since = time.time() - range_seconds(params["range"])
        if params.get("limit"):
            f.limit = int(_number(params["limit"], "limit"))
            if not 1 <= f.limit <= PAGE_MAX:
                raise InvalidRequest(f"limit is 1 to {PAGE_MAX}.", param="limit")
        if params.get("cursor"):
            f.cursor = parse_cursor(params["cursor"])
        return f


RANGES = {"15m": 900, "1h": 3600, "6h": 21_600, "24h": 86_400, "7d": 604_800, "30d": 2_592_000}


def range_seconds(name: str) -> int:
    if name not in RANGES:
        raise InvalidRequest(f"range is one of {', '.join(RANGES)}.", param="range")
    return RANGES[name]


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number.", param=name) from None
    if not math.isfinite(v):
        raise InvalidRequest(f"{name} must be a finite number.", param=name)
    return v


def make_cursor(started_at: float, rowid: int) -> str:
    return f"{started_at!r}_{rowid}"


def parse_cursor(text: str) -> tuple[float, int]:
    at, _, rowid = text.partition("_")
    try:
        pos = float(at), int(rowid)
    except ValueError:
        raise InvalidRequest("cursor is not one this server made.", param="cursor") from None
    if not math.isfinite(pos[0]) or len(text) > 64:
        raise InvalidRequest("cursor is not one this server made.", param="cursor")
    return pos


@dataclass
class TracePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None  # where "older" continues; None: nothing older
    scanned_to: float | None = None  # a partial page: the scan stopped at this time
    filters: dict[str, Any] = field(default_factory=dict)


class TraceQueries:
    """Reads for the console on either backend (``fetch`` runs one query)."""

    def __init__(self, fetch: Fetch, postgres: bool, scan_rows: int,
                 feedback_mid: float = 0.0) -> None:
        self._fetch = fetch
        self.postgres = postgres
        self.scan_rows = scan_rows
        self.feedback_mid = feedback_mid  # below: a thumbs-down; above: a thumbs-up

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await self._fetch(self._sql(sql), args)

    async def page(self, f: TraceFilter) -> TracePage:
        """One page, newest first, from ``f.cursor`` on."""
        indexed: list[str] = []
        args: list[Any] = []
        # The one index the walk follows: tenant, model, errors, or time alone.
        lead = "tenant" if f.tenant else "model" if f.model else None
        if lead:
            indexed.append(f"{lead} = ?")
            args.append(getattr(f, lead))
        elif f.status == "error":
            indexed.append("status >= 400")
        if f.since is not None:
            indexed.append("started_at >= ?")
            args.append(f.since)
        if f.until is not None:
            indexed.append("started_at < ?")
            args.append(f.until)
        if f.cursor is not None:
            indexed.append("started_at <= ? AND (started_at < ? OR rowid < ?)")
            args += [f.cursor[0], f.cursor[0], f.cursor[1]]
        residual, rargs = self._residual(f, lead)
        where = " AND ".join(indexed) or "1=1"
        cols = ", ".join(_col(c) for c in LIST_COLUMNS)
        order = "ORDER BY started_at DESC, rowid DESC"
        if not residual:
            rows = await self.fetch(
                f"SELECT {cols} FROM traces WHERE {where} {order} LIMIT ?",
                (*args, f.limit + 1))
            more = len(rows) > f.limit
            rows = rows[:f.limit]
            nxt = make_cursor(rows[-1]["started_at"], rows[-1]["rowid"]) if more else None
            return TracePage(rows, nxt)
        # Filters no index serves: applied along the same walk, which stops at
        # the time ``scan_rows`` records on (found by an index-only scan).
        bound = await self.fetch(
            f"SELECT started_at FROM traces WHERE {where} ORDER BY started_at DESC "
            "LIMIT 1 OFFSET ?", (*args, self.scan_rows - 1))
        conds = [where, *residual]
        bargs: list[Any] = []
        if bound:
            b_at = float(bound[0]["started_at"])
            conds.append("started_at >= ?")
            bargs = [b_at]
        rows = await self.fetch(
            f"SELECT {cols} FROM traces WHERE {' AND '.join(conds)} {order} LIMIT ?",
            (*args, *rargs, *bargs, f.limit + 1))
        if len(rows) > f.limit:
            rows = rows[:f.limit]
            return TracePage(rows, make_cursor(rows[-1]["started_at"], rows[-1]["rowid"]))
        if not bound:
            return TracePage(rows, None)  # the walk reached the oldest record
        # Every record at or after b_at was examined: continue strictly before it.
        return TracePage(rows, make_cursor(b_at, 0), scanned_to=b_at)

    def _residual(self, f: TraceFilter, lead: str | None) -> tuple[list[str], list[Any]]:
        conds: list[str] = []
        args: list[Any] = []
        if lead == "tenant" and f.model:
            conds.append("model = ?")
            args.append(f.model)
        if f.status == "ok":
            conds.append("status < 400")
        elif f.status == "error" and lead:
            conds.append("status >= 400")
        for name in ("key_id", "user", "cache", "prompt_version", "experiment"):
            v = getattr(f, name)
            if v is not None:
                conds.append(f"{_col(name)} = ?")
                args.append(v)
        if f.route:
            # The stored route decision is JSON whose first key is the route's name.
            conds.append("route LIKE ? ESCAPE '\\'")
            args.append(_escape_like('{"route":' + orjson.dumps(f.route).decode() + ",") + "%")
        # Judge scores and feedback: one primary-key probe per record walked
        # (both tables are keyed by trace_id first).
        for op, v in (("<", f.score_below), (">", f.score_above)):
            if v is not None:
                conds.append("EXISTS (SELECT 1 FROM quality_scores s WHERE "
                             f"s.trace_id = traces.trace_id AND s.score {op} ?)")
                args.append(v)
        if f.feedback:
            cond = {"down": " AND fb.score < ?", "up": " AND fb.score > ?", "any": ""}[f.feedback]
            conds.append("EXISTS (SELECT 1 FROM feedback fb WHERE "
                         f"fb.trace_id = traces.trace_id{cond})")
            if cond:
                args.append(self.feedback_mid)
        if f.q:
            like = "ILIKE" if self.postgres else "LIKE"
            pattern = "%" + _escape_like(f.q) + "%"
            conds.append(f"(input {like} ? ESCAPE '\\' OR output {like} ? ESCAPE '\\')")
            args += [pattern, pattern]
        return conds, args

    async def feedback_counts(self, trace_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(thumbs up, thumbs down) per trace id of one page."""
        if not trace_ids:
            return {}
        marks = ", ".join("?" for _ in trace_ids)
        rows = await self.fetch(
            f"SELECT trace_id, SUM(CASE WHEN score > ? THEN 1 ELSE 0 END) AS up, "
            f"SUM(CASE WHEN score < ? THEN 1 ELSE 0 END) AS down FROM feedback "
            f"WHERE trace_id IN ({marks}) GROUP BY trace_id",
            (self.feedback_mid, self.feedback_mid, *trace_ids))
        return {r["trace_id"]: (int(r["up"]), int(r["down"])) for r in rows}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _col(name: str) -> str:
    return f'"{name}"' if name == "user" else name

