"""The Messages API translation, both ways, without a server (the integration
suite, tests/integration/test_messages_inbound.py, drives it with the SDK)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from seawall.api.anthropic_stream import EventTranslator, message
from seawall.api.anthropic_wire import MessagesRequest, chat_request, error_status, error_type
from seawall.api.wire import convert
from seawall.errors import AuthenticationFailed, InvalidRequest, ServiceUnavailable
from seawall.pipeline.admission import Overloaded
from seawall.providers.base import Gatherer, make_chunk, usage_chunk


def translate(**body: Any) -> dict[str, Any]:
    raw = {"model": "m", "max_tokens": 10, **body}
    return chat_request(convert(raw, MessagesRequest), raw)


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.decode().strip().split("\n\n"):
        name, payload = block.split("\n")
        out.append((name[len("event: "):], orjson.loads(payload[len("data: "):])))
    return out


def test_tool_results_come_first_and_errors_are_marked() -> None:
    body = translate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "and now?"},
        {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}]}])
    assert body["messages"] == [{"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
                                {"role": "user", "content": "and now?"}]


def test_url_images_and_refusals() -> None:
    body = translate(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "text", "text": "what?"}]}])
    assert body["messages"][0]["content"][0] == {"type": "image_url",
                                                 "image_url": {"url": "https://x/y.png"}}
    for bad in ([{"role": "user", "content": [{"type": "document", "source": {}}]}],
                [{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]):
        with pytest.raises(InvalidRequest):
            translate(messages=bad)
    with pytest.raises(InvalidRequest):  # tool_choice any without tools
        translate(messages=[{"role": "user", "content": "x"}], tool_choice={"type": "any"})


def test_images_a_tool_returned_follow_its_tool_message() -> None:
    body = translate(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "screenshot:"},
            {"type": "image", "source": {"type": "url", "url": "https://x/s.png"}}]},
        {"type": "text", "text": "what is on it?"}]}])
    assert body["messages"] == [
        {"role": "tool", "tool_call_id": "t1",
         "content": "screenshot:\n[1 image(s): in the next user message]"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/s.png"}},
            {"type": "text", "text": "what is on it?"}]}]


def test_event_translator_text_then_tools() -> None:
    t = EventTranslator("msg_1", "m")
    data = t.start(7)
    data += t.feed([make_chunk("c", "m", 0, {"role": "assistant", "content": ""}),
                    make_chunk("c", "m", 0, {"content": "Let me check."})])
    data += t.feed(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"x"'}}]}))
    data += t.feed(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 0, "function": {"arguments": ": 1}"}}]}))
    data += t.feed(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}))
    data += t.feed(make_chunk("c", "m", 0, finish_reason="tool_calls"))
    data += t.feed(usage_chunk("c", "m", 0, 7, 12))
    data += t.finish()
    seq = events(data)
    assert [n for n, _ in seq] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert seq[0][1]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert seq[4][1] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "call_a", "name": "f", "input": {}}}
    assert seq[8][1]["index"] == 2
    assert seq[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert seq[-2][1]["usage"] == {"input_tokens": 7, "output_tokens": 12}


def test_whole_message_from_a_gathered_completion() -> None:
    g = Gatherer()
    g.add(make_chunk("c", "m", 0, {"content": "hi"}))
    g.add(make_chunk("c", "m", 0, {"tool_calls": [
        {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "not json"}}]}))
    g.add(make_chunk("c", "m", 0, finish_reason="length"))
    msg = message(g.completion(), "msg_1", "m", {"prompt_tokens": 3, "completion_tokens": 4})
    assert msg["content"] == [{"type": "text", "text": "hi"},
                              {"type": "tool_use", "id": "call_a", "name": "f",
                               "input": {"_raw": "not json"}}]
    assert msg["stop_reason"] == "max_tokens"
    assert msg["usage"] == {"input_tokens": 3, "output_tokens": 4}


def test_error_mapping() -> None:
    assert (error_status(Overloaded("busy")), error_type(Overloaded("busy"))) == \
        (529, "overloaded_error")
    assert error_type(AuthenticationFailed("no")) == "authentication_error"
    assert error_type(ServiceUnavailable("down")) == "overloaded_error"
    assert error_type(InvalidRequest("bad", status=422)) == "invalid_request_error"
