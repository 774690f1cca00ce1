"""Streamed events are forwarded as the upstream sent them (a RawBatch keeps
their bytes), except where a chunk must change or go."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from seawall.api.openai_routes import _encode
from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import OpenAIProviderSettings
from seawall.providers.base import ChatCall, RawBatch, StreamItem
from seawall.providers.openai import OpenAIProvider

# As some upstreams write them: spaces after separators, escaped non-ASCII.
ROLE = b'{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", ' \
       b'"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}'
TEXT = b'{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", ' \
       b'"choices": [{"index": 0, "delta": {"content": "caf\\u00e9"}, "finish_reason": "stop"}]}'
USAGE = b'{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", ' \
        b'"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'


async def _stream_from(events: list[bytes]) -> list[StreamItem]:
    body = b"".join(b"data: " + e + b"\r\n\r\n" for e in events) + b"data: [DONE]\n\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = OpenAIProvider("up", OpenAIProviderSettings(
        type="openai", base_url=f"http://127.0.0.1:{port}/v1"))
    await provider.start()
    raw: dict[str, Any] = {"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": "x"}]}
    call = ChatCall(request=convert(raw, ChatCompletionRequest), raw=raw, model="m", stream=True)
    try:
        return [item async for item in provider.chat(call)]
    finally:
        await provider.close()
        server.close()
        await server.wait_closed()


async def test_events_go_out_byte_for_byte_as_the_upstream_sent_them() -> None:
    items = await _stream_from([ROLE, TEXT])
    assert len(items) == 1 and type(items[0]) is RawBatch  # one read: one batch
    batch = items[0]
    assert [c["choices"][0]["delta"] for c in batch] == [
        {"role": "assistant", "content": ""}, {"content": "café"}]
    sent = _encode(batch, want_usage=False)
    assert sent == b"data: " + ROLE + b"\n\n" + b"data: " + TEXT + b"\n\n"
    # A copy (what a stage that changes a chunk makes) is encoded afresh.
    assert _encode(list(batch), want_usage=False) == b"".join(
        b"data: " + orjson.dumps(c) + b"\n\n" for c in batch)


async def test_a_usage_chunk_the_client_did_not_ask_for_is_still_dropped() -> None:
    batch = (await _stream_from([TEXT, USAGE]))[0]
    assert type(batch) is RawBatch and len(batch) == 2
    assert _encode(batch, want_usage=True) == b"data: " + TEXT + b"\n\ndata: " + USAGE + b"\n\n"
    assert _encode(batch, want_usage=False) == b"data: " + orjson.dumps(batch[0]) + b"\n\n"
