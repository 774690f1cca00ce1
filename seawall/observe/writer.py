"""The bounded async batch writer for trace records, a supervised component.

The request path calls :meth:`TraceWriter.submit`, which never waits and
never raises. A background task takes records in batches, finishes them
(token estimates, cost, metrics, spans: work the client need not wait for)
and writes each batch to the store in one transaction.

Failure model (docs/operations.md#trace-records-and-failures):

- the store refuses a batch (down, locked, disk full, read-only) → the batch
  goes to the local journal (``<data_dir>/traces.journal``);
- the journal cannot be written either (same full or read-only disk) → the
  records are held in a bounded memory buffer (``observe.traces.max_held``);
  past it they are dropped, counted (``seawall_trace_records_dropped_total``)
  and logged at error level;
- the writer retries with backoff by itself, held records first, then the
  journal; nothing needs a restart once the fault clears;
- a record that cannot be serialised is stored with a marker in place of
  the field (records.py), never fatal;
- replay reads the journal in a thread, batch by batch, remembers how far it
  got (a restart resumes there; inserts are idempotent by trace id anyway),
  and moves torn or corrupt lines to ``traces.quarantine``, counted;
- the loop itself is supervised: an unexpected error restarts it after a
  backoff, counted in ``seawall_background_restarts_total{task="trace_writer"}``;
- :meth:`stop` is bounded: what the store does not take in time goes to the
  journal.

The loss window: a record is in memory from the end of its request until its
batch commits, at most ``flush_interval_s`` plus one write. ``kill -9`` loses
those (SIGTERM loses nothing); the journal and the store are durable. With
``journal_each_record`` there is no window: each record is also appended to a
write-ahead file (``traces.wal``) as its request finishes, before the client
has the end of the answer; segments are deleted once every record in them is
stored or journaled, and a start after a crash moves what is left into the
journal, whose replay is idempotent.

A :class:`Follower` (the judges' sampler, quality/judges.py) derives durable
work from records: write-ahead segments closed after its oldest unsettled
item was taken (``unsettled_since()``) are kept, and each replayed batch is
given to ``replayed()`` before its place in the journal is confirmed, so
what it derives survives a crash like the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seawall.config import TraceSettings
from seawall.observe.metrics import Metrics
from seawall.observe.records import SLICE_S, TraceRecord
from seawall.observe.tracing import SpanExport, span_tree
from seawall.store.base import TraceStore

log = logging.getLogger("seawall.traces")

Finalizer = Callable[[TraceRecord], None]
MAX_SPAN_BACKLOG = 200_000  # spans waiting for a slow collector (~100 MB at most)
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # backoff of recovery attempts while degraded
WAL_SEGMENT_BYTES = 8 << 20  # a write-ahead segment is closed past this size


class Follower(Protocol):
    def unsettled_since(self) -> float | None:
        """``time.monotonic()`` when the oldest item derived from a record and
        not yet durable was taken (before its record was appended), or None."""
        ...

    async def replayed(self, records: list[TraceRecord]) -> None:
        """Replayed records, already stored; raising makes the replay stop
        there and retry later (the store de-duplicates)."""
        ...


@dataclass
class WriterHealth:
    """What /ready and the metrics say about the writer."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    queued: int = 0  # waiting in memory for the store (queue + batch being written)
    held: int = 0  # in memory because neither the store nor the journal took them
    journal_bytes: int = 0
    lag_s: float = 0.0  # age of the oldest record not yet written anywhere durable


class JournalReader:
    """Reads a journal file batch by batch (called in a thread): parses the
    good lines, moves the rest to the quarantine file, and remembers the byte
    offset of the last batch the caller confirmed (``<file>.pos``)."""

    def __init__(self, path: Path, quarantine: Path, batch: int) -> None:
        self.path = path
        self.pos_path = path.with_name(path.name + ".pos")
        self.quarantine = quarantine
        self.batch = batch
        self.quarantined = 0
        self._file = open(path, "rb")  # noqa: SIM115 (closed in close())
        with contextlib.suppress(OSError, ValueError):
            self._file.seek(int(self.pos_path.read_text()))
        self.offset = self._file.tell()

    def next_batch(self) -> list[TraceRecord]:
        records: list[TraceRecord] = []
        bad: list[bytes] = []
        while len(records) < self.batch:
            line = self._file.readline()
            if not line:
                break
            if line.strip():
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line (no newline)")
                    records.append(TraceRecord.from_json(line))
                except Exception:  # torn, corrupt or from an incompatible version
                    bad.append(line if line.endswith(b"\n") else line + b"\n")
        if bad:
            with open(self.quarantine, "ab") as q:
                q.write(b"".join(bad))
            self.quarantined += len(bad)
        return records

    def confirm(self) -> None:
        """Everything read so far is stored: a restart resumes after it."""
        self.offset = self._file.tell()
        with contextlib.suppress(OSError):
            self.pos_path.write_text(str(self.offset))

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.pos_path.unlink()


def _append(fd: int, records: list[TraceRecord]) -> list[TraceRecord]:
    """Append ``records`` as journal lines; returns those not (fully) written.
    A line cut by a full disk is quarantined at replay; its record is among
    the returned ones, so it is kept in memory (the store de-duplicates)."""
    lines = [r.to_json() + b"\n" for r in records]
    data = b"".join(lines)
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, memoryview(data)[written:])
    except OSError:
        pass
    done, end = 0, 0
    for line in lines:
        end += len(line)
        if end > written:
            break
        done += 1
    return records[done:]


class WriteAhead:
    """The write-ahead file of ``journal_each_record``: one line per record,
    appended as its request finishes, in segments that are deleted once
    every record in them is durable elsewhere (the store or the journal).

    Records reach the store in the order they were appended (one writer
    task, FIFO batches), so a count is enough to know which segments are
    done; a record spilled out of order only delays deletion until the
    writer is next idle, when everything appended is durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0
        self._appended = 0  # records appended so far
        self._handled = 0  # records durable elsewhere, counted in append order
        # Full segments: path, count of records appended by its end, when it closed.
        self._closed: list[tuple[Path, int, float]] = []
        self.failed = 0  # appends that failed (disk full...): counted, never raised

    def append(self, rec: TraceRecord) -> None:
        line = rec.to_json() + b"\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line)
        except OSError:
            self.failed += 1
            return
        self._appended += 1
        self._size += len(line)
        if self._size > WAL_SEGMENT_BYTES:
            self._rotate()

    def _rotate(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        segment = self.path.with_name(f"{self.path.name}.{self._appended}")
        with contextlib.suppress(OSError):
            os.replace(self.path, segment)
            self._closed.append((segment, self._appended, time.monotonic()))
        self._size = 0

    def handled(self, n: int, everything: bool, keep_since: float | None = None) -> None:
        """``n`` more records are durable elsewhere; with ``everything``, all
        appended so far are. ``keep_since``: a follower still needs records
        appended since then (see :class:`Follower`); older segments can go."""
        self._handled = self._appended if everything else self._handled + n
        while self._closed and self._closed[0][1] <= self._handled and (
                keep_since is None or keep_since > self._closed[0][2]):
            with contextlib.suppress(OSError):
                self._closed[0][0].unlink()
            self._closed.pop(0)
        if everything and keep_since is None and self._size and self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                self._size = 0

    def close(self, durable: bool, keep_since: float | None = None) -> None:
        """At shutdown; ``durable``: every record is stored or journaled."""
        if durable:
            self.handled(0, everything=True, keep_since=keep_since)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def recover_into(self, journal: Path) -> int:
        """At start (in a thread): append what a crash left to ``journal``,
        then delete it; returns the bytes moved."""
        moved = 0
        for segment in sorted(self.path.parent.glob(self.path.name + "*")):
            data = segment.read_bytes()
            if data:
                if not data.endswith(b"\n"):
                    data += b"\n"  # a torn last line: quarantined by replay
                with open(journal, "ab") as j:
                    j.write(data)
                    j.flush()
                    os.fsync(j.fileno())
                moved += len(data)
            segment.unlink()
        return moved


class TraceWriter:
    def __init__(
        self,
        store: TraceStore,
        metrics: Metrics,
        settings: TraceSettings,
        journal_path: Path,
        finalize: Finalizer,
        spans: SpanExport | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.journal_path = journal_path
        self.replaying_path = journal_path.with_suffix(".replaying")
        self.quarantine_path = journal_path.with_suffix(".quarantine")
        self._finalize = finalize
        self._spans = spans
        self._queue: asyncio.Queue[TraceRecord] = asyncio.Queue(settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._store_ok = True
        self._journal_ok = True
        self._pending = 0  # records taken off the queue and not yet written or journaled
        self._held: deque[TraceRecord] = deque()
        self._journal_fd: int | None = None
        self._retry_s = RETRY_MIN_S
        self._retry_at = 0.0
        self._dropped_at = 0.0  # when records were last dropped
        self._error: str | None = None  # the last store or journal error, for /ready
        self._span_backlog: list[dict[str, Any]] = []
        self._span_task: asyncio.Task[None] | None = None
        self.wal = (WriteAhead(journal_path.with_suffix(".wal"))
                    if settings.journal_each_record else None)
        self.follower: Follower | None = None
        metrics.before_render(self._gauges)

    # -- request path --
    def submit(self, rec: TraceRecord) -> None:
        """Hand a record over; never waits, never raises."""
        if self.wal is not None:
            self.wal.append(rec)
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._spill([rec])

    # -- lifecycle --
    async def start(self) -> None:
        with contextlib.suppress(OSError):
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        if self.wal is not None:
            try:  # left by a crash: into the journal, replayed like any other
                await asyncio.to_thread(self.wal.recover_into, self.journal_path)
            except OSError:
                log.exception("moving the trace write-ahead file into the journal failed")
        self._task = asyncio.create_task(self._supervise(), name="seawall-trace-writer")

    async def stop(self, within_s: float = 10.0) -> None:
        """Write what is queued, then replay the journal, within ``within_s``;
        what the store does not take in time goes to (or stays in) the
        journal, for the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        await self.flush(within_s * 0.8)  # so the task is idle, not mid-write, when cancelled
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        while not self._queue.empty():
            batch = self._take_batch()
            left = deadline - loop.time()
            if left <= 0 or not self._store_ok:
                self._spill(batch)
                self._pending -= len(batch)
                continue
            with contextlib.suppress(TimeoutError):  # a cut write journals its batch itself
                await asyncio.wait_for(self._write(batch), left)
        if self._held and self._store_ok:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recover(), max(0.0, deadline - loop.time()))
        if self._store_ok and loop.time() < deadline:
            # As much of the journal as the time allows; the rest waits for the
            # next start (replay is idempotent and resumes where it stopped).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replay(), deadline - loop.time())
        if self._held:
            held = list(self._held)
            self._held.clear()
            self._spill(held)
        if self._held:
            log.critical("trace records lost at shutdown: neither the store nor the journal "
                         "took them", extra={"records": len(self._held),
                                             "error": self._error})
        self._close_journal()
        if self.wal is not None:
            self.wal.close(durable=not self._held, keep_since=self._kept_since())
        if self._span_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._span_task),
                                       max(0.1, deadline - loop.time()))
        if self._spans is not None:
            self._spans.shutdown()

    async def flush(self, within_s: float = 10.0) -> None:
        """Wait until every record submitted so far is written or journaled
        (for tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (not self._queue.empty() or self._pending) and loop.time() < deadline:  # noqa: ASYNC110
            if self._task is None or self._task.done():
                return
            await asyncio.sleep(0.01)

    # -- health --
    def health(self) -> WriterHealth:
        reasons = []
        if self._task is None or self._task.done():
            reasons.append("trace writer not running")
        if not self._store_ok:
            reasons.append(f"trace store failing ({self._error})")
        if not self._journal_ok:
            reasons.append(f"trace journal failing ({self._error}); "
                           f"{len(self._held)} records held in memory")
        if self._dropped_at and time.monotonic() - self._dropped_at < 60:
            reasons.append("trace records dropped in the last minute")
        lag = self._lag_s()
        if lag > self.settings.max_lag_s:
            reasons.append(f"trace writer {lag:.0f}s behind (observe.traces.max_lag_s)")
        try:
            journal = self.journal_path.stat().st_size
        except OSError:
            journal = 0
        return WriterHealth(ok=not reasons, reasons=reasons,
                            queued=self._queue.qsize() + self._pending, held=len(self._held),
                            journal_bytes=journal, lag_s=round(lag, 3))

    def _lag_s(self) -> float:
        oldest: TraceRecord | None = None
        if self._held:
            oldest = self._held[0]
        elif not self._queue.empty():
            oldest = self._queue._queue[0]  # type: ignore[attr-defined]  # a peek
        if oldest is None:
            return 0.0
        return max(0.0, time.time() - oldest.started_at - oldest.latency_ms / 1000)

    def _gauges(self) -> None:
        self.metrics.trace_queue.set(self._queue.qsize() + self._pending + len(self._held))
        self.metrics.trace_held.set(len(self._held))

    # -- background task --
    async def _supervise(self) -> None:
        """Run the loop; an unexpected error restarts it after a backoff,
        counted and logged, never silent."""
        delay = RETRY_MIN_S
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except BaseException:
                self.metrics.background_restarts.labels("trace_writer").inc()
                log.exception("trace writer failed; restarting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _take_batch(self) -> list[TraceRecord]:
        batch: list[TraceRecord] = []
        while len(batch) < self.settings.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._pending += len(batch)
        return batch

    def _backlog(self) -> bool:
        return bool(self._held) or not self._store_ok or self.journal_path.exists() \
            or self.replaying_path.exists()

    async def _run(self) -> None:
        while True:
            if self._backlog():
                # Degraded or catching up: wake up for the next recovery step
                # even when no new record arrives.
                if self._queue.empty():
                    wait = self._retry_at - time.monotonic()
                    await asyncio.sleep(min(max(wait, 0.05), self.settings.flush_interval_s))
                batch = self._take_batch()
            else:
                first = await self._queue.get()
                self._pending += 1
                batch = [first, *self._take_batch()]
            await self._write(batch)
            if self._backlog() and time.monotonic() >= self._retry_at:
                await self._recover()
                if not self._store_ok or self._held:  # still degraded: wait longer next time
                    self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
                    self._retry_at = time.monotonic() + self._retry_s
            if self._queue.qsize() < self.settings.batch_size:
                await asyncio.sleep(self.settings.flush_interval_s)

    async def _finish(self, batch: list[TraceRecord]) -> None:
        """Tokens, cost, metrics and spans for each record not yet finished.

        Yields to the event loop after each ``SLICE_S`` of work, so a large
        batch never stalls requests being served meanwhile. (Token counts left
        to the writer are of short texts: RecordStage counts long ones in a
        thread, ml/tokens.py ``is_long``.)
        """
        todo = [r for r in batch if not r.finalized]
        spans: list[dict[str, Any]] = []
        clock = time.perf_counter
        slice_end = clock() + SLICE_S
        for rec in todo:
            try:
                self._finalize(rec)
                self.metrics.observe(rec)
                if self._spans is not None:
                    spans.extend(span_tree(rec))
            except Exception:  # a bad record must not stop the writer
                log.exception("could not finish trace record", extra={"trace": rec.trace_id})
            rec.finalized = True
            if clock() > slice_end:
                await asyncio.sleep(0)
                slice_end = clock() + SLICE_S
        if spans:
            self._queue_spans(spans)

    def _queue_spans(self, spans: list[dict[str, Any]]) -> None:
        """Export beside the writer, never in its way: a slow collector must
        not hold up trace records. Spans are telemetry: past a bounded
        backlog they are dropped, and counted."""
        if len(self._span_backlog) + len(spans) > MAX_SPAN_BACKLOG:
            self.metrics.spans_dropped.inc(len(spans))
            return
        self._span_backlog.extend(spans)
        if self._span_task is None or self._span_task.done():
            self._span_task = asyncio.create_task(self._export_spans())

    async def _export_spans(self) -> None:
        assert self._spans is not None
        while self._span_backlog:
            batch, self._span_backlog = self._span_backlog, []
            try:
                await asyncio.to_thread(self._spans.export, batch)
            except Exception as e:
                log.warning("span export failed", extra={"error": repr(e), "spans": len(batch)})

    async def _store_batch(self, batch: list[TraceRecord]) -> bool:
        """One transaction; False (and the writer marked degraded) if refused."""
        try:
            await self.store.write_traces(batch)
        except Exception as e:
            if self._store_ok:
                log.error("trace store write failed; journaling records until it recovers",
                          extra={"error": repr(e), "records": len(batch)})
            self._error = f"{type(e).__name__}: {e}"[:300]
            self._store_ok = False
            self._backoff()
            return False
        if not self._store_ok:
            log.warning("trace store writes work again")
            self._retry_at = 0.0  # catch up on the backlog now
        self._store_ok = True
        self._retry_s = RETRY_MIN_S
        self.metrics.trace_written.inc(len(batch))
        return True

    async def _write(self, batch: list[TraceRecord]) -> None:
        if not batch:
            return
        try:
            await self._finish(batch)
            if not await self._store_batch(batch):
                self._spill(batch)
        except asyncio.CancelledError:
            # Stopped mid-write (a hung store at shutdown): journal the batch;
            # if the store commits it after all, replay de-duplicates it.
            self._spill(batch)
            raise
        except Exception:  # never lose a batch to a bug in finishing it
            log.exception("trace batch failed; journaling it")
            self._spill(batch)
        finally:
            self._pending -= len(batch)
            if self.wal is not None:
                self._trim_wal(len(batch))

    def _trim_wal(self, handled: int) -> None:
        """A batch is stored or journaled: write-ahead segments whose records
        all are can go (none while records are held in memory only)."""
        assert self.wal is not None
        if self._held:
            return
        idle = self._queue.empty() and not self._pending
        self.wal.handled(handled, everything=idle, keep_since=self._kept_since())

    def _kept_since(self) -> float | None:
        """Since when the follower needs write-ahead records (never raises)."""
        if self.follower is None:
            return None
        try:
            return self.follower.unsettled_since()
        except Exception:
            log.exception("trace follower failed")
            return 0.0  # keep everything

    def _backoff(self) -> None:
        """A failure: the next recovery attempt waits for the current backoff
        step (which grows per failed recovery attempt, not per failed batch)."""
        now = time.monotonic()
        if self._retry_at <= now:
            self._retry_at = now + self._retry_s

    async def _recover(self) -> None:
        """Held records to the store (or else the journal), then the journal
        to the store. Called while degraded, at most once per backoff step."""
        while self._held:
            batch = [self._held.popleft() for _ in range(min(len(self._held),
                                                              self.settings.batch_size))]
            try:
                stored = await self._store_batch(batch)
            except asyncio.CancelledError:
                self._held.extendleft(reversed(batch))  # still ours: stop() journals them
                raise
            if stored:
                continue
            held = [*batch, *self._held]
            self._held.clear()
            self._spill(held)  # back into memory if the journal still fails
            return
        self._journal_ok = True  # nothing waits on the journal any more
        if self._store_ok:
            await self._replay()
        elif not self.journal_path.exists() and not self.replaying_path.exists():
            # Nothing is waiting: an empty transaction tells whether the store
            # is back (a real batch will tell for sure).
            await self._store_batch([])

    # -- journal --
    def _spill(self, records: list[TraceRecord]) -> None:
        """To the journal, or, if it cannot be written, to the bounded memory
        buffer; past that, dropped and counted. Never raises."""
        left = records
        try:
            if self._journal_fd is None:
                self._journal_fd = os.open(self.journal_path,
                                           os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            left = _append(self._journal_fd, records)
        except OSError as e:
            self._error = f"{type(e).__name__}: {e}"[:300]
        self.metrics.trace_spilled.inc(len(records) - len(left))
        if not left:
            if not self._journal_ok:
                log.warning("trace journal writes work again")
            self._journal_ok = True
            return
        if self._journal_ok:
            log.error("trace journal write failed; holding records in memory",
                      extra={"error": self._error, "records": len(left)})
        self._journal_ok = False
        self._close_journal()  # reopened next time (the file may have been removed)
        self._backoff()
        room = self.settings.max_held - len(self._held)
        self._held.extend(left[:max(0, room)])
        if len(left) > room:
            lost = len(left) - max(0, room)
            self.metrics.trace_dropped.inc(lost)
            self._dropped_at = time.monotonic()
            log.error("trace records dropped: store, journal and memory buffer are full",
                      extra={"records": lost, "error": self._error})

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal_fd)
            self._journal_fd = None

    async def _replay(self) -> None:
        """Move journaled records into the store, reading in a thread; stops
        (keeping its place) at the first refused batch."""
        self._close_journal()
        try:
            if not self.replaying_path.exists():
                if not self.journal_path.exists():
                    return
                os.replace(self.journal_path, self.replaying_path)
            reader = await asyncio.to_thread(JournalReader, self.replaying_path,
                                             self.quarantine_path, self.settings.batch_size)
        except OSError as e:
            self._error = f"{type(e).__name__}: {e}"[:300]
            self._backoff()
            return
        total = 0
        try:
            while batch := await asyncio.to_thread(reader.next_batch):
                await self._finish(batch)
                if not await self._store_batch(batch):
                    return
                if self.follower is not None:
                    try:
                        await self.follower.replayed(batch)
                    except Exception as e:  # its store is down or not open yet: later
                        log.info("trace replay waits for %s: %s",
                                 type(self.follower).__name__, e)
                        self._backoff()
                        return
                total += len(batch)
                await asyncio.to_thread(reader.confirm)
            await asyncio.to_thread(reader.remove)
        except OSError as e:
            self._error = f"{type(e).__name__}: {e}"[:300]
            self._backoff()
            return
        finally:
            reader.close()
            if reader.quarantined:
                self.metrics.trace_quarantined.inc(reader.quarantined)
                log.error("corrupt or torn trace journal lines moved to %s",
                          self.quarantine_path, extra={"records": reader.quarantined})
        log.info("replayed journaled trace records", extra={"records": total})

