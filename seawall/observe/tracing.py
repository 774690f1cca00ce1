"""OpenTelemetry spans, built after the fact from recorded stage timings.

The request path only notes ``(stage, start_ns, end_ns)`` on its context.
The trace writer turns each finished record into finished spans
(``ReadableSpan``, the SDK's export type) and hands a whole batch to the OTLP
exporter on a worker thread. Going around the SDK's live-span machinery and
its own batch queue costs a fraction of it per request (bench/: see
README), and the writer already batches. The OTel trace id is Seawall's own
``x-request-id``, so a trace record, a log line and a span share one id.
"""

from __future__ import annotations

import random
import re

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from seawall.observe.records import TraceRecord

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C ``traceparent`` header."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


class SpanExport:
    def __init__(self, service_name: str, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.resource = Resource.create({"service.name": service_name})
        self.scope = InstrumentationScope("seawall")

    @classmethod
    def otlp(cls, service_name: str, endpoint: str, protocol: str = "http/json") -> SpanExport:
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            return cls(service_name, OTLPSpanExporter(endpoint=url, timeout=5))
        from seawall.observe.otlp_json import OtlpJsonSpanExporter
        return cls(service_name, OtlpJsonSpanExporter(url))

    def spans(self, rec: TraceRecord) -> list[ReadableSpan]:
        """The span tree of one request: the request span, then one per stage."""
        if not rec.spans:
            return []
        tid = int(rec.trace_id, 16)
        parent = None
        incoming = parse_traceparent(rec.parent)
        if incoming:
            tid = int(incoming[0], 16)
            parent = SpanContext(tid, int(incoming[1], 16), is_remote=True, trace_flags=_SAMPLED)
        root_ctx = SpanContext(tid, random.getrandbits(64) or 1, is_remote=False,
                               trace_flags=_SAMPLED)
        status = _OK
        attrs: dict[str, str | int] = {
            "seawall.request_id": rec.trace_id, "seawall.endpoint": rec.endpoint,
            "seawall.model": rec.model, "seawall.deployment": rec.deployment,
            "seawall.tenant": rec.tenant, "http.response.status_code": rec.status,
            "gen_ai.usage.input_tokens": rec.prompt_tokens,
            "gen_ai.usage.output_tokens": rec.completion_tokens,
        }
        if rec.error_code:
            attrs["error.type"] = rec.error_code
            status = Status(StatusCode.ERROR, rec.error_message or "")
        name, start, end = rec.spans[0]
        out = [ReadableSpan(name, root_ctx, parent, self.resource, attrs, kind=SpanKind.SERVER,
                            status=status, start_time=start, end_time=end,
                            instrumentation_scope=self.scope)]
        for sname, sstart, send in rec.spans[1:]:
            ctx = SpanContext(tid, random.getrandbits(64) or 1, is_remote=False,
                              trace_flags=_SAMPLED)
            out.append(ReadableSpan(sname, ctx, root_ctx, self.resource, None,
                                    start_time=sstart, end_time=send,
                                    instrumentation_scope=self.scope))
        return out

    def export(self, spans: list[ReadableSpan]) -> None:
        """Blocking export of one batch (the writer calls it on a worker thread)."""
        if spans:
            self.exporter.export(spans)

    def shutdown(self) -> None:
        self.exporter.shutdown()
