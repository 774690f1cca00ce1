"""What the SLO and drift evaluator reads and remembers, in SQLite or Postgres.

Reads: aggregate counts of good and bad events per window straight in SQL
(trace records for availability and latency, ``feedback`` joined with the
trace records for the model and prompt version a rating lacks,
``quality_scores`` for judges), the worst events as evidence, and bounded
random samples of traffic for the drift tests. Nothing here loads a window
into memory: counts are sums, samples and evidence have a LIMIT, and a
sample of a long window costs about its size (index probes at random
instants, :meth:`_Queries.sample`), not a sort of the window.

Remembers: the state of every alert (``quality_alerts``, migration 0013),
so a restart neither re-fires an alert that is firing nor forgets to
resolve it. :meth:`transition` is a compare-and-set: of two processes that
see the same change, one sends it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from seawall.quality import feedback_store, score_store
from seawall.store.async_sqlite import AsyncSqlite
from seawall.store.pg import Postgres

# Requests that a model answered (not admin, RAG or feedback calls).
MODEL_ENDPOINTS = ("chat.completions", "messages", "responses", "embeddings")
TEXT_ENDPOINTS = ("chat.completions", "messages", "responses")

ALERTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_alerts (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    detail TEXT NOT NULL,
    fired_at DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);
"""
_FIRE = (
    "INSERT INTO quality_alerts (key, status, severity, source, title, detail, fired_at, "
    "resolved_at, updated_at) VALUES (?, 'firing', ?, ?, ?, ?, ?, NULL, ?) "
    "ON CONFLICT (key) DO UPDATE SET status = 'firing', severity = excluded.severity, "
    "source = excluded.source, title = excluded.title, detail = excluded.detail, "
    "fired_at = excluded.fired_at, resolved_at = NULL, updated_at = excluded.updated_at "
    "WHERE quality_alerts.status <> 'firing'")
_RESOLVE = ("UPDATE quality_alerts SET status = 'resolved', detail = ?, resolved_at = ?, "
            "updated_at = ? WHERE key = ? AND status = 'firing'")
_ALERTS = ("SELECT key, status, severity, source, title, detail, fired_at, resolved_at, "
           "updated_at FROM quality_alerts ORDER BY key")


@dataclass(slots=True, frozen=True)
class EventQuery:
    """Which events an SLO counts and which of them are bad."""

    kind: str  # judge | feedback | availability | latency
    threshold: float | None = None
    model: str | None = None
    prompt_version: str | None = None
    tenant: str | None = None
    judge: str | None = None
    rubric: str | None = None


def _in(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"  # our constants, never input


def _source(q: EventQuery) -> tuple[str, str, str, list[Any], str]:
    """(FROM ..., time column, bad condition, its args, WHERE filters) for ``q``;
    the filters' args follow in :func:`_filter_args`."""
    if q.kind == "judge":
        frm, ts, bad = "quality_scores", "created_at", "score < ?"
        where = "status = 'ok'"
        cols = {"model": "model", "prompt_version": "prompt_version", "tenant": "tenant",
                "judge": "judge", "rubric": "rubric"}
    elif q.kind == "feedback":
        frm = "feedback f JOIN traces t ON t.trace_id = f.trace_id"
        ts, bad, where = "f.updated_at", "f.score < ?", "1 = 1"
        cols = {"model": "t.model", "prompt_version": "t.prompt_version", "tenant": "f.tenant"}
    else:
        frm, ts = "traces", "started_at"
        if q.kind == "availability":
            bad, where = "status >= 500", f"endpoint IN {_in(MODEL_ENDPOINTS)}"
        else:  # latency: of the answers given, the slow ones
            bad = "latency_ms > ?"
            where = f"endpoint IN {_in(MODEL_ENDPOINTS)} AND status < 500"
        cols = {"model": "model", "prompt_version": "prompt_version", "tenant": "tenant"}
    for name, col in cols.items():
        if getattr(q, name) is not None:
            where += f" AND {col} = ?"
    bad_args = [q.threshold] if "?" in bad else []
    return frm, ts, bad, bad_args, where


def _filter_args(q: EventQuery) -> list[Any]:
    names = ["model", "prompt_version", "tenant"]
    if q.kind == "judge":
        names += ["judge", "rubric"]
    return [getattr(q, n) for n in names if getattr(q, n) is not None]


def counts_sql(q: EventQuery, windows: list[float], now: float) -> tuple[str, list[Any]]:
    """One scan of the longest window: (total, bad) of every window ending now."""
    frm, ts, bad, bad_args, where = _source(q)
    parts: list[str] = []
    args: list[Any] = []
    for w in windows:
        parts.append(f"COALESCE(SUM(CASE WHEN {ts} >= ? THEN 1 ELSE 0 END), 0)")
        args.append(now - w)
        parts.append(f"COALESCE(SUM(CASE WHEN {ts} >= ? AND {bad} THEN 1 ELSE 0 END), 0)")
        args += [now - w, *bad_args]
    sql = (f"SELECT {', '.join(parts)} FROM {frm} WHERE {ts} >= ? AND {ts} <= ? AND {where}")
    return sql, [*args, now - max(windows), now, *_filter_args(q)]


def worst_sql(q: EventQuery, since: float, until: float, n: int) -> tuple[str, list[Any]]:
    """The bad events of a window, worst first: the evidence of an alert."""
    frm, ts, bad, bad_args, where = _source(q)
    if q.kind == "judge":
        cols, order = "trace_id, score, scale_max, judge, rubric, reasoning, model", "score"
    elif q.kind == "feedback":
        cols, order = "f.trace_id, f.score, f.comment, f.user_id, t.model", "f.score"
    elif q.kind == "availability":
        cols, order = "trace_id, status, error_code, error_message, model", "status DESC"
    else:
        cols, order = "trace_id, latency_ms, status, model", "latency_ms DESC"
    sql = (f"SELECT {cols}, {ts} FROM {frm} WHERE {ts} >= ? AND {ts} <= ? AND {where} "
           f"AND {bad} ORDER BY {order}, {ts} DESC LIMIT ?")
    return sql, [since, until, *_filter_args(q), *bad_args, n]


def _evidence(kind: str, r: Any) -> dict[str, Any]:
    if kind == "judge":
        return {"trace_id": r[0], "score": r[1], "scale_max": r[2], "judge": r[3],
                "rubric": r[4], "reasoning": (r[5] or "")[:500], "model": r[6], "at": r[7]}
    if kind == "feedback":
        return {"trace_id": r[0], "score": r[1], "comment": (r[2] or "")[:500],
                "user": r[3], "model": r[4], "at": r[5]}
    if kind == "availability":
        return {"trace_id": r[0], "status": r[1], "error_code": r[2],
                "error": (r[3] or "")[:500], "model": r[4], "at": r[5]}
    return {"trace_id": r[0], "latency_ms": r[1], "status": r[2], "model": r[3], "at": r[4]}


def _pv(prompt_version: str | None, col: str = "prompt_version") -> tuple[str, list[Any]]:
    if prompt_version is None:
        return f"{col} IS NULL", []
    return f"{col} = ?", [prompt_version]


_GROUPS = (f"SELECT model, prompt_version, COUNT(*) AS n FROM traces WHERE started_at >= ? "
           f"AND started_at < ? AND status < 400 AND endpoint IN {_in(TEXT_ENDPOINTS)} "
           "GROUP BY model, prompt_version ORDER BY n DESC, model LIMIT ?")


# Where the drift samples come from: (table, time column, filter) per kind.
# Traffic and scores have a (model, time) index; ratings do not (their index is
# per tenant), and are few (one per rated answer): they are drawn by sorting.
_SAMPLED = {
    "traffic": ("traces", "started_at",
                f"model = ? AND {{pv}} AND status < 400 AND endpoint IN {_in(TEXT_ENDPOINTS)}"),
    "scores": ("quality_scores", "created_at",
               "model = ? AND {pv} AND status = 'ok' AND scale_max > 0"),
}
_COLUMNS = {"traffic": "trace_id, input, output, prompt_tokens, completion_tokens",
            "scores": "score / scale_max, created_at"}
SMALL = 4  # a window with fewer than SMALL * n rows is sampled by sorting it


def sample_sql(kind: str, model: str, prompt_version: str | None, since: float, until: float,
               n: int) -> tuple[str, list[Any]]:
    """A random sample of one group's traffic, judge scores (0..1) or
    ratings in [since, until), drawn by sorting the window's rows at random:
    for ratings, and for windows known to hold fewer than ``SMALL * n`` rows
    (see :func:`sample_count_sql`)."""
    if kind in _SAMPLED:
        table, ts, where = _SAMPLED[kind]
        pv, pv_args = _pv(prompt_version)
        sql = (f"SELECT {_COLUMNS[kind]} FROM {table} WHERE {ts} >= ? AND {ts} < ? "
               f"AND {where.format(pv=pv)} ORDER BY random() LIMIT ?")
    else:
        pv, pv_args = _pv(prompt_version, "t.prompt_version")
        sql = ("SELECT f.score, f.updated_at FROM feedback f "
               "JOIN traces t ON t.trace_id = f.trace_id WHERE"
               f"  f.updated_at >= ? AND f.updated_at < ? AND t.model = ? AND {pv} "
               "ORDER BY random() LIMIT ?")
    return sql, [since, until, model, *pv_args, n]


def sample_count_sql(kind: str, model: str, prompt_version: str | None, since: float,
                     until: float, cap: int) -> tuple[str, list[Any]]:
    """The group's rows in the window, counted up to ``cap`` (reads at most that many)."""
    table, ts, where = _SAMPLED[kind]
    pv, pv_args = _pv(prompt_version)
    return (f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {ts} >= ? AND {ts} < ? "
            f"AND {where.format(pv=pv)} LIMIT ?) s", [since, until, model, *pv_args, cap])


def sample_points_sql(kind: str, model: str, prompt_version: str | None, until: float,
                      points: list[float]) -> tuple[str, list[Any]]:
    """For each instant of ``points``, the time of the group's first row at
    or after it (NULL: none before ``until``): one index probe each."""
    table, ts, where = _SAMPLED[kind]
    pv, pv_args = _pv(prompt_version)
    values = ", ".join("(?)" for _ in points)
    sql = (f"WITH p(t) AS (VALUES {values}) SELECT (SELECT {ts} FROM {table} "
           f"WHERE {where.format(pv=pv)} AND {ts} >= p.t AND {ts} < ? "
           f"ORDER BY {ts} LIMIT 1) FROM p")
    return sql, [*points, model, *pv_args, until]


def sample_rows_sql(kind: str, model: str, prompt_version: str | None,
                    times: list[float]) -> tuple[str, list[Any]]:
    """The group's rows at the chosen ``times`` (index probes again)."""
    table, ts, where = _SAMPLED[kind]
    pv, pv_args = _pv(prompt_version)
    sql = (f"SELECT {_COLUMNS[kind]} FROM {table} WHERE {where.format(pv=pv)} "
           f"AND {ts} IN ({', '.join('?' for _ in times)}) LIMIT ?")
    return sql, [model, *pv_args, *times, len(times)]


def spread(times: list[float], n: int, rng: random.Random) -> list[float]:
    """``n`` of the sorted ``times``, evenly spaced from a random start."""
    if len(times) <= n:
        return times
    step = len(times) / n
    start = rng.random() * step
    return [times[int(start + i * step)] for i in range(n)]


def _alert(r: Any) -> dict[str, Any]:
    return {"key": r[0], "status": r[1], "severity": r[2], "source": r[3], "title": r[4],
            "detail": orjson.loads(r[5]), "fired_at": r[6], "resolved_at": r[7],
            "updated_at": r[8]}


class SloStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def counts(self, q: EventQuery, windows: list[float],
                     now: float) -> dict[float, tuple[int, int]]:
        """(bad, total) of each window ending at ``now``."""
        ...

    async def worst(self, q: EventQuery, since: float, until: float,
                    n: int) -> list[dict[str, Any]]: ...
    async def groups(self, since: float, until: float,
                     limit: int) -> list[tuple[str, str | None, int]]:
        """(model, prompt_version, requests) answered in the window, busiest first."""
        ...

    async def sample(self, kind: str, model: str, prompt_version: str | None, since: float,
                     until: float, n: int) -> list[tuple[Any, ...]]: ...
    async def transition(self, key: str, status: str, *, severity: str = "", source: str = "",
                         title: str = "", detail: dict[str, Any] | None = None) -> bool:
        """Record that alert ``key`` is now ``status`` (firing | resolved);
        True if that is a change (then the caller sends it), False if it
        already was so (or, for resolved, never fired)."""
        ...

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert ever recorded with its last state."""
        ...


def _counts(row: Any, windows: list[float]) -> dict[float, tuple[int, int]]:
    return {w: (int(row[2 * i + 1] or 0), int(row[2 * i] or 0)) for i, w in enumerate(windows)}


def _fire_args(key: str, severity: str, source: str, title: str,
               detail: dict[str, Any] | None, now: float) -> tuple[Any, ...]:
    return (key, severity, source, title, orjson.dumps(detail or {}).decode(), now, now)


class _Queries:
    """The read queries, the same SQL on both backends; each store runs them
    through its own ``_all``."""

    async def _all(self, sql: str, args: Any) -> list[Any]:
        raise NotImplementedError

    async def counts(self, q: EventQuery, windows: list[float],
                     now: float) -> dict[float, tuple[int, int]]:
        return _counts((await self._all(*counts_sql(q, windows, now)))[0], windows)

    async def worst(self, q: EventQuery, since: float, until: float,
                    n: int) -> list[dict[str, Any]]:
        return [_evidence(q.kind, r) for r in await self._all(*worst_sql(q, since, until, n))]

    async def groups(self, since: float, until: float,
                     limit: int) -> list[tuple[str, str | None, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._all(_GROUPS, (since, until, limit))]

    async def sample(self, kind: str, model: str, prompt_version: str | None, since: float,
                     until: float, n: int) -> list[tuple[Any, ...]]:
        """At most ``n`` of the group's rows in [since, until), at a cost
        of about ``n`` index probes however long the window: 2n random
        instants, one in each of 2n equal slices of the window, each take
        the group's next row (keyset, on the (model, time) index); ``n`` of
        the distinct ones are kept, evenly spread. So the draw is even over
        the window's time (a quiet hour weighs as much as a busy one). A
        window of fewer than ``SMALL * n`` rows (read to count them) is
        sorted at random instead, and ratings always are (few, no time index)."""
        if kind not in _SAMPLED or n <= 0 or until <= since:
            return await self._rows(sample_sql(kind, model, prompt_version, since, until, n))
        [(found,)] = await self._all(*sample_count_sql(kind, model, prompt_version, since,
                                                       until, SMALL * n))
        if int(found) < SMALL * n:
            return await self._rows(sample_sql(kind, model, prompt_version, since, until, n))
        rng = random.Random()
        width = (until - since) / (2 * n)
        points = [since + (i + rng.random()) * width for i in range(2 * n)]
        hits = await self._all(*sample_points_sql(kind, model, prompt_version, until, points))
        times = spread(sorted({float(h[0]) for h in hits if h[0] is not None}), n, rng)
        if not times:
            return []
        return await self._rows(sample_rows_sql(kind, model, prompt_version, times))

    async def _rows(self, query: tuple[str, list[Any]]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._all(*query)]

    async def alerts(self) -> list[dict[str, Any]]:
        return [_alert(r) for r in await self._all(_ALERTS, ())]


class SqliteSloStore(_Queries, AsyncSqlite):
    """Its own connection on ``seawall.db`` (reads never queue behind trace
    writes). Creates the tables it reads if no other store has yet."""

    SCHEMA = ALERTS_SCHEMA + score_store.SCHEMA + feedback_store.SCHEMA
    WHAT = "SLO store"

    async def _all(self, sql: str, args: Any) -> list[Any]:
        async with self.db.execute(sql, args) as c:
            return list(await c.fetchall())

    async def transition(self, key: str, status: str, *, severity: str = "", source: str = "",
                         title: str = "", detail: dict[str, Any] | None = None) -> bool:
        now = time.time()
        if status == "firing":
            cur = await self.db.execute(_FIRE, _fire_args(key, severity, source, title,
                                                          detail, now))
        else:
            cur = await self.db.execute(_RESOLVE, (orjson.dumps(detail or {}).decode(), now,
                                                   now, key))
        changed = cur.rowcount == 1
        await cur.close()
        await self.db.commit()
        return changed


class PostgresSloStore(_Queries):
    """The shared database (``quality_alerts``: migration 0013)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def open(self) -> None:
        await self.pg.pool()

    async def close(self) -> None:
        """The pools belong to :class:`Postgres`, closed by the factory."""

    async def _all(self, sql: str, args: Any) -> list[Any]:
        pool = await self.pg.pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), args)
            return list(await cur.fetchall())

    async def transition(self, key: str, status: str, *, severity: str = "", source: str = "",
                         title: str = "", detail: dict[str, Any] | None = None) -> bool:
        now = time.time()
        if status == "firing":
            sql, args = _FIRE + " RETURNING key", _fire_args(key, severity, source, title,
                                                             detail, now)
        else:
            sql = _RESOLVE + " RETURNING key"
            args = (orjson.dumps(detail or {}).decode(), now, now, key)
        return bool(await self._all(sql, args))
