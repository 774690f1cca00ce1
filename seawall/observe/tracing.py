"""OpenTelemetry spans, built after the fact from recorded stage timings.

The request path only notes ``(stage, start_ns, end_ns)`` on its context;
the trace writer turns those into spans with explicit timestamps and exports
them over OTLP/HTTP. So tracing costs the request nothing, and the OTel trace
id is Seawall's own ``x-request-id`` (via a small id generator), which makes
a trace record, a log line and a span findable by the same id.
"""

from __future__ import annotations

import contextvars
import re

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from seawall.observe.records import TraceRecord

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "seawall_next_trace_id", default=None)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C ``traceparent`` header."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


class _RecordIdGenerator(IdGenerator):
    """Uses the trace id of the record being exported; random otherwise."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        tid = _next_trace_id.get()
        return tid if tid is not None else self._random.generate_trace_id()


class SpanExport:
    def __init__(self, service_name: str, exporter: SpanExporter) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                       id_generator=_RecordIdGenerator())
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("seawall")

    @classmethod
    def otlp(cls, service_name: str, endpoint: str) -> SpanExport:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        return cls(service_name, OTLPSpanExporter(endpoint=url))

    def export(self, rec: TraceRecord) -> None:
        if not rec.spans:
            return
        parent_ctx = None
        parent = parse_traceparent(rec.parent)
        if parent:
            sc = SpanContext(int(parent[0], 16), int(parent[1], 16), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
            parent_ctx = trace.set_span_in_context(NonRecordingSpan(sc))
        token = _next_trace_id.set(int(rec.trace_id, 16))
        try:
            name, start, end = rec.spans[0]
            root = self.tracer.start_span(
                name, context=parent_ctx, kind=SpanKind.SERVER, start_time=start,
                attributes={"seawall.endpoint": rec.endpoint, "seawall.model": rec.model,
                            "seawall.deployment": rec.deployment, "seawall.tenant": rec.tenant,
                            "http.response.status_code": rec.status,
                            "gen_ai.usage.input_tokens": rec.prompt_tokens,
                            "gen_ai.usage.output_tokens": rec.completion_tokens})
            if rec.error_code:
                root.set_attribute("error.type", rec.error_code)
                root.set_status(trace.Status(trace.StatusCode.ERROR, rec.error_message or ""))
            child_ctx = trace.set_span_in_context(root)
            for sname, sstart, send in rec.spans[1:]:
                self.tracer.start_span(sname, context=child_ctx, start_time=sstart).end(send)
            root.end(end)
        finally:
            _next_trace_id.reset(token)

    def shutdown(self) -> None:
        self.provider.shutdown()
