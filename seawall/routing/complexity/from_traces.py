"""Training examples for the cost router from the gateway's own traffic
(``seawall router train --from-traces``; docs/routing.md).

The question the router answers is "is the cheap model good enough for this
prompt?". Traffic answers it where the cheap model answered and someone
judged the answer: a judge score at least ``good_score`` (a fraction of its
scale), or a rating not below the negative threshold, says yes (cheap_ok 1);
a failing score or a negative rating says the strong model was needed
(cheap_ok 0). Answers of other models say nothing about the cheap one and are
skipped, as are records without their input (``observe.traces.store_content:
false``) and failed requests. A judge score wins over ratings; several are
averaged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from seawall.quality.feedback_store import FeedbackStore
from seawall.quality.score_store import ScoreStore
from seawall.routing.complexity.train import Example
from seawall.store.base import TraceStore

__all__ = ["Collected", "collect_examples"]

PAGE = 1000
SOURCE = "traces"


@dataclass(slots=True)
class Collected:
    examples: list[Example] = field(default_factory=list)
    scanned: int = 0  # trace records read
    cheap: int = 0  # answered by the cheap model, with their input
    judged: int = 0
    rated: int = 0


def _messages(record: dict[str, Any]) -> tuple[dict[str, Any], ...] | None:
    raw = record.get("input")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        return None
    return tuple(raw)


async def collect_examples(traces: TraceStore, scores: ScoreStore, feedback: FeedbackStore,
                           cheap: str, *, days: float = 30.0, good_score: float = 0.5,
                           negative_below: float = 0.0, max_traces: int = 200_000
                           ) -> Collected:
    """Labelled examples from the last ``days`` of answers by model ``cheap``."""
    since = time.time() - days * 86_400
    judged: dict[str, list[float]] = {}
    for s in await scores.window(since, model=cheap, status="ok"):
        if s.fraction is not None:
            judged.setdefault(s.trace_id, []).append(s.fraction)
    out = Collected()
    cursor = -1  # rowids start at 1: from the first record on
    while out.scanned < max_traces:
        page = await traces.recent_traces(min(PAGE, max_traces - out.scanned),
                                          after_rowid=cursor)
        if not page:
            break
        cursor = int(page[-1]["rowid"])
        out.scanned += len(page)
        for record in page:
            if (record.get("model") != cheap or record.get("status") != 200
                    or float(record.get("started_at") or 0) < since):
                continue
            messages = _messages(record)
            if messages is None:
                continue
            out.cheap += 1
            trace_id = str(record["trace_id"])
            label = None
            if trace_id in judged:
                fractions = judged[trace_id]
                label = float(sum(fractions) / len(fractions) >= good_score)
                out.judged += 1
            else:
                ratings = [f.score for f in await feedback.for_trace(trace_id)]
                if ratings:
                    label = float(sum(ratings) / len(ratings) >= negative_below)
                    out.rated += 1
            if label is not None:
                out.examples.append(Example(messages=messages, cheap_ok=label, source=SOURCE))
    return out
