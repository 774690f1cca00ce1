"""Anthropic Messages API behind the OpenAI chunk interface.

The request is translated OpenAI -> Anthropic once (:func:`to_anthropic`) and
the upstream is always asked to stream; its SSE events are translated back
into OpenAI chunks as they arrive, so a non-streaming client simply gathers
them (one code path, see :mod:`seawall.providers.base`).

What does not translate exactly:

* ``response_format`` (``json_object`` / ``json_schema``) has no Anthropic
  equivalent: an instruction to answer with JSON only (and the schema, if any)
  is appended to the system prompt. The output is not guaranteed to validate.
* ``temperature`` above 1 is capped at 1 (Anthropic's range is 0..1).
* ``seed`` and other OpenAI-only fields are dropped; ``n`` > 1 and ``logprobs``
  are refused (400 ``n_not_supported`` / ``logprobs_not_supported``).
* Extended-thinking blocks in the response are skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from seawall.api.wire import ChatCompletionRequest, Message
from seawall.config import AnthropicProviderSettings
from seawall.errors import (
    InvalidRequest,
    RateLimited,
    SeawallError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from seawall.providers.base import (
    ChatCall,
    Chunk,
    Provider,
    ProviderStatus,
    completion_id,
    make_chunk,
    redact,
    secrets_of,
    usage_chunk,
)
from seawall.providers.upstream import (
    DEFAULT_CONNECT_S,
    ResponseLimits,
    connect_timeout,
    post,
    rate_limit_info,
    retry_after_header_s,
)

JSON_ONLY_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no text before or "
    "after it and no code fences."
)
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TAIL_WAIT_S = 1.0  # after message_stop, how long to wait for the body's end
_MAX_ERROR_BODY = 64 * 1024


# -- request: OpenAI -> Anthropic ---------------------------------------------


def _text_parts(content: str | list[dict[str, Any]] | None, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for i, part in enumerate(content):
        if part.get("type") != "text":
            raise InvalidRequest(f"{where}: only text parts are allowed here, got "
                                 f"{part.get('type')!r}", param=f"{where}.content[{i}]")
        out.append(str(part.get("text") or ""))
    return out


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise InvalidRequest("image_url.url is required", param=param)
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, sep, data = url.partition(",")
    media_type = header[5:].split(";")[0]
    if not sep or not header.endswith(";base64") or not media_type:
        raise InvalidRequest("image data URLs must look like data:image/png;base64,<data>",
                             param=param)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                         "data": data}}


def _content_blocks(content: str | list[dict[str, Any]] | None, param: str
                    ) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(content):
        ptype = part.get("type")
        if ptype == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif ptype == "image_url":
            blocks.append(_image_block(part, f"{param}[{i}]"))
        else:
            raise InvalidRequest(f"content part type {ptype!r} is not supported by "
                                 "Anthropic models", param=f"{param}[{i}].type")
    return blocks


def _tool_use_blocks(m: Message, i: int) -> list[dict[str, Any]]:
    blocks = []
    for j, tc in enumerate(m.tool_calls or ()):
        fn = tc.get("function") or {}
        param = f"messages[{i}].tool_calls[{j}]"
        if not tc.get("id") or not fn.get("name"):
            raise InvalidRequest("a tool call needs an id and function.name", param=param)
        args = fn.get("arguments") or "{}"
        try:
            value = orjson.loads(args) if isinstance(args, str) else args
        except orjson.JSONDecodeError:
            raise InvalidRequest("tool call arguments are not valid JSON",
                                 param=f"{param}.function.arguments") from None
        if not isinstance(value, dict):
            raise InvalidRequest("tool call arguments must be a JSON object",
                                 param=f"{param}.function.arguments")
        blocks.append({"type": "tool_use", "id": tc["id"], "name": fn["name"],
                       "input": value})
    return blocks


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function")
        if t.get("type", "function") != "function" or not isinstance(fn, dict) \
                or not fn.get("name"):
            raise InvalidRequest("only function tools with a name are supported by "
                                 "Anthropic models", param=f"tools[{i}]")
        tool: dict[str, Any] = {"name": fn["name"],
                                "input_schema": fn.get("parameters")
                                or {"type": "object", "properties": {}}}
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
        if mapped is None:
            raise InvalidRequest(f"tool_choice {choice!r} must be auto, required or none",
                                 param="tool_choice")
        return {"type": mapped}
    name = (choice.get("function") or {}).get("name")
    if choice.get("type") != "function" or not name:
        raise InvalidRequest('tool_choice must be {"type": "function", "function": '
                             '{"name": ...}}', param="tool_choice")
    return {"type": "tool", "name": name}


def _json_instruction(fmt: dict[str, Any]) -> str | None:
    kind = fmt.get("type")
    if kind == "json_object":
        return JSON_ONLY_INSTRUCTION
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is None:
            return JSON_ONLY_INSTRUCTION
        return (f"{JSON_ONLY_INSTRUCTION} It must conform to this JSON Schema:\n"
                + orjson.dumps(schema).decode())
    return None


def to_anthropic(request: ChatCompletionRequest, model: str, default_max_tokens: int,
                 raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Messages API body for ``request`` (always ``stream: true``).

    System and developer messages become ``system``; tool results become
    ``tool_result`` blocks in a user turn; consecutive turns of one role are
    merged, since Anthropic requires user and assistant to alternate.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if m.role in ("system", "developer"):
            system.extend(t for t in _text_parts(m.content, where) if t)
        elif m.role == "user":
            add("user", _content_blocks(m.content, f"{where}.content"))
        elif m.role == "assistant":
            add("assistant", _content_blocks(m.content, f"{where}.content")
                + _tool_use_blocks(m, i))
        elif m.role == "tool":
            if not m.tool_call_id:
                raise InvalidRequest("a tool message needs tool_call_id",
                                     param=f"{where}.tool_call_id")
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id,
                          "content": "\n".join(_text_parts(m.content, where))}])
        else:
            raise InvalidRequest("role 'function' is deprecated and not supported by "
                                 "Anthropic models; use tool messages",
                                 param=f"{where}.role")

    if request.response_format and (extra := _json_instruction(request.response_format)):
        system.append(extra)

    body: dict[str, Any] = {"model": model, "messages": turns,
                            "max_tokens": request.output_limit or default_max_tokens,
                            "stream": True}
    if system:
        body["system"] = "\n\n".join(system)
    if request.stop_list:
        body["stop_sequences"] = request.stop_list
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = _tools(request.tools)
        choice = _tool_choice(request.tool_choice) if request.tool_choice else None
        if raw is not None and raw.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice:
            body["tool_choice"] = choice
    return body


# -- response: Anthropic SSE -> OpenAI chunks ---------------------------------


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: bytes in, ``(event, data)`` out."""

    __slots__ = ("_buf", "_event", "_data", "_limits", "_what")

    def __init__(self, limits: ResponseLimits | None = None, what: str = "provider") -> None:
        self._buf = b""
        self._event = ""
        self._data: list[bytes] = []
        self._limits = limits or ResponseLimits()
        self._what = what

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        max_line = self._limits.sse_line_bytes
        if len(self._buf) > max_line:
            raise self._limits.line_too_long(self._what)
        out = []
        for line in lines:
            if len(line) > max_line:
                raise self._limits.line_too_long(self._what)
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    out.append((self._event or "message", b"\n".join(self._data)))
                self._event, self._data = "", []
            elif line.startswith(b":"):
                continue
            else:
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if field == b"event":
                    self._event = value.decode("utf-8", "replace")
                elif field == b"data":
                    self._data.append(value)
        return out


class StreamTranslator:
    """Anthropic stream events -> OpenAI chunks, one event at a time (no I/O, so
    the mapping is testable on its own)."""

    def __init__(self, model: str, what: str = "provider",
                 secrets: tuple[str, ...] = ()) -> None:
        self.id, self.created, self.model = completion_id(), int(time.time()), model
        self.what = what
        self.secrets = secrets  # redacted from an error event's message
        self.role_sent = False
        self.finished = False
        self.tool_slots: dict[int, int] = {}  # Anthropic block index -> tool_calls index
        self.usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}

    def _chunk(self, delta: dict[str, Any] | None = None,
               finish_reason: str | None = None) -> Chunk:
        return make_chunk(self.id, self.model, self.created, delta, finish_reason)

    def _delta(self, delta: dict[str, Any] | None) -> list[Chunk]:
        out = []
        if not self.role_sent:
            self.role_sent = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if delta:
            out.append(self._chunk(delta))
        return out

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for k in self.usage:
                if isinstance(usage.get(k), int):
                    self.usage[k] = usage[k]

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        etype = event.get("type")
        if etype == "message_start":
            self._take_usage((event.get("message") or {}).get("usage"))
            return self._delta(None)
        if etype == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return self._delta({"content": block["text"]})
            if block.get("type") == "tool_use":
                slot = self.tool_slots[event.get("index", 0)] = len(self.tool_slots)
                return self._delta({"tool_calls": [{
                    "index": slot, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""}}]})
            return []
        if etype == "content_block_delta":
            d = event.get("delta") or {}
            if d.get("type") == "text_delta" and d.get("text"):
                return self._delta({"content": d["text"]})
            if d.get("type") == "input_json_delta" and d.get("partial_json"):
                tool = self.tool_slots.get(event.get("index", 0))
                if tool is not None:
                    return self._delta({"tool_calls": [{
                        "index": tool, "function": {"arguments": d["partial_json"]}}]})
            return []  # thinking, signature and citation deltas have no OpenAI form
        if etype == "message_delta":
            self._take_usage(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason and not self.finished:
                self.finished = True
                return [*self._delta(None),
                        self._chunk(finish_reason=_STOP_REASONS.get(reason, "stop"))]
            return []
        if etype == "error":
            err = event.get("error") or {}
            message = redact(str(err.get("message", "")), self.secrets)
            raise UpstreamError(f"{self.what} failed mid-stream: "
                                f"{err.get('type', 'error')}: {message}",
                                code="upstream_stream_error")
        return []  # ping, content_block_stop, message_stop, future event types

    def finish(self) -> list[Chunk]:
        """After message_stop: a finish chunk if none came, then the usage chunk."""
        out = []
        if not self.finished:
            self.finished = True
            out += [*self._delta(None), self._chunk(finish_reason="stop")]
        u = self.usage
        prompt = (u["input_tokens"] + u["cache_read_input_tokens"]
                  + u["cache_creation_input_tokens"])
        out.append(usage_chunk(self.id, self.model, self.created, prompt, u["output_tokens"]))
        return out


class AnthropicProvider(Provider):
    """Claude models through the Messages API, over one pooled keep-alive session."""

    type = "anthropic"
    supports_tools = True

    def __init__(self, name: str, settings: AnthropicProviderSettings) -> None:
        super().__init__(name)
        self.settings = settings
        base = settings.base_url.rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "anthropic-version": settings.api_version,
            **({"x-api-key": settings.api_key} if settings.api_key else {}),
            **settings.headers,
        }
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.max_concurrency,
                                           keepalive_timeout=s.keepalive_s),
            # Only connect is bounded here; the router owns the other timeouts.
            timeout=connect_timeout(DEFAULT_CONNECT_S),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def status(self) -> ProviderStatus:
        if self._session is None:
            return ProviderStatus(ready=False, detail="not started")
        return ProviderStatus(ready=True, detail=self.url)

    def _what(self) -> str:
        # clients see this: name the provider, never its URL or key
        return f"provider {self.name!r} (anthropic)"

    async def chat(self, call: ChatCall) -> AsyncGenerator[Chunk, None]:
        self.refuse_unsupported(call)  # n > 1, logprobs: Anthropic has neither
        session = self._session
        if session is None:
            raise ServiceUnavailable(f"{self._what()} is not started")
        body = to_anthropic(call.request, call.model, self.settings.default_max_tokens,
                            call.raw)
        try:
            resp = await post(
                session, self.url, data=orjson.dumps(body), headers=self._headers,
                timeout=connect_timeout(call.connect_timeout_s or DEFAULT_CONNECT_S))
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeout(f"{self._what()} did not accept a connection in time",
                                  code="upstream_connect_timeout") from None
        except TimeoutError:
            raise UpstreamTimeout(f"{self._what()} did not answer in time") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"{self._what()} is unreachable: {e}",
                                code="upstream_unreachable") from None
        call.rate_limits = rate_limit_info(resp.headers)
        clean = False
        try:
            if resp.status >= 400:
                raise await self._http_error(resp)
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                raise UpstreamError(f"{self._what()} answered {ctype or 'no content type'} "
                                    "instead of an event stream",
                                    code="upstream_bad_response")
            async with aclosing(self._translate(resp, call.model)) as chunks:
                async for chunk in chunks:
                    yield chunk
            clean = True
        finally:
            if clean or resp.content.is_eof():
                resp.release()  # whole body read: the connection goes back to the pool
            else:
                resp.close()  # failure or consumer hung up: drop it, stopping generation

    async def _events(self, resp: aiohttp.ClientResponse
                      ) -> AsyncGenerator[dict[str, Any], None]:
        """Parsed SSE events; network failures become Seawall errors here, where
        the reads are, and never at the consumer's ``yield``."""
        decoder = SSEDecoder(self.limits, self._what())
        stopped = False
        while True:
            try:
                if stopped:  # message_stop seen: only the body's end is left
                    async with asyncio.timeout(_TAIL_WAIT_S):
                        data = await resp.content.readany()
                else:
                    data = await resp.content.readany()
            except TimeoutError:
                if stopped:
                    return
                raise UpstreamTimeout(f"{self._what()} did not finish in time") from None
            except aiohttp.ClientError as e:
                raise UpstreamError(f"{self._what()} dropped the connection mid-stream: {e}",
                                    code="upstream_disconnected") from None
            if not data:
                if not stopped:
                    raise UpstreamError(f"{self._what()} ended the stream before "
                                        "message_stop", code="upstream_disconnected")
                return
            for name, payload in decoder.feed(data):
                if stopped:
                    continue
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"{self._what()} sent a malformed {name!r} event",
                                        code="upstream_bad_response") from None
                if not isinstance(event, dict):
                    raise UpstreamError(f"{self._what()} sent a malformed {name!r} event",
                                        code="upstream_bad_response")
                event.setdefault("type", name)
                if event["type"] == "message_stop":
                    stopped = True
                yield event

    async def _translate(self, resp: aiohttp.ClientResponse, model: str
                         ) -> AsyncGenerator[Chunk, None]:
        translator = StreamTranslator(model, self._what(),
                                      secrets_of(self.settings.api_key, self.settings.headers))
        async with aclosing(self._events(resp)) as events:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk
        for chunk in translator.finish():
            yield chunk

    async def _http_error(self, resp: aiohttp.ClientResponse) -> SeawallError:
        status = resp.status
        raw = b""
        try:
            while len(raw) < _MAX_ERROR_BODY and (data := await resp.content.readany()):
                raw += data
        except (aiohttp.ClientError, TimeoutError):
            pass
        message = raw.decode("utf-8", "replace").strip()[:500]
        try:
            parsed = orjson.loads(raw)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                message = str(parsed["error"].get("message") or message)
        except orjson.JSONDecodeError:
            pass
        message = redact(message, secrets_of(self.settings.api_key, self.settings.headers))
        message = message or resp.reason or f"HTTP {status}"
        retry_after = retry_after_header_s(resp.headers)
        what = self._what()
        if status == 429:
            return RateLimited(f"{what} is rate limiting requests: {message}",
                               retry_after=retry_after, code="upstream_rate_limited")
        if status in (401, 403):
            hint = (f"no API key is configured; set providers.{self.name}.api_key"
                    if not self.settings.api_key
                    else f"check providers.{self.name}.api_key")
            return UpstreamError(f"{what} rejected Seawall's credentials (HTTP {status}: "
                                 f"{message}); {hint}",
                                 code="upstream_auth_failed", upstream_status=status)
        if status == 404:
            return UpstreamError(f"{what} answered 404: {message}; check the model name "
                                 "and base_url", code="upstream_not_found",
                                 upstream_status=status)
        if status < 500:
            return InvalidRequest(f"{what} rejected the request: {message}",
                                  status=400 if status in (400, 422) else status,
                                  code="upstream_rejected")
        label = "is overloaded" if status == 529 else "failed"
        return UpstreamError(f"{what} {label} (HTTP {status}): {message}",
                             upstream_status=status, retry_after=retry_after)

