"""The trace record: one per request, everything needed to explain it later."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

log = logging.getLogger("seawall.traces")

# What stands in for a field that could not be serialised (nested past orjson's
# 255 levels, a non-JSON type): the record is still stored, with this marker.
UNSERIALISABLE = "[seawall: not serialisable: {}]"

ROW_COLUMNS = (
    "trace_id", "endpoint", "started_at", "tenant", "key_id", "model", "deployment", "stream",
    "status", "error_type", "error_code", "error_message", "input", "output", "input_hash",
    "prompt_tokens", "completion_tokens", "usage_estimated", "cost_usd", "latency_ms", "ttft_ms",
    "finish_reason", "user", "attempts", "degraded", "cache", "cache_entry", "cache_similarity",
    "saved_tokens", "saved_usd", "cache_guard", "rag", "experiment", "prompt_version", "route",
    "spans",
)


@dataclass(slots=True)
class AttemptRecord:
    """One upstream attempt of a request, in the order they were made."""

    deployment: str
    model: str  # the logical model it was made for (a fallback's, if so)
    outcome: str  # "ok", an error code, "cancelled", "hedge_lost"
    ms: float
    hedge: bool = False


@dataclass(slots=True)
class TraceRecord:
    trace_id: str
    endpoint: str
    started_at: float  # unix seconds
    tenant: str = ""
    key_id: str | None = None
    model: str = ""  # the logical model the client asked for
    deployment: str = ""  # provider/upstream-model that served it
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    input: Any = None  # request messages, or None when content is redacted
    output: str | None = None
    input_hash: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    finish_reason: str | None = None
    user: str | None = None
    # Upstream attempts in order (stored as a JSON list of objects).
    attempts: list[AttemptRecord] = field(default_factory=list)
    degraded: str | None = None  # "rule" or "static" when no upstream answered
    # Response cache: hit | semantic-hit | coalesced | miss | bypass (None: cache off),
    # the entry served and its similarity, and what serving it saved.
    cache: str | None = None
    cache_entry: int | None = None
    cache_similarity: float | None = None
    saved_tokens: int = 0
    saved_usd: float = 0.0
    cache_guard: str | None = None  # the false-hit check that refused the best candidate
    # Retrieval: collection, query, the chunks given to the model (with their
    # text unless content is redacted) and timings; `input` then holds the
    # assembled prompt exactly as sent.
    rag: dict[str, Any] | None = None
    experiment: str | None = None  # "experiment=variant" when the request was in one
    prompt_version: str | None = None  # "name@version" from the registry, or the client's own
    # A routed request: route, tier, model, score, threshold, reason, router version.
    route: dict[str, Any] | None = None
    # Stage timings for spans: (name, start_ns, end_ns), wall-clock nanoseconds.
    spans: list[tuple[str, int, int]] = field(default_factory=list)
    parent: str | None = None  # incoming W3C traceparent, if any
    # Not stored: kept for token estimation when the upstream sent no usage.
    messages_for_count: Any = None
    finalized: bool = False  # tokens, cost, metrics and spans done (by the writer)

    def row(self) -> tuple[Any, ...]:
        """The stored columns, in ``ROW_COLUMNS`` order (explicit: asdict is slow).
        Never raises on content: see :func:`_dumps`."""
        return (
            self.trace_id, self.endpoint, self.started_at, self.tenant, self.key_id, self.model,
            self.deployment, self.stream, self.status, self.error_type, self.error_code,
            self.error_message, None if self.input is None else _dumps(self.input),
            self.output, self.input_hash, self.prompt_tokens, self.completion_tokens,
            self.usage_estimated, self.cost_usd, self.latency_ms, self.ttft_ms,
            self.finish_reason, self.user,
            _dumps(self.attempts) if self.attempts else None, self.degraded,
            self.cache, self.cache_entry, self.cache_similarity, self.saved_tokens,
            self.saved_usd, self.cache_guard,
            None if self.rag is None else _dumps(self.rag), self.experiment,
            self.prompt_version, None if self.route is None else _dumps(self.route),
            _dumps(self.spans) if self.spans else None,
        )

    def to_json(self) -> bytes:
        """One journal line. Never raises: a field that cannot be serialised is
        replaced by a marker (the record itself is what must survive)."""
        try:
            # orjson walks the dataclass itself: ~7x faster than asdict (which
            # deep-copies the messages) and the same JSON (bench: 28 vs 195 us).
            return orjson.dumps(self)
        except (TypeError, ValueError, RecursionError):
            d = asdict(self)
            for name in ("input", "output", "rag", "route", "messages_for_count"):
                d[name] = _safe(d[name])
            return orjson.dumps(d, default=str)

    @classmethod
    def from_json(cls, line: bytes) -> TraceRecord:
        d = orjson.loads(line)
        d["spans"] = [tuple(s) for s in d.get("spans") or []]
        d["attempts"] = [AttemptRecord(**a) for a in d.get("attempts") or []]
        return cls(**d)


def _dumps(value: Any) -> str:
    """JSON text of a record field, or a marker when it cannot be serialised
    (the request's own validation should stop such content; this is the
    last line, so one bad record never fails a batch or kills the writer)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError, RecursionError) as e:
        log.warning("trace record field not serialisable; stored as a marker",
                    extra={"error": repr(e)[:200]})
        return orjson.dumps(UNSERIALISABLE.format(type(e).__name__)).decode()


def _safe(value: Any) -> Any:
    """``value`` if it serialises, else the marker string."""
    try:
        orjson.dumps(value)
        return value
    except (TypeError, ValueError, RecursionError) as e:
        return UNSERIALISABLE.format(type(e).__name__)


# Longest stretch of record work (finishing, building rows) between two yields
# to the event loop: a request arriving meanwhile waits at most this long.
SLICE_S = 0.0005


async def rows_of(records: list[TraceRecord]) -> list[tuple[Any, ...]]:
    """Each record's stored columns (:meth:`TraceRecord.row`), built on the
    event loop in slices of ``SLICE_S``: a batch of hundreds of records takes
    milliseconds, which in one piece delays every request waiting meanwhile."""
    rows = []
    clock = time.perf_counter
    slice_end = clock() + SLICE_S
    for rec in records:
        rows.append(rec.row())
        if clock() > slice_end:
            await asyncio.sleep(0)
            slice_end = clock() + SLICE_S
    return rows


def hash_input(raw_body: bytes) -> str:
    """A stable fingerprint of the request, to find repeats without storing text."""
    return hashlib.blake2b(raw_body, digest_size=16).hexdigest()
