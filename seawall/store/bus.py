"""Change notices: what one process changed that every replica must act on
within a second (a key revoked or rotated, a budget changed, a canary step,
a prompt label moved, a cache purge, an upstream cool-down).

A notice is a small JSON object, ``{"kind": ..., ...}``. The bus only says
"something changed"; the store stays the truth, so a subscriber either acts
on the notice directly (drop a cached key) or reloads from its store.

Two backends behind :class:`ChangeBus`:

* :class:`LocalBus` (embedded default, one process): ``publish`` calls the
  local subscribers.
* :class:`RedisBus`: ``publish`` calls the local subscribers at once and
  sends the notice on one Redis pub/sub channel (``<redis.prefix>changes``);
  a supervised task receives the other replicas' notices. Pub/sub keeps
  nothing for a disconnected listener, so after every reconnect the bus
  calls each subscriber's ``resync`` (drop caches, reload state): what was
  missed while Redis was away is recovered from the stores.

CLI commands have no running loop service: they call :func:`publish_once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from seawall.config import Settings
    from seawall.observe.metrics import Metrics
    from seawall.store.redis_link import RedisLink

__all__ = ["ChangeBus", "Event", "LocalBus", "RedisBus", "publish_once"]

log = logging.getLogger("seawall.bus")

Event = dict[str, Any]
OnEvent = Callable[[Event], "None | Awaitable[None]"]
OnResync = Callable[[], "None | Awaitable[None]"]

KINDS = frozenset({"key_revoked", "key_changed", "tenant_budget", "prompt_label", "experiment",
                   "cache_purge", "cooldown"})
MAX_EVENT_BYTES = 16 * 1024  # notices are small; anything bigger on the channel is ignored
CHANNEL = "changes"
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
PING_EVERY_S = 5.0  # an idle subscription is checked this often (a silent network cut)


class ChangeBus(Protocol):
    def subscribe(self, kind: str, on_event: OnEvent,
                  resync: OnResync | None = None) -> None:
        """Call ``on_event(event)`` for every notice of ``kind`` (from any
        replica, this one included); ``resync()`` when notices may have been
        lost (after Redis came back). Either may be a coroutine function."""
        ...

    async def publish(self, event: Event) -> bool:
        """Tell every replica; never raises. False: only this process heard it
        (Redis unreachable), the others catch up by their caches' TTL or
        their resync."""
        ...

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class _Subscribers:
    """Who listens to what, and calling them safely: one subscriber's error
    never stops the others; coroutines run as tasks so a slow reload does not
    hold up the next notice."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[OnEvent]] = {}
        self.resyncs: list[OnResync] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, kind: str, on_event: OnEvent, resync: OnResync | None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown change kind {kind!r} (one of {sorted(KINDS)})")
        self.by_kind.setdefault(kind, []).append(on_event)
        if resync is not None and resync not in self.resyncs:
            self.resyncs.append(resync)

    def deliver(self, event: Event) -> None:
        for cb in self.by_kind.get(event["kind"], ()):
            self._call(cb, event)

    def resync(self) -> None:
        for cb in self.resyncs:
            self._call(cb)

    def _call(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            result = cb(*args)
        except Exception:
            log.exception("change subscriber %r failed", getattr(cb, "__qualname__", cb))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("change subscriber failed", exc_info=task.exception())

    async def settle(self) -> None:
        """Wait for subscriber coroutines in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _check(event: Event) -> Event:
    kind = event.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown change kind {kind!r}")
    return event


class LocalBus:
    """One process: a notice goes to this process's subscribers only."""

    def __init__(self) -> None:
        self.subscribers = _Subscribers()

    def subscribe(self, kind: str, on_event: OnEvent, resync: OnResync | None = None) -> None:
        self.subscribers.add(kind, on_event, resync)

    async def publish(self, event: Event) -> bool:
        self.subscribers.deliver(_check(event))
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.subscribers.settle()

    async def settle(self) -> None:
        await self.subscribers.settle()


class RedisBus:
    """Notices through Redis pub/sub, for any number of replicas."""

    def __init__(self, link: RedisLink, metrics: Metrics | None = None) -> None:
        self.link = link
        self.metrics = metrics
        self.channel = link.key(CHANNEL)
        self.origin = uuid.uuid4().hex  # this process: its own notices come back, skipped
        self.subscribers = _Subscribers()
        self.connected = asyncio.Event()
        self.reconnects = 0  # subscriptions re-established after a failure (tests, /ready)
        self.lost = 0  # notices this process could not send
        self._resync_next = False  # notices may have been missed: resync once subscribed
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None

    def subscribe(self, kind: str, on_event: OnEvent, resync: OnResync | None = None) -> None:
        self.subscribers.add(kind, on_event, resync)

    async def publish(self, event: Event) -> bool:
        _check(event)
        self.subscribers.deliver(event)  # this process acts now, whatever Redis does
        payload = orjson.dumps({**event, "origin": self.origin})
        try:
            await self.link.client.publish(self.channel, payload)
        except (RedisError, OSError, TimeoutError) as e:
            self.lost += 1
            if self.metrics is not None:
                self.metrics.bus_events.labels(event["kind"], "lost").inc()
            self.link.failed(e)
            log.warning("change notice %s not broadcast (%s): other replicas see it when "
                        "their cached copy expires or Redis returns", event["kind"],
                        type(e).__name__, extra={"kind": event["kind"]})
            return False
        if self.metrics is not None:
            self.metrics.bus_events.labels(event["kind"], "sent").inc()
        return True

    # -- the subscription task --

    async def start(self) -> None:
        """Subscribe, waiting up to ``redis.timeout_s`` x 4 for the first
        subscription so a notice sent right after start is not missed; if
        Redis is down the task keeps trying in the background."""
        self._task = asyncio.create_task(self._supervise(), name="seawall-change-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), self.link.settings.timeout_s * 4)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.subscribers.settle()

    async def settle(self) -> None:
        await self.subscribers.settle()

    async def _supervise(self) -> None:
        """Run the subscription; an unexpected error (a bug, not Redis going
        away, which :meth:`_run` handles) restarts it after a backoff,
        counted and logged, and subscribers resync: notices may be lost."""
        delay = RECONNECT_MIN_S
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except BaseException:
                if self.metrics is not None:
                    self.metrics.background_restarts.labels("change_bus").inc()
                log.exception("change bus failed; restarting in %.1fs", delay)
                self.connected.clear()
                self._resync_next = True
                await self._drop_client()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def _run(self) -> None:
        """Listen; when Redis goes away, reconnect with a growing backoff
        (logged once per outage)."""
        delay = RECONNECT_MIN_S
        warned = False
        while True:
            try:
                await self._listen()
            except (RedisError, OSError, TimeoutError) as e:
                if self.connected.is_set():
                    delay, warned = RECONNECT_MIN_S, False  # it was up: a fresh outage
                self.connected.clear()
                self._resync_next = True
                if not warned:
                    warned = True
                    if self.metrics is not None:
                        self.metrics.bus_disconnects.inc()
                    log.warning("change bus cannot reach Redis (%s): reconnecting; notices "
                                "from other replicas are missed until then, then every "
                                "subscriber resynchronises", type(e).__name__)
            await self._drop_client()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _listen(self) -> None:
        s = self.link.settings
        assert s.url
        # A connection of its own with no read timeout: it waits for notices.
        self._client = aioredis.Redis.from_url(
            s.url, socket_connect_timeout=s.timeout_s, socket_timeout=None,
            socket_keepalive=True)
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), s.timeout_s * 4)
            if self._resync_next:
                self._resync_next = False
                self.reconnects += 1
                log.info("change bus reconnected: subscribers resynchronise",
                         extra={"reconnects": self.reconnects})
                self.subscribers.resync()
            self.connected.set()
            last_heard = time.monotonic()
            next_ping = last_heard + PING_EVERY_S
            while True:
                msg = await pubsub.get_message(timeout=min(1.0, PING_EVERY_S))
                now = time.monotonic()
                if msg is not None:
                    last_heard = now
                    if msg.get("type") == "message":
                        self._received(msg["data"])
                if now >= next_ping:
                    if now - last_heard > 3 * PING_EVERY_S:
                        raise TimeoutError("no answer to pings on the change channel")
                    await asyncio.wait_for(pubsub.ping(), s.timeout_s * 4)
                    next_ping = now + PING_EVERY_S
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _received(self, data: bytes | str) -> None:
        if len(data) > MAX_EVENT_BYTES:
            log.warning("change notice of %d bytes ignored", len(data))
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("malformed change notice ignored")
            return
        if not isinstance(event, dict) or event.get("kind") not in KINDS:
            log.warning("change notice of unknown kind ignored")
            return
        if event.pop("origin", None) == self.origin:
            return  # delivered locally when it was published
        if self.metrics is not None:
            self.metrics.bus_events.labels(event["kind"], "received").inc()
        self.subscribers.deliver(event)


def make_bus(link: RedisLink | None, metrics: Metrics | None = None) -> LocalBus | RedisBus:
    return LocalBus() if link is None else RedisBus(link, metrics)


def publish_once(settings: Settings, event: Event) -> bool:
    """For CLI commands (no running services): send one notice with a
    short-lived Redis client. False when ``redis.url`` is unset (one process:
    the gateway picks the change up when its cached copy expires) or Redis
    did not take it."""
    _check(event)
    r = settings.redis
    if not r.url:
        return False
    import redis

    payload = orjson.dumps({**event, "origin": f"cli-{os.getpid()}"})
    try:
        with redis.Redis.from_url(r.url, socket_timeout=max(r.timeout_s, 2.0),
                                  socket_connect_timeout=max(r.timeout_s, 2.0)) as client:
            client.publish(r.prefix + CHANNEL, payload)
    except (RedisError, OSError) as e:
        log.warning("change notice %s not sent (%s)", event["kind"], e)
        return False
    return True
