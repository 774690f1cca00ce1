"""Which answers get judged, decided on the request path in microseconds.

Each judge's match is compiled once into frozensets; per answer the cost is
a few set lookups and one random draw per matching judge (bench/judge_cost.py).
A sampled answer's payload -- what the judge needs, cut to bounded size --
is built only then, so the job never depends on the trace writer having
flushed the record.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from seawall.config import JudgeSettings
from seawall.observe.records import TraceRecord
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext

MAX_SOURCES = 20
_CUT = "…[cut {} chars]"


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

    @classmethod
    def of(cls, j: JudgeSettings) -> Matcher:
        m = j.match
        return cls(j.name, j.sample_rate, _names(m.models), _names(m.routes),
                   _names(m.prompts), _names(m.experiments), _names(m.tenants))

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


def sampled(matchers: list[Matcher], ctx: RequestContext, rec: TraceRecord,
            draw: Any = random.random) -> list[str]:
    """The judges that score this answer (usually none: the cheap path)."""
    if rec.status != 200 or ctx.endpoint not in CHAT_ENDPOINTS or not ctx.gatherer.text:
        return []
    route = ctx.route.route if ctx.route is not None else None
    out = []
    for m in matchers:
        if m.rate <= 0 or (m.rate < 1 and draw() >= m.rate):
            continue
        if m.matches(rec, route) and not (m.paused_until and time.time() < m.paused_until):
            out.append(m.judge)
    return out


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
    sources: list[str] = []
    left = max_chars
    for t in texts:
        if left <= 0:
            break
        sources.append(cut(t, left))
        left -= len(sources[-1])
    return {
        "trace_id": rec.trace_id, "judges": judges, "tenant": rec.tenant, "model": rec.model,
        "route": ctx.route.route if ctx.route is not None else None,
        "prompt_version": rec.prompt_version, "experiment": rec.experiment,
        "input": transcript(messages, max_chars),
        "output": cut(output, max_chars),
        "reference": reference, "sources": sources,
    }
