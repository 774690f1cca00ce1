"""One try of one deployment: the bookkeeping (in-flight count, breaker
verdict, cool-downs, the attempt record) that must happen exactly once
however the try ends, and for chat the provider stream and its timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from seawall.errors import DeadlineExceeded, SeawallError
from seawall.observe.records import AttemptRecord
from seawall.providers.base import ChatCall, StreamItem, has_content
from seawall.providers.registry import Deployment
from seawall.routing.retry import Verdict, classify
from seawall.routing.timeouts import Deadlines


class Attempt:
    """Any try (an embedding call uses this as is; chat adds its stream)."""

    __slots__ = ("dep", "deadlines", "hedge", "_probe", "_t0", "_judged", "_ended", "deadline")

    def __init__(self, dep: Deployment, hedge: bool = False,
                 deadline: float | None = None) -> None:
        self.dep = dep
        self.hedge = hedge
        self.deadline = deadline  # the request's, time.monotonic() clock
        h = dep.health
        now = time.monotonic()
        h.inflight += 1
        h.take_rpm(now)
        self._probe = h.breaker.on_attempt()
        self._judged = False  # the breaker has had this attempt's verdict
        self._t0 = now
        self._ended = False
        self.deadlines: Deadlines | None = None  # cancelled when the attempt ends

    def _judge(self, ok: bool) -> None:
        breaker = self.dep.health.breaker
        if not self._judged:
            self._judged = True
            breaker.record(ok, self._probe)
        elif not ok:
            breaker.record(False, False)  # failed after its first token: still a failure

    def _release(self) -> None:
        if not self._judged:
            self._judged = True
            self.dep.health.breaker.release(self._probe)

    def _learn(self, now: float) -> None:
        """What the upstream said about its rate limits (only HTTP chat has it)."""

    # -- ending (exactly once) --------------------------------------------------

    def _end(self, outcome: str) -> AttemptRecord:
        self._ended = True
        if self.deadlines is not None:
            self.deadlines.cancel()
        self.dep.health.inflight -= 1
        now = time.monotonic()
        self._learn(now)
        return AttemptRecord(self.dep.name, self.dep.logical, outcome,
                             round((now - self._t0) * 1000, 1), self.hedge)

    def succeeded(self, tokens: int = 0) -> AttemptRecord | None:
        if self._ended:
            return None
        self._judge(True)
        self.dep.health.observe_tokens(time.monotonic(), tokens)
        return self._end("ok")

    def failed(self, err: SeawallError) -> tuple[Verdict, AttemptRecord | None]:
        verdict = classify(err)
        if self._ended:
            return verdict, None
        h = self.dep.health
        if err.retry_after is not None:
            h.upstream_cool_down(time.monotonic(), err.retry_after,
                                 f"upstream asked to retry after {err.retry_after:g}s")
        if isinstance(err, DeadlineExceeded):
            self._release()  # the request ran out of time, not a verdict on the deployment
        elif verdict is Verdict.FAILED:
            self._judge(False)
        elif verdict is Verdict.RATE_LIMITED:
            if err.retry_after is None:
                h.upstream_cool_down(time.monotonic(), 1.0, "upstream rate limited")
            self._release()
        else:  # the request was bad, not the deployment
            self._judge(True)
        return verdict, self._end(err.code)

    def abandoned(self, outcome: str = "cancelled") -> AttemptRecord | None:
        """Ended with no verdict on the deployment (client left, lost a hedge)."""
        if self._ended:
            return None
        self._release()
        return self._end(outcome)


class ChatAttempt(Attempt):
    """A chat try: the provider's chunk stream, read up to its first content
    by :meth:`prime` (the router reads the rest)."""

    __slots__ = ("call", "it", "head", "done", "_ttft_seen")

    def __init__(self, dep: Deployment, call: ChatCall, hedge: bool = False,
                 deadline: float | None = None) -> None:
        super().__init__(dep, hedge, deadline)
        self.call = call
        self._ttft_seen = False
        self.it: AsyncIterator[StreamItem] = dep.provider.chat(call)
        self.head: list[StreamItem] = []
        self.done = False  # the provider stream ended normally

    async def prime(self) -> None:
        """Read up to the first content (streams) or to the end (non-streaming):
        until then nothing has reached the client, so a failure here can be
        retried elsewhere without anyone noticing."""
        dl = self.deadlines = Deadlines(self.dep.timeouts, self.call.stream, self.dep.name,
                                        self.deadline)
        stream = self.call.stream
        while True:
            item = await self._read()
            if item is None:
                self.done = True
                self._first_token()
                return
            self.head.append(item)
            if stream and has_content(item):
                dl.got_content = True  # from here on the idle timeout applies
                self._first_token()
                return

    def adopt(self) -> None:
        """The current task reads the rest (after priming in another task)."""
        if self.deadlines is not None:
            self.deadlines.adopt()

    async def _read(self) -> StreamItem | None:
        """One item while priming (the router reads the rest inline)."""
        dl = self.deadlines
        assert dl is not None
        dl.reading()
        try:
            item = await self.it.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            dl.check()  # our own timeout: raises UpstreamTimeout instead
            raise
        dl.progress()
        return item

    def _first_token(self) -> None:
        """The deployment works: tell the breaker now, not when the stream ends,
        or fast failures of later requests would overtake this long success and
        look like "N failures in a row" (seen in bench/replay.py)."""
        if not self._ttft_seen:
            self._ttft_seen = True
            now = time.monotonic()
            self.dep.health.observe_ttft(now - self._t0)
            self._judge(True)
            self._learn(now)

    def _learn(self, now: float) -> None:
        """Rate-limit headers, as soon as they are in (once)."""
        info = self.call.rate_limits
        if info is not None:
            self.call.rate_limits = None
            self.dep.health.learn(now, info)

    async def close(self) -> None:
        """Stop the upstream call (frees its connection); safe to call twice."""
        aclose = getattr(self.it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
