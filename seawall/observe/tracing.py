"""OpenTelemetry spans, built after the fact from recorded stage timings.

The request path only notes ``(stage, start_ns, end_ns)`` on its context.
The trace writer turns each finished record into a span tree (the request
span, one child per stage) and exports a whole batch at once on a worker
thread, so tracing never delays a request. The OTel trace id is Seawall's own
``x-request-id``: a trace record, a log line and a span share one id.

Two encodings of standard OTLP/HTTP (``/v1/traces``):

* ``http/json`` (default): span dicts are built straight from the record and
  serialised with orjson, a few microseconds per request.
* ``http/protobuf``: the OpenTelemetry SDK's exporter over ``ReadableSpan``
  objects; its pure-Python encoder costs about 60 µs per request (bench/).
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import urllib.parse
from typing import Any

import orjson

from seawall.observe.records import TraceRecord

log = logging.getLogger("seawall.otlp")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SERVER, _INTERNAL = 2, 1  # OTLP SpanKind numbers
_ERROR = 2  # OTLP StatusCode
_MASK64 = (1 << 64) - 1


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C ``traceparent`` header."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


def _attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64: a string in OTLP/JSON
    return {"key": key, "value": {"stringValue": value}}


def _span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def span_tree(rec: TraceRecord) -> list[dict[str, Any]]:
    """The OTLP/JSON spans of one request: the request span, then its stages."""
    if not rec.spans:
        return []
    tid, parent = rec.trace_id, None
    incoming = parse_traceparent(rec.parent)
    if incoming:
        tid, parent = incoming
    name, start, end = rec.spans[0]
    root_id = _span_id()
    root: dict[str, Any] = {
        "traceId": tid, "spanId": root_id, "name": name, "kind": _SERVER,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
        "attributes": [
            _attr("seawall.request_id", rec.trace_id), _attr("seawall.endpoint", rec.endpoint),
            _attr("seawall.model", rec.model), _attr("seawall.deployment", rec.deployment),
            _attr("seawall.tenant", rec.tenant), _attr("http.response.status_code", rec.status),
            _attr("gen_ai.usage.input_tokens", rec.prompt_tokens),
            _attr("gen_ai.usage.output_tokens", rec.completion_tokens),
        ],
    }
    if parent:
        root["parentSpanId"] = parent
    if rec.error_code:
        root["attributes"].append(_attr("error.type", rec.error_code))
        root["status"] = {"code": _ERROR, "message": rec.error_message or ""}
    out = [root]
    # Child ids: the root's id plus the stage's position; unique within the
    # trace, which is all a span id needs, and no random draw per stage.
    base = int(root_id, 16)
    for i, (sname, sstart, send) in enumerate(rec.spans[1:], 1):
        out.append({"traceId": tid, "spanId": f"{(base + i) & _MASK64 or 1:016x}",
                    "parentSpanId": root_id, "name": sname, "kind": _INTERNAL,
                    "startTimeUnixNano": str(sstart), "endTimeUnixNano": str(send)})
    return out


class SpanExport:
    """Exports span trees over OTLP/HTTP, one batch of requests per call."""

    def __init__(self, service_name: str, endpoint: str, protocol: str = "http/json",
                 timeout_s: float = 5.0) -> None:
        url = endpoint.rstrip("/")
        self.url = url if url.endswith("/v1/traces") else url + "/v1/traces"
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.service_name = service_name
        self._sdk_exporter: Any = None
        self._path = urllib.parse.urlsplit(self.url).path
        self._conn: http.client.HTTPConnection | None = None
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            self._sdk_exporter = OTLPSpanExporter(endpoint=self.url, timeout=int(timeout_s))
        self._envelope_head = (
            b'{"resourceSpans":[{"resource":{"attributes":'
            + orjson.dumps([_attr("service.name", service_name)])
            + b'},"scopeSpans":[{"scope":{"name":"seawall"},"spans":'
        )

    def encode(self, spans: list[dict[str, Any]]) -> bytes:
        """An OTLP/JSON ``ExportTraceServiceRequest``."""
        return self._envelope_head + orjson.dumps(spans) + b"}]}]}"

    def export(self, spans: list[dict[str, Any]]) -> None:
        """Blocking export of one batch (the writer calls it on a worker thread)."""
        if not spans:
            return
        if self._sdk_exporter is not None:
            self._sdk_exporter.export(_readable(spans, self.service_name))
            return
        body = self.encode(spans)
        for attempt in (1, 2):  # a kept-alive connection may have been closed by the peer
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=body,
                             headers={"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status >= 400:
                    log.warning("OTLP collector refused spans",
                                extra={"status": resp.status, "spans": len(spans)})
                return
            except (OSError, http.client.HTTPException) as e:
                self._close_connection()
                if attempt == 2:
                    log.warning("OTLP export failed",
                                extra={"error": repr(e), "spans": len(spans)})

    def _connection(self) -> http.client.HTTPConnection:
        """One keep-alive connection, used only from the writer's export thread."""
        if self._conn is None:
            u = urllib.parse.urlsplit(self.url)
            cls = (http.client.HTTPSConnection if u.scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(u.hostname or "localhost", u.port, timeout=self.timeout_s)
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self) -> None:
        self._close_connection()
        if self._sdk_exporter is not None:
            self._sdk_exporter.shutdown()


def _readable(spans: list[dict[str, Any]], service_name: str) -> list[Any]:
    """The same spans as SDK ``ReadableSpan`` objects, for the protobuf exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    resource = Resource.create({"service.name": service_name})
    scope = InstrumentationScope("seawall")
    flags = TraceFlags(TraceFlags.SAMPLED)
    out = []
    for s in spans:
        tid = int(s["traceId"], 16)
        ctx = SpanContext(tid, int(s["spanId"], 16), is_remote=False, trace_flags=flags)
        parent = (SpanContext(tid, int(s["parentSpanId"], 16), is_remote=False, trace_flags=flags)
                  if "parentSpanId" in s else None)
        attrs = {a["key"]: (int(v["intValue"]) if "intValue" in (v := a["value"])
                            else v["stringValue"]) for a in s.get("attributes", ())}
        status = (Status(StatusCode.ERROR, s["status"]["message"]) if "status" in s
                  else Status(StatusCode.UNSET))
        out.append(ReadableSpan(s["name"], ctx, parent, resource, attrs,
                                kind=SpanKind.SERVER if s["kind"] == _SERVER else SpanKind.INTERNAL,
                                status=status, start_time=int(s["startTimeUnixNano"]),
                                end_time=int(s["endTimeUnixNano"]), instrumentation_scope=scope))
    return out
