"""What a request is, for the cache: its exact key, its semantic scope and text.

The exact key covers everything that can change the answer: the normalised
messages, the model (or route) asked for, every generation parameter, tools
and response format, plus the tenant, the prompt version and (by policy) the
user. Fields that only change how the answer is delivered (``stream``,
``stream_options``) or that only label the request (``metadata``, ``store``)
are left out, so a streamed and a plain request share an entry.

The semantic *scope* is the same hash without the last user message; the
semantic *text* is that message. Two requests can only ever match
semantically inside one scope, so a match never crosses tenants, models,
prompt versions, parameters or conversations with different earlier turns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

# Request fields that do not change the answer (or are handled separately).
_NOT_IN_KEY = frozenset({
    "messages", "stream", "stream_options", "user", "metadata", "store", "service_tier",
    "seawall", "prompt_cache_key", "safety_identifier",
})


@dataclass(slots=True, frozen=True)
class CacheKeys:
    exact: bytes  # 16-byte digest of the whole normalised request and its scope
    scope: bytes  # 16-byte digest of everything but the last user message
    text: str | None  # the last user message, if the request can match semantically


def _text_of(content: Any) -> str | None:
    """A message's text, when it is text only (a list of text parts counts)."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "\n".join(p["text"] for p in content).strip()
    return None


def _normal_message(m: dict[str, Any]) -> dict[str, Any]:
    """Equal answers for equal meaning: text parts folded into one string,
    surrounding whitespace dropped, absent and null fields alike."""
    out = {k: v for k, v in m.items() if v is not None}
    text = _text_of(m.get("content"))
    if text is not None:
        out["content"] = text
    return out


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(len(p).to_bytes(4, "little"))  # length-prefixed: no ambiguous joins
        h.update(p)
    return h.digest()


def cache_keys(raw: dict[str, Any], tenant: str, prompt_version: str | None,
               user: str | None, arm: str | None = None) -> CacheKeys:
    """``raw`` is the validated request body; ``user`` is None unless entries
    are per user; ``arm`` is the experiment arm, so arms never share answers."""
    params = {k: v for k, v in raw.items() if k not in _NOT_IN_KEY}
    messages = [_normal_message(m) for m in raw["messages"]]
    last = messages[-1]
    dumps = orjson.dumps
    parts = [tenant.encode(), (prompt_version or "").encode(),
             b"" if user is None else b"u:" + user.encode(),
             dumps(params, option=orjson.OPT_SORT_KEYS),
             dumps(messages[:-1], option=orjson.OPT_SORT_KEYS)]
    if arm is not None:  # appended only when set: keys made before experiments stay valid
        parts.append(b"arm:" + arm.encode())
    scope = _digest(*parts)
    exact = _digest(scope, dumps(last, option=orjson.OPT_SORT_KEYS))
    text = last.get("content") if last.get("role") == "user" else None
    if not isinstance(text, str) or set(last) - {"role", "content"} or not text:
        text = None  # tool results, images, named speakers: exact matches only
    return CacheKeys(exact=exact, scope=scope, text=text)
