"""The trimming policy of a rebuilt conversation (seawall/responses/conversation.py)."""

from __future__ import annotations

import time
from typing import Any

from seawall.responses.conversation import build
from seawall.responses.store_api import StoredResponse


def _count(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 1 for m in messages)


def _turn(i: int, inputs: list[dict[str, Any]] | None = None,
          output: list[dict[str, Any]] | None = None) -> StoredResponse:
    return StoredResponse(
        id=f"resp_{i}", tenant="t", model="m", status="completed", created_at=time.time(),
        input_items=inputs if inputs is not None else [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": f"q{i} " * 4}]}],
        output=output if output is not None else [
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": f"a{i} " * 4}]}])


NEW = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "now"}]}]


def test_everything_fits() -> None:
    conv = build("rules", [_turn(1), _turn(2)], NEW, 10_000, _count)
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "user",
                                                  "assistant", "user"]
    assert conv.turns_kept == 2 and conv.turns_dropped == 0 and conv.history_tokens == 20


def test_oldest_turns_go_first_instructions_and_new_input_stay() -> None:
    # Each turn costs 10 here, the new input 2: a budget of 25 keeps two turns.
    conv = build("rules", [_turn(1), _turn(2), _turn(3)], NEW, 25, _count)
    texts = [str(m["content"]).split()[0] for m in conv.messages]
    assert texts == ["rules", "q2", "a2", "q3", "a3", "now"]
    assert conv.turns_dropped == 1
    # Not even the newest fits: instructions and the new input alone.
    conv = build("rules", [_turn(1)], NEW, 5, _count)
    assert [m["content"] for m in conv.messages] == ["rules", "now"]


def test_a_turn_that_does_not_fit_ends_the_history_even_if_older_ones_would() -> None:
    big = _turn(2, output=[{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "x " * 100}]}])
    conv = build(None, [_turn(1), big, _turn(3)], NEW, 30, _count)
    assert [str(m["content"]).split()[0] for m in conv.messages] == ["q3", "a3", "now"]


def test_history_never_starts_with_an_orphan_tool_result() -> None:
    call = _turn(1, output=[{"type": "function_call", "call_id": "c1", "name": "f",
                             "arguments": "{}"}])
    result = _turn(2, inputs=[{"type": "function_call_output", "call_id": "c1",
                               "output": "r " * 3}])
    # Budget for turn 2 only: its tool result would lose its call, so it goes too.
    conv = build(None, [call, result], NEW, 12, _count)
    assert conv.messages[-1]["content"] == "now" and conv.turns_kept == 1
    assert all(m["role"] != "tool" for m in conv.messages)
    # Both fit: the call and its result, paired.
    conv = build(None, [call, result], NEW, 1000, _count)
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "tool", "assistant",
                                                  "user"]
    assert conv.messages[1]["tool_calls"][0]["id"] == "c1"
