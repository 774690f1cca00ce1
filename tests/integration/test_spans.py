"""OTLP span export to a real HTTP receiver: one span tree per request, whose
trace id is the request's x-request-id (or the caller's, via traceparent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway import Running, run_gateway


class Collector:
    """A minimal OTLP/HTTP receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.content_types.append(self.headers["content-type"])
                assert self.path == "/v1/traces"
                for rs in orjson.loads(body)["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        collector.spans.extend(ss["spans"])
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        for _ in range(200):
            found = [s for s in self.spans if s["traceId"] == trace_id]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no spans for trace {trace_id}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Collector]]:
    collector = Collector()
    config = {
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"otlp_endpoint": collector.url,
                    "traces": {"flush_interval_s": 0.01}},
        "providers": {"fake": {"type": "fake"}},
        "models": {"echo": {"provider": "fake"}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("spans")) as gw:
        yield gw, collector
    collector.server.shutdown()


def _chat(gw: Running, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers=headers,
                      json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})


def test_each_request_exports_a_span_per_stage(setup: tuple[Running, Collector]) -> None:
    gw, collector = setup
    r = _chat(gw)
    rid = r.headers["x-request-id"]
    gw.traces()
    spans = collector.trace(rid)
    root = next(s for s in spans if "parentSpanId" not in s)
    assert root["name"] == "chat.completions" and root["kind"] == 2
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs["seawall.model"] == {"stringValue": "echo"}
    assert attrs["http.response.status_code"] == {"intValue": "200"}
    children = {s["name"] for s in spans if s.get("parentSpanId") == root["spanId"]}
    assert children == {"auth", "limits", "invoke", "upstream"}
    assert all(int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) for s in spans)
    assert collector.content_types[-1] == "application/json"


def test_incoming_traceparent_is_the_parent(setup: tuple[Running, Collector]) -> None:
    gw, collector = setup
    tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    _chat(gw, traceparent=f"00-{tid}-{parent}-01")
    gw.traces()
    root = next(s for s in collector.trace(tid) if s.get("parentSpanId") == parent)
    assert root["name"] == "chat.completions"


def test_failed_request_span_has_error_status(setup: tuple[Running, Collector]) -> None:
    gw, collector = setup
    r = httpx.post(gw.url + "/v1/chat/completions",
                   json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    gw.traces()
    root = next(s for s in collector.trace(r.headers["x-request-id"])
                if "parentSpanId" not in s)
    assert root["status"]["code"] == 2
    assert {"key": "error.type", "value": {"stringValue": "model_not_found"}} in \
        root["attributes"]


def test_journal_survives_restart(tmp_path: Path) -> None:
    """Records journaled while the store was unusable reach it after a restart."""
    from seawall.observe.records import TraceRecord

    data = tmp_path / "data"
    data.mkdir()
    rec = TraceRecord(trace_id="0" * 31 + "7", endpoint="chat.completions", started_at=1.0,
                      model="echo", deployment="fake/echo", finalized=True)
    (data / "traces.journal").write_bytes(rec.to_json() + b"\n")
    config = {"providers": {"fake": {"type": "fake"}}, "models": {"echo": {"provider": "fake"}}}
    with run_gateway(config, tmp_path) as gw:
        _chat(gw, authorization="Bearer nope")  # any write triggers the replay
        for _ in range(100):
            if any(t["trace_id"] == rec.trace_id for t in gw.traces()):
                break
            time.sleep(0.02)
        assert any(t["trace_id"] == rec.trace_id for t in gw.traces())
    assert not (data / "traces.journal").exists()
