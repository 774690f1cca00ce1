"""The background event log and status moves (seawall/responses/background_log.py):
one suite, run against SQLite and Postgres (the ``stores`` fixture)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from seawall.responses.background_log import BackgroundLog, LogConflict
from seawall.responses.store_api import ResponseStore, StoredResponse
from seawall.store.factory import Stores


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[ResponseStore]:
    s = stores.responses()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _queued(rid: str, expires_at: float | None = None) -> StoredResponse:
    return StoredResponse(id=rid, tenant="t1", model="gpt-x", status="queued",
                          created_at=time.time(), expires_at=expires_at)


async def test_events_append_in_order_once(store: ResponseStore) -> None:
    log = BackgroundLog(store)
    assert await log.last_seq("resp_a") is None
    await log.append("resp_a", [(0, "e0"), (1, "e1")])
    await log.append("resp_a", [(2, "e2")])
    await log.append("resp_b", [(0, "other")])
    assert await log.after("resp_a", -1) == [(0, "e0"), (1, "e1"), (2, "e2")]
    assert await log.after("resp_a", 0, limit=1) == [(1, "e1")]
    assert await log.last_seq("resp_a") == 2
    with pytest.raises(LogConflict):  # a second writer of seq 2 (and 3) writes nothing
        await log.append("resp_a", [(3, "x3"), (2, "x2")])
    assert await log.after("resp_a", 1) == [(2, "e2")]
    await log.drop("resp_a")
    assert await log.after("resp_a", -1) == []
    assert await log.after("resp_b", -1) == [(0, "other")]


async def test_status_only_moves_forward(store: ResponseStore) -> None:
    log = BackgroundLog(store)
    await store.put(_queued("resp_a"))
    assert await log.move("t2", "resp_a", "in_progress") is False  # another tenant's
    assert await log.move("t1", "resp_a", "in_progress") is True
    done = dataclasses.replace(_queued("resp_a"), status="completed", usage={"n": 1},
                               output=[{"type": "message"}], extra={"background": True},
                               tokens=7)
    assert await log.move("t1", "resp_a", "cancelled") is True
    assert await log.finish(done, [(0, "final")]) is False  # cancelled first: that stands
    got = await store.get("t1", "resp_a")
    assert got is not None and got.status == "cancelled" and got.output == []
    assert await log.after("resp_a", -1) == []  # nor its final event
    await store.put(_queued("resp_b"))
    assert await log.finish(dataclasses.replace(done, id="resp_b"), [(0, "final")]) is True
    assert await log.after("resp_b", -1) == [(0, "final")]
    got = await store.get("t1", "resp_b")
    assert got is not None and (got.status, got.usage, got.tokens) == ("completed", {"n": 1}, 7)
    assert await log.move("t1", "resp_b", "cancelled") is False


async def test_retention_deletes_the_log_with_the_response(store: ResponseStore) -> None:
    log = BackgroundLog(store)
    await store.put(_queued("resp_old", expires_at=time.time() - 1))
    await store.put(_queued("resp_new"))
    await log.append("resp_old", [(0, "e")])
    await log.append("resp_new", [(0, "e")])
    assert await store.purge_expired(time.time()) == 1
    assert await log.after("resp_old", -1) == []
    assert await log.after("resp_new", -1) == [(0, "e")]
