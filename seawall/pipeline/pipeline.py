"""Runs the stages over one RequestContext and drives the answer's chunk stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from types import TracebackType

from seawall.errors import SeawallError, ShuttingDown, UpstreamTooLarge, internal_error
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext
from seawall.pipeline.stages import Stage
from seawall.providers.base import StreamItem, has_content

log = logging.getLogger("seawall.pipeline")

Wrap = Callable[[RequestContext, AsyncIterator[StreamItem]], AsyncIterator[StreamItem]]


class ClientClosed(SeawallError):
    status = 499
    type = "client_closed"
    code = "client_closed_request"


class Pipeline:
    """``admission`` stages (auth) run on the headers alone, before the body is
    parsed, so an unauthenticated caller learns nothing about validation; the
    other stages run on the parsed request."""

    def __init__(self, admission: Sequence[Stage], stages: Sequence[Stage],
                 metrics: Metrics, max_answer_chars: int = 8_000_000) -> None:
        self.admission = list(admission)
        self.max_answer_chars = max_answer_chars  # server.max_answer_chars
        self.stages = list(stages)
        # Stages that wrap the answer of a later stage, innermost (last) first.
        self._wraps: list[tuple[int, Wrap]] = [
            (i, s.wrap) for i, s in reversed(list(enumerate(self.stages))) if hasattr(s, "wrap")]
        self._inflight = metrics.inflight
        self.draining = False  # set when shutdown starts

    def serve(self, ctx: RequestContext) -> Serving:
        """``async with pipeline.serve(ctx) as serving:`` admits the request and
        guarantees that it is finished (slot released, record written) exactly
        once, whatever is raised inside; see :class:`Serving`."""
        return Serving(self, ctx)

    async def admit(self, ctx: RequestContext) -> None:
        """Run the admission stages; a rejection is recorded and raised.
        Every request starts here, and ends in :meth:`finish` (prefer
        :meth:`serve`, which pairs the two by construction)."""
        self._inflight.inc()
        try:
            await self._run_before(self.admission, ctx)
        except SeawallError as e:
            ctx.fail(e)
            await self.finish(ctx)
            raise
        except Exception as e:
            log.exception("unhandled error in admission")
            err = internal_error(ctx.trace_id)
            ctx.fail(err)
            await self.finish(ctx)
            raise err from e

    @contextlib.asynccontextmanager
    async def scope(self, ctx: RequestContext,
                    stages: Collection[str] = ("permissions", "limits")
                    ) -> AsyncIterator[RequestContext]:
        """A request that is not a model call (RAG, admin): :meth:`serve`, then
        the named ``stages`` (the endpoint's scope and the rate limits by
        default), then the body of the
        ``async with``; finished (slot released, request recorded) however it
        ends."""
        async with self.serve(ctx):
            await self._run_before([s for s in self.stages if s.name in stages], ctx)
            yield ctx

    async def _before(self, ctx: RequestContext) -> AsyncIterator[StreamItem] | None:
        """Each stage in turn until one answers; the stages before it that
        ``wrap`` (the cache) then wrap its stream, innermost first."""
        stream = await self._run_before(self.stages, ctx)
        if stream is not None and self._wraps and ctx.answered_by is not None:
            for at, wrap in self._wraps:
                if at < ctx.answered_by:
                    stream = wrap(ctx, stream)
        return stream

    @staticmethod
    async def _run_before(
        stages: list[Stage], ctx: RequestContext
    ) -> AsyncIterator[StreamItem] | None:
        for i, stage in enumerate(stages):
            if not stage.traced:
                stream = await stage.before(ctx)
            else:
                t0 = time.time_ns()
                try:
                    stream = await stage.before(ctx)
                finally:
                    ctx.span(stage.name, t0)
            if stream is not None:
                ctx.answered_by = i
                return stream
        return None

    async def finish(self, ctx: RequestContext) -> None:
        """Run every stage's ``after`` (recording included), whatever happened.
        Idempotent: only the first call per request does anything."""
        if ctx.done:
            return
        ctx.done = True
        self._inflight.dec()
        if ctx.finished_ns is None:
            ctx.finished_ns = time.time_ns()
        ctx.spans.insert(0, (ctx.endpoint, ctx.started_ns, ctx.finished_ns))
        for stage in (*self.admission, *self.stages):
            try:
                await stage.after(ctx)
            except Exception:
                log.exception("stage %s failed after the request", stage.name)

    async def call(self, ctx: RequestContext) -> None:
        """A non-streaming endpoint (embeddings): stages run, ``ctx.result`` is the answer."""
        try:
            await self._before(ctx)
        except SeawallError as e:
            ctx.fail(e)
            raise
        except Exception as e:
            log.exception("unhandled error")
            err = internal_error(ctx.trace_id)
            ctx.fail(err)
            raise err from e
        finally:
            await self.finish(ctx)

    async def open_stream(self, ctx: RequestContext) -> AsyncIterator[StreamItem]:
        """Run the stages; return the chunk stream that answers the request.

        Errors raised before the stream exists have already been recorded.
        The returned iterator records the request when it ends or is closed.
        """
        try:
            stream = await self._before(ctx)
            if stream is None:
                raise SeawallError("No stage produced an answer", code="no_answer")
        except SeawallError as e:
            ctx.fail(e)
            await self.finish(ctx)
            raise
        except Exception as e:
            log.exception("unhandled error")
            err = internal_error(ctx.trace_id)
            ctx.fail(err)
            await self.finish(ctx)
            raise err from e
        return self._drive(ctx, stream)

    async def _drive(
        self, ctx: RequestContext, stream: AsyncIterator[StreamItem]
    ) -> AsyncIterator[StreamItem]:
        gatherer = ctx.gatherer
        gather = gatherer.add_item
        limit = self.max_answer_chars
        t0 = time.time_ns()
        try:
            async for item in stream:
                if ctx.first_token_ns is None and has_content(item):
                    ctx.first_token_ns = time.time_ns()
                gather(item)
                if gatherer.size > limit:
                    raise UpstreamTooLarge(
                        f"The answer exceeds {limit} characters (server.max_answer_chars); "
                        "ask for a shorter one (max_tokens).")
                yield item
        except SeawallError as e:
            ctx.fail(e)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            ctx.fail(ShuttingDown("The gateway shut down (shutdown.drain_timeout_s ran out) before "
                              "the answer ended.", retry_after=1.0) if self.draining else
                     ClientClosed("The client closed the connection before the answer ended."))
            raise
        except Exception as e:
            log.exception("unhandled error in the answer stream")
            err = internal_error(ctx.trace_id)
            ctx.fail(err)
            raise err from e
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()  # stops upstream generation and frees the connection
                except Exception:
                    log.debug("closing the provider stream failed", exc_info=True)
            ctx.finished_ns = time.time_ns()
            ctx.span("upstream", t0)  # the answer, from the call to its last chunk
            await self.finish(ctx)


class Serving:
    """One admitted request, finished exactly once by construction.

    Entering admits (a rejection is recorded, finished and raised). Leaving
    finishes the request, unless its answer stream was handed to the
    response with :meth:`hand_off` (the stream finishes it when it ends or is
    closed). Anything raised inside that is not a :class:`SeawallError` is
    logged and becomes a recorded 500 ``internal_error``, raised as a
    SeawallError so the handler answers with the error envelope.
    """

    __slots__ = ("_pipeline", "_ctx", "_handed_off")

    def __init__(self, pipeline: Pipeline, ctx: RequestContext) -> None:
        self._pipeline = pipeline
        self._ctx = ctx
        self._handed_off = False

    def hand_off(self) -> None:
        """The response now owns the request: it finishes it when it ends."""
        self._handed_off = True

    async def __aenter__(self) -> Serving:
        await self._pipeline.admit(self._ctx)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        ctx = self._ctx
        err: SeawallError | None = None
        if e is not None and not self._handed_off:
            if isinstance(e, SeawallError):
                if ctx.error is None:
                    ctx.fail(e)
            elif isinstance(e, Exception):
                log.exception("unhandled error", exc_info=e)
                err = internal_error(ctx.trace_id)
                ctx.fail(err)
            else:  # cancelled: the client left, or shutdown
                ctx.fail(ShuttingDown("The gateway shut down before the request was served.",
                                      retry_after=1.0) if self._pipeline.draining else
                         ClientClosed("The client closed the connection."))
        if not self._handed_off or e is not None:
            await self._pipeline.finish(ctx)
        if err is not None:
            raise err from e
