"""HTTP helpers: bounded body reading, JSON/error responses, and an SSE
response that stops the answer the moment the client hangs up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from seawall.errors import BodyTooLarge, InvalidRequest, SeawallError

JSON = "application/json"


FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host",
                      "x-client-ip", "true-client-ip")


def peer_host(request: Request) -> str | None:
    """The caller's address as the gateway trusts it, for loopback decisions
    (anonymous access, /metrics) and the audit log: the TCP peer, never a
    header. A request that carries a forwarding header came through a proxy,
    so whoever sent it is not known to be local: ``forwarded:<proxy address>``,
    which is never loopback."""
    host = request.client.host if request.client else None
    headers = request.headers
    if any(h in headers for h in FORWARDING_HEADERS):
        return f"forwarded:{host or 'unknown'}"
    return host


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=JSON)


def error_response(err: SeawallError, headers: dict[str, str] | None = None) -> Response:
    return Response(err.body(), status_code=err.status, media_type=JSON,
                    headers={**err.headers(), **(headers or {})})


def header_value(text: str, limit: int = 200) -> str:
    """``text`` (possibly client-supplied) as a response header value: printable
    ASCII only, others as '?', so it can neither fail the latin-1 encoding (a
    500, found by fuzzing) nor end the header line."""
    text = text[:limit]
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else "?" for c in text)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(f"The request body is {declared} bytes; this gateway accepts "
                                   f"at most {limit} (server.max_body_bytes).")
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                # The error's traceback keeps this frame alive (and the request
                # context keeps the error) until a garbage collection: drop
                # what was read now, or a flood of large bodies stays in memory.
                parts.clear()
                raise BodyTooLarge(f"The request body exceeds {limit} bytes "
                                   "(server.max_body_bytes).")
            parts.append(part)
    except ClientDisconnect:
        raise InvalidRequest("The client disconnected while sending the body.",
                             code="client_closed_request") from None
    return b"".join(parts)


class DisconnectWatch:
    """Cancels the current task when the client disconnects.

    The answer and a listener on ``receive`` run side by side; the first to
    finish stops the other, so a hang-up stops upstream generation instead of
    running on until the next failed write. Use after the body was read.

    The listener is a task, which costs more than a whole fast proxied
    request; it is armed only once the answer has taken ``ARM_AFTER_S``, so
    quick answers never pay for it and a hang-up during a slow generation is
    noticed at most that much later.
    """

    ARM_AFTER_S = 0.1

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = False
        self._done = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def _watch(self) -> None:
        while True:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                if not self._done and self._task is not None:
                    self.disconnected = True
                    self._task.cancel()
                return

    def finishing(self) -> None:
        """Call before the last write: a disconnect after it is a normal close."""
        self._done = True

    def _arm(self) -> None:
        if not self._done:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_later(self.ARM_AFTER_S, self._arm)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> bool:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self.disconnected and et is asyncio.CancelledError and self._task is not None:
            self._task.uncancel()
            return True  # the client left: nothing to answer, nothing to raise
        return False


class LiveStreams:
    """The streamed answers being sent now, so that shutdown can end those
    still open at the drain deadline properly (an error event and a clean
    end of the body) instead of cutting the connection."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cutting = False

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    def cut_all(self) -> int:
        self.cutting = True
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)


class LastEvent(bytes):
    """The event that ends a stream (``[DONE]``, ``message_stop``): an
    :class:`SSEResponse` sends it together with the end of the body, one
    write (one syscall) instead of two."""


class SSEResponse(Response):
    """``text/event-stream`` of pre-encoded events from ``body``; a client
    hang-up closes ``body`` at once (which closes the upstream stream).
    Cut at shutdown (``live``), it ends with the events ``on_cut`` makes.
    ``on_close`` runs last, whatever happened (even if sending never began):
    the request's owner releases what it holds there."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str],
                 on_close: Callable[[], Awaitable[None]] | None = None,
                 live: LiveStreams | None = None,
                 on_cut: Callable[[], bytes] | None = None) -> None:
        self.status_code = 200
        self.background = None
        self._events = body
        self._on_close = on_close
        self._live = live
        self._on_cut = on_cut
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = self._events
        live = self._live
        task = asyncio.current_task()
        if live is not None and task is not None:
            live.add(task)
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async with DisconnectWatch(receive) as watch:
                try:
                    end = b""
                    async for data in events:
                        if type(data) is LastEvent:
                            end = data  # nothing follows it
                            break
                        await send({"type": "http.response.body", "body": data,
                                    "more_body": True})
                    watch.finishing()
                    await send({"type": "http.response.body", "body": end})
                except OSError:
                    pass  # the client is gone; the generator is closed below
        except asyncio.CancelledError:
            if live is None or not live.cutting or task is None or task.uncancel() > 0:
                raise
            await events.aclose()  # type: ignore[attr-defined]  # recorded as cut first
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "more_body": True,
                            "body": self._on_cut() if self._on_cut is not None else b""})
                await send({"type": "http.response.body", "body": b""})
        finally:
            if live is not None and task is not None:
                live.discard(task)
            try:
                await events.aclose()  # type: ignore[attr-defined]
            finally:
                if self._on_close is not None:
                    await self._on_close()
