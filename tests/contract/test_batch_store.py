"""The Files/Batch store's contract, on SQLite (files on disk) and Postgres
(bytea chunks): same assertions for both."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from seawall.batches.store_api import CHUNK, Batch, BatchStore, LineResult
from seawall.store.factory import Stores


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[BatchStore]:
    s = stores.files()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def content(store: BatchStore, file_id: str) -> bytes:
    got = [p async for p in store.read_file(file_id)]
    assert all(len(p) <= CHUNK for p in got)
    return b"".join(got)


async def test_files_round_trip_scoped_by_tenant(store: BatchStore) -> None:
    big = b"x" * (CHUNK + 10)
    f = await store.put_file("t1", "in.jsonl", "batch", pieces(b"ab", big, b"c"))
    assert f.bytes == 3 + len(big)
    assert await content(store, f.id) == b"ab" + big + b"c"
    assert (await store.get_file(f.id, "t1")) is not None
    assert await store.get_file(f.id, "t2") is None
    assert not await store.delete_file(f.id, "t2")
    g = await store.put_file("t1", "two.jsonl", "batch", pieces(b"{}\n"))
    await store.put_file("t2", "other.jsonl", "batch", pieces(b"{}\n"))
    page1 = await store.list_files("t1", limit=1)
    assert [x.id for x in page1] in ([g.id], [f.id])
    rest = await store.list_files("t1", after=page1[0].id, limit=10)
    assert {x.id for x in page1 + rest} == {f.id, g.id}
    assert await store.list_files("t1", purpose="batch_output") == []
    assert await store.delete_file(f.id, "t1")
    assert await store.get_file(f.id) is None
    # A given id is rewritten whole (a batch's result files, written again after a restart).
    again = await store.put_file("t1", "out.jsonl", "batch_output", pieces(b"one"), "file-x")
    again = await store.put_file("t1", "out.jsonl", "batch_output", pieces(b"two"), "file-x")
    assert await content(store, again.id) == b"two"


async def test_batches_and_lines_are_stored_once(store: BatchStore) -> None:
    b = Batch(id="batch_1", tenant="t1", endpoint="/v1/chat/completions",
              input_file_id="file-1", metadata={"k": "v"}, auth={"tenant": "t1"})
    await store.create_batch(b)
    got = await store.get_batch("batch_1", "t1")
    assert got is not None and got.metadata == {"k": "v"} and got.status == "validating"
    assert await store.get_batch("batch_1", "t2") is None
    assert await store.set_status("batch_1", "in_progress", "in_progress_at",
                                  only_from=("validating",))
    assert not await store.set_status("batch_1", "in_progress", only_from=("validating",))
    await store.update_batch("batch_1", total=3, errors=[{"code": "x"}])
    got = await store.get_batch("batch_1")
    assert got is not None and got.total == 3 and got.errors == [{"code": "x"}]
    assert got.in_progress_at is not None
    assert [x.id for x in await store.list_batches("t1")] == ["batch_1"]
    assert await store.list_batches("t2") == []
    assert [x.id for x in await store.list_batches(None)] == ["batch_1"]  # every tenant's

    assert await store.put_line("batch_1", LineResult(0, "a", True, b'{"n":0}'))
    assert not await store.put_line("batch_1", LineResult(0, "a", False, b'{"n":"again"}'))
    assert await store.put_line("batch_1", LineResult(2, None, False, b'{"n":2}'))
    assert await store.done_lines("batch_1", 0, 2) == {0}
    assert await store.counts("batch_1") == (1, 1)
    assert b"".join([p async for p in store.records("batch_1", True)]) == b'{"n":0}\n'
    assert b"".join([p async for p in store.records("batch_1", False)]) == b'{"n":2}\n'
    assert await store.first_line_of("batch_1", "a", 0) == 0
    assert await store.first_line_of("batch_1", "a", 5) == 0
    assert await store.first_line_of("batch_1", "b", 5) == 5


async def test_retention_keeps_running_batches_inputs_and_new_things(store: BatchStore) -> None:
    import time

    old_input = await store.put_file("t1", "old.jsonl", "batch", pieces(b"{}\n"))
    running_input = await store.put_file("t1", "running.jsonl", "batch", pieces(b"{}\n"))
    await store.create_batch(Batch(id="batch_done", tenant="t1", endpoint="/v1/embeddings",
                                   input_file_id=old_input.id, auth={}))
    await store.set_status("batch_done", "completed", "completed_at")
    await store.put_line("batch_done", LineResult(0, "a", True, b"{}"))
    await store.create_batch(Batch(id="batch_running", tenant="t1", endpoint="/v1/embeddings",
                                   input_file_id=running_input.id, auth={}))
    await store.set_status("batch_running", "in_progress", "in_progress_at")
    cutoff = time.time() + 1  # everything above is "old"
    assert await store.expire(cutoff - 3600) == 0  # nothing that old
    assert await store.expire(cutoff) == 2  # the finished batch and its input file
    assert await store.get_batch("batch_done") is None
    assert await store.counts("batch_done") == (0, 0)
    assert await store.get_file(old_input.id) is None
    assert await store.get_batch("batch_running") is not None
    assert await store.get_file(running_input.id) is not None  # still being read
    fresh = await store.put_file("t1", "new.jsonl", "batch", pieces(b"{}\n"))
    assert await store.expire(fresh.created_at - 1) == 0
