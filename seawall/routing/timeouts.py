"""The four timeouts of one upstream attempt, enforced by one lazy timer.

A timer per chunk (``asyncio.timeout`` around each read) costs a heap push
and pop per chunk on the hot path. Instead one timer sleeps until the
nearest deadline; when it fires it checks whether the stream made progress
meanwhile and, if so, sleeps again. Per chunk the stream only stores a time.
Expiry cancels the reading task; :meth:`Deadlines.check` turns that
cancellation into the timeout error with its own code.

The timer only ever cancels a task that is waiting on the upstream. While
the consumer is busy elsewhere (a slow client holding up the write of the
previous chunk) it disarms, and the next read re-arms it with the idle clock
restarted: a slow client is not an idle upstream.
"""

from __future__ import annotations

import asyncio
import math
import time

from seawall.config import TimeoutSettings
from seawall.errors import DeadlineExceeded, UpstreamTimeout

CODES = {
    "first_token": "upstream_first_token_timeout",
    "idle": "upstream_idle_timeout",
    "total": "upstream_total_timeout",
}


class Deadlines:
    __slots__ = ("settings", "_loop", "task", "_base", "_total_at", "_first_at",
                 "last", "got_content", "expired", "_handle", "where", "_reading",
                 "_deadline_at")

    def __init__(self, settings: TimeoutSettings, stream: bool, where: str,
                 deadline: float | None = None) -> None:
        """``deadline``: the request's own (``time.monotonic()`` clock), which
        bounds this attempt too when it comes before the attempt's total."""
        self.settings = settings
        self.where = where
        self._loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()  # the reader; see adopt()
        self._base = 0
        now = self._loop.time()
        self._total_at = now + settings.total_s
        self._deadline_at = math.inf
        if deadline is not None:
            self._deadline_at = now + (deadline - time.monotonic())
            self._total_at = min(self._total_at, self._deadline_at)
        # Non-streaming upstream answers arrive whole: only the total applies.
        self._first_at = now + settings.first_token_s if stream else math.inf
        self.last = now
        self.got_content = False
        self.expired: str | None = None
        self._reading = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._next(), self._fire)

    def _next(self) -> float:
        if not self.got_content:
            return min(self._total_at, self._first_at)
        return min(self._total_at, self.last + self.settings.idle_s)

    def _fire(self) -> None:
        self._handle = None
        if not self._reading:
            return  # re-armed by the next read
        now = self._loop.time()
        due = self._next()
        if now < due:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self.expired = ("deadline" if now >= self._deadline_at else
                        "total" if now >= self._total_at else
                        "idle" if self.got_content else "first_token")
        if self.task is not None:
            self._base = self.task.cancelling()  # cancellations not ours
            self.task.cancel()

    def adopt(self) -> None:
        """The current task reads from now on (a hedged attempt is primed in a
        task of its own, then read by the request's task)."""
        self.task = asyncio.current_task()

    def reading(self) -> None:
        """The reading task is about to wait on the upstream."""
        self._reading = True
        if self._handle is None and self.expired is None:
            self.last = self._loop.time()
            self._handle = self._loop.call_at(self._next(), self._fire)

    def progress(self) -> None:
        """A chunk arrived (the caller sets ``got_content`` at the first content)."""
        self._reading = False
        self.last = self._loop.time()

    def check(self) -> None:
        """Call on CancelledError: raise the timeout if we caused it (and
        nobody else also cancelled the task), else return to re-raise."""
        if self.expired is None or self.task is None:
            return
        if self.task.uncancel() > self._base:
            return  # cancelled from outside too (the client left): let it propagate
        which = self.expired
        if which == "deadline":
            raise DeadlineExceeded(f"The request's deadline ran out while waiting on "
                                   f"deployment {self.where!r} (resilience.timeouts.request_s).")
        s = self.settings
        limit = {"first_token": s.first_token_s, "idle": s.idle_s, "total": s.total_s}[which]
        what = {"first_token": "sent no first token", "idle": "went silent mid-stream",
                "total": "did not finish"}[which]
        raise UpstreamTimeout(f"Deployment {self.where!r} {what} within {limit:g}s "
                              f"({which}_s timeout).", code=CODES[which])

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
