"""Nesting limits for client JSON: one check for every JSON entry point.

Deeply nested JSON is cheap to send and expensive to hold: msgspec raises
``RecursionError`` (not ``DecodeError``) past ~1,000 levels, and orjson, which
serialises requests upstream and trace records to the store, refuses more
than 255. Anything a client sends (the body, content parts, tools,
``response_format``, metadata, RAG filters) is therefore checked against one
limit, ``server.max_json_depth``, and refused with a 400 before anything
else touches it.

The check is cheap for ordinary bodies: the number of ``[`` and ``{`` bytes
bounds the depth from above, and counting them runs at memory speed, so a
body with fewer openers than the limit (nearly all chat requests) is never
walked. Only bodies with more openers are walked, level by level, without
recursion.
"""

from __future__ import annotations

from typing import Any

from seawall.errors import InvalidRequest

DEFAULT_MAX_DEPTH = 64


class TooDeep(InvalidRequest):
    code = "json_too_deep"


def too_deep(limit: int, what: str = "The request body") -> TooDeep:
    return TooDeep(f"{what} is nested more than {limit} levels deep "
                   "(server.max_json_depth); flatten it.")


def may_exceed(raw: bytes | str, limit: int) -> bool:
    """False when ``raw`` (JSON text) cannot be nested deeper than ``limit``:
    fewer openers than that (a memory-speed count, no parsing)."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > limit
    return raw.count(b"[") + raw.count(b"{") > limit


def depth_exceeds(value: Any, limit: int) -> bool:
    """Is ``value`` (decoded JSON: dicts, lists, scalars) nested deeper than
    ``limit``? The top-level object or array is level 1. Breadth first, one
    list per level, so the cost is one visit per container and no recursion."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt = []
        for node in level:
            for child in (node.values() if type(node) is dict else node):
                if type(child) in (dict, list):
                    nxt.append(child)
        level = nxt
    return False


def check_depth(value: Any, limit: int, what: str = "The request body") -> None:
    """Raise a 400 (``json_too_deep``) when ``value`` is nested deeper than
    ``limit``; for already-decoded values (filters, parts of a request)."""
    if limit and depth_exceeds(value, limit):
        raise too_deep(limit, what)
