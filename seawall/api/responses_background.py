"""Background responses (``background: true``): the job that answers one,
and the stream that replays and follows its event log (docs/responses.md,
"Background responses").

``POST /v1/responses`` authenticates the caller, validates the request,
stores the response as ``queued`` and enqueues a ``response`` job (job id =
response id) carrying the tenant and key it was authenticated with. The job
runs the request through the same pipeline as a direct call (limits,
budgets, routing, cache, resilience, records) with that key, always
streamed upstream, and appends each Responses event to the log before
anyone can read it. Readers (``stream=true`` on create or retrieve) poll the
log, so they work on any replica.

A retried attempt never rewrites the log: if an earlier attempt of the job
already logged events (its worker died mid-answer), the new attempt ends the
response ``failed`` with one ``response.failed`` event after the last logged
one -- no event is repeated or interleaved. An attempt that logged nothing
runs the request afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import msgspec

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.errors import SeawallError, ServiceUnavailable
from seawall.jobs.queue import FINISHED, Job, JobState
from seawall.pipeline.context import RequestContext, new_trace_id
from seawall.responses import output as out
from seawall.responses.background_log import ACTIVE, FINAL, BackgroundLog, LogConflict
from seawall.responses.conversation import turn_messages
from seawall.responses.store_api import StoredResponse
from seawall.responses.wire import ResponsesRequest, chat_request
from seawall.store.base import ApiKey

if TYPE_CHECKING:
    from seawall.app import Services

log = logging.getLogger("seawall.responses")

KIND = "response"
SETTLE_EVERY_S = 2.0  # how often a reader checks that the job is still alive
_TERMINAL_EVENTS = tuple(f"event: response.{k}\n" for k in ("completed", "incomplete",
                                                             "failed"))


def payload(tenant: str, key: ApiKey | None, raw: dict[str, Any]) -> dict[str, Any]:
    """What the job needs: the caller as authenticated at enqueue, and the request."""
    return {"tenant": tenant, "key": None if key is None else asdict(key), "body": raw}


def split(data: bytes, first_seq: int) -> list[tuple[int, str]]:
    """A translator's output (whole SSE events, numbered from ``first_seq``)."""
    return [(first_seq + i, ev.decode() + "\n\n")
            for i, ev in enumerate(data.split(b"\n\n")) if ev]


class BackgroundResponses:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.log = BackgroundLog(svc.responses.store)
        # Readers on this replica waiting for a response's next events: woken
        # when this process logs some (others poll; see follow()).
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def _notify(self, rid: str) -> None:
        for ev in self._waiters.get(rid, ()):
            ev.set()

    async def wait(self, rid: str, timeout_s: float) -> None:
        """Until this process logs events of ``rid``, or ``timeout_s``."""
        ev = asyncio.Event()
        waiters = self._waiters.setdefault(rid, set())
        waiters.add(ev)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), timeout_s)
        finally:
            waiters.discard(ev)
            if not waiters:
                self._waiters.pop(rid, None)

    async def run(self, job: Job) -> dict[str, Any]:
        p = job.payload
        rid, tenant = job.id, p["tenant"]
        stored = await self.svc.responses.store.get(tenant, rid)
        if stored is None or stored.status not in ACTIVE:
            return {"status": None if stored is None else stored.status}
        last = await self.log.last_seq(rid)
        req = convert(p["body"], ResponsesRequest)
        req = msgspec.structs.replace(req, stream=True)
        tr = out.EventTranslator(rid, req, stored.created_at)
        if last is not None:  # an earlier attempt died mid-answer: end it, never re-run
            tr.seq = last + 1
            err = ServiceUnavailable("The worker running this background response stopped "
                                     "mid-answer; create the response again.",
                                     code="worker_lost")
            await self._end(stored, tr, "failed", err, tr.failed(err))
            return {"status": "failed"}
        await self.log.move(tenant, rid, "in_progress")
        status = await self._answer(p, stored, req, tr, job.attempts)
        return {"status": status}

    async def _answer(self, p: dict[str, Any], stored: StoredResponse,
                      req: ResponsesRequest, tr: out.EventTranslator, attempt: int) -> str:
        svc = self.svc
        # The response id names the first attempt's trace record (trace ids are unique).
        trace = stored.id.removeprefix("resp_") if attempt <= 1 else new_trace_id()
        ctx = RequestContext(endpoint="responses", trace_id=trace, authenticated=True)
        ctx.tenant = p["tenant"]
        ctx.key = None if p["key"] is None else ApiKey(**p["key"])
        ctx.model = req.model
        ctx.body = msgspec.json.encode(p["body"])
        stream: Any = None
        try:
            async with svc.pipeline.serve(ctx):
                conv = await svc.responses.conversation(
                    ctx.tenant, req.model, req.instructions, req.previous_response_id,
                    stored.input_items)
                chat = chat_request(req, p["body"], conv.messages)
                ctx.request = convert(chat, ChatCompletionRequest)
                for key in ("seawall", "rag", "prompt"):
                    chat.pop(key, None)
                ctx.raw = chat
                stream = await svc.pipeline.open_stream(ctx)
                await self._write(stored.id, tr, tr.start())
                async for item in stream:
                    if data := tr.feed(item):
                        await self._write(stored.id, tr, data)
                usage = ctx.gatherer.usage or await svc.estimate_usage(ctx)
                data, final = tr.finish_events(out.usage_of(usage))
                await self._end(stored, tr, final["status"], None, data, final)
                return str(final["status"])
        except LogConflict:
            log.warning("background response %s: another attempt owns its log", stored.id)
            raise
        except SeawallError as e:  # refused (limits, budget) or failed upstream
            head = tr.start() if tr.seq == 0 else b""  # every stream opens with .created
            await self._end(stored, tr, "failed", e, head + tr.failed(e))
            return "failed"
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    async def _write(self, rid: str, tr: out.EventTranslator, data: bytes) -> None:
        n = data.count(b"\n\n")
        await self.log.append(rid, split(data, tr.seq - n))
        self._notify(rid)

    async def _end(self, stored: StoredResponse, tr: out.EventTranslator, status: str,
                   err: SeawallError | None, data: bytes,
                   final: dict[str, Any] | None = None) -> None:
        """Store the final object and log ``data``, its last events (the
        translator's newest), in one transaction -- unless cancelled meanwhile."""
        if final is None:
            final = tr.snapshot(status, error=None if err is None else
                                {"code": err.code, "message": err.message})
        from seawall.api.responses_routes import _COLUMN_FIELDS

        stored.status = final["status"]
        stored.output = final["output"]
        stored.usage = final["usage"]
        stored.extra = {k: v for k, v in final.items() if k not in _COLUMN_FIELDS}
        stored.tokens = await asyncio.to_thread(self.svc.tokens.count_messages,
                                                turn_messages(stored))
        first = tr.seq - data.count(b"\n\n")
        if await self.log.finish(stored, split(data, first)):  # else cancelled: that stands
            self._notify(stored.id)


async def settle(svc: Services, r: StoredResponse) -> StoredResponse:
    """An active background response whose job is over (dead after its
    attempts, failed, cancelled from the CLI, or gone) never ends by itself:
    end it now (``failed``, or ``cancelled``).
    A missing job counts only after a minute (it is enqueued just after the
    response is stored)."""
    if r.status not in ACTIVE or not r.extra.get("background"):
        return r
    job = await svc.jobs.get(r.id, r.tenant)
    if job is None and time.time() - r.created_at < 60:
        return r
    if job is not None and job.state not in FINISHED:
        return r
    if job is not None and job.state is JobState.CANCELLED:  # e.g. `seawall jobs cancel`
        r.status = "cancelled"
    else:
        why = job.error if job is not None and job.error else "its job is gone"
        r.status = "failed"
        r.extra = {**r.extra, "error": {"code": "job_failed",
                                        "message": f"The background job ended: {why}"[:1000]}}
    await svc.background.log.finish(r)
    return await svc.responses.store.get(r.tenant, r.id) or r


async def follow(svc: Services, tenant: str, rid: str, after: int) -> AsyncIterator[bytes]:
    """The events after ``after``, then new ones as they are logged, until the
    response ends. Each wait is one poll interval; a client hang-up closes
    this generator (SSEResponse), which holds nothing between polls. A
    reader on the replica running the job is woken as events are logged."""
    blog = svc.background.log
    poll = svc.settings.responses.background_poll_s
    ended = False
    settle_at = 0.0
    while True:
        rows = await blog.after(rid, after)
        for seq, data in rows:
            after = seq
            yield data.encode()
            if data.startswith(_TERMINAL_EVENTS):
                return
        if rows:
            continue
        if ended:
            return  # ended without a final event (cancelled): nothing more will come
        r = await svc.responses.store.get(tenant, rid)
        if r is not None and time.monotonic() >= settle_at:
            r, settle_at = await settle(svc, r), time.monotonic() + SETTLE_EVERY_S
        ended = r is None or r.status in FINAL
        if not ended:
            await svc.background.wait(rid, poll)
