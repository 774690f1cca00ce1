"""The response store contract: one suite, run against SQLite and Postgres."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

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


def _resp(rid: str, tenant: str = "t1", prev: str | None = None, text: str = "hi",
          expires_at: float | None = None) -> StoredResponse:
    return StoredResponse(
        id=rid, tenant=tenant, model="gpt-x", status="completed", created_at=time.time(),
        instructions="be brief", previous_response_id=prev, expires_at=expires_at,
        input_items=[{"type": "message", "role": "user", "id": f"msg_in_{rid}",
                      "content": [{"type": "input_text", "text": text}]}],
        output=[{"type": "message", "role": "assistant", "id": f"msg_{rid}",
                 "content": [{"type": "output_text", "text": "ok é", "annotations": []}]}],
        usage={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
        metadata={"k": "v"}, extra={"temperature": 0.5, "tools": []})


async def test_put_get_round_trips_every_field(store: ResponseStore) -> None:
    r = _resp("resp_a")
    await store.put(r)
    got = await store.get("t1", "resp_a")
    assert got == r


async def test_tenant_scoped_get_delete_and_chain(store: ResponseStore) -> None:
    await store.put(_resp("resp_a", tenant="t1"))
    assert await store.get("t2", "resp_a") is None
    assert await store.chain("t2", "resp_a", 10) == []
    assert await store.delete("t2", "resp_a") is False
    assert await store.get("t1", "resp_a") is not None
    # Another tenant cannot overwrite it by reusing its id either.
    await store.put(_resp("resp_a", tenant="t2", text="stolen"))
    got = await store.get("t1", "resp_a")
    assert got is not None and got.input_items[0]["content"][0]["text"] == "hi"
    assert await store.delete("t1", "resp_a") is True
    assert await store.get("t1", "resp_a") is None
    assert await store.delete("t1", "resp_a") is False


async def test_chain_is_oldest_first_and_bounded(store: ResponseStore) -> None:
    prev = None
    for i in range(6):
        await store.put(_resp(f"resp_{i}", prev=prev, text=f"turn {i}"))
        prev = f"resp_{i}"
    chain = await store.chain("t1", "resp_5", 100)
    assert [r.id for r in chain] == [f"resp_{i}" for i in range(6)]
    assert [r.id for r in await store.chain("t1", "resp_5", 3)] == ["resp_3", "resp_4", "resp_5"]
    assert await store.chain("t1", "resp_missing", 10) == []
    # A deleted link ends the chain there.
    await store.delete("t1", "resp_2")
    assert [r.id for r in await store.chain("t1", "resp_5", 100)] == ["resp_3", "resp_4",
                                                                      "resp_5"]


async def test_chain_stops_at_a_foreign_ancestor(store: ResponseStore) -> None:
    await store.put(_resp("resp_x", tenant="t2"))
    await store.put(_resp("resp_y", tenant="t1", prev="resp_x"))
    assert [r.id for r in await store.chain("t1", "resp_y", 10)] == ["resp_y"]


async def test_expired_responses_are_invisible_then_purged(store: ResponseStore) -> None:
    now = time.time()
    await store.put(_resp("resp_old", expires_at=now - 1))
    await store.put(_resp("resp_new", prev="resp_old", expires_at=now + 3600))
    await store.put(_resp("resp_forever"))
    assert await store.get("t1", "resp_old") is None
    assert [r.id for r in await store.chain("t1", "resp_new", 10)] == ["resp_new"]
    assert await store.purge_expired(now) == 1
    assert await store.purge_expired(now) == 0
    assert await store.get("t1", "resp_new") is not None
    assert await store.get("t1", "resp_forever") is not None
