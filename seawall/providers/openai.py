"""Any OpenAI-compatible upstream: OpenAI, vLLM, TGI, Ollama, llama.cpp server.

The raw request is forwarded with only ``model`` (and, for streams, usage
reporting) changed, so parameters Seawall does not know still reach the
model. A non-streaming client request is sent upstream non-streaming and its
answer becomes a single chunk: one upstream round trip, same internal path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import orjson

from seawall.api.wire import EmbeddingInputs
from seawall.config import OpenAIProviderSettings
from seawall.errors import (
    InvalidRequest,
    RateLimited,
    SeawallError,
    UpstreamError,
    UpstreamTimeout,
)
from seawall.providers.base import (
    ChatCall,
    Chunk,
    ChunkBatch,
    Embeddings,
    Provider,
    ProviderStatus,
    RawBatch,
    StreamItem,
    completion_to_chunk,
    redact,
    secrets_of,
)
from seawall.providers.upstream import (
    DEFAULT_CONNECT_S,
    connect_timeout,
    post,
    rate_limit_info,
    read_bounded,
    retry_after_header_s,
)

# Larger answer bodies are parsed in a worker thread, off the event loop.
_PARSE_OFF_LOOP_BYTES = 256 * 1024
_MAX_ERROR_BODY = 64 * 1024


def _upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(err)[:500]
    except orjson.JSONDecodeError:
        return body[:500].decode(errors="replace")


def http_error(provider: str, status: int, body: bytes, headers: Any,
               secrets: tuple[str, ...] = ()) -> SeawallError:
    """Map an upstream HTTP error to what the client should see (without
    ``secrets``, the credentials the upstream was sent)."""
    msg = redact(_upstream_message(body), secrets)
    if status == 429:
        return RateLimited(f"Provider {provider!r} is rate limiting: {msg}",
                           retry_after=retry_after_header_s(headers),
                           code="upstream_rate_limited")
    if status in (401, 403):
        return UpstreamError(
            f"Provider {provider!r} rejected Seawall's credentials (HTTP {status}); "
            f"check providers.{provider}.api_key.",
            upstream_status=status, code="upstream_auth_failed")
    if status == 404:
        # The deployment's model name or base_url is wrong, not the client's
        # request: another deployment may well serve it.
        return UpstreamError(f"Provider {provider!r} answered 404: {msg}; check the model "
                             "name and base_url", upstream_status=404, code="upstream_not_found")
    if status in (400, 413, 422):
        return InvalidRequest(f"Provider {provider!r} rejected the request: {msg}",
                              code="upstream_rejected")
    return UpstreamError(f"Provider {provider!r} failed with HTTP {status}: {msg}",
                         upstream_status=status, retry_after=retry_after_header_s(headers))


class OpenAIProvider(Provider):
    type = "openai"
    supports_tools = True
    supports_choices = True  # ``n`` passes through; the gatherer folds choices by index
    supports_logprobs = True

    def __init__(self, name: str, settings: OpenAIProviderSettings) -> None:
        super().__init__(name)
        self.settings = settings
        base = settings.base_url.rstrip("/")
        self._chat_url = base + "/chat/completions"
        self._embed_url = base + "/embeddings"
        self._headers = {"content-type": "application/json", **settings.headers}
        if settings.api_key:
            self._headers["authorization"] = "Bearer " + settings.api_key
        self._secrets = secrets_of(settings.api_key, settings.headers)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One keep-alive pool per upstream; limit bounds our concurrency toward it.
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrency,
                                         keepalive_timeout=self.settings.keepalive_s,
                                         ttl_dns_cache=300)
        # Only connect is bounded here; first-token, idle and total timeouts are
        # the router's (seawall.routing.timeouts), per deployment.
        self._session = aiohttp.ClientSession(connector=connector,
                                              timeout=connect_timeout(DEFAULT_CONNECT_S),
                                              skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=self._session is not None and not self._session.closed)

    def _payload(self, call: ChatCall) -> bytes:
        body = dict(call.raw)
        body["model"] = call.model
        body["stream"] = call.stream
        if call.stream and self.settings.supports_stream_usage:
            # Always ask for usage so cost is exact; the API layer hides the
            # usage chunk from clients that did not ask for it.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    async def _post(self, url: str, data: bytes, connect_s: float | None,
                    call: ChatCall | None = None) -> aiohttp.ClientResponse:
        if self._session is None:
            raise UpstreamError(f"Provider {self.name!r} is not started", code="provider_not_ready")
        kw: dict[str, Any] = {}
        if connect_s is not None:
            kw["timeout"] = connect_timeout(connect_s)
        try:
            resp = await post(self._session, url, data=data, headers=self._headers, **kw)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeout(f"Provider {self.name!r} did not accept a connection in time",
                                  code="upstream_connect_timeout") from None
        except TimeoutError:
            raise UpstreamTimeout(f"Provider {self.name!r} did not answer in time") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"Provider {self.name!r} is unreachable: {e}",
                                code="upstream_unreachable") from None
        if call is not None:
            call.rate_limits = rate_limit_info(resp.headers)
        if resp.status >= 400:
            body = b""
            try:  # the start of an error body is enough to report it
                while len(body) < _MAX_ERROR_BODY and (data := await resp.content.readany()):
                    body += data
            except (aiohttp.ClientError, TimeoutError):
                pass
            finally:
                resp.release() if resp.content.at_eof() else resp.close()
            raise http_error(self.name, resp.status, body, resp.headers, self._secrets)
        return resp

    async def chat(self, call: ChatCall) -> AsyncGenerator[StreamItem, None]:
        resp = await self._post(self._chat_url, self._payload(call), call.connect_timeout_s, call)
        try:
            ctype = resp.headers.get("content-type", "")
            if not ctype.startswith("text/event-stream"):
                body = await read_bounded(resp, self.limits.body_bytes,
                                          f"Provider {self.name!r}")
                try:
                    data = (orjson.loads(body) if len(body) <= _PARSE_OFF_LOOP_BYTES else
                            await asyncio.to_thread(orjson.loads, body))
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"Provider {self.name!r} sent invalid JSON",
                                        code="upstream_bad_response") from None
                if not isinstance(data, dict) or "choices" not in data:
                    raise UpstreamError(f"Provider {self.name!r} sent no choices",
                                        code="upstream_bad_response")
                yield completion_to_chunk(data)
                return
            async for chunk in self._sse(resp):
                yield chunk
        except TimeoutError:
            raise UpstreamTimeout(f"Provider {self.name!r} timed out mid-response") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"Provider {self.name!r} broke the connection: {e}",
                                code="upstream_disconnected") from None
        finally:
            resp.release() if resp.content.at_eof() else resp.close()

    def _event(self, payload: bytes) -> Chunk:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Provider {self.name!r} sent a malformed stream event",
                                code="upstream_bad_response") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"Provider {self.name!r} sent a stream event that is not an "
                                "object", code="upstream_bad_response")
        if "error" in chunk:
            raise UpstreamError(
                f"Provider {self.name!r} failed mid-stream: "
                f"{redact(_upstream_message(payload), self._secrets)}",
                code="upstream_stream_error")
        return chunk

    async def _sse(self, resp: aiohttp.ClientResponse) -> AsyncIterator[StreamItem]:
        """Parse SSE from whatever each network read delivered; yield the
        chunks of one read together (a batch) so they go out in one write,
        with their event bytes (a :class:`RawBatch`) so they need no encoding."""
        buf = b""
        max_line = self.limits.sse_line_bytes
        async for data in resp.content.iter_any():
            buf += data
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            lines = buf.split(b"\n")
            buf = lines.pop()  # an incomplete last line waits for more data
            if len(buf) > max_line:
                raise self.limits.line_too_long(f"Provider {self.name!r}")
            batch: ChunkBatch = []
            events: list[bytes] = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # comments, event names, blank separators
                if len(line) > max_line:
                    raise self.limits.line_too_long(f"Provider {self.name!r}")
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    if batch:
                        yield RawBatch(batch, b"".join(events))
                    return
                try:
                    batch.append(self._event(payload))
                except UpstreamError:
                    if batch:  # what arrived intact before the bad event still counts
                        yield RawBatch(batch, b"".join(events))
                    raise
                events.append(b"data: " + payload + b"\n\n")
            if batch:
                yield RawBatch(batch, b"".join(events))
        raise UpstreamError(f"Provider {self.name!r} ended the stream without [DONE]",
                            code="upstream_disconnected")

    async def embed(self, inputs: EmbeddingInputs, model: str,
                    connect_timeout_s: float | None = None) -> Embeddings:
        resp = await self._post(self._embed_url, orjson.dumps({"model": model, "input": inputs}),
                                connect_timeout_s)
        try:
            # Bounded like a chat answer: an embeddings body grows with the
            # batch (about 20 KB per 1536-d vector), so it is parsed off the
            # loop when large.
            body = await read_bounded(resp, self.limits.body_bytes, f"Provider {self.name!r}")
        finally:
            resp.release()
        try:
            data = (orjson.loads(body) if len(body) <= _PARSE_OFF_LOOP_BYTES else
                    await asyncio.to_thread(orjson.loads, body))
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Provider {self.name!r} sent invalid JSON",
                                code="upstream_bad_response") from None
        try:
            vectors = [d["embedding"] for d in sorted(data["data"], key=lambda d: d["index"])]
        except (KeyError, TypeError):
            raise UpstreamError(f"Provider {self.name!r} sent no embeddings",
                                code="upstream_bad_response") from None
        return Embeddings(vectors=vectors,
                          prompt_tokens=int((data.get("usage") or {}).get("prompt_tokens", 0)))
