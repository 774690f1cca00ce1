"""An OTLP/HTTP span exporter using the protocol's JSON encoding.

Why not the SDK's protobuf exporter: its encoder builds one protobuf object
per field in Python, about 60 µs per request of six spans on the gateway's
core, more than the whole rest of the request path. OTLP/JSON is part of the
OTLP specification (``Content-Type: application/json`` on ``/v1/traces``),
accepted by the OpenTelemetry Collector, Jaeger, Tempo and others, and orjson
encodes it in a few microseconds. ``observe.otlp_protocol: http/protobuf``
selects the SDK exporter instead.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("seawall.otlp")


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 is a JSON string in the protobuf JSON mapping
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def _attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in (attrs or {}).items()]


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """One ``ExportTraceServiceRequest`` in OTLP/JSON."""
    if not spans:
        return b'{"resourceSpans":[]}'
    out = []
    for s in spans:
        ctx = s.context
        assert ctx is not None
        span: dict[str, Any] = {
            "traceId": f"{ctx.trace_id:032x}",
            "spanId": f"{ctx.span_id:016x}",
            "name": s.name,
            "kind": s.kind.value + 1,  # OTLP numbers kinds from 1 (INTERNAL)
            "startTimeUnixNano": str(s.start_time),
            "endTimeUnixNano": str(s.end_time),
        }
        if s.parent is not None:
            span["parentSpanId"] = f"{s.parent.span_id:016x}"
        if s.attributes:
            span["attributes"] = _attributes(s.attributes)
        if s.status.status_code.value:
            span["status"] = {"code": s.status.status_code.value,
                              "message": s.status.description or ""}
        out.append(span)
    first = spans[0]
    scope = first.instrumentation_scope
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": _attributes(first.resource.attributes)},
        "scopeSpans": [{"scope": {"name": scope.name if scope else "seawall"}, "spans": out}],
    }]})


class OtlpJsonSpanExporter(SpanExporter):
    def __init__(self, endpoint: str, timeout_s: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.headers = {"content-type": "application/json", **(headers or {})}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        req = urllib.request.Request(self.endpoint, data=encode(spans), headers=self.headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
            return SpanExportResult.SUCCESS
        except Exception as e:
            log.warning("OTLP export failed", extra={"error": repr(e), "spans": len(spans)})
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None
