"""Batches: validation, the job that runs one, cancellation, result files.

A batch is one job (kind ``batch``, id ``job-<batch id>``) on the durable
queue. The job streams the input file line by line, skips lines that
already have a stored outcome, and sends the others through the pipeline
``batches.concurrency`` at a time; each outcome is stored once by (batch,
line) the moment it is known. A runner that dies mid-batch loses only the
lines in flight: the job is claimed again and carries on where the store
says it stopped. Memory holds one window of lines, never the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from seawall.batches.lines import ENDPOINTS, answer
from seawall.batches.store_api import Batch, BatchStore, LineResult, new_id
from seawall.config import BatchSettings
from seawall.errors import InvalidRequest, NotFound
from seawall.jobs.queue import Job

if TYPE_CHECKING:
    from seawall.app import Services

log = logging.getLogger("seawall.batches")

KIND = "batch"
FINAL = ("completed", "failed", "cancelled", "expired")
MAX_CUSTOM_ID = 512
WINDOW_PER_SLOT = 8  # lines looked at per window, per unit of concurrency


async def split_lines(chunks: AsyncIterator[bytes], limit: int
                      ) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number from 0, content) for each line; content None for a line
    longer than ``limit`` (its bytes are dropped as they come, not kept)."""
    buf = bytearray()
    n, over = 0, False
    async for piece in chunks:
        start = 0
        while True:
            i = piece.find(b"\n", start)
            end = len(piece) if i < 0 else i
            if not over:
                buf += piece[start:end]
                if len(buf) > limit:
                    over = True
                    buf.clear()
            if i < 0:
                break
            yield n, None if over else bytes(buf)
            buf.clear()
            n, over, start = n + 1, False, i + 1
    if buf or over:
        yield n, None if over else bytes(buf)


def _req_id(batch_id: str, line: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]


def _error_record(batch_id: str, line: int, custom_id: str | None, code: str,
                  message: str) -> LineResult:
    rec = {"id": _req_id(batch_id, line), "custom_id": custom_id, "response": None,
           "error": {"code": code, "message": message, "line": line + 1}}
    return LineResult(line, custom_id, False, orjson.dumps(rec))


class BatchService:
    def __init__(self, settings: BatchSettings, store: BatchStore, svc: Services,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.settings = settings
        self.stopping = stopping
        self.store = store
        self.svc = svc

    # -- API side --

    async def create(self, tenant: str, auth: dict[str, Any], input_file_id: Any,
                     endpoint: Any, completion_window: Any, metadata: Any) -> Batch:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}.",
                                 param="endpoint")
        if completion_window != "24h":
            raise InvalidRequest("completion_window must be '24h'.", param="completion_window")
        if metadata is not None and not (
                isinstance(metadata, dict) and len(metadata) <= 16 and all(
                    isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                    for k, v in metadata.items())):
            raise InvalidRequest("metadata: at most 16 string pairs (keys up to 64 "
                                 "characters, values up to 512).", param="metadata")
        if not isinstance(input_file_id, str) or (
                f := await self.store.get_file(input_file_id, tenant)) is None:
            raise NotFound(f"No such file: {str(input_file_id)[:100]!r}.", param="input_file_id")
        if f.purpose != "batch":
            raise InvalidRequest("The input file's purpose must be 'batch'.",
                                 param="input_file_id")
        now = time.time()
        batch = Batch(id=new_id("batch_"), tenant=tenant, endpoint=endpoint,
                      input_file_id=input_file_id, metadata=metadata, auth=auth,
                      created_at=now, expires_at=now + 24 * 3600)
        await self.store.create_batch(batch)
        try:
            await self.svc.jobs.enqueue(KIND, {"batch_id": batch.id}, tenant=tenant,
                                        job_id="job-" + batch.id, max_attempts=10)
        except Exception:
            await self.store.set_status(batch.id, "failed", "failed_at")
            raise
        return batch

    async def cancel(self, batch_id: str, tenant: str) -> Batch | None:
        """Stop starting lines; the job ends the batch ``cancelled`` with the
        outcomes it has."""
        await self.store.set_status(batch_id, "cancelling", "cancelling_at",
                                    only_from=("validating", "in_progress"))
        return await self.store.get_batch(batch_id, tenant)

    # -- the job --

    async def run(self, job: Job) -> dict[str, Any]:
        batch_id = job.payload["batch_id"]
        b = await self.store.get_batch(batch_id)
        if b is None or b.status in FINAL:
            return {"status": b.status if b else "missing"}
        if await self.store.get_file(b.input_file_id) is None:  # deleted meanwhile
            await self.store.update_batch(b.id, errors=[{
                "code": "input_file_missing", "line": None, "param": "input_file_id",
                "message": "The input file was deleted before the batch ended."}])
            await self.store.set_status(b.id, "failed", "failed_at")
            return {"status": "failed"}
        if b.status == "validating":
            total = await self._count(b)
            if total > self.settings.max_lines:
                await self.store.update_batch(b.id, errors=[{
                    "code": "too_many_lines", "line": None, "param": "input_file_id",
                    "message": f"The file has {total} lines; at most "
                               f"{self.settings.max_lines} are accepted (batches.max_lines)."}])
                await self.store.set_status(b.id, "failed", "failed_at")
                return {"status": "failed"}
            await self.store.update_batch(b.id, total=total)
            await self.store.set_status(b.id, "in_progress", "in_progress_at",
                                        only_from=("validating",))
        current = await self.store.get_batch(b.id)
        if current is not None and current.status == "cancelling":  # before any line ran
            return await self._finish(b, "cancelled", "cancelled_at")
        if await self._lines(b):
            return await self._finish(b, "completed", "completed_at")
        return await self._finish(b, "cancelled", "cancelled_at")

    async def _count(self, b: Batch) -> int:
        n = 0
        async for _, data in split_lines(self.store.read_file(b.input_file_id),
                                         self.settings.max_line_bytes):
            if data is None or data.strip():
                n += 1
        return n

    async def _lines(self, b: Batch) -> bool:
        """Answer every line without an outcome; False if cancelled first."""
        concurrency = self.settings.concurrency
        window = concurrency * WINDOW_PER_SLOT
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        pending: list[tuple[int, bytes | None]] = []
        cancelled = False

        async def run_window() -> bool:
            lo, hi = pending[0][0], pending[-1][0] + 1
            done = await self.store.done_lines(b.id, lo, hi)
            for n, data in pending:
                if n in done or (data is not None and not data.strip()):
                    continue
                await slots.acquire()
                t = asyncio.create_task(self._one(b, n, data))
                t.add_done_callback(lambda _: slots.release())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            pending.clear()
            await self._progress(b.id)
            if self.stopping():
                # This process is stopping: let the lines in flight end and be
                # stored, then wait to be released (the job runs again later).
                await asyncio.gather(*tasks)
                await self._progress(b.id)
                await asyncio.Event().wait()
            current = await self.store.get_batch(b.id)
            return current is not None and current.status == "cancelling"

        try:
            async for item in split_lines(self.store.read_file(b.input_file_id),
                                          self.settings.max_line_bytes):
                pending.append(item)
                if len(pending) >= window and (cancelled := await run_window()):
                    break
            if pending and not cancelled:
                cancelled = await run_window()
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        current = await self.store.get_batch(b.id)
        return not cancelled and not (current is not None and current.status == "cancelling")

    async def _one(self, b: Batch, n: int, data: bytes | None) -> None:
        try:
            result = await self._answer(b, n, data)
        except Exception:  # a defect must cost one line, not the batch
            log.exception("batch %s line %d failed", b.id, n + 1, extra={"batch": b.id})
            result = _error_record(b.id, n, None, "internal_error",
                                   "The gateway failed on this line; see its logs.")
        if result is not None:
            await self.store.put_line(b.id, result)

    async def _answer(self, b: Batch, n: int, data: bytes | None) -> LineResult | None:
        if data is None:
            return _error_record(b.id, n, None, "line_too_long",
                                 f"The line is longer than {self.settings.max_line_bytes} "
                                 "bytes (batches.max_line_bytes).")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            return _error_record(b.id, n, None, "invalid_json_line", f"Invalid JSON: {e}")
        if not isinstance(obj, dict):
            return _error_record(b.id, n, None, "invalid_request",
                                 "Each line must be a JSON object.")
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
            return _error_record(b.id, n, None, "invalid_custom_id",
                                 f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters.")
        if obj.get("method") != "POST" or obj.get("url") != b.endpoint:
            return _error_record(b.id, n, custom_id, "invalid_request",
                                 f"method must be POST and url {b.endpoint!r} (the batch's "
                                 "endpoint).")
        body = obj.get("body")
        if not isinstance(body, dict):
            return _error_record(b.id, n, custom_id, "invalid_request",
                                 "body must be a JSON object.")
        first = await self.store.first_line_of(b.id, custom_id, n)
        if first != n:
            return _error_record(b.id, n, custom_id, "duplicate_custom_id",
                                 f"custom_id {custom_id!r} was already used on line {first + 1}.")
        status, answer_body, request_id = await answer(self.svc, b.endpoint, body, b.auth)
        if self.svc.pipeline.draining and status == 503:
            # Refused because this process is stopping: not an outcome. Wait to
            # be cancelled; the job is released and the line runs again later.
            await asyncio.Event().wait()
        rec = {"id": _req_id(b.id, n), "custom_id": custom_id,
               "response": {"status_code": status, "request_id": request_id,
                            "body": answer_body}, "error": None}
        return LineResult(n, custom_id, status == 200, orjson.dumps(rec))

    async def _progress(self, batch_id: str) -> None:
        completed, failed = await self.store.counts(batch_id)
        await self.store.update_batch(batch_id, completed=completed, failed=failed)

    async def _finish(self, b: Batch, status: str, when: str) -> dict[str, Any]:
        """Write the output and error files (ids derived from the batch's, so
        a repeated run rewrites the same files), then end the batch."""
        await self.store.set_status(b.id, "finalizing", "finalizing_at",
                                    only_from=("in_progress",))
        completed, failed = await self.store.counts(b.id)
        values: dict[str, Any] = {"completed": completed, "failed": failed}
        if completed:
            f = await self.store.put_file(b.tenant, f"{b.id}_output.jsonl", "batch_output",
                                          self.store.records(b.id, True),
                                          file_id=f"file-{b.id[len('batch_'):]}-output")
            values["output_file_id"] = f.id
        if failed:
            f = await self.store.put_file(b.tenant, f"{b.id}_error.jsonl", "batch_output",
                                          self.store.records(b.id, False),
                                          file_id=f"file-{b.id[len('batch_'):]}-error")
            values["error_file_id"] = f.id
        await self.store.update_batch(b.id, **values)
        await self.store.set_status(b.id, status, when)
        log.info("batch %s %s: %d completed, %d failed", b.id, status, completed, failed,
                 extra={"batch": b.id})
        return {"status": status, "completed": completed, "failed": failed}
