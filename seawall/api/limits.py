"""Nesting limits for client JSON: one check for every JSON entry point.

Deeply nested JSON is cheap to send and expensive to hold: msgspec raises
``RecursionError`` (not ``DecodeError``) past ~1,000 levels, and orjson, which
serialises requests upstream and trace records to the store, refuses more
than 255. Anything a client sends (the body, content parts, tools,
``response_format``, metadata, RAG filters) is therefore checked against one
limit, ``server.max_json_depth``, and refused with a 400 before anything
else touches it.

The check is cheap for ordinary bodies, in steps, each only when the one
before cannot decide: (1) fewer ``[``/``{`` bytes than the limit (nearly all
chat requests): done, one C-speed pass (~1 us for 2 KB); (2) for large
bodies, the bracket depth outside strings, computed with numpy in a few
vectorised passes, when no string holds an escaped quote; (3) a walk over
the decoded containers, level by level, without recursion (~80 ns per
container: ~14 us for a body with 20 tool schemas, where numpy's fixed cost
would be as much).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seawall.errors import InvalidRequest

DEFAULT_MAX_DEPTH = 64


class TooDeep(InvalidRequest):
    code = "json_too_deep"


def too_deep(limit: int, what: str = "The request body") -> TooDeep:
    return TooDeep(f"{what} is nested more than {limit} levels deep "
                   "(server.max_json_depth); flatten it.")


_OPENERS = b"[{"
_STEP = np.zeros(256, dtype=np.int8)  # +1 for an opener, -1 for a closer, per byte value
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_QUOTE = ord('"')
_VECTORISE_BYTES = 64 * 1024  # below this, numpy's per-call cost exceeds a walk


def may_exceed(raw: bytes, limit: int) -> bool:
    """False when valid JSON text ``raw`` is certainly nested at most ``limit``
    deep, decided from the bytes alone; True means "walk the decoded value"."""
    if len(raw) - len(raw.translate(None, _OPENERS)) <= limit:
        return False  # fewer openers than the limit: one pass at C speed
    if len(raw) < _VECTORISE_BYTES or b'\\"' in raw:
        return True  # small, or an escaped quote (strings cannot be told apart cheaply)
    codes = np.frombuffer(raw, dtype=np.uint8)
    # Every quote opens or closes a string: bytes after an odd number of
    # quotes are inside one, and their brackets do not nest anything.
    outside = (np.cumsum(codes == _QUOTE, dtype=np.int32) & 1) == 0
    depth = np.cumsum(_STEP[codes] * outside, dtype=np.int32)
    return int(depth.max()) > limit


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
        level = [child for node in level
                 for child in (node.values() if type(node) is dict else node)
                 if type(child) is dict or type(child) is list]
    return False


def check_depth(value: Any, limit: int, what: str = "The request body") -> None:
    """Raise a 400 (``json_too_deep``) when ``value`` is nested deeper than
    ``limit``; for already-decoded values (filters, parts of a request)."""
    if limit and depth_exceeds(value, limit):
        raise too_deep(limit, what)


# Integers orjson can write back (upstream bodies, records, cache keys): msgspec
# decodes wider ones, and forwarding them failed with a 500 (found by fuzzing).
INT_RANGE = (-(2**63), 2**64 - 1)
# Digits -> "1", anything else -> "0": a run of 19 digits (2**63 has 19; shorter
# runs are in range) is then a plain substring search, ~1.5 us for 2 KB.
_DIGITS = bytes(0x31 if 0x30 <= i <= 0x39 else 0x30 for i in range(256))
_LONG_RUN = b"1" * 19


def has_wide_int(raw: bytes, value: Any) -> bool:
    """Does ``value`` (decoded from ``raw``) hold an integer outside
    :data:`INT_RANGE`? Walked (without recursion) only when ``raw`` has a run of
    19 digits, which ordinary bodies do not."""
    if _LONG_RUN not in raw.translate(_DIGITS):
        return False
    lo, hi = INT_RANGE
    stack = [value]
    while stack:
        node = stack.pop()
        t = type(node)
        if t is dict:
            stack.extend(node.values())
        elif t is list:
            stack.extend(node)
        elif t is int and not lo <= node <= hi:
            return True
    return False
