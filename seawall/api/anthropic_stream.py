"""The answer to a Messages request: the pipeline's OpenAI chunk stream turned
into Anthropic's stream events, or a whole Message.

The event sequence is Anthropic's: ``message_start``, then per content block
``content_block_start``, its deltas (``text_delta`` / ``input_json_delta``),
``content_block_stop``; then ``message_delta`` (stop reason, usage) and
``message_stop``. A failure after output began ends the stream with an
``error`` event and no ``message_stop``, as Anthropic does.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from seawall.api.anthropic_wire import error_body
from seawall.errors import SeawallError
from seawall.providers.base import Chunk, StreamItem

# OpenAI finish_reason -> Anthropic stop_reason (the inverse of the outbound
# provider's table, where several Anthropic reasons fold into "stop").
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(err: SeawallError) -> bytes:
    return b"event: error\ndata: " + error_body(err) + b"\n\n"


def tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def usage_of(usage: dict[str, Any] | None) -> dict[str, int]:
    u = usage or {}
    return {"input_tokens": int(u.get("prompt_tokens") or 0),
            "output_tokens": int(u.get("completion_tokens") or 0)}


def _tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` must be;
    arguments that are not a JSON object are kept, as a string, under ``_raw``."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def message(completion: dict[str, Any], message_id: str, model: str,
            usage: dict[str, Any] | None) -> dict[str, Any]:
    """A gathered ``chat.completion`` as an Anthropic Message."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content") or msg.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        content.append({"type": "tool_use", "id": tc.get("id") or tool_use_id(),
                        "name": fn.get("name") or "",
                        "input": _tool_input(fn.get("arguments") or "")})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(choice.get("finish_reason")),
            "stop_sequence": None, "usage": usage_of(usage)}


class EventTranslator:
    """OpenAI chunks in, Anthropic event bytes out; one per streamed answer
    (no I/O, so the mapping is testable on its own)."""

    __slots__ = ("id", "model", "index", "block", "finish_reason", "usage")

    def __init__(self, message_id: str, model: str) -> None:
        self.id = message_id
        self.model = model
        self.index = -1  # of the open content block
        self.block: str | int | None = None  # "text", a tool call's index, or None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def start(self, input_tokens: int) -> bytes:
        return event("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})

    def _close(self, out: list[bytes]) -> None:
        if self.block is not None:
            out.append(event("content_block_stop",
                             {"type": "content_block_stop", "index": self.index}))
            self.block = None

    def _open(self, out: list[bytes], kind: str | int, block: dict[str, Any]) -> None:
        self._close(out)
        self.index += 1
        self.block = kind
        out.append(event("content_block_start", {"type": "content_block_start",
                                                 "index": self.index, "content_block": block}))

    def _delta(self, out: list[bytes], delta: dict[str, Any]) -> None:
        out.append(event("content_block_delta", {"type": "content_block_delta",
                                                 "index": self.index, "delta": delta}))

    def feed(self, item: StreamItem) -> bytes:
        out: list[bytes] = []
        chunks: list[Chunk] = item if isinstance(item, list) else [item]
        for chunk in chunks:
            if chunk.get("usage"):
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                d = choice.get("delta") or {}
                text = d.get("content") or d.get("refusal")
                if text:
                    if self.block != "text":
                        self._open(out, "text", {"type": "text", "text": ""})
                    self._delta(out, {"type": "text_delta", "text": text})
                for tc in d.get("tool_calls") or ():
                    slot = int(tc.get("index", 0))
                    fn = tc.get("function") or {}
                    if self.block != slot:
                        self._open(out, slot, {"type": "tool_use", "id": tc.get("id")
                                               or tool_use_id(), "name": fn.get("name") or "",
                                               "input": {}})
                    if fn.get("arguments"):
                        self._delta(out, {"type": "input_json_delta",
                                          "partial_json": fn["arguments"]})
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def finish(self, usage: dict[str, Any] | None = None) -> bytes:
        """Close the open block; the stop reason and usage; ``message_stop``."""
        out: list[bytes] = []
        self._close(out)
        out.append(event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish_reason), "stop_sequence": None},
            "usage": usage_of(usage or self.usage)}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)
