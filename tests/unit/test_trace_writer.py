"""The trace writer against a real SQLite file: batching, journal spill and replay."""

import asyncio
from pathlib import Path

from seawall.config import TraceSettings
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord
from seawall.observe.writer import TraceWriter
from seawall.store.sqlite import SqliteStore


def _rec(i: int) -> TraceRecord:
    return TraceRecord(trace_id=f"{i:032x}", endpoint="chat.completions", started_at=1.0,
                       tenant="t", model="m", deployment="p/m", prompt_tokens=3,
                       completion_tokens=2, input=[{"role": "user", "content": "hi"}],
                       output="yo", latency_ms=1.5)


class FlakyStore(SqliteStore):
    """A real SQLite store that can be switched to refuse writes (a store outage)."""

    down = False

    async def write_traces(self, records: list[TraceRecord]) -> None:
        if self.down:
            raise ConnectionError("store is down")
        await super().write_traces(records)


def _writer(store: SqliteStore, tmp: Path, queue: int = 100) -> tuple[TraceWriter, Metrics]:
    m = Metrics()
    w = TraceWriter(store, m, TraceSettings(queue_size=queue, batch_size=8, flush_interval_s=0.01),
                    tmp / "traces.journal", finalize=lambda r: None)
    return w, m


async def test_records_reach_the_store_in_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    w, m = _writer(store, tmp_path)
    await w.start()
    for i in range(50):
        w.submit(_rec(i))
    await w.flush()
    rows = await store.recent_traces(100)
    assert len(rows) == 50
    assert rows[0]["input"] == '[{"role":"user","content":"hi"}]'
    assert m.trace_written._value.get() == 50
    await w.stop()
    await store.close()


async def test_full_queue_spills_to_journal_and_nothing_is_lost(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    w, m = _writer(store, tmp_path, queue=5)
    for i in range(20):  # writer not started: the queue fills, the rest spills
        w.submit(_rec(i))
    assert (tmp_path / "traces.journal").exists()
    assert m.trace_spilled._value.get() == 15
    await w.start()
    await w.stop()
    assert len(await store.recent_traces(100)) == 20
    assert not (tmp_path / "traces.journal").exists()
    await store.close()


async def test_store_outage_is_journaled_then_replayed(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "db.sqlite")
    await store.open()
    w, m = _writer(store, tmp_path)
    await w.start()
    store.down = True
    for i in range(10):
        w.submit(_rec(i))
    await w.flush()
    assert await store.recent_traces(100) == []
    assert m.trace_spilled._value.get() == 10
    store.down = False
    w.submit(_rec(99))  # the next successful write triggers the replay
    await w.flush()
    for _ in range(100):
        if len(await store.recent_traces(100)) == 11:
            break
        await asyncio.sleep(0.02)
    assert len(await store.recent_traces(100)) == 11
    await w.stop()
    await store.close()


async def test_journal_unwritable_holds_records_in_memory_then_recovers(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "db.sqlite")
    await store.open()
    m = Metrics()
    journal_dir = tmp_path / "not-a-folder"  # a file where the folder should be: writes fail
    journal_dir.write_text("")
    w = TraceWriter(store, m, TraceSettings(batch_size=8, flush_interval_s=0.01, max_held=15),
                    journal_dir / "traces.journal", finalize=lambda r: None)
    await w.start()
    store.down = True
    for i in range(20):
        w.submit(_rec(i))
    await w.flush()
    h = w.health()
    assert not h.ok and h.held == 15
    assert any("journal failing" in r for r in h.reasons)
    assert m.trace_dropped._value.get() == 5  # past max_held: dropped, counted
    store.down = False  # the store comes back: held records go straight to it
    for _ in range(200):
        if w.health().held == 0:
            break
        await asyncio.sleep(0.05)
    assert len(await store.recent_traces(100)) == 15
    assert w.health().ok is False  # drops in the last minute are still reported
    await w.stop()
    await store.close()


async def test_a_record_that_cannot_be_serialised_is_stored_with_a_marker(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    w, m = _writer(store, tmp_path)
    await w.start()
    deep: object = "x"
    for _ in range(400):  # past orjson's 255 levels
        deep = [deep]
    bad = _rec(1)
    bad.input = [{"role": "user", "content": deep}]
    w.submit(bad)
    w.submit(_rec(2))
    await w.flush()
    rows = {r["trace_id"]: r for r in await store.recent_traces(10)}
    assert "not serialisable" in rows[f"{1:032x}"]["input"]
    assert rows[f"{2:032x}"]["input"] == '[{"role":"user","content":"hi"}]'
    assert b"not serialisable" in bad.to_json()  # the journal line too
    await w.stop()
    await store.close()


async def test_journal_each_record_survives_an_abandoned_writer_and_is_trimmed(
        tmp_path: Path) -> None:
    """``journal_each_record``: a record is on disk as soon as it is submitted;
    a writer that never got to write it (a kill -9) leaves it to the next
    start, which stores it; a writer that stored everything leaves nothing."""
    store = FlakyStore(tmp_path / "db.sqlite")
    await store.open()
    settings = TraceSettings(batch_size=8, flush_interval_s=0.01, journal_each_record=True)
    w = TraceWriter(store, Metrics(), settings, tmp_path / "traces.journal",
                    finalize=lambda r: None)
    await w.start()
    for i in range(20):
        w.submit(_rec(i))
    await w.flush()
    assert len(await store.recent_traces(100)) == 20
    w.submit(_rec(99))  # the writer is now idle: everything before is durable
    await w.flush()
    wal = tmp_path / "traces.wal"
    assert wal.stat().st_size == 0  # trimmed once the writer was idle
    store.down = True
    for i in range(20, 30):
        w.submit(_rec(i))
    assert wal.read_bytes().count(b"\n") == 10  # on disk before any write was tried
    w._task.cancel()  # type: ignore[union-attr]  # "kill -9": no stop(), no journal
    assert not (tmp_path / "traces.journal").exists()  # only the write-ahead file has them
    store.down = False
    w2 = TraceWriter(store, Metrics(), settings, tmp_path / "traces.journal",
                     finalize=lambda r: None)
    await w2.start()
    await w2.flush()
    for _ in range(200):
        if len(await store.recent_traces(100)) == 31:
            break
        await asyncio.sleep(0.02)
    ids = {r["trace_id"] for r in await store.recent_traces(100)}
    assert ids == {f"{i:032x}" for i in [*range(30), 99]}
    await w2.stop()
    assert not [p for p in tmp_path.glob("traces.wal*") if p.stat().st_size]
    await store.close()


def test_write_ahead_segments_go_once_their_records_are_durable(tmp_path: Path) -> None:
    from seawall.observe import writer as writer_module

    wal = writer_module.WriteAhead(tmp_path / "traces.wal")
    old = writer_module.WAL_SEGMENT_BYTES
    writer_module.WAL_SEGMENT_BYTES = 1000  # a segment every few records
    try:
        for i in range(20):
            wal.append(_rec(i))
    finally:
        writer_module.WAL_SEGMENT_BYTES = old
    segments = sorted(tmp_path.glob("traces.wal.*"))
    assert len(segments) >= 3
    wal.handled(5, everything=False)  # the first records only: later segments stay
    left = sorted(tmp_path.glob("traces.wal.*"))
    assert 0 < len(left) < len(segments)
    wal.handled(15, everything=False)
    assert not list(tmp_path.glob("traces.wal.*"))


def test_write_ahead_keeps_what_a_follower_still_needs(tmp_path: Path) -> None:
    """A follower (the judges) that took an item at ``t`` keeps every segment
    closed since ``t`` and the active file, even once the records are stored;
    what closed before ``t`` goes; nothing held, everything goes."""
    import time

    from seawall.observe import writer as writer_module

    wal = writer_module.WriteAhead(tmp_path / "traces.wal")
    old = writer_module.WAL_SEGMENT_BYTES
    writer_module.WAL_SEGMENT_BYTES = 1000
    try:
        for i in range(10):
            wal.append(_rec(i))
        taken = time.monotonic()  # the follower's oldest unsettled item, then its record
        for i in range(10, 20):
            wal.append(_rec(i))
    finally:
        writer_module.WAL_SEGMENT_BYTES = old
    wal.append(_rec(20))  # into the active file
    segments = sorted(tmp_path.glob("traces.wal.*"), key=lambda p: int(p.suffix[1:]))
    before = [p for p in segments if int(p.suffix[1:]) <= 10]
    assert before and len(before) < len(segments)
    wal.handled(0, everything=True, keep_since=taken)  # all stored; the follower is not done
    assert not any(p.exists() for p in before)
    kept = sorted(tmp_path.glob("traces.wal.*"))
    assert kept and all(int(p.suffix[1:]) > 10 for p in kept)
    assert (tmp_path / "traces.wal").stat().st_size > 0  # the active file is kept too
    wal.handled(0, everything=True, keep_since=None)
    assert not list(tmp_path.glob("traces.wal.*"))
    assert (tmp_path / "traces.wal").stat().st_size == 0
    wal.close(durable=True)
