"""The answer as a Responses API object, and as its stream of events.

The pipeline answers in OpenAI chat chunks; :class:`EventTranslator` turns
them into the Responses event sequence (``response.created``,
``response.in_progress``, then per output item ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` ...,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done`` -- or ``response.function_call_arguments.delta``
/ ``.done`` for a tool call -- and ``response.completed``), each with its
``sequence_number``. A failure after the stream began ends it with
``response.failed``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from seawall.errors import SeawallError
from seawall.providers.base import Chunk, StreamItem
from seawall.responses.wire import ResponsesRequest, new_id

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    u = usage or {}
    inp, out = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {"input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content if status == "completed" else []}


def call_item(item_id: str, call_id: str, name: str, arguments: str,
              status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """A gathered ``chat.completion``'s first choice as output items."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    out = []
    text = msg.get("content") or msg.get("refusal")
    if text:
        out.append(message_item(new_id("msg"), text))
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        out.append(call_item(new_id("fc"), tc.get("id") or new_id("call"),
                             fn.get("name") or "", fn.get("arguments") or ""))
    return out


def finish_reason(completion: dict[str, Any]) -> str | None:
    return ((completion.get("choices") or [{}])[0]).get("finish_reason")


def response_object(response_id: str, req: ResponsesRequest, created_at: float, *,
                    status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, finish: str | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``response`` object, as OpenAI's SDK parses it."""
    if status == "completed" and finish in INCOMPLETE:
        status = "incomplete"
    return {
        "id": response_id, "object": "response", "created_at": int(created_at),
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "status": status, "background": req.background, "error": error,
        "incomplete_details": ({"reason": INCOMPLETE[finish or ""]}
                               if status == "incomplete" else None),
        "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
        "model": req.model, "output": output,
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None
        else True,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None}, "store": req.store,
        "temperature": req.temperature, "text": req.text or {"format": {"type": "text"}},
        "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
        "top_p": req.top_p, "truncation": req.truncation or "disabled",
        "usage": usage, "user": req.user, "metadata": req.metadata or {},
    }


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class EventTranslator:
    """Chat chunks in, Responses event bytes out; one per streamed answer (no
    I/O, so the mapping is testable on its own)."""

    def __init__(self, response_id: str, req: ResponsesRequest, created_at: float) -> None:
        self.id = response_id
        self.req = req
        self.created_at = created_at
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.open_key: str | int | None = None  # "text" or a tool call's index
        self.finish: str | None = None

    def _event(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(sse({"type": kind, "sequence_number": self.seq, **fields}))
        self.seq += 1

    def snapshot(self, status: str, usage: dict[str, Any] | None = None,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.id, self.req, self.created_at, status=status,
                               output=list(self.output), usage=usage, finish=self.finish,
                               error=error)

    def start(self) -> bytes:
        out: list[bytes] = []
        self._event(out, "response.created", response=self.snapshot("in_progress"))
        self._event(out, "response.in_progress", response=self.snapshot("in_progress"))
        return b"".join(out)

    @property
    def index(self) -> int:
        return len(self.output)

    def _close(self, out: list[bytes]) -> None:
        item, self.open, self.open_key = self.open, None, None
        if item is None:
            return
        i = self.index
        if item["type"] == "message":
            text = item.pop("_text")
            done = message_item(item["id"], text)
            part = done["content"][0]
            self._event(out, "response.output_text.done", item_id=item["id"], output_index=i,
                        content_index=0, text=text, logprobs=[])
            self._event(out, "response.content_part.done", item_id=item["id"], output_index=i,
                        content_index=0, part=part)
        else:
            done = call_item(item["id"], item["call_id"], item["name"], item["arguments"])
            self._event(out, "response.function_call_arguments.done", item_id=item["id"],
                        output_index=i, name=item["name"], arguments=item["arguments"])
        self._event(out, "response.output_item.done", output_index=i, item=done)
        self.output.append(done)

    def _text(self, out: list[bytes], text: str) -> None:
        if self.open_key != "text":
            self._close(out)
            item = message_item(new_id("msg"), "", status="in_progress")
            self._event(out, "response.output_item.added", output_index=self.index, item=item)
            self._event(out, "response.content_part.added", item_id=item["id"],
                        output_index=self.index, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [],
                              "logprobs": []})
            self.open, self.open_key = {**item, "_text": ""}, "text"
        assert self.open is not None
        self.open["_text"] += text
        self._event(out, "response.output_text.delta", item_id=self.open["id"],
                    output_index=self.index, content_index=0, delta=text, logprobs=[])

    def _call(self, out: list[bytes], tc: dict[str, Any]) -> None:
        slot = int(tc.get("index", 0))
        fn = tc.get("function") or {}
        if self.open_key != slot:
            self._close(out)
            item = call_item(new_id("fc"), tc.get("id") or new_id("call"),
                             fn.get("name") or "", "", status="in_progress")
            self._event(out, "response.output_item.added", output_index=self.index,
                        item=dict(item))
            self.open, self.open_key = item, slot
        assert self.open is not None
        if args := fn.get("arguments"):
            self.open["arguments"] += args
            self._event(out, "response.function_call_arguments.delta", item_id=self.open["id"],
                        output_index=self.index, delta=args)

    def feed(self, item: StreamItem) -> bytes:
        out: list[bytes] = []
        chunks: list[Chunk] = item if isinstance(item, list) else [item]
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                d = choice.get("delta") or {}
                if text := d.get("content") or d.get("refusal"):
                    self._text(out, text)
                for tc in d.get("tool_calls") or ():
                    self._call(out, tc)
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
        return b"".join(out)

    def finish_events(self, usage: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """Close the open item; ``response.completed`` (or ``.incomplete``);
        the final response object too."""
        out: list[bytes] = []
        self._close(out)
        final = self.snapshot("completed", usage)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        self._event(out, kind, response=final)
        return b"".join(out), final

    def failed(self, err: SeawallError) -> bytes:
        out: list[bytes] = []
        self._event(out, "response.failed", response=self.snapshot(
            "failed", error={"code": err.code, "message": err.message}))
        return b"".join(out)
