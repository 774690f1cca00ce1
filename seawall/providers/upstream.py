"""What every HTTP provider shares: connect timeouts, and what it reads from
an upstream's responses (Retry-After, rate-limit headers)."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import aiohttp

from seawall.errors import UpstreamTooLarge

# Used when a call names no connect timeout (the router always names one).
DEFAULT_CONNECT_S = 10.0


@dataclass(slots=True, frozen=True)
class ResponseLimits:
    """Caps on what an upstream may send (``server.max_upstream_body_bytes``,
    ``server.max_sse_line_bytes``): beyond them the attempt fails with 502
    ``upstream_response_too_large`` instead of growing without end."""

    body_bytes: int = 16 * 1024 * 1024
    sse_line_bytes: int = 1024 * 1024

    def line_too_long(self, what: str) -> UpstreamTooLarge:
        return UpstreamTooLarge(f"{what} sent a stream event longer than {self.sse_line_bytes} "
                                "bytes (server.max_sse_line_bytes)")


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole response body, refusing more than ``limit`` bytes as soon as
    it is declared or received (chunked bodies included)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise UpstreamTooLarge(f"{what} answered with {declared} bytes, more than "
                               f"{limit} (server.max_upstream_body_bytes)")
    parts: list[bytes] = []
    size = 0
    async for data in resp.content.iter_any():
        size += len(data)
        if size > limit:
            raise UpstreamTooLarge(f"{what} answered with more than {limit} bytes "
                                   "(server.max_upstream_body_bytes)")
        parts.append(data)
    return b"".join(parts)


@lru_cache(maxsize=64)
def connect_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A per-request aiohttp timeout bounding only the TCP/TLS connect (cached:
    deployments reuse a handful of values)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an
    HTTP-date (RFC 9110 allows both), never negative; None if absent or bad."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(slots=True, frozen=True)
class RateLimitInfo:
    """What an upstream said about its own rate limits on one response."""

    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None

    @property
    def exhausted_for_s(self) -> float | None:
        """Seconds the upstream will refuse more work, if it said it has none left."""
        waits = []
        if self.remaining_requests == 0:
            waits.append(self.reset_requests_s if self.reset_requests_s is not None else 1.0)
        if self.remaining_tokens == 0:
            waits.append(self.reset_tokens_s if self.reset_tokens_s is not None else 1.0)
        return max(waits) if waits else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _reset_s(value: str | None) -> float | None:
    """OpenAI's ``6m0s`` / ``20ms`` durations, plain seconds, or Anthropic's
    RFC 3339 instant, as seconds from now (never negative)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _UNIT_S[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def rate_limit_info(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Parse OpenAI-style ``x-ratelimit-*`` or Anthropic ``anthropic-ratelimit-*``
    headers; None when the response carries neither."""
    g = headers.get
    if g("x-ratelimit-remaining-requests") is not None or \
            g("x-ratelimit-remaining-tokens") is not None:
        return RateLimitInfo(
            remaining_requests=_int(g("x-ratelimit-remaining-requests")),
            reset_requests_s=_reset_s(g("x-ratelimit-reset-requests")),
            remaining_tokens=_int(g("x-ratelimit-remaining-tokens")),
            reset_tokens_s=_reset_s(g("x-ratelimit-reset-tokens")),
            limit_requests=_int(g("x-ratelimit-limit-requests")),
            limit_tokens=_int(g("x-ratelimit-limit-tokens")))
    if g("anthropic-ratelimit-requests-remaining") is not None or \
            g("anthropic-ratelimit-tokens-remaining") is not None:
        return RateLimitInfo(
            remaining_requests=_int(g("anthropic-ratelimit-requests-remaining")),
            reset_requests_s=_reset_s(g("anthropic-ratelimit-requests-reset")),
            remaining_tokens=_int(g("anthropic-ratelimit-tokens-remaining")),
            reset_tokens_s=_reset_s(g("anthropic-ratelimit-tokens-reset")),
            limit_requests=_int(g("anthropic-ratelimit-requests-limit")),
            limit_tokens=_int(g("anthropic-ratelimit-tokens-limit")))
    return None


def retry_after_header_s(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI's precise form) if present, else ``Retry-After``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return retry_after_s(headers)


# A pooled keep-alive connection the upstream closed while it sat idle fails
# like this on first use, before any response byte.
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError)


async def post(session: aiohttp.ClientSession, url: str, **kw: Any) -> aiohttp.ClientResponse:
    """POST, once more at once if the connection turns out to be stale.

    Uvicorn-based upstreams (vLLM among them) close idle connections after
    5 s; a request that picks such a connection from the pool just as it is
    closed fails in a millisecond. That is not the upstream failing, so it
    must not cost a retry, a breaker failure or a fallback. (The request may,
    rarely, have reached a server that then crashed: LLM calls are stateless,
    so the cost is one duplicate generation.)
    """
    try:
        return await session.post(url, **kw)
    except _STALE:
        return await session.post(url, **kw)
