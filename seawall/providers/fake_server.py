"""A standalone fake upstream speaking the OpenAI and the Anthropic wire formats.

Tests and benchmarks point real providers at it over a real socket, so what
they exercise is the HTTP client, the SSE parser and the error mapping, not a
mock. The reply is the shared :class:`~seawall.providers.fake.FakeWords` model;
failures are real HTTP failures: an error status with ``Retry-After`` and any
scripted ``headers`` (rate-limit headers, say), for all requests or a random
share of them (``error_probability``); a connection cut mid-body
(``disconnect_after_chunks``); a body or SSE event that is not JSON
(``malformed_after_chunks``); a stream that goes silent with the connection
open (``stall_after_chunks``); or no answer at all (``hang``). See
:class:`~seawall.providers.fake.FakeBehavior` for the exact semantics.

Endpoints: OpenAI ``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models``; Anthropic ``POST /v1/messages``; and two rerank formats,
``POST /rerank`` (Hugging Face text-embeddings-inference: ``query`` + ``texts``
-> ``[{index, score}]``) and ``POST /v1/rerank`` (Cohere / Jina / vLLM:
``query`` + ``documents`` -> ``{"results": [{index, relevance_score}]}``),
both scored by :func:`lexical_score` and sorted best first, as real servers do.

Scripting (all JSON):

* ``POST /_fake/script`` ``{"default": {...}}`` replaces the behaviour used when
  the queue is empty; ``{"queue": [{...}, ...]}`` replaces the FIFO of one-shot
  behaviours (one per generation request: chat, messages, embeddings, rerank). Each
  is a whole behaviour: fields left out take FakeBehavior's defaults, not the
  current default's. ``{"seed": 42}`` (alone or with the others) restarts
  the random draws for ``error_probability`` from that seed (``null``:
  unseeded), so a run is repeatable.
* ``GET /_fake/calls``: how many generation requests arrived, the last 100
  bodies / headers / paths / client ports, and how they ended: ``completed``,
  ``failed`` (scripted or validation error), ``disconnected`` (scripted cut),
  ``malformed`` (scripted garbage sent), ``cancelled`` (the client hung up
  first, e.g. from a hang or a stall), ``active`` (still running).
* ``POST /_fake/reset``: forget calls, empty the queue, restore the default
  and the initial seed.

Run alone with ``python -m seawall.providers.fake_server --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import random
import re
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.errors import InvalidRequest
from seawall.providers.base import completion_id, make_chunk, usage_chunk
from seawall.providers.fake import (
    TOOL_ARGUMENTS,
    WEATHER,
    FakeBehavior,
    FakeDisconnect,
    FakeFailure,
    FakeMalformed,
    FakeWords,
    count_words,
    fake_logprobs,
    fake_tool_name,
    fake_vector,
    fake_words,
    split_words,
    tool_call_delta,
    wait_forever,
)

T = TypeVar("T")
HISTORY = 100
TOOL_USE_ID = "toolu_fake1"
TOOL_INPUT: dict[str, Any] = {"city": "Paris"}
MODELS = ("fake-model", "fake-embedding")
_WORD = re.compile(r"\w+")
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
GARBAGE = b"{not json"  # the data of a scripted malformed SSE event
_RETRY_HEADERS = ("retry-after", "retry-after-ms")


@dataclass(slots=True)
class _Call:
    """One generation request; the handler sets ``outcome`` as it goes, and
    whatever it still is when the response ends is what is counted."""

    generation: int
    outcome: str = "cancelled"


class FakeUpstreamState:
    """Scripted behaviours and the record of what arrived. Lives on one event
    loop (the server's), so it needs no locking. ``rng`` (seeded with ``seed``)
    decides ``error_probability``."""

    def __init__(self, default: FakeBehavior, seed: int | None = None) -> None:
        self.initial = default
        self.initial_seed = seed
        self.default = default
        self.queue: deque[FakeBehavior] = deque()
        self._generation = 0
        self.reset()

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def reset(self) -> None:
        self._generation += 1
        self.default = self.initial
        self.reseed(self.initial_seed)
        self.queue.clear()
        self.calls = 0
        self.active = 0
        self.counts = {"completed": 0, "failed": 0, "disconnected": 0, "malformed": 0,
                       "cancelled": 0}
        self.requests: deque[Any] = deque(maxlen=HISTORY)
        self.headers: deque[dict[str, str]] = deque(maxlen=HISTORY)
        self.paths: deque[str] = deque(maxlen=HISTORY)
        self.peers: deque[int | None] = deque(maxlen=HISTORY)

    def take(self) -> FakeBehavior:
        return self.queue.popleft() if self.queue else self.default

    def begin(self, request: Request, body: Any) -> _Call:
        self.calls += 1
        self.active += 1
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.paths.append(request.url.path)
        self.peers.append(request.client.port if request.client else None)
        return _Call(self._generation)

    def end(self, call: _Call, outcome: str | None = None) -> None:
        if call.generation != self._generation:
            return  # began before a reset: not ours to count
        self.active -= 1
        self.counts[outcome or call.outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "active": self.active, **self.counts,
            "requests": list(self.requests), "headers": list(self.headers),
            "paths": list(self.paths), "peers": list(self.peers),
            "default": self.default.to_dict(), "queued": len(self.queue), "seed": self.seed,
        }


class _ClientGone(Exception):
    """The client disconnected while we were still preparing the answer."""


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, but give up (cancelling it) if the client hangs up first:
    a plain endpoint does not notice a disconnect by itself."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, watch):
            if not t.done():
                t.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.gather(task, return_exceptions=True)
    raise _ClientGone


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers,
                    media_type="application/json")


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    return {"retry-after": _seconds(retry_after),
            "retry-after-ms": str(int(retry_after * 1000))}


def _openai_error(status: int, message: str, retry_after: float | None = None,
                  code: str | None = None) -> Response:
    if status == 429:
        etype, code = "rate_limit_error", code or "rate_limit_exceeded"
    elif status >= 500:
        etype, code = "server_error", code or "server_error"
    elif status == 401:
        etype, code = "invalid_request_error", code or "invalid_api_key"
    else:
        etype = "invalid_request_error"
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return _json(body, status, _retry_headers(retry_after))


def _anthropic_error(status: int, message: str, retry_after: float | None = None) -> Response:
    etype = _ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error")
    return _json({"type": "error", "error": {"type": etype, "message": message}},
                 status, _retry_headers(retry_after))


def _with_headers(resp: Response, behavior: FakeBehavior) -> Response:
    """Overlay the behaviour's scripted headers; Retry-After headers already set
    from ``retry_after_s`` win (the dedicated field is the more specific script)."""
    for name, value in behavior.headers.items():
        if name.lower() in _RETRY_HEADERS and name.lower() in resp.headers:
            continue
        resp.headers[name] = value
    return resp


def _malformed(whole: Mapping[str, Any] | list[Any]) -> Response:
    """A 200 whose JSON body stops halfway: a proper prefix of a JSON object (or
    array) is never valid JSON, and the HTTP framing is intact, so only the parser notices."""
    body = orjson.dumps(whole)
    return Response(body[: len(body) // 2], media_type="application/json")


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class _TrackedStream(StreamingResponse):
    """A streaming response that always finalises its body generator and then
    reports how the call ended (Starlette cancels the body on a client
    disconnect but leaves a generator paused at ``yield`` unclosed)."""

    def __init__(self, body: AsyncGenerator[bytes, None], on_done: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"cache-control": "no-cache"})
        self._body = body
        self._on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._body.aclose()
            finally:
                self._on_done()


class _CutResponse(Response):
    """Headers and part of the body, then an exception: uvicorn drops the
    connection, so the client sees a truncated response, as from a crashed upstream."""

    def __init__(self, body: bytes, disconnect: FakeDisconnect) -> None:
        super().__init__(body, media_type="application/json")
        self._disconnect = disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2],
                    "more_body": True})
        raise self._disconnect


class _Upstream:
    """The route handlers, sharing one :class:`FakeUpstreamState`."""

    def __init__(self, state: FakeUpstreamState, api_key: str | None) -> None:
        self.state = state
        self.api_key = api_key

    # -- scripting ---------------------------------------------------------

    async def script(self, request: Request) -> Response:
        try:
            data = orjson.loads(await request.body())
            if not isinstance(data, dict) or not set(data) <= {"default", "queue", "seed"}:
                raise ValueError('send {"default": {...}} and/or {"queue": [{...}, ...]} '
                                 'and/or {"seed": int | null}')
            default = FakeBehavior.from_dict(data["default"]) if "default" in data else None
            queue = [FakeBehavior.from_dict(b) for b in data.get("queue", [])]
            seed = data.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise ValueError(f"seed must be an integer or null, not {seed!r}")
        except (ValueError, TypeError, AttributeError) as e:
            return _json({"error": str(e)}, 400)
        if default is not None:
            self.state.default = default
        if "queue" in data:
            self.state.queue = deque(queue)
        if "seed" in data:
            self.state.reseed(seed)
        return _json({"default": self.state.default.to_dict(), "queued": len(self.state.queue),
                      "seed": self.state.seed})

    async def calls(self, request: Request) -> Response:
        return _json(self.state.snapshot())

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return _json({"ok": True})

    # -- OpenAI ------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        now = int(time.time())
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "created": now, "owned_by": "seawall-fake"}
            for m in MODELS]})

    def _openai_auth_error(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _openai_error(401, "Incorrect API key provided.")
        return None

    async def _begin(self, request: Request, call: _Call, behavior: FakeBehavior,
                     words: FakeWords, error: Callable[..., Response]) -> Response | None:
        """Play the scripted hang or failure; the error response (in the
        endpoint's own wire format) if the answer must not start, else None."""
        try:
            await _maybe_race(request, behavior.hang, words.begin())
        except FakeFailure as f:
            self.state.end(call, "failed")
            return error(f.status, f"scripted fake failure (HTTP {f.status})", f.retry_after)
        except _ClientGone:
            self.state.end(call, "cancelled")
            return Response(status_code=499)
        return None

    async def _whole(self, request: Request, call: _Call, words: FakeWords,
                     answer: Callable[[str, int], dict[str, Any]]) -> Response:
        """A non-streaming answer, ``answer(text, output_tokens)`` built in the
        endpoint's format, or the scripted cut / garbage / silence instead."""
        behavior = words.behavior
        try:
            if behavior.malformed_after_chunks is not None:  # any N: there are no chunks
                await _maybe_race(request, _slow(behavior), words.ready())
                self.state.end(call, "malformed")
                return _malformed(answer("".join(words.words), len(words.words)))
            text = await _maybe_race(request, _slow(behavior), words.collect())
        except _ClientGone:
            self.state.end(call, "cancelled")
            return Response(status_code=499)
        except FakeDisconnect as d:
            self.state.end(call, "disconnected")
            partial = answer("".join(words.words[:d.after]), d.after)
            return _CutResponse(orjson.dumps(partial), d)
        self.state.end(call, "completed")
        return _json(answer(text, words.emitted))

    async def chat_completions(self, request: Request) -> Response:
        raw = await _body_json(request)
        call = self.state.begin(request, raw)
        if (denied := self._openai_auth_error(request)) is not None:
            self.state.end(call, "failed")
            return denied
        try:
            if not isinstance(raw, dict) or "_invalid_json" in raw:
                raise InvalidRequest("The request body must be a JSON object.")
            req = convert(raw, ChatCompletionRequest)
        except InvalidRequest as e:
            self.state.end(call, "failed")
            return _json(e.envelope(), e.status)
        behavior = self.state.take()
        words = fake_words(behavior, req, self.state.rng)
        refused = await self._begin(request, call, behavior, words, _openai_error)
        if refused is not None:
            return _with_headers(refused, behavior)
        prompt_tokens = words.prompt_tokens
        shape = _Shape.of(req)
        if shape.tool is not None:  # the fake tool call replaces the words
            words.words, words.finish_reason = [], "tool_calls"
        if req.stream:
            body = self._openai_stream(call, words, req.model, prompt_tokens,
                                       req.wants_usage_chunk, shape)
            return _with_headers(_TrackedStream(body, lambda: self.state.end(call)), behavior)
        cid, created = completion_id(), int(time.time())

        def answer(text: str, tokens: int) -> dict[str, Any]:
            finish = words.finish_reason if tokens == len(words.words) else "stop"
            return _completion(cid, created, req.model, text, finish, prompt_tokens, tokens,
                               shape)

        return _with_headers(await self._whole(request, call, words, answer), behavior)

    async def _openai_stream(self, call: _Call, words: FakeWords, model: str,
                             prompt_tokens: int, with_usage: bool, shape: _Shape
                             ) -> AsyncGenerator[bytes, None]:
        cid, created = completion_id(), int(time.time())
        n, top = shape.n, shape.top_logprobs

        def each(delta: dict[str, Any] | None = None, finish: str | None = None,
                 logprobs: dict[str, Any] | None = None) -> bytes:
            return b"".join(_sse(make_chunk(cid, model, created, delta, finish, index=i,
                                            logprobs=logprobs)) for i in range(n))

        try:
            await words.ready()
            yield each({"role": "assistant", "content": ""})
            if shape.tool is not None:
                yield each(tool_call_delta(shape.tool))
            async for word in words:
                yield each({"content": word},
                           logprobs=None if top is None else fake_logprobs((word,), top))
            yield each(finish=words.finish_reason)
            if with_usage:
                tokens = _TOOL_TOKENS if shape.tool is not None else words.emitted
                yield _sse(usage_chunk(cid, model, created, prompt_tokens, tokens * n))
            call.outcome = "completed"
            yield b"data: [DONE]\n\n"
        except FakeDisconnect:
            call.outcome = "disconnected"
            raise
        except FakeMalformed:  # garbage, then a clean end: the bad event is the only defect
            call.outcome = "malformed"
            yield b"data: " + GARBAGE + b"\n\n"
            yield b"data: [DONE]\n\n"

    async def embeddings(self, request: Request) -> Response:
        raw = await _body_json(request)
        call = self.state.begin(request, raw)
        if (denied := self._openai_auth_error(request)) is not None:
            self.state.end(call, "failed")
            return denied
        inputs = _embedding_inputs(raw.get("input") if isinstance(raw, dict) else None)
        if inputs is None:
            self.state.end(call, "failed")
            return _openai_error(400, "'input' must be a string or a non-empty list.")
        tokens = sum(count_words(t) for t in inputs)
        return await self._unchunked(request, call, tokens,
                                     lambda: _embedding_list(raw, inputs, tokens))

    async def rerank(self, request: Request) -> Response:
        """``/rerank`` (TEI) or ``/v1/rerank`` (Cohere), told apart by the path."""
        raw = await _body_json(request)
        call = self.state.begin(request, raw)
        if (denied := self._openai_auth_error(request)) is not None:
            self.state.end(call, "failed")
            return denied
        cohere = request.url.path == "/v1/rerank"
        field = "documents" if cohere else "texts"
        query = raw.get("query") if isinstance(raw, dict) else None
        docs = raw.get(field) if isinstance(raw, dict) else None
        if (not isinstance(query, str) or not isinstance(docs, list) or not docs
                or not all(isinstance(d, str) for d in docs)):
            self.state.end(call, "failed")
            return _openai_error(400, f"'query' must be a string and '{field}' a non-empty "
                                      f"list of strings.")
        tokens = count_words(query) * len(docs) + sum(count_words(d) for d in docs)
        return await self._unchunked(request, call, tokens,
                                     lambda: _rerank_body(raw, query, docs, cohere, tokens))

    async def _unchunked(self, request: Request, call: _Call, prompt_tokens: int,
                         answer: Callable[[], Any]) -> Response:
        """An answer with no chunks (embeddings, rerank): the scripted wait,
        failure, hang or cut-short body, else ``answer()`` as JSON."""
        behavior = self.state.take()
        words = FakeWords(behavior, [], prompt_tokens=prompt_tokens, rng=self.state.rng)
        try:
            await _maybe_race(request, behavior.hang or _slow(behavior), _embedding_wait(words))
        except FakeFailure as f:
            self.state.end(call, "failed")
            return _with_headers(_openai_error(f.status, f"scripted fake failure (HTTP "
                                               f"{f.status})", f.retry_after), behavior)
        except _ClientGone:
            self.state.end(call, "cancelled")
            return Response(status_code=499)
        body = answer()
        if behavior.malformed_after_chunks is not None:
            self.state.end(call, "malformed")
            return _with_headers(_malformed(body), behavior)
        self.state.end(call, "completed")
        return _with_headers(_json(body), behavior)

    # -- Anthropic ---------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        raw = await _body_json(request)
        call = self.state.begin(request, raw)
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if not key and bearer.startswith("Bearer "):  # newer Anthropic SDKs send the key so
            key = bearer[7:]
        if not key or (self.api_key is not None and key != self.api_key):
            self.state.end(call, "failed")
            return _anthropic_error(401, "x-api-key header is required" if not key
                                    else "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            self.state.end(call, "failed")
            return _anthropic_error(400, "anthropic-version: header is required")
        problem = _check_messages_request(raw)
        if problem:
            self.state.end(call, "failed")
            return _anthropic_error(400, problem)
        behavior = self.state.take()
        messages: list[dict[str, Any]] = raw["messages"]
        input_tokens = count_words(_blocks_text(raw.get("system"))) + sum(
            count_words(_blocks_text(m.get("content"), tool_results=True)) for m in messages)
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        tools = raw.get("tools") or []
        tool_name: str | None = None
        if tools and last_user and WEATHER.search(_blocks_text(last_user.get("content"))):
            tool_name = str(tools[0].get("name", "tool"))
            words = FakeWords(behavior, split_words(orjson.dumps(TOOL_INPUT).decode()),
                              "tool_use", prompt_tokens=input_tokens, rng=self.state.rng)
        else:
            prompt = ""
            if last_user:
                content = last_user.get("content")
                prompt = _blocks_text(content) or _blocks_text(content, tool_results=True)
            words = FakeWords.for_prompt(behavior, prompt, raw["max_tokens"],
                                         raw.get("stop_sequences") or (),
                                         prompt_tokens=input_tokens, rng=self.state.rng)
        refused = await self._begin(request, call, behavior, words, _anthropic_error)
        if refused is not None:
            return _with_headers(refused, behavior)
        model = str(raw["model"])
        if raw.get("stream"):
            body = self._anthropic_stream(call, words, model, input_tokens, tool_name)
            return _with_headers(_TrackedStream(body, lambda: self.state.end(call)), behavior)

        def answer(text: str, tokens: int) -> dict[str, Any]:
            if tokens < len(words.words):  # cut short: a partial text answer
                return _message(model, text, None, "end_turn", None, input_tokens, tokens)
            return _message(model, text, tool_name, _stop_reason(words, tool_name),
                            words.stop_sequence, input_tokens, tokens)

        return _with_headers(await self._whole(request, call, words, answer), behavior)

    async def _anthropic_stream(self, call: _Call, words: FakeWords, model: str,
                                input_tokens: int, tool_name: str | None
                                ) -> AsyncGenerator[bytes, None]:
        try:
            await words.ready()
            yield _event("message_start", {"type": "message_start", "message": {
                "id": _message_id(), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
            block: dict[str, Any] = (
                {"type": "tool_use", "id": TOOL_USE_ID, "name": tool_name, "input": {}}
                if tool_name else {"type": "text", "text": ""})
            yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": block})
            yield _event("ping", {"type": "ping"})
            if tool_name:  # Anthropic opens a tool input with an empty fragment
                yield _event("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": ""}})
            async for word in words:
                delta = ({"type": "input_json_delta", "partial_json": word} if tool_name
                         else {"type": "text_delta", "text": word})
                yield _event("content_block_delta", {"type": "content_block_delta",
                                                     "index": 0, "delta": delta})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield _event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(words, tool_name),
                          "stop_sequence": words.stop_sequence},
                "usage": {"output_tokens": words.emitted}})
            call.outcome = "completed"
            yield _event("message_stop", {"type": "message_stop"})
        except FakeDisconnect:
            call.outcome = "disconnected"
            raise
        except FakeMalformed:  # garbage, then a clean end: the bad event is the only defect
            call.outcome = "malformed"
            yield b"event: content_block_delta\ndata: " + GARBAGE + b"\n\n"
            yield _event("message_stop", {"type": "message_stop"})


def _slow(b: FakeBehavior) -> bool:
    """Whether answering can take a while (and so must watch for a hang-up)."""
    return (b.ttft_s > 0 or b.tokens_per_s > 0 or b.prefill_tokens_per_s > 0
            or b.stall_after_chunks is not None)


async def _embedding_wait(words: FakeWords) -> None:
    """TTFT (with prefill for the inputs), then a scripted stall whatever its N:
    an embeddings answer has no chunks to stall after."""
    await words.ready()
    if words.behavior.stall_after_chunks is not None:
        await wait_forever()


def _embedding_list(raw: dict[str, Any], inputs: list[str], tokens: int) -> dict[str, Any]:
    dims = raw.get("dimensions") or 8
    as_b64 = raw.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(inputs):
        vec = fake_vector(text, dims)
        emb: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                    if as_b64 else vec)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": raw.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def lexical_score(query: str, passage: str) -> float:
    """The fake rerankers' relevance: the share of the query's distinct
    lowercase words found in the passage (0.0 for a query without words)."""
    words = set(_WORD.findall(query.lower()))
    if not words:
        return 0.0
    return len(words & set(_WORD.findall(passage.lower()))) / len(words)


def _rerank_body(raw: dict[str, Any], query: str, docs: list[str], cohere: bool,
                 tokens: int) -> Any:
    ranked = sorted(((lexical_score(query, d), i) for i, d in enumerate(docs)),
                    key=lambda r: (-r[0], r[1]))
    if not cohere:
        return [{"index": i, "score": s} for s, i in ranked]
    top_n = raw.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        ranked = ranked[:top_n]
    return {"id": uuid.uuid4().hex, "model": raw.get("model", ""),
            "results": [{"index": i, "relevance_score": s} for s, i in ranked],
            "usage": {"total_tokens": tokens}}


async def _maybe_race(request: Request, may_block: bool, work: Awaitable[T]) -> T:
    """Only watch for a disconnect when the work can take a while (saves two
    tasks per request when benchmarking at full speed)."""
    if may_block:
        return await _unless_disconnected(request, work)
    return await work


async def _body_json(request: Request) -> Any:
    body = await request.body()
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {"_invalid_json": body[:1000].decode(errors="replace")}


def _embedding_inputs(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int):  # one prompt given as token ids
            return [" ".join(str(t) for t in value)]
        elif isinstance(item, list):
            out.append(" ".join(str(t) for t in item))
        else:
            return None
    return out


@dataclass(frozen=True, slots=True)
class _Shape:
    """What an OpenAI request asks of the answer's form: ``n`` choices (each the
    same reply), log probabilities (``top_logprobs`` alternatives; None: none)
    and the fake tool call (:func:`~seawall.providers.fake.fake_tool_name`)."""

    n: int = 1
    top_logprobs: int | None = None
    tool: str | None = None

    @classmethod
    def of(cls, req: ChatCompletionRequest) -> _Shape:
        return cls(n=req.choices,
                   top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
                   tool=fake_tool_name(req))


_TOOL_TOKENS = len(split_words(TOOL_ARGUMENTS))


def _completion(cid: str, created: int, model: str, text: str, finish: str,
                prompt_tokens: int, completion_tokens: int,
                shape: _Shape = _Shape()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    logprobs = None
    if shape.tool is not None:
        message["content"] = None
        message["tool_calls"] = tool_call_delta(shape.tool)["tool_calls"]
        completion_tokens = _TOOL_TOKENS
    elif shape.top_logprobs is not None:
        logprobs = fake_logprobs(split_words(text), shape.top_logprobs)
    completion_tokens *= shape.n
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": i, "message": message, "logprobs": logprobs,
                     "finish_reason": finish} for i in range(shape.n)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _message_id() -> str:
    return "msg_fake" + uuid.uuid4().hex[:20]


def _stop_reason(words: FakeWords, tool_name: str | None) -> str:
    if tool_name:
        return "tool_use"
    if words.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if words.stop_sequence else "end_turn"


def _message(model: str, text: str, tool_name: str | None, stop_reason: str,
             stop_sequence: str | None, input_tokens: int, output_tokens: int
             ) -> dict[str, Any]:
    content: list[dict[str, Any]]
    if tool_name:
        content = [{"type": "tool_use", "id": TOOL_USE_ID, "name": tool_name,
                    "input": TOOL_INPUT}]
    else:
        content = [{"type": "text", "text": text}] if text else []
    return {"id": _message_id(), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def _blocks_text(content: Any, tool_results: bool = False) -> str:
    """Text of an Anthropic ``system`` / ``content`` (string or blocks); with
    ``tool_results`` the text inside ``tool_result`` blocks counts too."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif tool_results and block.get("type") == "tool_result":
            parts.append(_blocks_text(block.get("content")))
    return " ".join(parts)


def _check_messages_request(raw: Any) -> str | None:
    """The few checks Anthropic makes that a translation bug would trip."""
    if not isinstance(raw, dict):
        return "the request body must be a JSON object"
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        return "model: Field required"
    max_tokens = raw.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer >= 1)"
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1].get("role") == m.get("role"):
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        content = m.get("content")
        if content is None or content == "" or content == []:
            return f"messages.{i}.content: must be non-empty"
    system = raw.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a string or a list of text blocks"
    return None


def create_app(default: FakeBehavior | None = None, *, api_key: str | None = None,
               seed: int | None = None) -> Starlette:
    """The fake upstream. ``api_key``: if set, require exactly this key
    (``Authorization: Bearer`` for OpenAI and rerank routes; ``x-api-key``, or a bearer
    token as newer Anthropic SDKs send, for ``/v1/messages``); otherwise any
    non-empty Anthropic key passes and the other routes are open. ``seed``
    makes the ``error_probability`` draws repeatable."""
    state = FakeUpstreamState(default or FakeBehavior(), seed)
    up = _Upstream(state, api_key)
    app = Starlette(routes=[
        Route("/v1/chat/completions", up.chat_completions, methods=["POST"]),
        Route("/v1/embeddings", up.embeddings, methods=["POST"]),
        Route("/v1/models", up.models, methods=["GET"]),
        Route("/v1/messages", up.messages, methods=["POST"]),
        Route("/rerank", up.rerank, methods=["POST"]),
        Route("/v1/rerank", up.rerank, methods=["POST"]),
        Route("/_fake/script", up.script, methods=["POST"]),
        Route("/_fake/calls", up.calls, methods=["GET"]),
        Route("/_fake/reset", up.reset, methods=["POST"]),
    ])
    app.state.fake = state
    return app


class QuietDisconnects(logging.Filter):
    """Drops uvicorn's traceback for a scripted mid-stream cut (it is the point)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, FakeDisconnect)


def run(host: str = "127.0.0.1", port: int = 9100, default: FakeBehavior | None = None,
        log_level: str = "warning", seed: int | None = None) -> None:
    """Serve the fake upstream until interrupted."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(QuietDisconnects())
    uvicorn.run(create_app(default, seed=seed), host=host, port=port, log_level=log_level,
                access_log=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m seawall.providers.fake_server",
                                description="Fake OpenAI + Anthropic upstream for tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--text", default=None, help="fixed reply (default: echo the last user turn)")
    p.add_argument("--ttft-s", type=float, default=0.0, help="delay before the first token")
    p.add_argument("--tokens-per-s", type=float, default=0.0, help="0 = as fast as possible")
    p.add_argument("--error-status", type=int, default=None, help="fail with this HTTP status")
    p.add_argument("--error-probability", type=float, default=1.0,
                   help="with --error-status: the share of requests that fail")
    p.add_argument("--seed", type=int, default=None, help="seed for --error-probability")
    p.add_argument("--fill-max-tokens", action=argparse.BooleanOptionalAction, default=False,
                   help="reply with exactly max_tokens words (finish reason length)")
    p.add_argument("--prefill-tokens-per-s", type=float, default=0.0,
                   help="add prompt words / this to the TTFT (0 = off)")
    args = p.parse_args(argv)
    try:
        behavior = FakeBehavior(
            text=args.text, ttft_s=args.ttft_s, tokens_per_s=args.tokens_per_s,
            error_status=args.error_status, error_probability=args.error_probability,
            fill_max_tokens=args.fill_max_tokens,
            prefill_tokens_per_s=args.prefill_tokens_per_s)
    except ValueError as e:
        p.error(str(e))
    run(args.host, args.port, behavior, seed=args.seed)


if __name__ == "__main__":
    main()
