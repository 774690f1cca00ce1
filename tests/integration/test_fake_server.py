"""The fake upstream over a real socket: both wire formats, scripting, real failures."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from anthropic import AsyncAnthropic  # imported here: 1 s, paid once at collection
from click.testing import CliRunner
from openai import AsyncOpenAI

from seawall.cli import main as cli_main
from seawall.providers import fake_server
from seawall.providers.fake import FakeBehavior
from tests.servers import FakeUpstreamClient, blackhole_listener, closed_port

ANTHROPIC_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def fake(upstream: FakeUpstreamClient) -> AsyncIterator[FakeUpstreamClient]:
    upstream.reset()
    yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model",
            "messages": [{"role": "system", "content": "Be nice."},
                         {"role": "user", "content": "Hello there world"}], **extra}


def messages_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-fake", "max_tokens": 100, "system": "Be nice.",
            "messages": [{"role": "user", "content": "Hello there world"}], **extra}


async def sse_data(resp: aiohttp.ClientResponse) -> list[bytes]:
    raw = await resp.read()
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def sse_events(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    raw = (await resp.read()).decode()
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


async def test_openai_stream_with_usage(fake: FakeUpstreamClient,
                                        http: aiohttp.ClientSession) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with http.post(fake.base_url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        data = await sse_data(resp)
    assert data[-1] == b"[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3,
                                   "total_tokens": 8}
    calls = fake.calls()
    assert calls["calls"] == 1 and calls["completed"] == 1
    assert calls["requests"][0] == body


async def test_openai_stream_without_usage_and_non_stream(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    async with http.post(fake.base_url + "/v1/chat/completions",
                         json=chat_body(stream=True)) as resp:
        chunks = [orjson.loads(d) for d in (await sse_data(resp))[:-1]]
    assert all(c["choices"] for c in chunks)
    async with http.post(fake.base_url + "/v1/chat/completions",
                         json=chat_body(max_tokens=2)) as resp:
        done = await resp.json()
    assert done["object"] == "chat.completion"
    assert done["choices"][0]["message"] == {"role": "assistant", "content": "Hello there",
                                             "refusal": None}
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 2


async def test_invalid_openai_request_is_400(fake: FakeUpstreamClient,
                                             http: aiohttp.ClientSession) -> None:
    async with http.post(fake.base_url + "/v1/chat/completions",
                         json={"model": "m", "messages": []}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_models_and_embeddings(fake: FakeUpstreamClient,
                                     http: aiohttp.ClientSession) -> None:
    async with http.get(fake.base_url + "/v1/models") as resp:
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert "fake-model" in ids
    body = {"model": "fake-embedding", "input": ["a b", "c"]}
    async with http.post(fake.base_url + "/v1/embeddings", json=body) as resp:
        out = await resp.json()
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert len(out["data"][0]["embedding"]) == 8
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    async with http.post(fake.base_url + "/v1/embeddings",
                         json={**body, "encoding_format": "base64"}) as resp:
        b64 = (await resp.json())["data"][0]["embedding"]
    floats = struct.unpack("<8f", base64.b64decode(b64))
    assert floats == pytest.approx(out["data"][0]["embedding"], abs=1e-6)


async def test_queue_then_default_and_openai_error_shape(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(default={"text": "fine"},
                queue=[{"error_status": 429, "retry_after_s": 2}, {"error_status": 503}])
    url = fake.base_url + "/v1/chat/completions"
    async with http.post(url, json=chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["retry-after"] == "2"
        err = (await resp.json())["error"]
        assert err["code"] == "rate_limit_exceeded" and err["message"]
    async with http.post(url, json=chat_body(stream=True)) as resp:
        assert resp.status == 503
    async with http.post(url, json=chat_body()) as resp:
        assert (await resp.json())["choices"][0]["message"]["content"] == "fine"
    calls = fake.calls()
    assert (calls["calls"], calls["failed"], calls["completed"]) == (3, 2, 1)


async def test_script_rejects_unknown_fields(fake: FakeUpstreamClient,
                                             http: aiohttp.ClientSession) -> None:
    async with http.post(fake.base_url + "/_fake/script",
                         json={"default": {"txt": "x"}}) as resp:
        assert resp.status == 400
        assert "txt" in (await resp.json())["error"]


async def test_anthropic_requires_key_and_version(fake: FakeUpstreamClient,
                                                  http: aiohttp.ClientSession) -> None:
    url = fake.base_url + "/v1/messages"
    async with http.post(url, json=messages_body(),
                         headers={"anthropic-version": "2023-06-01"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["type"] == "authentication_error"
    async with http.post(url, json=messages_body(), headers={"x-api-key": "k"}) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    async with http.post(url, json={"model": "m", "messages": []},
                         headers=ANTHROPIC_HEADERS) as resp:
        assert resp.status == 400


async def test_anthropic_non_stream(fake: FakeUpstreamClient,
                                    http: aiohttp.ClientSession) -> None:
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(max_tokens=2),
                         headers=ANTHROPIC_HEADERS) as resp:
        msg = await resp.json()
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"] == [{"type": "text", "text": "Hello there"}]
    assert msg["stop_reason"] == "max_tokens"
    assert msg["usage"] == {"input_tokens": 5, "output_tokens": 2}


async def test_anthropic_stream_events(fake: FakeUpstreamClient,
                                       http: aiohttp.ClientSession) -> None:
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(stream=True),
                         headers=ANTHROPIC_HEADERS) as resp:
        events = await sse_events(resp)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == "Hello there world"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 5
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 3


async def test_anthropic_tool_use_stream(fake: FakeUpstreamClient,
                                         http: aiohttp.ClientSession) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = messages_body(stream=True, tools=tools,
                         messages=[{"role": "user", "content": "What is the weather?"}])
    async with http.post(fake.base_url + "/v1/messages", json=body,
                         headers=ANTHROPIC_HEADERS) as resp:
        events = await sse_events(resp)
    start = next(d for e, d in events if e == "content_block_start")
    assert start["content_block"] == {"type": "tool_use", "id": "toolu_fake1",
                                      "name": "get_weather", "input": {}}
    partial = "".join(d["delta"]["partial_json"] for e, d in events
                      if e == "content_block_delta")
    assert orjson.loads(partial) == {"city": "Paris"}
    assert next(d for e, d in events if e == "message_delta")["delta"]["stop_reason"] \
        == "tool_use"


async def test_disconnect_really_cuts_the_stream(fake: FakeUpstreamClient,
                                                 http: aiohttp.ClientSession) -> None:
    fake.script(queue=[{"disconnect_after_chunks": 1}, {"disconnect_after_chunks": 1}])
    async with http.post(fake.base_url + "/v1/chat/completions",
                         json=chat_body(stream=True)) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    async with http.post(fake.base_url + "/v1/chat/completions", json=chat_body()) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    calls = await fake.wait_for(lambda c: c["disconnected"] == 2)
    assert calls["disconnected"] == 2 and calls["active"] == 0


async def test_client_hangup_is_recorded_as_cancelled(fake: FakeUpstreamClient,
                                                      http: aiohttp.ClientSession) -> None:
    fake.script(default={"text": "w " * 500, "tokens_per_s": 50})
    resp = await http.post(fake.base_url + "/v1/chat/completions", json=chat_body(stream=True))
    await resp.content.readuntil(b"\n\n")
    resp.close()
    calls = await fake.wait_for(lambda c: c["cancelled"] == 1)
    assert (calls["cancelled"], calls["active"], calls["completed"]) == (1, 0, 0)


async def test_hang_never_answers_and_notices_the_hangup(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(queue=[{"hang": True}, {"hang": True}])
    for path, body, headers in (("/v1/chat/completions", chat_body(), {}),
                                ("/v1/messages", messages_body(stream=True),
                                 ANTHROPIC_HEADERS)):
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(fake.base_url + path, json=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=0.1)):
                pass
    calls = await fake.wait_for(lambda c: c["cancelled"] == 2)
    assert (calls["cancelled"], calls["active"]) == (2, 0)


async def test_official_sdks_parse_the_fake(fake: FakeUpstreamClient) -> None:
    """Wire fidelity: the vendors' own clients read both formats."""
    oai = AsyncOpenAI(base_url=fake.base_url + "/v1", api_key="k", max_retries=0)
    stream = await oai.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi there"}], stream=True,
        stream_options={"include_usage": True})
    parts = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == "hi there"
    assert parts[-1].usage is not None and parts[-1].usage.completion_tokens == 2
    emb = await oai.embeddings.create(model="fake-embedding", input="x y")
    assert len(emb.data[0].embedding) == 8
    await oai.close()

    ant = AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    async with ant.messages.stream(
            model="claude-fake", max_tokens=50,
            messages=[{"role": "user", "content": "weather please"}],
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as s:
        final = await s.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Paris"}
    await ant.close()


# -- chaos fields ---------------------------------------------------------------

CHAT = "/v1/chat/completions"


async def test_malformed_openai_stream_then_clean_end(fake: FakeUpstreamClient,
                                                      http: aiohttp.ClientSession) -> None:
    fake.script(default={"malformed_after_chunks": 1})
    async with http.post(fake.base_url + CHAT, json=chat_body(stream=True)) as resp:
        assert resp.status == 200
        data = await sse_data(resp)  # reads to the end: no ClientPayloadError, a clean end
    assert data[2:] == [b"{not json", b"[DONE]"]
    first = [orjson.loads(d)["choices"][0]["delta"] for d in data[:2]]
    assert first == [{"role": "assistant", "content": ""}, {"content": "Hello"}]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data[2])
    calls = await fake.wait_for(lambda c: c["malformed"] == 1)
    assert (calls["malformed"], calls["completed"], calls["active"]) == (1, 0, 0)


async def test_malformed_non_stream_is_a_200_with_broken_json(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(queue=[{"malformed_after_chunks": 99}, {"malformed_after_chunks": 0},
                       {"malformed_after_chunks": 0}])
    async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        body = await resp.read()
    assert body.startswith(b'{"id":"chatcmpl')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(),
                         headers=ANTHROPIC_HEADERS) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body.startswith(b'{"id":"msg_fake')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    async with http.post(fake.base_url + "/v1/embeddings",
                         json={"model": "fake-embedding", "input": "a b"}) as resp:
        assert resp.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())
    calls = fake.calls()
    assert (calls["calls"], calls["malformed"], calls["completed"]) == (3, 3, 0)


async def test_malformed_anthropic_stream(fake: FakeUpstreamClient,
                                          http: aiohttp.ClientSession) -> None:
    fake.script(default={"malformed_after_chunks": 2})
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(stream=True),
                         headers=ANTHROPIC_HEADERS) as resp:
        raw = (await resp.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b]
    assert [b.split("\n")[0] for b in blocks] == [
        "event: message_start", "event: content_block_start", "event: ping",
        "event: content_block_delta", "event: content_block_delta",
        "event: content_block_delta", "event: message_stop"]
    assert blocks[-2] == "event: content_block_delta\ndata: {not json"
    texts = [orjson.loads(b.split("data: ", 1)[1])["delta"]["text"] for b in blocks[3:5]]
    assert texts == ["Hello", " there"]
    assert fake.calls()["malformed"] == 1


async def test_official_sdks_choke_on_malformed(fake: FakeUpstreamClient) -> None:
    """What a real client sees: the vendors' SDKs fail to parse, mid-stream."""
    fake.script(default={"malformed_after_chunks": 1})
    oai = AsyncOpenAI(base_url=fake.base_url + "/v1", api_key="k", max_retries=0)
    stream = await oai.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi there"}], stream=True)
    seen: list[str] = []
    with pytest.raises(ValueError):  # json.JSONDecodeError
        async for c in stream:
            seen.append(c.choices[0].delta.content or "")
    assert seen == ["", "hi"]
    await oai.close()
    ant = AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    with pytest.raises(ValueError):
        async with ant.messages.stream(model="claude-fake", max_tokens=50, messages=[
                {"role": "user", "content": "hi there"}]) as s:
            await s.get_final_message()
    await ant.close()
    calls = await fake.wait_for(lambda c: c["malformed"] == 2)
    assert (calls["malformed"], calls["active"]) == (2, 0)


async def test_stall_stream_goes_silent_then_counts_cancelled(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(default={"stall_after_chunks": 1})
    resp = await http.post(fake.base_url + CHAT, json=chat_body(stream=True))
    assert resp.status == 200
    role = await resp.content.readuntil(b"\n\n")
    word = await resp.content.readuntil(b"\n\n")
    assert orjson.loads(role[6:])["choices"][0]["delta"]["role"] == "assistant"
    assert orjson.loads(word[6:])["choices"][0]["delta"]["content"] == "Hello"
    with pytest.raises(asyncio.TimeoutError):  # the connection is open but says nothing
        await asyncio.wait_for(resp.content.read(1), 0.2)
    assert not resp.content.at_eof()
    calls = fake.calls()
    assert (calls["active"], calls["cancelled"], calls["completed"]) == (1, 0, 0)
    resp.close()
    calls = await fake.wait_for(lambda c: c["cancelled"] == 1)
    assert (calls["cancelled"], calls["active"], calls["completed"]) == (1, 0, 0)


async def test_stall_non_stream_and_anthropic_never_answer(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(queue=[{"stall_after_chunks": 2}, {"stall_after_chunks": 0}])
    with pytest.raises(asyncio.TimeoutError):  # not even the headers arrive
        async with http.post(fake.base_url + CHAT, json=chat_body(),
                             timeout=aiohttp.ClientTimeout(total=0.15)):
            pass
    resp = await http.post(fake.base_url + "/v1/messages", json=messages_body(stream=True),
                           headers=ANTHROPIC_HEADERS)
    names = [(await resp.content.readuntil(b"\n\n")).split(b"\n")[0] for _ in range(3)]
    assert names == [b"event: message_start", b"event: content_block_start", b"event: ping"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.read(1), 0.15)
    resp.close()
    calls = await fake.wait_for(lambda c: c["cancelled"] == 2)
    assert (calls["cancelled"], calls["active"], calls["completed"]) == (2, 0, 0)


async def test_scripted_headers_on_success_stream_and_error(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    limits = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    fake.script(queue=[{"headers": limits}, {"headers": limits},
                       {"error_status": 429, "retry_after_s": 2,
                        "headers": {**limits, "Retry-After": "99"}},
                       {"error_status": 529, "headers": {
                           "anthropic-ratelimit-requests-remaining": "0"}}])
    async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:
        assert resp.status == 200
        assert {k: resp.headers[k] for k in limits} == limits
        assert (await resp.json())["object"] == "chat.completion"
    async with http.post(fake.base_url + CHAT, json=chat_body(stream=True)) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-ratelimit-reset-requests"] == "2s"
        assert (await sse_data(resp))[-1] == b"[DONE]"
    async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        assert resp.headers.getall("retry-after") == ["2"]  # retry_after_s wins
        assert resp.headers["retry-after-ms"] == "2000"
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(),
                         headers=ANTHROPIC_HEADERS) as resp:
        assert resp.status == 529
        assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert (await resp.json())["error"]["type"] == "overloaded_error"
    async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:  # default: none
        assert "x-ratelimit-remaining-requests" not in resp.headers
    calls = fake.calls()
    assert (calls["completed"], calls["failed"]) == (3, 2)


async def statuses(fake: FakeUpstreamClient, http: aiohttp.ClientSession, n: int) -> list[int]:
    out = []
    for _ in range(n):
        async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:
            await resp.read()
            out.append(resp.status)
    return out


async def test_error_probability_is_seeded(fake: FakeUpstreamClient,
                                           http: aiohttp.ClientSession) -> None:
    rng = random.Random(123)
    expected = [503 if rng.random() < 0.25 else 200 for _ in range(30)]
    assert 0 < expected.count(503) < 30
    assert fake.reseed(123)["seed"] == 123
    fake.script(default={"error_status": 503, "error_probability": 0.25})
    assert await statuses(fake, http, 30) == expected
    calls = fake.calls()
    assert (calls["failed"], calls["completed"]) == (expected.count(503), expected.count(200))
    assert calls["seed"] == 123
    fake.reseed(123)
    assert await statuses(fake, http, 30) == expected


async def test_script_rejects_bad_seed_and_conflicting_faults(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    for body, needle in (({"seed": "x"}, "seed"),
                         ({"default": {"stall_after_chunks": 1, "malformed_after_chunks": 1}},
                          "at most one of"),
                         ({"queue": [{"error_probability": 0.5}]}, "needs error_status")):
        async with http.post(fake.base_url + "/_fake/script", json=body) as resp:
            assert resp.status == 400
            assert needle in (await resp.json())["error"]
    assert fake.calls()["default"]["stall_after_chunks"] is None  # nothing applied


async def test_fill_max_tokens(fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(default={"fill_max_tokens": True})
    async with http.post(fake.base_url + CHAT, json=chat_body(max_tokens=5)) as resp:
        done = await resp.json()
    assert done["choices"][0]["message"]["content"] == "lorem ipsum dolor sit amet"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 5
    async with http.post(fake.base_url + CHAT, json=chat_body(
            stream=True, max_completion_tokens=12)) as resp:
        chunks = [orjson.loads(d) for d in (await sse_data(resp))[:-1]]
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(words) == 12 and words[8:10] == [" lorem", " ipsum"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    async with http.post(fake.base_url + CHAT, json=chat_body()) as resp:  # no limit: echo
        assert (await resp.json())["choices"][0]["message"]["content"] == "Hello there world"
    async with http.post(fake.base_url + "/v1/messages", json=messages_body(max_tokens=3),
                         headers=ANTHROPIC_HEADERS) as resp:
        msg = await resp.json()
    assert msg["content"] == [{"type": "text", "text": "lorem ipsum dolor"}]
    assert (msg["stop_reason"], msg["usage"]["output_tokens"]) == ("max_tokens", 3)
    assert fake.calls()["completed"] == 4


async def first_event_after(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                            headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    async with http.post(url, json=body, headers=headers) as resp:
        await resp.content.readuntil(b"\n\n")
        elapsed = time.perf_counter() - start
        await resp.read()
    return elapsed


async def test_prefill_makes_ttft_grow_with_the_prompt(
        fake: FakeUpstreamClient, http: aiohttp.ClientSession) -> None:
    fake.script(default={"prefill_tokens_per_s": 100})
    long = " ".join(["w"] * 18)  # + "Be nice." = 20 prompt words: 0.2 s
    t_long = await first_event_after(http, fake.base_url + CHAT, chat_body(
        stream=True, messages=[{"role": "system", "content": "Be nice."},
                               {"role": "user", "content": long}]))
    t_short = await first_event_after(http, fake.base_url + CHAT, chat_body(stream=True))
    t_anthropic = await first_event_after(
        http, fake.base_url + "/v1/messages",
        messages_body(stream=True, messages=[{"role": "user", "content": long}]),
        ANTHROPIC_HEADERS)
    assert 0.2 <= t_long < 0.6
    assert 0.05 <= t_short < t_long  # 5 words
    assert 0.2 <= t_anthropic < 0.6  # system (2) + 18 words
    assert fake.calls()["completed"] == 3


def test_blackhole_listener_times_out_and_closed_port_refuses() -> None:
    with blackhole_listener() as (host, port):
        assert host == "127.0.0.1"
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            socket.create_connection((host, port), timeout=0.3).close()
        assert time.perf_counter() - start >= 0.29  # it hung in SYN, was not refused
    start = time.perf_counter()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=0.3).close()
    assert time.perf_counter() - start < 0.1
    assert closed_port() == closed_port()


async def test_blackhole_listener_hangs_an_async_client() -> None:
    with blackhole_listener() as (host, port), pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.open_connection(host, port), 0.2)


def test_cli_fake_upstream_options(monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[str, Any] = {}

    def fake_run(host: str, port: int, default: FakeBehavior, seed: int | None = None) -> None:
        got.update(host=host, port=port, behavior=default, seed=seed)

    monkeypatch.setattr(fake_server, "run", fake_run)
    result = CliRunner().invoke(cli_main, [
        "fake-upstream", "--port", "9999", "--text", "hi", "--error-status", "429",
        "--error-probability", "0.1", "--seed", "5", "--fill-max-tokens",
        "--prefill-tokens-per-s", "250"])
    assert result.exit_code == 0, result.output
    assert (got["host"], got["port"], got["seed"]) == ("127.0.0.1", 9999, 5)
    assert got["behavior"] == FakeBehavior(text="hi", error_status=429, error_probability=0.1,
                                           fill_max_tokens=True, prefill_tokens_per_s=250)
    bad = CliRunner().invoke(cli_main, ["fake-upstream", "--error-probability", "0.5"])
    assert bad.exit_code == 2 and "needs error_status" in bad.output
    assert CliRunner().invoke(cli_main, ["fake-upstream", "--error-status", "200"]
                              ).exit_code == 2
