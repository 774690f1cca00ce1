"""``kill -9`` the gateway mid-batch (embedded SQLite, and the shared
Postgres): after a restart on the same data the batch completes with every
line answered once, and only the lines in flight at the kill reach the model
a second time."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.servers import FakeUpstreamClient
from tests.services import free_port

CONCURRENCY = 4


def _serve(conf: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "seawall.cli", "serve", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "SEAWALL_CONFIG": ""})


def _ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not become ready"
        time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgres":
        return {"store": {"kind": "postgres", "url": request.getfixturevalue("pg_url")}}
    return {}


def test_kill_9_mid_batch_then_restart(upstream: FakeUpstreamClient, tmp_path: Path,
                                       store: dict[str, Any]) -> None:
    upstream.reset()
    upstream.script(default={"ttft_s": 0.02})
    port, n = free_port(), 300
    conf = tmp_path / "seawall.yaml"
    conf.write_text(json.dumps({
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "auth": {"allow_anonymous_loopback": True},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        "jobs": {"poll_s": 0.05, "lease_s": 2.0},
        "batches": {"concurrency": CONCURRENCY}, **store}))
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=2)
    proc = _serve(conf)
    try:
        _ready(url, proc)
        lines = "".join(json.dumps({
            "custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-x", "messages": [{"role": "user", "content": f"kill {i}"}]}})
            + "\n" for i in range(n))
        f = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 40:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()
        proc.wait(10)
        assert upstream.calls()["calls"] < n  # killed mid-batch

        proc = _serve(conf)
        _ready(url, proc)
        deadline = time.monotonic() + 120
        while (b := client.batches.retrieve(batch.id)).status != "completed":
            assert b.status in ("validating", "in_progress", "finalizing"), b
            assert time.monotonic() < deadline, b
            time.sleep(0.1)
        out = [json.loads(x) for x in client.files.content(b.output_file_id or "").text.split("\n")
               if x]
        assert Counter(r["custom_id"] for r in out) == Counter(f"k{i}" for i in range(n))
        for r in out:
            content = r["response"]["body"]["choices"][0]["message"]["content"]
            assert f"kill {r['custom_id'][1:]}" in content
        assert n <= upstream.calls()["calls"] <= n + CONCURRENCY
    finally:
        upstream.script(default={})
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
