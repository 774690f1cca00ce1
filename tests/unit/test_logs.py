"""Structured logs: one JSON object per line, carrying the request's trace id."""

import io
import logging

import orjson

from seawall.observe.logs import JsonFormatter, current_trace_id


def test_json_lines_carry_trace_id_and_extras() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("seawall.test-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    token = current_trace_id.set("0123456789abcdef0123456789abcdef")
    try:
        log.warning("upstream slow", extra={"deployment": "oa/gpt-4o", "ms": 1234,
                                            "color_message": "\x1b[1mupstream slow\x1b[0m"})
    finally:
        current_trace_id.reset(token)
    log.info("no request here")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "upstream slow" and first["level"] == "warning"
    assert first["trace_id"] == "0123456789abcdef0123456789abcdef"
    assert first["deployment"] == "oa/gpt-4o" and first["ms"] == 1234
    assert first["ts"].endswith("Z")
    assert "color_message" not in first
    assert "trace_id" not in second
