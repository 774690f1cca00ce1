"""The fake upstream over a real socket: both wire formats, scripting, real failures."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from anthropic import AsyncAnthropic  # imported here: 1 s, paid once at collection
from openai import AsyncOpenAI

from tests.servers import FakeUpstreamClient

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
