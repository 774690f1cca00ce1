"""Change notices (seawall/store/bus.py) and the lease (seawall/store/lease.py):
one suite over the in-process bus and the Redis one (two bus instances on one
real Redis = two replicas), plus Redis faults: a stopped and restarted server
makes every subscriber resynchronise."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from seawall.config import RedisSettings, parse_settings
from seawall.store.bus import LocalBus, RedisBus, publish_once
from seawall.store.lease import RedisLease
from seawall.store.redis_link import RedisLink
from tests.services import RedisServer

Bus = LocalBus | RedisBus


async def until(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Poll ``check`` (generous bound: proves "arrives", not "fast")."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


def _link(url: str, prefix: str) -> RedisLink:
    return RedisLink(RedisSettings(url=url, prefix=prefix, timeout_s=0.5, retry_after_s=0.2))


@pytest.fixture(params=["local", "redis"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Bus]]:
    """(publisher, other replica); with the in-process bus both are one process."""
    if request.param == "local":
        bus = LocalBus()
        yield bus, bus
        await bus.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    links = [_link(url, prefix), _link(url, prefix)]
    buses = [RedisBus(link) for link in links]
    for b in buses:
        await b.start()
        assert b.connected.is_set()
    yield buses[0], buses[1]
    for b, link in zip(buses, links, strict=True):
        await b.close()
        await link.close()


async def test_a_notice_reaches_every_subscriber_of_its_kind_once(
        replicas: tuple[Bus, Bus]) -> None:
    a, b = replicas
    here: list[dict[str, Any]] = []
    there: list[dict[str, Any]] = []
    other_kind: list[dict[str, Any]] = []
    a.subscribe("key_revoked", here.append)
    b.subscribe("key_revoked", there.append)
    b.subscribe("cache_purge", other_kind.append)
    assert await a.publish({"kind": "key_revoked", "id": "key_1"})
    assert here == [{"kind": "key_revoked", "id": "key_1"}]  # the publisher's own: at once
    assert await until(lambda: bool(there))
    await asyncio.sleep(0.2)  # nothing more arrives: no echo of our own notice, no other kind
    assert there == [{"kind": "key_revoked", "id": "key_1"}]
    assert here == [{"kind": "key_revoked", "id": "key_1"}] and other_kind == []


async def test_async_and_failing_subscribers(replicas: tuple[Bus, Bus]) -> None:
    a, b = replicas
    got: list[str] = []

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("a subscriber bug")

    async def slow(event: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)
        got.append(event["name"])

    b.subscribe("experiment", broken)
    b.subscribe("experiment", slow)
    for name in ("one", "two"):
        await a.publish({"kind": "experiment", "name": name})
    assert await until(lambda: got == ["one", "two"])


async def test_unknown_kinds_are_refused(replicas: tuple[Bus, Bus]) -> None:
    a, _ = replicas
    with pytest.raises(ValueError, match="unknown change kind"):
        a.subscribe("keys_revoked", lambda e: None)
    with pytest.raises(ValueError, match="unknown change kind"):
        await a.publish({"kind": "nope"})


async def test_garbage_on_the_channel_is_ignored(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    link = _link(redis_url, prefix)
    bus = RedisBus(link)
    got: list[dict[str, Any]] = []
    bus.subscribe("prompt_label", got.append)
    await bus.start()
    try:
        with redis.Redis.from_url(redis_url) as r:
            for junk in (b"not json", b"[1, 2]", b'{"kind": "drop_tables"}', b"{" * 100_000,
                         b'{"kind": "prompt_label", "prompt": "greet", "label": "prod"}'):
                r.publish(prefix + "changes", junk)
        assert await until(lambda: bool(got))
        assert got == [{"kind": "prompt_label", "prompt": "greet", "label": "prod"}]
    finally:
        await bus.close()
        await link.close()


async def test_publish_once_from_a_cli_reaches_the_servers(redis_url: str,
                                                            tmp_path: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    link = _link(redis_url, prefix)
    bus = RedisBus(link)
    got: list[dict[str, Any]] = []
    bus.subscribe("key_revoked", got.append)
    await bus.start()
    try:
        settings = parse_settings({"data_dir": str(tmp_path),
                                   "redis": {"url": redis_url, "prefix": prefix}}, env={})
        assert await asyncio.to_thread(publish_once, settings,
                                       {"kind": "key_revoked", "id": "key_9"})
        assert await until(lambda: got == [{"kind": "key_revoked", "id": "key_9"}])
    finally:
        await bus.close()
        await link.close()
    alone = parse_settings({"data_dir": str(tmp_path)}, env={})
    assert publish_once(alone, {"kind": "key_revoked", "id": "key_9"}) is False


async def test_redis_restart_resynchronises_subscribers(redis_url: str,
                                                        redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    links = [_link(redis_url, prefix), _link(redis_url, prefix)]
    a, b = RedisBus(links[0]), RedisBus(links[1])
    here: list[dict[str, Any]] = []
    there: list[dict[str, Any]] = []
    resyncs: list[int] = []

    async def resync() -> None:
        resyncs.append(1)

    a.subscribe("cache_purge", here.append)
    b.subscribe("cache_purge", there.append, resync=resync)
    await a.start()
    await b.start()
    try:
        assert resyncs == []  # a first subscription is not a reconnect
        redis_server.stop()
        try:
            assert await until(lambda: not b.connected.is_set())
            # Redis is away: the publisher still acts itself; the notice is lost to others.
            assert not await a.publish({"kind": "cache_purge", "all": True})
            assert here == [{"kind": "cache_purge", "all": True}]
            assert a.lost == 1
        finally:
            redis_server.start_again()
        # Back: b resubscribes and resynchronises (it may have missed notices).
        assert await until(lambda: b.connected.is_set() and resyncs == [1], within=15)
        assert b.reconnects == 1 and there == []
        assert await until(lambda: a.connected.is_set(), within=15)
        assert await a.publish({"kind": "cache_purge", "tenant": "acme"})
        assert await until(lambda: there == [{"kind": "cache_purge", "tenant": "acme"}])
    finally:
        for bus, link in zip((a, b), links, strict=True):
            await bus.close()
            await link.close()


# -- the lease: one process decides for all --

async def test_one_lease_holder_at_a_time_and_handover(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    links = [_link(redis_url, prefix) for _ in range(3)]
    leases = [RedisLease(link, "experiments", ttl_s=30) for link in links]
    try:
        for lease in leases:
            await lease.start()
        assert [lease.held for lease in leases] == [True, False, False]
        for lease in leases:  # renewing changes nothing
            await lease.renew()
        assert [lease.held for lease in leases] == [True, False, False]
        await leases[0].close()  # a clean stop hands over at once (no TTL to wait out)
        assert not leases[0].held
        got = [await lease.renew() for lease in leases[1:]]
        assert got == [True, False] and leases[1].held and not leases[2].held
    finally:
        for lease, link in zip(leases, links, strict=True):
            await lease.close()
            await link.close()


async def test_a_lease_runs_out_when_its_holder_is_gone(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    links = [_link(redis_url, prefix) for _ in range(2)]
    first, second = (RedisLease(link, "x", ttl_s=0.6) for link in links)
    try:
        assert await first.renew() and first.held
        assert not await second.renew()
        # The holder stops renewing (a crash): its belief ends before the key does.
        assert await until(lambda: not first.held, within=2)
        await asyncio.sleep(0.3)  # and the key expires too
        assert await second.renew() and second.held
        assert not await first.renew() and not first.held
    finally:
        for link in links:
            await link.close()
