"""The real server driven by the official openai SDK, over real sockets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from seawall.app import create_app
from seawall.config import load_settings
from tests.gateway import Running, run_app

MASTER = "sk-master-test-0001"

CONFIG: dict[str, Any] = {
    "auth": {"master_key": MASTER},
    "server": {"max_body_bytes": 20_000},
    "observe": {"traces": {"flush_interval_s": 0.01}},
    "providers": {
        "fake": {"type": "fake"},
        "slow": {"type": "fake", "tokens_per_s": 20,
                 "text": " ".join(f"w{i}" for i in range(200))},
        "limited": {"type": "fake", "error_status": 429, "retry_after_s": 7},
        "broken": {"type": "fake", "disconnect_after_chunks": 2, "text": "a b c d e f"},
    },
    "models": {
        "echo": {"provider": "fake", "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}},
        "slow": {"provider": "slow"},
        "limited": {"provider": "limited"},
        "broken": {"provider": "broken"},
        "embed": {"provider": "fake", "kind": "embedding"},
    },
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gw")
    f = d / "seawall.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(d / "data"), **CONFIG}))
    return f


@pytest.fixture(scope="module")
def gw(config_file: Path) -> Iterator[Running]:
    with run_app(create_app(load_settings(config_file))) as running:
        yield running


@pytest.fixture
def client(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "seawall.cli", *args, "--config", str(config_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def trace(gw: Running, trace_id: str) -> dict[str, Any]:
    for _ in range(100):
        rows = [t for t in gw.traces(1000) if t["trace_id"] == trace_id]
        if rows:
            return rows[0]
        time.sleep(0.02)
    raise AssertionError(f"no trace record for {trace_id}")


def test_chat_completion_non_stream(gw: Running, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello there gateway"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "hello there gateway"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert raw.headers["x-seawall-deployment"] == "fake/echo"
    rec = trace(gw, raw.headers["x-request-id"])
    assert rec["status"] == 200 and rec["model"] == "echo" and rec["tenant"] == "default"
    assert rec["output"] == "hello there gateway"
    assert "hello there gateway" in rec["input"]
    assert rec["completion_tokens"] == 3
    # price: 1000 $/Mtok in, 2000 $/Mtok out
    assert rec["cost_usd"] == pytest.approx((rec["prompt_tokens"] * 1000 + 3 * 2000) / 1e6)


def test_stream_with_and_without_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    plain = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two"}], stream=True))
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


async def test_async_client_stream(gw: Running) -> None:
    aclient = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
    stream = await aclient.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "async works"}], stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "async works"
    models = await aclient.models.list()
    assert {m.id for m in models.data} >= {"echo", "slow", "embed"}
    await aclient.close()


def test_max_tokens_limits_output(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b c d e"}], max_tokens=2)
    assert resp.choices[0].message.content == "a b"
    assert resp.choices[0].finish_reason == "length"


def test_embeddings(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="embed", input=["alpha", "beta"])
    assert [d.index for d in resp.data] == [0, 1]
    assert len(resp.data[0].embedding) == 8
    b64 = client.embeddings.create(model="embed", input="alpha")  # SDK default: base64
    assert b64.data[0].embedding == pytest.approx(resp.data[0].embedding, abs=1e-6)


def test_unknown_model_is_404_with_envelope(gw: Running, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    err = e.value.body
    assert isinstance(err, dict) and err["code"] == "model_not_found"
    assert "echo" in err["message"]  # says what exists
    rec = trace(gw, e.value.response.headers["x-request-id"])
    assert rec["status"] == 404 and rec["error_code"] == "model_not_found"


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, "invalid_json"),
    (b'{"model":"echo","messages":[{"role":"user","content":1}]}', 400, "invalid_value"),
    (b'{"model":"echo","messages":"hi"}', 400, "invalid_value"),
    (b'{"model":"echo","messages":[{"role":"user","content":"' + b"x" * 30_000 + b'"}]}',
     413, "body_too_large"),
])
def test_bad_requests_get_4xx_envelopes(gw: Running, body: bytes, status: int, code: str) -> None:
    r = httpx.post(gw.url + "/v1/chat/completions", content=body,
                   headers={"authorization": f"Bearer {MASTER}",
                            "content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["type"] == "invalid_request_error" and err["message"]
    assert trace(gw, r.headers["x-request-id"])["status"] == status


def test_unknown_route_and_method(gw: Running) -> None:
    r = httpx.get(gw.url + "/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(gw.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_auth_required_and_virtual_keys(gw: Running, config_file: Path) -> None:
    anon = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anon.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "echo", "messages": []})
    assert r.status_code == 401 and "Missing API key" in r.json()["error"]["message"]
    assert trace(gw, r.headers["x-request-id"])["error_code"] == "invalid_api_key"

    made = cli(config_file, "keys", "create", "--name", "team-a", "--rpm", "2",
               "--priority", "3")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("sk-sw-")
    listed = cli(config_file, "keys", "list")
    assert "team-a" in listed.stdout and secret not in listed.stdout  # stored hashed
    row = next(line for line in listed.stdout.splitlines() if "team-a" in line).split()
    assert row[4:6] == ["2", "3"]  # rpm, admission priority

    team = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    for _ in range(2):
        team.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as e:
        team.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    assert int(e.value.response.headers["retry-after"]) >= 1
    rec = trace(gw, e.value.response.headers["x-request-id"])
    assert rec["tenant"] == "team-a" and rec["status"] == 429

    assert cli(config_file, "keys", "revoke", "team-a").returncode == 0
    gw.services.auth._cache.clear()  # the server would notice within auth.key_cache_ttl_s
    with pytest.raises(openai.AuthenticationError):
        team.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])


def test_upstream_429_passes_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "7"


def test_failure_after_output_ends_stream_with_error_event(gw: Running) -> None:
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": "broken", "stream": True,
                            "messages": [{"role": "user", "content": "x"}]},
                      headers={"authorization": f"Bearer {MASTER}"}) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert '"content":"a"' in body and "upstream_disconnected" in body
    assert "[DONE]" not in body  # a cut answer must never look complete
    rec = trace(gw, r.headers["x-request-id"])
    assert rec["error_code"] == "upstream_disconnected" and rec["output"] == "a b"


def test_client_disconnect_stops_generation(gw: Running) -> None:
    started = time.monotonic()
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": "slow", "stream": True,
                            "messages": [{"role": "user", "content": "x"}]},
                      headers={"authorization": f"Bearer {MASTER}"}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        rid = r.headers["x-request-id"]
    assert any("w1" in ln for ln in got)
    rec = trace(gw, rid)
    # 200 words at 20/s would take 10 s; the hang-up ended it at once.
    assert time.monotonic() - started < 5
    assert rec["status"] == 499 and rec["error_code"] == "client_closed_request"
    assert len(rec["output"].split()) < 20


def test_health_ready_metrics(gw: Running, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "m"}])
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["store"]["ready"] is True
    gw.traces()  # metrics are counted by the writer
    # A master key and no anonymous loopback: /metrics wants the key too.
    assert httpx.get(gw.url + "/metrics").status_code == 401
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
    assert 'seawall_requests_total{deployment="fake/echo",endpoint="chat.completions",' \
           'model="echo",status="200"}' in text
    assert "seawall_time_to_first_token_seconds_bucket" in text
    assert 'seawall_tokens_total{deployment="fake/echo",kind="completion",model="echo"}' in text
    assert 'seawall_cost_usd_total{deployment="fake/echo",model="echo"}' in text
    assert "seawall_inflight_requests 0.0" in text  # every request that started has ended
    assert 'seawall_rate_limited_total{limit="key_rpm"}' in text
