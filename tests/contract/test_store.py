"""The main store's contract (keys, trace records, canary state), on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest

from seawall.observe.records import TraceRecord
from seawall.store.base import ApiKey
from seawall.store.factory import Stores


def _key(n: int, name: str | None = None, key_hash: str | None = None,
         **kw: object) -> ApiKey:
    fields: dict[str, object] = dict(id=f"k{n}", name=name or f"key{n}", tenant="acme",
                                     key_hash=key_hash or f"h{n}", prefix="sk-sw-ab", rpm=None,
                                     created_at=1000.0 + n)
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


def _record(n: int, **kw: object) -> TraceRecord:
    base: dict[str, object] = dict(trace_id=f"t{n:05d}", endpoint="/v1/chat/completions",
                                   started_at=1000.0 + n, tenant="acme", model="m",
                                   deployment="d", input_hash="x", output=f"answer {n}")
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


async def test_keys_round_trip_with_every_field(stores: Stores) -> None:
    key = _key(1, rpm=60, priority=2, cache=False, tpm=1000, budget_usd=5.0,
               budget_period="month")
    await stores.main.create_key(key)
    assert await stores.keys.key_by_hash("h1") == key
    assert await stores.keys.key_by_hash("nope") is None
    await stores.main.create_key(_key(2))
    assert [k.id for k in await stores.main.list_keys()] == ["k1", "k2"]


async def test_revoke_by_name_or_id_and_ambiguity(stores: Stores) -> None:
    await stores.main.create_key(_key(1, name="twin"))
    await stores.main.create_key(_key(2, name="twin"))
    with pytest.raises(ValueError, match="2 active keys are named 'twin'"):
        await stores.main.revoke_key("twin")
    revoked = await stores.main.revoke_key("k1")
    assert revoked is not None and revoked.revoked_at is not None and not revoked.active
    assert await stores.main.revoke_key("k1") is None  # already revoked
    looked_up = await stores.keys.key_by_hash("h1")
    assert looked_up is not None and not looked_up.active
    assert [k.id for k in await stores.main.list_keys()] == ["k2"]
    assert [k.id for k in await stores.main.list_keys(include_revoked=True)] == ["k1", "k2"]


async def test_duplicate_key_hash_is_refused(stores: Stores) -> None:
    await stores.main.create_key(_key(1))
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own integrity error
        await stores.main.create_key(_key(9, key_hash="h1"))


async def test_traces_in_batches_replay_is_idempotent_and_tail_follows(stores: Stores) -> None:
    batch = [_record(i, input={"messages": [{"role": "user", "content": f"q{i}"}]},
                     attempts=[], rag={"chunks": [1, 2]}) for i in range(300)]
    await stores.main.write_traces(batch)
    await stores.main.write_traces(batch[:50])  # a journal replay after a crash
    recent = await stores.main.recent_traces(10)
    assert [r["trace_id"] for r in recent] == [f"t{i:05d}" for i in range(290, 300)]
    one = await stores.main.get_trace("t00007")
    assert one is not None and one["output"] == "answer 7" and '"q7"' in one["input"]
    assert bool(one["stream"]) is False and one["status"] == 200
    after = await stores.main.recent_traces(500, after_rowid=recent[-1]["rowid"])
    assert after == []
    await stores.main.write_traces([_record(300)])
    after = await stores.main.recent_traces(500, after_rowid=recent[-1]["rowid"])
    assert [r["trace_id"] for r in after] == ["t00300"]
    assert await stores.main.get_trace("missing") is None


async def test_text_that_postgres_copy_must_escape_survives(stores: Stores) -> None:
    tricky = "tab\there\nnewline \\N backslash \\ quote ' \" unicode é 🌊"
    await stores.main.write_traces([_record(1, output=tricky, user="u\t1")])
    got = await stores.main.get_trace("t00001")
    assert got is not None and got["output"] == tricky and got["user"] == "u\t1"


async def test_experiment_state_saved_and_overwritten(stores: Stores) -> None:
    assert await stores.main.experiment_states() == {}
    await stores.main.save_experiment_state("canary-a", {"step": 1, "history": []})
    await stores.main.save_experiment_state("canary-a", {"step": 2, "history": ["up"]})
    await stores.main.save_experiment_state("canary-b", {"step": 0})
    assert await stores.main.experiment_states() == {
        "canary-a": {"step": 2, "history": ["up"]}, "canary-b": {"step": 0}}


async def test_concurrent_trace_batches_all_land(stores: Stores) -> None:
    await asyncio.gather(*(stores.main.write_traces([_record(b * 100 + i) for i in range(100)])
                           for b in range(5)))
    assert len(await stores.main.recent_traces(1000)) == 500


async def test_ping(stores: Stores) -> None:
    await stores.main.ping()
    await stores.keys.ping()
    assert time.time() > 0


async def test_retention_deletes_only_older_records_in_batches(stores: Stores) -> None:
    await stores.main.write_traces([_record(i) for i in range(120)])  # started_at 1000..1119
    assert await stores.main.delete_traces_before(1050.0, batch=7) == 50
    left = await stores.main.recent_traces(1000)
    assert [r["trace_id"] for r in left] == [f"t{i:05d}" for i in range(50, 120)]
    assert await stores.main.delete_traces_before(1050.0) == 0
