"""A pooled keep-alive connection the upstream closed while idle is not an
upstream failure: the request is resent once on a fresh connection."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import OpenAIProviderSettings
from seawall.providers.base import ChatCall
from seawall.providers.openai import OpenAIProvider

ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop", "message": {
                           "role": "assistant", "content": "hi"}}]})


class OneShotConnections:
    """An HTTP server that answers the first request on each connection and
    closes the connection, unanswered, when a second one arrives on it: what
    a client sees when it reuses a connection the server just dropped."""

    def __init__(self) -> None:
        self.requests = 0
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                self.requests += 1
                if served:
                    self.dropped += 1
                    return
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _call() -> ChatCall:
    raw: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    return ChatCall(request=convert(raw, ChatCompletionRequest), raw=raw, model="m",
                    stream=False)


async def test_a_stale_pooled_connection_is_retried_once_transparently() -> None:
    upstream = OneShotConnections()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = OpenAIProvider("up", OpenAIProviderSettings(
        type="openai", base_url=f"http://127.0.0.1:{port}/v1", keepalive_s=30))
    await provider.start()
    try:
        for _ in range(3):
            chunks = [c async for c in provider.chat(_call())]
            assert chunks[0]["choices"][0]["delta"]["content"] == "hi"
    finally:
        await provider.close()
        server.close()
        await server.wait_closed()
    # Requests 2 and 3 each met the dropped connection first, then a fresh one.
    assert (upstream.requests, upstream.dropped) == (5, 2)
