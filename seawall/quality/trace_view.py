"""One trace record as a JSON document, with what was said about it: the
body of ``GET /admin/traces/{id}`` and of ``seawall traces show ID``."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from seawall.quality.feedback_store import FeedbackStore
from seawall.quality.score_store import ScoreStore

# Columns stored as JSON text: given back as the values they hold.
_JSON_COLUMNS = ("input", "attempts", "rag", "route", "spans")
_BOOL_COLUMNS = ("stream", "usage_estimated")
RESPONSE_PREFIX = "resp_"  # a Responses API id is "resp_" + the trace id


def trace_id_of(request_id: str) -> str:
    """The trace id behind an answer's id (``x-request-id`` or ``resp_...``)."""
    return request_id.removeprefix(RESPONSE_PREFIX)


def document(row: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in row.items() if k != "rowid"}
    for c in _JSON_COLUMNS:
        if isinstance(doc.get(c), str):
            with contextlib.suppress(orjson.JSONDecodeError):  # else shown as stored
                doc[c] = orjson.loads(doc[c])
    for c in _BOOL_COLUMNS:
        if c in doc and doc[c] is not None:
            doc[c] = bool(doc[c])
    return doc


async def trace_with_feedback(store: Any, feedback: FeedbackStore, request_id: str,
                              scores: ScoreStore | None = None) -> dict[str, Any] | None:
    """The whole record of ``request_id`` with its feedback and its judges'
    scores, or None when no such record is stored."""
    trace_id = trace_id_of(request_id)
    row = await store.get_trace(trace_id)
    if row is None:
        return None
    doc = document(row)
    doc["feedback"] = [f.to_json() for f in await feedback.for_trace(trace_id)]
    doc["scores"] = ([s.to_json() for s in await scores.for_trace(trace_id)]
                     if scores is not None else [])
    return doc
