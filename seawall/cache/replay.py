"""A cached ``chat.completion`` replayed as the chunk stream a provider would
send: role and content, tool calls with their indexes, the finish reason,
then usage. Streaming and plain requests both read it (the pipeline gathers
chunks for plain ones), so a hit looks like any other answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from seawall.providers.base import Chunk, StreamItem, completion_id


def replay_chunks(completion: dict[str, Any]) -> list[Chunk]:
    """The chunks of ``completion`` under a fresh id (each response has its own)."""
    cid, created = completion_id(), int(time.time())
    model = completion.get("model", "")
    head: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": model}
    if completion.get("system_fingerprint"):
        head["system_fingerprint"] = completion["system_fingerprint"]
    chunks: list[Chunk] = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **tc}
                                   for i, tc in enumerate(message["tool_calls"])]
        chunks.append({**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                            "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                            "finish_reason": choice.get("finish_reason")
                                            or "stop"}]})
    if completion.get("usage"):
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


async def replay(completion: dict[str, Any]) -> AsyncIterator[StreamItem]:
    """One batch: the client gets the whole answer in one write."""
    yield replay_chunks(completion)
