"""Hostile input on the request path, against the real gateway on loopback.

Deeply nested JSON in every entry point, high-cardinality model names, and
answers far larger than any client should get: each is a 4xx or a clean 502,
never a 5xx from the gateway itself; whatever the request took (its admission
and tenant slots) is released; the trace record is written; and the event
loop keeps answering a probe meanwhile (bound: 1.5 s on this shared machine,
where a blocked loop shows up as many seconds).
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, HealthProbe

MASTER = "sk-master-hostile-01"
AUTH = {"authorization": f"Bearer {MASTER}"}
DEPTHS = (300, 500, 1_000, 10_000)
PROBE_BOUND_S = 1.5


def _config(upstream_url: str, **server: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER},
        "server": server,
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {
            "fake": {"type": "fake"},
            # No usage block in streams: the gateway counts the answer itself.
            "up": {"type": "openai", "base_url": upstream_url + "/v1", "api_key": "x",
                   "supports_stream_usage": False},
            "claude": {"type": "anthropic", "base_url": upstream_url, "api_key": "x"},
        },
        "models": {
            "echo": {"provider": "fake"},
            "embed": {"provider": "fake", "kind": "embedding"},
            "big": {"provider": "up", "model": "fake-model"},
            "big-claude": {"provider": "claude", "model": "fake-model"},
        },
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream.base_url), tmp_path_factory.mktemp("hostile")) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(upstream: FakeUpstreamClient) -> None:
    upstream.reset()


def nested_list(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _chat(**fields: str) -> bytes:
    """A chat request whose ``fields`` are raw JSON text spliced in."""
    parts = ['"model":"echo"', '"messages":' + fields.pop(
        "messages", '[{"role":"user","content":"hi"}]')]
    parts += [f'"{k}":{v}' for k, v in fields.items()]
    return ("{" + ",".join(parts) + "}").encode()


def chat_bodies(depth: int) -> dict[str, bytes]:
    deep = nested_list(depth)
    return {
        "content part": _chat(messages='[{"role":"user","content":[{"type":"text","text":"hi",'
                                       f'"extra":{deep}}}]}}]'),
        "content": _chat(messages=f'[{{"role":"user","content":{deep}}}]'),
        "tools": _chat(tools='[{"type":"function","function":{"name":"f",'
                             f'"parameters":{nested_object(depth)}}}}}]'),
        "response_format": _chat(response_format='{"type":"json_schema","json_schema":'
                                                 f'{nested_object(depth)}}}'),
        "metadata": _chat(metadata=nested_object(depth)),
        "whole body": nested_object(depth).encode(),
        "whole body, list": deep.encode(),
    }


def embedding_bodies(depth: int) -> dict[str, bytes]:
    return {
        "input": f'{{"model":"embed","input":{nested_list(depth)}}}'.encode(),
        "extra field": f'{{"model":"embed","input":"hi","x":{nested_object(depth)}}}'.encode(),
        "whole body": nested_object(depth).encode(),
    }


def _released(gw: Running) -> None:
    adm = gw.services.admission
    assert adm.inflight == 0 and adm.by_tenant == {}
    assert gw.services.metrics.inflight._value.get() == 0


@pytest.mark.parametrize("depth", DEPTHS)
def test_nested_json_is_a_400_everywhere_and_releases_everything(gw: Running, depth: int) -> None:
    cases = [("/v1/chat/completions", name, body) for name, body in chat_bodies(depth).items()]
    cases += [("/v1/embeddings", name, body) for name, body in embedding_bodies(depth).items()]
    with httpx.Client(timeout=30) as h:
        for path, name, body in cases:
            r = h.post(gw.url + path, content=body,
                       headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 400, (path, name, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error", (path, name, err)
            # Too deep, or refused by validation for its shape before depth matters
            # (a list body is not an object): a 4xx either way, never a 500.
            assert err["code"] in ("json_too_deep", "invalid_json", "invalid_value"), err
            if name not in ("whole body, list",):
                assert err["code"] == "json_too_deep", (path, name, err)
                assert "server.max_json_depth" in err["message"]
        _released(gw)
        ok = h.post(gw.url + "/v1/chat/completions", headers=AUTH,
                    json={"model": "echo", "messages": [{"role": "user", "content": "still here"}]})
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["content"] == "still here"
        emb = h.post(gw.url + "/v1/embeddings", headers=AUTH,
                     json={"model": "embed", "input": "still here"})
        assert emb.status_code == 200
    _released(gw)


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_a_large_nested_body_is_a_400(gw: Running, depth: int) -> None:
    """Over 256 KiB, bodies are decoded in a worker thread: same answers."""
    pad = "x" * 300_000
    body = _chat(messages=f'[{{"role":"user","content":"{pad}"}}]',
                 metadata=nested_object(depth))
    r = httpx.post(gw.url + "/v1/chat/completions", content=body, timeout=30,
                   headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"
    _released(gw)


def test_nesting_up_to_the_limit_is_served(gw: Running) -> None:
    """Real tool schemas nest a dozen levels; the limit (64) leaves room."""
    body = _chat(tools='[{"type":"function","function":{"name":"f",'
                       f'"parameters":{nested_object(60)}}}}}]')
    r = httpx.post(gw.url + "/v1/chat/completions", content=body,
                   headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    over = _chat(tools='[{"type":"function","function":{"name":"f",'
                       f'"parameters":{nested_object(70)}}}}}]')
    r = httpx.post(gw.url + "/v1/chat/completions", content=over,
                   headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"
    _released(gw)


def test_a_refused_nested_request_is_recorded(gw: Running) -> None:
    r = httpx.post(gw.url + "/v1/chat/completions", content=chat_bodies(400)["content part"],
                   headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    tid = r.headers["x-request-id"]
    rec = next(t for t in gw.traces(50) if t["trace_id"] == tid)
    assert rec["status"] == 400 and rec["error_code"] == "json_too_deep"
    # Records keep being written afterwards (the writer did not die on it).
    ok = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                    json={"model": "echo", "messages": [{"role": "user", "content": "after"}]})
    assert any(t["trace_id"] == ok.headers["x-request-id"] for t in gw.traces(50))


# -- /metrics ------------------------------------------------------------------


def _random_name(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def test_client_model_names_never_become_metric_labels(gw: Running) -> None:
    with httpx.Client(timeout=30, headers=AUTH) as h:
        h.post(gw.url + "/v1/chat/completions",
               json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        gw.traces()
        before = len(h.get(gw.url + "/metrics").content)
        rng = random.Random(7)
        names = [_random_name(rng, 200) for _ in range(20)]  # valid, unknown: 404
        long_names = [_random_name(rng, 100_000) for _ in range(20)]  # too long: 400
        for name in names + long_names:
            r = h.post(gw.url + "/v1/chat/completions",
                       json={"model": name, "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == (404 if len(name) == 200 else 400), r.text[:200]
        records = gw.traces(40)
        text = h.get(gw.url + "/metrics").text
    assert not any(name[:50] in text for name in names + long_names)
    assert max(len(r["model"]) for r in records) <= 256  # records keep a name's worth
    assert 'model="unknown"' in text
    # The same series as before, only their counts changed.
    assert len(text.encode()) < before + 2_000


def test_metrics_need_the_master_key_from_a_remote_looking_caller(gw: Running) -> None:
    # Master key set and no anonymous loopback: what a remote caller faces.
    r = httpx.get(gw.url + "/metrics")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(gw.url + "/metrics", headers={"authorization": "Bearer wrong-key"}
                     ).status_code == 401
    ok = httpx.get(gw.url + "/metrics", headers=AUTH)
    assert ok.status_code == 200 and "seawall_requests_total" in ok.text


@pytest.mark.parametrize(("auth", "observe", "status"), [
    ({"allow_anonymous_loopback": True, "master_key": MASTER}, {}, 200),
    ({}, {}, 200),  # no master key at all: loopback scrapes freely
    ({"master_key": MASTER}, {"metrics_auth": "none"}, 200),
])
def test_metrics_on_loopback_setups(tmp_path: Path, auth: dict[str, Any],
                                    observe: dict[str, Any], status: int) -> None:
    with run_gateway({"auth": auth, "observe": observe}, tmp_path) as g:
        assert httpx.get(g.url + "/metrics").status_code == status


# -- large answers -------------------------------------------------------------


def record(gw: Running, trace_id: str) -> dict[str, Any]:
    """The trace record of one request (a stream is recorded just after its
    last event, so it may take a moment)."""
    deadline = time.monotonic() + 10
    while True:
        found = [t for t in gw.traces(20) if t["trace_id"] == trace_id]
        if found or time.monotonic() > deadline:
            assert found, f"no record for {trace_id}"
            return found[0]
        time.sleep(0.05)


def _stream(gw: Running, body: dict[str, Any]) -> tuple[int, str, list[Any], str]:
    """(status, text received, the last event's data, request id) of one streamed request."""
    text: list[str] = []
    last: list[Any] = []
    with httpx.Client(timeout=120) as h, h.stream(
            "POST", gw.url + "/v1/chat/completions", headers=AUTH,
            json={**body, "stream": True}) as r:
        tid = r.headers["x-request-id"]
        if r.status_code != 200:
            r.read()
            return r.status_code, "", [r.json()], tid
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            last = [data]
            if data != "[DONE]":
                event = orjson.loads(data)
                for c in event.get("choices") or ():
                    text.append((c.get("delta") or {}).get("content") or "")
    return r.status_code, "".join(text), last, tid


BIG = {"model": "big", "messages": [{"role": "user", "content": "write a lot"}]}


def test_a_big_streamed_answer_without_usage_keeps_the_loop_free(
        tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    size = 12_000_000
    upstream.script(default={"filler_chars": size, "piece_chars": 4096})
    with run_gateway(_config(upstream.base_url, max_answer_chars=20_000_000), tmp_path) as g, \
            HealthProbe(g.url) as probe:
        status, text, last, tid = _stream(g, BIG)
        assert status == 200 and len(text) == size and last == ["[DONE]"]
        rec = record(g, tid)
        assert rec["status"] == 200 and rec["completion_tokens"] > 0
        assert rec["usage_estimated"]
        # Stored content is cut at observe.traces.max_content_chars, visibly.
        assert rec["output"].endswith(f"…[truncated {size - 256 * 1024} chars]")
    print(f"probe: {probe.answered} answers, slowest {probe.slowest:.3f}s")
    probe.check(PROBE_BOUND_S)


def test_a_streamed_answer_over_the_cap_ends_with_an_error_event(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"filler_chars": 20_000_000, "piece_chars": 8192})
    with HealthProbe(gw.url) as probe:
        status, text, last, tid = _stream(gw, BIG)
    assert status == 200 and 0 < len(text) <= 8_000_000
    err = orjson.loads(last[0])["error"]
    assert err["code"] == "upstream_response_too_large" and err["type"] == "upstream_error"
    assert "server.max_answer_chars" in err["message"]
    probe.check(PROBE_BOUND_S)
    rec = record(gw, tid)
    assert rec["status"] == 502 and rec["error_code"] == "upstream_response_too_large"
    _released(gw)


@pytest.mark.parametrize(("size", "setting"), [
    (20_000_000, "server.max_upstream_body_bytes"),  # the body is refused while read
    (10_000_000, "server.max_answer_chars"),  # the body fits, the answer does not
])
def test_a_non_streamed_answer_over_the_caps_is_a_502(
        gw: Running, upstream: FakeUpstreamClient, size: int, setting: str) -> None:
    upstream.script(default={"filler_chars": size})
    with HealthProbe(gw.url) as probe:
        r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json=BIG, timeout=120)
    assert r.status_code == 502, r.text[:300]
    err = r.json()["error"]
    assert err["code"] == "upstream_response_too_large" and setting in err["message"]
    assert upstream.calls()["calls"] == 1  # not retried: another attempt would be as long
    probe.check(PROBE_BOUND_S)
    _released(gw)


def test_an_over_long_stream_line_is_a_502(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"filler_chars": 3_000_000, "piece_chars": 3_000_000})
    status, _, last, _ = _stream(gw, BIG)
    assert status == 502
    err = last[0]["error"]
    assert err["code"] == "upstream_response_too_large"
    assert "server.max_sse_line_bytes" in err["message"]
    _released(gw)


@pytest.mark.parametrize(("filler", "piece", "setting"), [
    (3_000_000, 3_000_000, "server.max_sse_line_bytes"),
    (9_000_000, 8192, "server.max_answer_chars"),
])
def test_anthropic_answers_over_the_caps_are_502(
        gw: Running, upstream: FakeUpstreamClient, filler: int, piece: int, setting: str) -> None:
    upstream.script(default={"filler_chars": filler, "piece_chars": piece})
    for stream in (False, True):
        body = {**BIG, "model": "big-claude"}
        if stream:
            status, _, last, _ = _stream(gw, body)
            err = last[0]["error"] if status == 502 else orjson.loads(last[0])["error"]
        else:
            r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json=body,
                           timeout=120)
            status, err = r.status_code, r.json()["error"]
            assert status == 502
        assert err["code"] == "upstream_response_too_large" and setting in err["message"]
    _released(gw)


def test_a_big_answer_below_the_caps_is_served_with_counted_usage(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    """Non-streamed, 3 MB: read and parsed off the loop."""
    upstream.script(default={"filler_chars": 3_000_000})
    r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json=BIG, timeout=120)
    assert r.status_code == 200
    body = r.json()
    assert len(body["choices"][0]["message"]["content"]) == 3_000_000
    assert body["usage"]["completion_tokens"] > 0


# -- tenants -------------------------------------------------------------------


def test_one_tenant_cannot_take_every_slot(gw: Running) -> None:
    s = gw.services.settings.admission
    assert 0 < s.max_inflight_per_tenant < s.max_inflight


def test_an_embeddings_body_over_the_cap_is_a_502(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    """The upstream embeddings body is read under the same cap as a chat body."""
    cfg = _config(upstream.base_url, max_upstream_body_bytes=4096)
    cfg["models"]["up-embed"] = {"provider": "up", "model": "fake-embedding",
                                 "kind": "embedding"}
    with run_gateway(cfg, tmp_path) as small:
        ok = httpx.post(small.url + "/v1/embeddings", headers=AUTH,
                        json={"model": "up-embed", "input": ["a", "b"]}, timeout=30)
        assert ok.status_code == 200 and len(ok.json()["data"]) == 2
        r = httpx.post(small.url + "/v1/embeddings", headers=AUTH,
                       json={"model": "up-embed", "input": [f"text {i}" for i in range(200)]},
                       timeout=30)
    assert r.status_code == 502, r.text[:300]
    err = r.json()["error"]
    assert err["code"] == "upstream_response_too_large"
    assert "server.max_upstream_body_bytes" in err["message"]


def test_the_end_user_id_has_a_limit_on_every_api(gw: Running) -> None:
    """``user`` (``metadata.user_id`` on /v1/messages) is at most 256
    characters: a clear 400 in each API's own error shape, nothing sent on."""
    import openai

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
    msgs: Any = [{"role": "user", "content": "hi"}]
    long, fits = "u" * 257, "u" * 256
    calls: dict[str, Any] = {
        "chat": lambda u: client.chat.completions.with_raw_response.create(
            model="echo", messages=msgs, user=u),
        "embeddings": lambda u: client.embeddings.with_raw_response.create(
            model="embed", input="hi", user=u),
        "responses": lambda u: client.responses.with_raw_response.create(
            model="echo", input="hi", user=u, store=False),
    }
    for name, call in calls.items():
        with pytest.raises(openai.BadRequestError) as e:
            call(long)
        err = e.value.body if isinstance(e.value.body, dict) else {}
        assert err.get("param") == "user", (name, err)
        assert "at most 256 characters" in e.value.message, name
        served = call(fits)
        assert record(gw, served.headers["x-request-id"])["user"] == fits, name
    headers = {"x-api-key": MASTER, "anthropic-version": "2023-06-01"}
    body = {"model": "echo", "max_tokens": 5, "messages": msgs}
    r = httpx.post(gw.url + "/v1/messages", headers=headers, timeout=30,
                   json={**body, "metadata": {"user_id": long}})
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert "metadata.user_id" in err["error"]["message"]
    assert "at most 256 characters" in err["error"]["message"]
    r = httpx.post(gw.url + "/v1/messages", headers=headers, timeout=30,
                   json={**body, "metadata": {"user_id": fits}})
    assert r.status_code == 200, r.text
