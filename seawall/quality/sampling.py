"""Which answers get judged, decided on the request path in microseconds.

Each judge's match is compiled once into frozensets; per answer the cost is
a few set lookups and one draw per matching judge (bench/judge_cost.py).
The draw is a function of the trace id, not a random number: the same record
gives the same decision when the trace journal is replayed after a crash,
which is how a sample lost with the process is found again (judges.py).
A sampled answer's payload -- what the judge needs, cut to bounded size --
is built only then, so the job never depends on the trace writer having
flushed the record.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass
from typing import Any

from seawall.config import JudgeSettings
from seawall.observe.records import TraceRecord
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext

MAX_SOURCES = 20
_CUT = "…[cut {} chars]"


_SPAN = float(1 << 52)
_MASK = (1 << 52) - 1


def _bits(trace_id: str) -> int:
    """The trace id as a number. Its last 80 bits are random (the gateway
    makes them, pipeline/context.py); times a judge's odd multiplier, mod
    2**52 (which only the last 52 bits affect), they are that judge's draw:
    ~0.2 us, where a hash would be 0.4-0.7 us."""
    try:
        return int(trace_id, 16)
    except ValueError:  # not one of ours: any fixed spread will do
        return zlib.crc32(trace_id.encode())


def _mult(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest()) & _MASK | 1


def _names(values: list[str]) -> frozenset[str] | None:
    return frozenset(values) if values else None


@dataclass(slots=True)
class Matcher:
    """One judge's compiled match; None = any value."""

    judge: str
    rate: float
    models: frozenset[str] | None
    routes: frozenset[str] | None
    prompts: frozenset[str] | None
    experiments: frozenset[str] | None
    tenants: frozenset[str] | None
    paused_until: float = 0.0  # over its daily budget until then (unix time)
    mult: int = 1  # of its draws (odd, 52 bits): judges draw independently
    cut: float = 0.0  # sample_rate * 2**52: a draw's bits below it are sampled

    @classmethod
    def of(cls, j: JudgeSettings) -> Matcher:
        m = j.match
        return cls(j.name, j.sample_rate, _names(m.models), _names(m.routes),
                   _names(m.prompts), _names(m.experiments), _names(m.tenants),
                   mult=_mult(j.name), cut=j.sample_rate * _SPAN)

    def draw(self, trace_id: str) -> float:
        """In [0, 1), fixed for a trace id (what :func:`sampled` compares
        with ``rate``)."""
        return ((_bits(trace_id) * self.mult) & _MASK) / _SPAN

    def matches(self, rec: TraceRecord, route: str | None) -> bool:
        if self.models is not None and rec.model not in self.models:
            return False
        if self.tenants is not None and rec.tenant not in self.tenants:
            return False
        if self.routes is not None and route not in self.routes:
            return False
        if self.prompts is not None and not _either(rec.prompt_version, "@", self.prompts):
            return False
        return self.experiments is None or _either(rec.experiment, "=", self.experiments)


def _either(value: str | None, sep: str, names: frozenset[str]) -> bool:
    """``name@version`` matches by its name or exactly."""
    return value is not None and (value in names or value.split(sep, 1)[0] in names)


def sampled(matchers: list[Matcher], ctx: RequestContext, rec: TraceRecord) -> list[str]:
    """The judges that score this answer (usually none: the cheap path)."""
    if rec.status != 200 or ctx.endpoint not in CHAT_ENDPOINTS or not ctx.gatherer.text:
        return []
    return _pick(matchers, rec, ctx.route.route if ctx.route is not None else None)


SERVED_FROM_CACHE = frozenset({"hit", "semantic-hit", "coalesced", "stale"})


def resampled(matchers: list[Matcher], rec: TraceRecord) -> list[str]:
    """The decision :func:`sampled` made, from the record alone (journal
    replay). A record without stored content counts as having an answer: the
    caller cannot rebuild a payload for it and says so."""
    if rec.status != 200 or rec.endpoint not in CHAT_ENDPOINTS or rec.output == "" \
            or rec.cache in SERVED_FROM_CACHE:  # the record stage does not sample those
        return []
    if rec.output is None and rec.input is not None:  # content kept, and no answer text
        return []
    route = rec.route.get("route") if isinstance(rec.route, dict) else None
    return _pick(matchers, rec, route if isinstance(route, str) else None)


def _pick(matchers: list[Matcher], rec: TraceRecord, route: str | None) -> list[str]:
    out = []
    bits = -1  # read from the trace id once, when a judge first needs a draw
    for m in matchers:
        if m.rate <= 0:
            continue
        if m.rate < 1:
            if bits < 0:
                bits = _bits(rec.trace_id)
            if (bits * m.mult) & _MASK >= m.cut:
                continue
        if m.matches(rec, route) and not (m.paused_until and time.time() < m.paused_until):
            out.append(m.judge)
    return out


def replay_payload(rec: TraceRecord, judges: list[str], max_chars: int) -> dict[str, Any]:
    """:func:`payload` from the stored record alone (stored content is
    required; a ``seawall.reference`` the client sent is not in the record)."""
    sources = [c.get("text") for c in ((rec.rag or {}).get("chunks") or [])[:MAX_SOURCES]
               if isinstance(c, dict)]
    route = rec.route.get("route") if isinstance(rec.route, dict) else None
    return _payload(rec, judges, max_chars, rec.input, rec.output or "", None,
                    [t for t in sources if isinstance(t, str)], route)


def cut(text: str, limit: int, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    gone = len(text) - limit
    return _CUT.format(gone) + text[-limit:] if keep_end else text[:limit] + _CUT.format(gone)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content[:64]
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def transcript(messages: Any, limit: int) -> str:
    """The conversation as ``role: text`` lines, newest kept when too long.
    Work is bounded by ``limit``: messages are read from the end until it is filled."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    left = limit
    for m in reversed(messages):
        if left <= 0:
            parts.append(_CUT.format("earlier messages"))
            break
        if not isinstance(m, dict):
            continue
        text = cut(_content_text(m.get("content")), left, keep_end=True)
        line = f"{m.get('role', 'user')}: {text}"
        parts.append(line)
        left -= len(line)
    return "\n\n".join(reversed(parts))


def payload(ctx: RequestContext, rec: TraceRecord, judges: list[str],
            max_chars: int) -> dict[str, Any]:
    """What a judge job carries: the answer, bounded, and the traffic fields
    of its Score rows. Only built for a sampled answer. The record's stored
    content is used when there is some (redacted by the guardrails, as the
    job row keeps it); the live request's only when content is not stored."""
    messages = rec.input if rec.input is not None else (
        ctx.raw.get("messages") if ctx.raw else None)
    output = rec.output if rec.output is not None else ctx.gatherer.text
    reference = None
    opts = ctx.request.seawall if ctx.request is not None else None
    if opts is not None and opts.reference:
        reference = cut(opts.reference, max_chars)
    stored = [c.get("text") for c in ((rec.rag or {}).get("chunks") or [])[:MAX_SOURCES]
              if isinstance(c, dict)]
    texts = ([t for t in stored if isinstance(t, str)] if any(stored)
             else [x.chunk.text for x in ctx.rag.sources[:MAX_SOURCES]]
             if ctx.rag is not None else [])
    route = ctx.route.route if ctx.route is not None else None
    return _payload(rec, judges, max_chars, messages, output, reference, texts, route)


def _payload(rec: TraceRecord, judges: list[str], max_chars: int, messages: Any, output: str,
             reference: str | None, texts: list[str], route: Any) -> dict[str, Any]:
    sources: list[str] = []
    left = max_chars
    for t in texts:
        if left <= 0:
            break
        sources.append(cut(t, left))
        left -= len(sources[-1])
    return {
        "trace_id": rec.trace_id, "judges": judges, "tenant": rec.tenant, "model": rec.model,
        "route": route, "prompt_version": rec.prompt_version, "experiment": rec.experiment,
        "input": transcript(messages, max_chars),
        "output": cut(output, max_chars),
        "reference": reference, "sources": sources,
    }
