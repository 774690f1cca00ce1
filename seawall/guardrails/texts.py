"""Where the text of a request is: message contents, text parts, tool-call
arguments, embedding inputs; read to scan them, written to mask them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (container, key): ``container[key]`` is a string of the request.
Slot = tuple[Any, Any]


def message_slots(messages: list[Any]) -> list[Slot]:
    slots: list[Slot] = []
    for m in messages:
        if type(m) is not dict:
            continue
        content = m.get("content")
        if type(content) is str:
            slots.append((m, "content"))
        elif type(content) is list:
            for part in content:
                if type(part) is dict and type(part.get("text")) is str:
                    slots.append((part, "text"))
        for call in m.get("tool_calls") or ():
            fn = call.get("function") if type(call) is dict else None
            if type(fn) is dict and type(fn.get("arguments")) is str:
                slots.append((fn, "arguments"))
    return slots


def embedding_slots(raw: dict[str, Any]) -> list[Slot]:
    value = raw.get("input")
    if type(value) is str:
        return [(raw, "input")]
    if type(value) is list:
        return [(value, i) for i, v in enumerate(value) if type(v) is str]
    return []


def strings_in(value: Any, out: list[Slot]) -> list[Slot]:
    """Every string value in decoded JSON (depth-checked input), as slots."""
    if type(value) is dict:
        for k, v in value.items():
            if type(v) is str:
                out.append((value, k))
            elif type(v) in (dict, list):
                strings_in(v, out)
    elif type(value) is list:
        for i, v in enumerate(value):
            if type(v) is str:
                out.append((value, i))
            elif type(v) in (dict, list):
                strings_in(v, out)
    return out


def rewrite(slots: list[Slot], new: Callable[[int, str], str]) -> None:
    for i, (box, key) in enumerate(slots):
        box[key] = new(i, box[key])
