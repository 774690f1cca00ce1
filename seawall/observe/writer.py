"""The bounded async batch writer for trace records.

The request path calls :meth:`TraceWriter.submit`, which never waits: the
record goes on a bounded queue, or, when the queue is full, is appended to a
local journal file. A background task takes records in batches, finishes
them (token estimates, cost, metrics, spans: work the client need not wait
for), and writes each batch to the store in one transaction. A batch the
store refuses goes to the journal too, and the journal is replayed once the
store accepts writes again. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from seawall.config import TraceSettings
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord
from seawall.observe.tracing import SpanExport, span_tree
from seawall.store.base import TraceStore

log = logging.getLogger("seawall.traces")

Finalizer = Callable[[TraceRecord], None]
MAX_SPAN_BACKLOG = 200_000  # spans waiting for a slow collector (~100 MB at most)
SLICE_S = 0.002  # longest stretch of writer work between two yields to the event loop


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
        self._finalize = finalize
        self._spans = spans
        self._queue: asyncio.Queue[TraceRecord] = asyncio.Queue(settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._store_ok = True
        self._pending = 0  # records taken off the queue and not yet written or journaled
        self._journal_file: BinaryIO | None = None
        self._span_backlog: list[dict[str, Any]] = []
        self._span_task: asyncio.Task[None] | None = None

    # -- request path --
    def submit(self, rec: TraceRecord) -> None:
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._journal([rec], finalized=False)

    # -- lifecycle --
    async def start(self) -> None:
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="seawall-trace-writer")

    async def stop(self) -> None:
        """Write everything still queued, then stop (called at shutdown)."""
        await self.flush()  # so the task is idle, never mid-write, when cancelled
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            await self._write(self._take_batch())
        await self._replay()
        self._close_journal()  # whatever the store still refused is on disk now
        if self._span_task is not None:
            await self._span_task
        if self._spans is not None:
            self._spans.shutdown()

    async def flush(self, within_s: float = 10.0) -> None:
        """Wait until every record submitted so far is written (for tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (not self._queue.empty() or self._pending) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # -- background task --
    def _take_batch(self) -> list[TraceRecord]:
        batch: list[TraceRecord] = []
        while len(batch) < self.settings.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._pending += len(batch)
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            self._pending += 1
            batch = [first, *self._take_batch()]
            await self._write(batch)
            if self._journal_file is not None:
                self._journal_file.flush()
            self.metrics.trace_queue.set(self._queue.qsize())
            if self._store_ok and self.journal_path.exists():
                await self._replay()
            if self._queue.qsize() < self.settings.batch_size:
                await asyncio.sleep(self.settings.flush_interval_s)

    async def _finish(self, batch: list[TraceRecord]) -> None:
        """Tokens, cost, metrics and spans for each record not yet finished.

        Yields to the event loop after each ``SLICE_S`` of work, so a large
        batch never stalls requests being served meanwhile. (Yielding per
        record count instead starves the writer under high concurrency: each
        yield waits behind every ready request, the queue overflows.)
        """
        spans: list[dict[str, Any]] = []
        clock = time.perf_counter
        slice_end = clock() + SLICE_S
        for rec in batch:
            if rec.finalized:
                continue
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

    async def _write(self, batch: list[TraceRecord]) -> None:
        if not batch:
            return
        try:
            await self._finish(batch)
            try:
                await self.store.write_traces(batch)
                self._store_ok = True
                self.metrics.trace_written.inc(len(batch))
            except Exception as e:
                if self._store_ok:
                    log.warning("trace store write failed; journaling records",
                                extra={"error": repr(e), "records": len(batch)})
                self._store_ok = False
                self._journal(batch, finalized=True)
        finally:
            self._pending -= len(batch)

    # -- journal --
    def _journal(self, records: list[TraceRecord], *, finalized: bool) -> None:
        """Append to the journal through a buffered handle kept open, so a
        burst of overflow costs a write per record, not an open and close;
        the writer flushes it every cycle."""
        for r in records:
            r.finalized = finalized
        if self._journal_file is None:
            self._journal_file = open(self.journal_path, "ab")  # noqa: SIM115 (kept open)
        self._journal_file.write(b"".join(r.to_json() + b"\n" for r in records))
        self.metrics.trace_spilled.inc(len(records))

    def _close_journal(self) -> None:
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    async def _replay(self) -> None:
        """Move journaled records into the store; keep the file if that fails."""
        self._close_journal()
        if not self.journal_path.exists():
            return
        replaying = self.journal_path.with_suffix(".replaying")
        if not replaying.exists():
            os.replace(self.journal_path, replaying)
        lines = replaying.read_bytes().splitlines()
        records = [TraceRecord.from_json(line) for line in lines if line.strip()]
        size = self.settings.batch_size
        for i in range(0, len(records), size):
            batch = records[i:i + size]
            await self._finish(batch)
            try:
                await self.store.write_traces(batch)
            except Exception:
                self._store_ok = False
                self._journal(records[i:], finalized=True)
                replaying.unlink()
                return
            self.metrics.trace_written.inc(len(batch))
        replaying.unlink()
        log.info("replayed journaled trace records", extra={"records": len(records)})
