"""Graceful shutdown of a real `seawall serve` process: on SIGTERM it stops
accepting, lets streams in flight finish (up to shutdown.drain_timeout_s),
records every request, and exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import FakeUpstreamClient, serve_process, start_fake_upstream

SEAWALL = [sys.executable, "-m", "seawall.cli"]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstreamClient]:
    url, stop = start_fake_upstream()
    yield FakeUpstreamClient(url)
    stop()


def _serve(tmp: Path, fake: FakeUpstreamClient, drain_s: float) -> tuple[str, Any, Path]:
    return serve_process(tmp, fake, shutdown={"drain_timeout_s": drain_s})


def _stream_in_background(url: str) -> tuple[threading.Thread, list[str], threading.Event]:
    """Start a streaming request; returns once its first event arrived."""
    lines: list[str] = []
    started = threading.Event()

    def run() -> None:
        try:
            with httpx.Client(timeout=30) as h, h.stream(
                    "POST", url + "/v1/chat/completions",
                    json={"model": "m", "stream": True,
                          "messages": [{"role": "user", "content": "go"}]}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line[6:])
                        started.set()
        except httpx.HTTPError as e:
            lines.append(f"transport error: {type(e).__name__}")
        finally:
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    return t, lines, started


def _records(conf: Path) -> list[dict[str, Any]]:
    out = subprocess.run([*SEAWALL, "traces", "tail", "--config", str(conf), "--json"],
                         capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_sigterm_lets_a_stream_finish_then_exits_0(tmp_path: Path,
                                                   fake: FakeUpstreamClient) -> None:
    fake.reset()
    fake.script(default={"text": " ".join(f"w{i}" for i in range(10)), "tokens_per_s": 10})
    url, proc, conf = _serve(tmp_path, fake, drain_s=10)
    try:
        t, lines, _ = _stream_in_background(url)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": "late"}]}, timeout=2)
        t.join(15)
        assert lines[-1] == "[DONE]"  # the stream in flight ran to its end
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = [r for r in _records(conf) if r["endpoint"] == "chat.completions"]
    assert [(r["status"], r["output"]) for r in recs] == [
        (200, " ".join(f"w{i}" for i in range(10)))]


def test_a_stream_past_the_drain_deadline_is_cut_and_recorded(
        tmp_path: Path, fake: FakeUpstreamClient) -> None:
    fake.reset()
    fake.script(default={"text": " ".join(f"w{i}" for i in range(100)), "tokens_per_s": 10})
    url, proc, conf = _serve(tmp_path, fake, drain_s=0.5)
    try:
        t, lines, _ = _stream_in_background(url)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert time.monotonic() - t0 < 5  # the deadline, not the 10 s answer
        t.join(10)
        # Ended like a stream its upstream cut: a finish_reason "error" chunk
        # and an error event, a complete body (no transport error), no [DONE].
        assert "[DONE]" not in lines
        assert not any(line.startswith("transport error") for line in lines), lines
        assert json.loads(lines[-1])["error"]["code"] == "shutting_down"
        assert json.loads(lines[-2])["choices"][0]["finish_reason"] == "error"
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = [r for r in _records(conf) if r["endpoint"] == "chat.completions"]
    assert [(r["status"], r["error_code"]) for r in recs] == [(503, "shutting_down")]
