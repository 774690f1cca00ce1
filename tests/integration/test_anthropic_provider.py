"""AnthropicProvider against a real HTTP server speaking the Messages API."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import AnthropicProviderSettings
from seawall.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from seawall.providers.anthropic import (
    JSON_ONLY_INSTRUCTION,
    AnthropicProvider,
    SSEDecoder,
    StreamTranslator,
    to_anthropic,
)
from seawall.providers.base import ChatCall, Chunk, Gatherer
from tests.servers import FakeUpstreamClient, run_asgi_in_thread

WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def fake(upstream: FakeUpstreamClient) -> FakeUpstreamClient:
    upstream.reset()
    return upstream


async def started(base_url: str, **settings: Any) -> AnthropicProvider:
    s = {"api_key": "sk-test", "headers": {"x-team": "seawall"}, **settings}
    p = AnthropicProvider("claude", AnthropicProviderSettings(type="anthropic",
                                                              base_url=base_url, **s))
    await p.start()
    return p


@pytest.fixture
async def provider(fake: FakeUpstreamClient) -> AsyncIterator[AnthropicProvider]:
    p = await started(fake.base_url)
    yield p
    await p.close()


def make_call(messages: list[dict[str, Any]] | None = None, **extra: Any) -> ChatCall:
    raw = {"model": "claude", "messages": messages or [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there world"}], **extra}
    return ChatCall(request=convert(raw, ChatCompletionRequest), raw=raw,
                    model="claude-up-1", stream=True)


async def collect(p: AnthropicProvider, call: ChatCall) -> list[Chunk]:
    return [c async for c in p.chat(call)]


def gather(chunks: list[Chunk]) -> dict[str, Any]:
    g = Gatherer()
    for c in chunks:
        g.add(c)
    return g.completion()


# -- request translation --------------------------------------------------------


async def test_translation_reaches_upstream(fake: FakeUpstreamClient,
                                            provider: AnthropicProvider) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "What's the weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text",
                                                                "text": "21C clear"}]},
        {"role": "user", "content": "Thanks, summarise."},
    ]
    call = make_call(messages, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=50,
                     stop=["END"], temperature=1.5, top_p=0.9, user="u-42")
    done = gather(await collect(provider, call))
    # the last user turn has text, so the fake echoes it (no "weather" there)
    assert done["choices"][0]["message"]["content"] == "Thanks, summarise."

    calls = fake.calls()
    body, headers = calls["requests"][0], calls["headers"][0]
    assert headers["x-api-key"] == "sk-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-team"] == "seawall"
    assert body["model"] == "claude-up-1" and body["stream"] is True
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 1.0 and body["top_p"] == 0.9
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What's the weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "21C clear"},
            {"type": "text", "text": "Thanks, summarise."}]},
    ]


def translate(**extra: Any) -> dict[str, Any]:
    call = make_call(**extra)
    return to_anthropic(call.request, "m", 4096, call.raw)


def test_tool_choice_and_options_mapping() -> None:
    assert translate()["max_tokens"] == 4096
    assert "tools" not in translate(tool_choice="auto")  # no tools: nothing to choose
    for choice, expected in [("auto", {"type": "auto"}), ("none", {"type": "none"}),
                             ({"type": "function", "function": {"name": "get_weather"}},
                              {"type": "tool", "name": "get_weather"})]:
        assert translate(tools=[WEATHER_TOOL], tool_choice=choice)["tool_choice"] == expected
    assert translate(tools=[WEATHER_TOOL], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}
    with pytest.raises(InvalidRequest):
        translate(tools=[WEATHER_TOOL], tool_choice="sometimes")


def test_response_format_becomes_a_system_instruction() -> None:
    body = translate(response_format={"type": "json_object"})
    assert body["system"] == "Be brief.\n\n" + JSON_ONLY_INSTRUCTION
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = translate(response_format={"type": "json_schema",
                                      "json_schema": {"name": "x", "schema": schema}})
    assert body["system"].endswith(orjson.dumps(schema).decode())
    assert "system" in translate(response_format={"type": "text"})


def test_images_and_bad_inputs() -> None:
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]
    blocks = translate(messages=msgs)["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64",
                                                      "media_type": "image/png",
                                                      "data": "iVBORw0KGgo="}}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    bad_args = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]
    with pytest.raises(InvalidRequest) as e:
        translate(messages=bad_args)
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(InvalidRequest):
        translate(messages=[{"role": "tool", "content": "x"}])


# -- response translation -----------------------------------------------------


async def test_streaming_text_chunks_and_usage(provider: AnthropicProvider) -> None:
    chunks = await collect(provider, make_call())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert text == ["Hello", " there", " world"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3,
                                   "total_tokens": 8}
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"claude-up-1"}


async def test_gathered_completion_and_length(provider: AnthropicProvider) -> None:
    done = gather(await collect(provider, make_call(max_tokens=2)))
    assert done["object"] == "chat.completion"
    assert done["choices"][0]["message"]["content"] == "Hello there"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 2


async def test_stop_sequence_finishes_with_stop(fake: FakeUpstreamClient,
                                                provider: AnthropicProvider) -> None:
    done = gather(await collect(provider, make_call(stop=[" world"])))
    assert done["choices"][0]["message"]["content"] == "Hello there"
    assert done["choices"][0]["finish_reason"] == "stop"


async def test_tool_use_streams_as_tool_calls(provider: AnthropicProvider) -> None:
    call = make_call([{"role": "user", "content": "What's the weather?"}],
                     tools=[WEATHER_TOOL])
    chunks = await collect(provider, call)
    first_tool = next(c for c in chunks if c["choices"] and
                      c["choices"][0]["delta"].get("tool_calls"))
    assert first_tool["choices"][0]["delta"]["tool_calls"] == [{
        "index": 0, "id": "toolu_fake1", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}}]
    done = gather(chunks)
    message = done["choices"][0]["message"]
    assert done["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    assert len(message["tool_calls"]) == 1
    tc = message["tool_calls"][0]
    assert (tc["id"], tc["function"]["name"]) == ("toolu_fake1", "get_weather")
    assert orjson.loads(tc["function"]["arguments"]) == {"city": "Paris"}


def test_translator_cache_tokens_and_mixed_blocks() -> None:
    t = StreamTranslator("m")
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"usage": {
            "input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta",
                                                              "text": "Checking."}},
        {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "t1", "name": "a", "input": {}}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "t2", "name": "b", "input": {}}},
        {"type": "content_block_delta", "index": 3,
         "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in t.feed(e)] + t.finish()
    done = gather(chunks)
    msg = done["choices"][0]["message"]
    assert msg["content"] == "Checking."
    assert [(c["id"], c["function"]["arguments"]) for c in msg["tool_calls"]] == [
        ("t1", "{}"), ("t2", '{"x": 1}')]
    assert done["usage"] == {"prompt_tokens": 115, "completion_tokens": 42,
                             "total_tokens": 157}


def test_sse_decoder_handles_split_and_crlf() -> None:
    d = SSEDecoder()
    assert d.feed(b"event: ping\r\ndata: {\"type\"") == []
    assert d.feed(b": \"ping\"}\r\n\r\n: comment\n\nda") == [("ping", b'{"type": "ping"}')]
    assert d.feed(b"ta: 1\ndata: 2\n\n") == [("message", b"1\n2")]


# -- errors ---------------------------------------------------------------------


async def test_429_with_retry_after(fake: FakeUpstreamClient,
                                    provider: AnthropicProvider) -> None:
    fake.script(queue=[{"error_status": 429, "retry_after_s": 7}])
    with pytest.raises(RateLimited) as e:
        await collect(provider, make_call())
    assert e.value.retry_after == 7
    assert "rate limiting" in e.value.message


async def test_5xx_and_529_are_upstream_errors(fake: FakeUpstreamClient,
                                               provider: AnthropicProvider) -> None:
    fake.script(queue=[{"error_status": 500}, {"error_status": 529, "retry_after_s": 1}])
    with pytest.raises(UpstreamError) as e:
        await collect(provider, make_call())
    assert (e.value.status, e.value.upstream_status) == (502, 500)
    with pytest.raises(UpstreamError) as e:
        await collect(provider, make_call())
    assert (e.value.upstream_status, e.value.retry_after) == (529, 1)
    assert "overloaded" in e.value.message


async def test_400_is_invalid_request_with_upstream_message(
        fake: FakeUpstreamClient, provider: AnthropicProvider) -> None:
    # a scripted 400 stands in for any request Anthropic refuses
    fake.script(queue=[{"error_status": 400}])
    with pytest.raises(InvalidRequest) as e:
        await collect(provider, make_call())
    assert e.value.status == 400
    assert "scripted fake failure" in e.value.message


async def test_missing_api_key_is_an_auth_error(fake: FakeUpstreamClient) -> None:
    p = await started(fake.base_url, api_key=None)
    try:
        with pytest.raises(UpstreamError) as e:
            await collect(p, make_call())
    finally:
        await p.close()
    assert e.value.code == "upstream_auth_failed" and e.value.status == 502
    assert e.value.upstream_status == 401
    assert "providers.claude.api_key" in e.value.message
    assert "x-api-key" not in fake.calls()["headers"][0]


async def test_mid_stream_disconnect(fake: FakeUpstreamClient,
                                     provider: AnthropicProvider) -> None:
    fake.script(queue=[{"disconnect_after_chunks": 1}])
    got: list[Chunk] = []
    with pytest.raises(UpstreamError) as e:
        async for c in provider.chat(make_call()):
            got.append(c)
    assert e.value.code == "upstream_disconnected"
    assert [c["choices"][0]["delta"].get("content") for c in got] == ["", "Hello"]


async def test_early_aclose_cancels_upstream(fake: FakeUpstreamClient,
                                             provider: AnthropicProvider) -> None:
    fake.script(default={"text": "word " * 500, "tokens_per_s": 50})
    gen = provider.chat(make_call())
    await gen.__anext__()  # role
    await gen.__anext__()  # first word
    await gen.aclose()
    calls = await fake.wait_for(lambda c: c["cancelled"] == 1)
    assert (calls["cancelled"], calls["active"], calls["completed"]) == (1, 0, 0)


async def test_unreachable(fake: FakeUpstreamClient) -> None:
    # (Hangs are the router's timeouts now: tests/chaos covers them end to end.)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = await started(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(UpstreamError) as e:
            await collect(p, make_call())
    finally:
        await p.close()
    assert e.value.code == "upstream_unreachable"


async def test_connection_is_reused(fake: FakeUpstreamClient,
                                    provider: AnthropicProvider) -> None:
    for _ in range(3):
        await collect(provider, make_call())
    peers = fake.calls()["peers"]
    assert len(peers) == 3 and len(set(peers)) == 1


async def test_not_started_is_service_unavailable(fake: FakeUpstreamClient) -> None:
    p = AnthropicProvider("claude", AnthropicProviderSettings(type="anthropic",
                                                              base_url=fake.base_url))
    assert not p.status().ready
    with pytest.raises(ServiceUnavailable, match="not started"):
        await collect(p, make_call())


# -- upstream misbehaviour the fake does not script ---------------------------


def _raw_sse_app(body: bytes) -> Starlette:
    async def messages(request: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield body

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


START = (b'event: message_start\ndata: {"type": "message_start", "message": '
         b'{"usage": {"input_tokens": 3, "output_tokens": 1}}}\n\n')


@pytest.mark.parametrize(("tail", "code"), [
    (b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
     b'"message": "Overloaded"}}\n\n', "upstream_stream_error"),
    (b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n',
     "upstream_bad_response"),
    (b"", "upstream_disconnected"),  # clean end of body without message_stop
])
async def test_stream_errors(tail: bytes, code: str) -> None:
    with run_asgi_in_thread(_raw_sse_app(START + tail)) as url:
        p = await started(url)
        try:
            with pytest.raises(UpstreamError) as e:
                await collect(p, make_call())
        finally:
            await p.close()
    assert e.value.code == code
    if code == "upstream_stream_error":
        assert "overloaded_error: Overloaded" in e.value.message
