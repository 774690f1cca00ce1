"""How `seawall serve` (and the test harness) run uvicorn, and the connection
limits uvicorn does not enforce by itself.

httptools has no limit on a request head and uvicorn has no timeout for it,
nor for a connection that never sends a byte, nor for a client that stops
reading an answer; each of those lets a few cheap sockets hold memory,
file descriptors or admission slots without end. :class:`GuardedHttpTools`
is uvicorn's httptools protocol with those bounds added at the connection
level, before any request reaches the app:

* idle: a connection with no request in progress (new, or kept alive
  between requests) that sends nothing for ``keep_alive_s`` is closed;
* head: once the first byte of a request arrives, its complete head
  (request line and headers) must follow within ``header_timeout_s``, or
  the connection is answered 408 and closed (slowloris);
* body: a request body must be complete within ``body_timeout_s`` of its
  head (the clock stops while the app is not reading it), or the
  connection is dropped and the request ends as a client hang-up;
* head size: more than ``max_header_bytes`` of head or ``max_headers``
  header lines is answered 431 and closed, counted while reading, so a
  64 MB header is never buffered;
* send: a client that leaves the answer unread (the write buffer stays
  above its high-water mark) for ``send_timeout_s`` is disconnected; its
  request sees a client disconnect and releases what it holds;
* count: beyond ``max_connections`` open connections, a new one is closed
  as soon as it is accepted.

It also sends each response head together with the start of its body
(:class:`HeadWithBody`): one write per response fewer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from seawall.config import ServerSettings, Settings
from seawall.observe.metrics import Metrics

log = logging.getLogger("seawall.server")


# Why a connection was closed, the label of seawall_connections_closed_total.
LIMITS = ("idle", "header_timeout", "header_too_large", "body_timeout", "send_timeout",
          "max_connections")


class _NoCount:
    def inc(self) -> None:
        pass

    def dec(self) -> None:
        pass


class HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


def _close_response(status: bytes, message: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + message)


_431 = _close_response(b"431 Request Header Fields Too Large",
                       b"Request head too large (server.max_header_bytes / server.max_headers).")
_408 = _close_response(b"408 Request Timeout",
                       b"The request head did not arrive in time (server.header_timeout_s).")


class HeadWithBody:
    """A connection's transport that holds a response head back until the
    first write of its body, so the two go out in one write: uvicorn writes
    them separately, and each write is a syscall that also wakes the client
    (~3% of a proxied request's CPU, bench/). A head whose body does not
    follow at once is sent at the next turn of the event loop."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":  # a final (not 1xx) head
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # the rest of the transport, as is
        return getattr(self._transport, name)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; subclassed per
    configuration by :func:`protocol_class`, which sets the class attributes."""

    header_timeout_s = 10.0
    send_timeout_s = 15.0
    body_timeout_s = 60.0
    max_header_bytes = 64 * 1024
    max_headers = 100
    max_connections = 0  # 0: no cap
    open_gauge: Any = _NoCount()  # seawall_open_connections
    closed: dict[str, Any] = {name: _NoCount() for name in LIMITS}  # by limit
    _capped_logged_at = -1e9

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # False from a head's end to the end of its body
        self._head_started = False  # a request head is being received
        self._head_bytes = 0  # bytes of the current head, counted while it is incomplete
        self._read_len = 0  # bytes in the read being parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_too_large = False

    # -- connection ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadWithBody(transport, self.loop)  # type: ignore[assignment]
        self.open_gauge.inc()
        if self.max_connections and len(self.connections) > self.max_connections:
            self.closed["max_connections"].inc()
            self._warn_capped()
            transport.close()
            return
        # A new connection is idle until its first byte, like a kept-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_stall_timer()
        self._cancel_body_timer()
        self.open_gauge.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused, timed out or rejected: read no more
        awaiting = self._awaiting_head
        self._read_len = len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn does
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._head_too_large:
                self._reject_head()
            else:  # as uvicorn does
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self.transport.is_closing():
            return
        # Timers are armed only when a read leaves something unfinished, so a
        # request that arrives in one read (nearly all) costs none.
        if self._head_started or (self._awaiting_head and self._idle()):
            # A head begun (or bytes while idle) must be complete in time.
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout_s,
                                                        self._head_timeout)
            # Still incomplete after this read: all of it was head. (A read that
            # also ended the previous request is not counted: at most one read
            # of slack, and uvicorn reads at most 256 KiB at a time.)
            if awaiting and self._head_started:
                self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    self._reject_head()
        elif not self._awaiting_head and self._body_timer is None:  # a body under way
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timeout)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def timeout_keep_alive_handler(self) -> None:
        if self.transport.is_closing():
            return
        self.closed["idle"].inc()
        # close() would wait for unsent bytes a non-reading client never takes.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            super().timeout_keep_alive_handler()

    @classmethod
    def _warn_capped(cls) -> None:
        now = time.monotonic()
        if now - cls._capped_logged_at > 10:  # at most one line per 10 s under a flood
            cls._capped_logged_at = now
            log.warning("%d connections open (server.max_connections): closing new ones",
                        cls.max_connections)

    # -- request head ----------------------------------------------------
    def on_message_begin(self) -> None:
        self._head_bytes = 0
        self._head_started = True
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (it runs for every header of every
        # request), with the count check added; sizes are checked once the head
        # is complete (on_headers_complete) or while it is not (data_received).
        headers = self.headers
        if len(headers) >= self.max_headers:
            self._head_too_large = True
            raise HeadTooLarge
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace; RFC 9110 drops it
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Reads of earlier parts of the head were counted as they came; only a
        # read large enough to hold an oversized head needs the exact size.
        if self._head_bytes + self._read_len > self.max_header_bytes and \
                len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) \
                > self.max_header_bytes:
            self._head_too_large = True
            raise HeadTooLarge
        self._awaiting_head = False
        self._head_started = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_head = True
        self._cancel_body_timer()
        super().on_message_complete()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is not taking the body yet: not the client's fault
            self._body_timer = self.loop.call_later(1.0, self._body_timeout)
            return
        self.closed["body_timeout"].inc()
        log.debug("request body not received within %gs (server.body_timeout_s): "
                 "disconnected", self.body_timeout_s)
        self.transport.abort()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _reject_head(self) -> None:
        self._head_too_large = True
        self._cancel_head_timer()
        self.closed["header_too_large"].inc()
        self._answer_and_close(_431)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self.closed["header_timeout"].inc()
        self._answer_and_close(_408 if self._head_started else b"")

    def _answer_and_close(self, answer: bytes) -> None:
        if not self._idle():  # an answer is being sent: no second one in its middle
            self.transport.abort()
            return
        if answer:
            self.transport.write(answer)
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # -- answer ----------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.send_timeout_s, self._send_timeout)

    def resume_writing(self) -> None:
        self._cancel_stall_timer()
        super().resume_writing()

    def _send_timeout(self) -> None:
        self._stall_timer = None
        self.closed["send_timeout"].inc()  # counted, logged at debug: floods must not flood logs
        log.debug("client stopped reading its answer for %gs (server.send_timeout_s): "
                 "disconnected", self.send_timeout_s,
                 extra={"client": self.client[0] if self.client else None})
        # abort, not close: close would wait to flush what the client will not read.
        # connection_lost then marks the request disconnected and wakes its sender.
        self.transport.abort()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None


def protocol_class(server: ServerSettings,
                   metrics: Metrics | None = None) -> type[GuardedHttpTools]:
    """:class:`GuardedHttpTools` with this configuration's limits, counting
    into ``metrics``."""
    counts: dict[str, Any] = {}
    if metrics is not None:
        counts["open_gauge"] = metrics.connections
        counts["closed"] = {name: metrics.connections_closed.labels(name) for name in LIMITS}
    return type("SeawallHttpTools", (GuardedHttpTools,), {**counts,
        "header_timeout_s": server.header_timeout_s,
        "send_timeout_s": server.send_timeout_s,
        "body_timeout_s": server.body_timeout_s,
        "max_header_bytes": server.max_header_bytes,
        "max_headers": server.max_headers,
        "max_connections": server.max_connections,
    })


CUT_GRACE_S = 2.0  # for streams ended at the drain deadline to send their last event


def uvicorn_options(settings: Settings, metrics: Metrics | None = None) -> dict[str, Any]:
    """The ``uvicorn.Config`` keywords that make the gateway's server (all but
    address and logging): `seawall serve` and the test harness both use them,
    so tests exercise the production settings."""
    return {
        "loop": "uvloop",
        "http": protocol_class(settings.server, metrics),
        "lifespan": "on",
        # The peer address is the TCP peer's: X-Forwarded-For / Forwarded never
        # change it (uvicorn would trust them from FORWARDED_ALLOW_IPS), so no
        # header can make a remote client look local (docs/security.md).
        "proxy_headers": False,
        "backlog": 4096,
        "timeout_keep_alive": settings.server.keep_alive_s,
        # Streams still open at drain_timeout_s are ended by the app with an
        # error event (app.Services.begin_drain); the server waits a little
        # longer for those endings.
        "timeout_graceful_shutdown": settings.shutdown.drain_timeout_s + CUT_GRACE_S,
    }


def raise_fd_limit(settings: Settings) -> None:
    """Raise the soft file-descriptor limit to the hard one (often 1024 soft
    against a much higher hard limit), and warn when it still cannot hold
    ``max_connections`` plus an upstream connection per request in flight."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    need = settings.server.max_connections + settings.admission.max_inflight + 256
    if settings.server.max_connections and soft != resource.RLIM_INFINITY and soft < need:
        log.warning("the file-descriptor limit (%d) is below server.max_connections + "
                    "admission.max_inflight + 256 (%d): raise it (ulimit -n, LimitNOFILE) "
                    "or lower server.max_connections", soft, need)
