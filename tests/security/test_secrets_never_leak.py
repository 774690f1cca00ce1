"""Secrets never leave the gateway: the master key, client keys and the
upstream API keys do not appear in its log (a real ``seawall serve`` at
debug level with the access log on, its output captured), in trace records,
in ``/metrics``, nor in any error message: a 401 for a wrong key does not
echo it, and an upstream error that echoes the upstream key (as some do,
"Incorrect API key provided: sk-...") does not pass it on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.security.conftest import MASTER, UPSTREAM_KEY
from tests.servers import FakeUpstreamClient, ServerThread, free_port, wait_until_ready

pytestmark = pytest.mark.timeout(180)

ECHO_KEY = "sk-echoed-upstream-9e8d7c6b5a"
ANTHROPIC_KEY = "sk-ant-upstream-1a2b3c4d5e"
CLIENT_KEY: list[str] = []  # made by `seawall keys create` in the fixture


async def _echo_error(request: Request) -> JSONResponse:
    """An upstream that names the key it was sent in its error, for any status."""
    body = await request.json()
    status = int(str(body.get("model", "x500")).lstrip("x"))
    sent = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
    return JSONResponse({"error": {"message": f"Incorrect API key provided: {sent} "
                                              f"(key {sent.removeprefix('Bearer ')})",
                                   "type": "invalid_request_error"}}, status_code=status)


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", _echo_error, methods=["POST"]),
                            Route("/v1/messages", _echo_error, methods=["POST"])])
    thread = ServerThread(app).start()
    try:
        yield thread.url
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def served(upstream: FakeUpstreamClient, echo_upstream: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    """A real ``seawall serve`` at debug level with the access log on, its
    output (the log) going to a file."""
    tmp = tmp_path_factory.mktemp("secrets")
    port = free_port()
    conf = tmp / "seawall.yaml"
    conf.write_text(json.dumps({
        "data_dir": str(tmp / "data"),
        "server": {"port": port, "log_level": "debug", "access_log": True},
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url + "/v1",
                             "api_key": UPSTREAM_KEY},
                      "echo": {"type": "openai", "base_url": echo_upstream + "/v1",
                               "api_key": ECHO_KEY},
                      "echo-ant": {"type": "anthropic", "base_url": echo_upstream,
                                   "api_key": ANTHROPIC_KEY}},
        "models": {"m": {"provider": "up", "model": "fake-1"},
                   **{f"e{s}": {"provider": "echo", "model": f"x{s}"} for s in (400, 401, 500)},
                   **{f"a{s}": {"provider": "echo-ant", "model": f"x{s}"} for s in (400, 500)}},
    }))
    made = subprocess.run([sys.executable, "-m", "seawall.cli", "keys", "create", "--name",
                           "app", "--tenant", "acme", "-c", str(conf)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "SEAWALL_CONFIG": ""})
    assert made.returncode == 0, made.stderr
    CLIENT_KEY.append(made.stdout.strip())
    log = tmp / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "seawall.cli", "serve", "--config",
                                 str(conf)], stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "SEAWALL_CONFIG": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, within_s=60)
        yield url, proc, log
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_secret_in_logs_traces_metrics_or_errors(
        served: tuple[str, Any, Path]) -> None:
    url, proc, log = served
    secrets = {"master": MASTER, "upstream": UPSTREAM_KEY, "echoed": ECHO_KEY,
               "anthropic": ANTHROPIC_KEY}
    bodies: list[str] = []
    ids: list[str] = []

    def call(method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = httpx.request(method, url + path, headers=headers, timeout=30, **kw)
        bodies.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        if "x-request-id" in r.headers:
            ids.append(r.headers["x-request-id"])
        return r

    client = CLIENT_KEY[-1]
    secrets["client"] = client
    chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert call("POST", "/v1/chat/completions", MASTER, json=chat).status_code == 200
    for key in (client, MASTER):  # answers, refusals and upstream errors for both
        assert call("POST", "/v1/chat/completions", key, json=chat).status_code == 200
        assert call("POST", "/v1/chat/completions", key,
                    json={**chat, "model": "e500"}).status_code == 502
        assert call("POST", "/v1/chat/completions", key,
                    json={**chat, "model": "nope"}).status_code == 404
    assert call("GET", "/admin/cache", client).status_code == 403  # an app key lacks admin:cache
    assert call("POST", "/v1/feedback", client, json={"request_id": "x" * 10, "score": 1}
                ).status_code == 404
    # Wrong keys of every shape: refused, not echoed.
    wrong = ["sk-sw-" + uuid.uuid4().hex * 2, MASTER + "x", MASTER[:-1], "x" * 40,
             UPSTREAM_KEY, "sk-sw-" + MASTER, CLIENT_KEY[-1] + "x", CLIENT_KEY[-1][:-2]]
    secrets.update({f"wrong{i}": w for i, w in enumerate(wrong)})
    for w in wrong:
        r = call("POST", "/v1/chat/completions", w, json=chat)
        assert r.status_code == 401, r.text
        r = call("GET", "/admin/cache", w)
        assert r.status_code == 401
    # Upstream errors that echo the upstream key.
    for model in ("e400", "e401", "e500", "a400", "a500"):
        r = call("POST", "/v1/chat/completions", MASTER,
                 json={**chat, "model": model})
        assert r.status_code >= 400
        call("POST", "/v1/chat/completions", MASTER,
             json={**chat, "model": model, "stream": True})
    # A batch whose lines fail upstream (errors are stored in the error file).
    line = json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
                       "body": {**chat, "model": "e500"}})
    f = call("POST", "/v1/files", MASTER, files={"file": ("b.jsonl", io.BytesIO(line.encode()))},
             data={"purpose": "batch"}).json()
    b = call("POST", "/v1/batches", MASTER, json={
        "input_file_id": f["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"}).json()
    deadline = time.monotonic() + 60
    while (got := call("GET", f"/v1/batches/{b['id']}", MASTER).json())["status"] not in (
            "completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for fid in (got.get("error_file_id"), got.get("output_file_id")):
        if fid:
            call("GET", f"/v1/files/{fid}/content", MASTER)
    time.sleep(0.5)  # trace records flush every 10 ms
    traces = [call("GET", f"/admin/traces/{i}", MASTER).text for i in list(ids)]
    assert any('"trace_id"' in t for t in traces)  # the records were read (can fail)
    metrics = call("GET", "/metrics", MASTER).text
    assert "seawall_" in metrics
    proc.terminate()
    proc.wait(30)
    out = log.read_text()
    assert "POST /v1/chat/completions" in out or "chat" in out  # the log was captured
    places = {"responses": "\n".join(bodies), "traces": "\n".join(traces),
              "metrics": metrics, "log": out}
    # Nor at rest: every file under the data directory (databases, WAL, journals).
    for path in sorted((log.parent / "data").rglob("*")):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("latin-1")
    assert len(places) > 5
    leaks = [(what, where) for what, secret in secrets.items() for where, text in places.items()
             if secret in text or secret[8:] in text]
    assert not leaks, leaks
