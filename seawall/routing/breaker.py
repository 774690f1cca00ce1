"""A circuit breaker per deployment: stop sending traffic to one that keeps
failing, probe it after a cool-down, and take it back once a probe succeeds.

    closed --(N failures in a row, or error rate over the window)--> open
    open --(cool-down elapsed)--> half_open
    half_open --(probe succeeds, enough times)--> closed
    half_open --(probe fails)--> open (cool-down doubled, up to max_open_s)

The open -> half_open step happens lazily when someone asks, so an idle
breaker costs nothing. Time comes from an injectable clock for unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from seawall.config import BreakerSettings
from seawall.routing.window import SlidingCount


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings,
                 on_change: Callable[[BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._calls = SlidingCount(settings.window_s)
        self._fails = SlidingCount(settings.window_s)
        self._consecutive = 0
        self._opens = 0  # re-opens since last closed: the cool-down doubles with each
        self.open_until = 0.0
        self._probes = 0  # half-open probes in flight
        self._probe_successes = 0
        self.reason = ""

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self.open_until:
            self._set(BreakerState.HALF_OPEN)
            self._probes = self._probe_successes = 0
        return self._state

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)

    def available(self) -> bool:
        """May a request be sent now? (Closed, or half-open with a probe slot free.)"""
        st = self.state
        if st is BreakerState.CLOSED:
            return True
        if st is BreakerState.HALF_OPEN:
            return self._probes < self.settings.half_open_probes
        return False

    def on_attempt(self) -> bool:
        """An attempt starts; True if it is a half-open probe (its result decides)."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes += 1
            return True
        return False

    def record(self, ok: bool, probe: bool) -> None:
        """The verdict on one attempt sent through this breaker."""
        now = self._clock()
        if probe:
            self._probes = max(0, self._probes - 1)
        state = self.state
        if state is BreakerState.HALF_OPEN:
            if not probe:
                return  # an attempt from before the trip: says nothing about now
            if not ok:
                self._trip(now, "a half-open probe failed")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_probes:
                self._close()
            return
        if state is BreakerState.OPEN:
            return  # late results of attempts started before the trip
        self._calls.add(now)
        if not ok:
            self._fails.add(now)
        if ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        s = self.settings
        if self._consecutive >= s.consecutive_failures:
            self._trip(now, f"{self._consecutive} failures in a row")
            return
        calls, fails = self._calls.total(now), self._fails.total(now)
        if calls >= s.min_requests and fails / calls >= s.error_rate:
            self._trip(now, f"{fails} of {calls} calls failed in {s.window_s:g}s")

    def release(self, probe: bool) -> None:
        """An attempt ended without a verdict (the client left, or its request was bad)."""
        if probe:
            self._probes = max(0, self._probes - 1)

    def _trip(self, now: float, reason: str) -> None:
        s = self.settings
        self.open_until = now + min(s.max_open_s, s.open_s * (2 ** self._opens))
        self._opens += 1
        self._consecutive = 0
        self._calls.clear()
        self._fails.clear()
        self.reason = reason
        self._set(BreakerState.OPEN)

    def _close(self) -> None:
        self._opens = 0
        self._consecutive = 0
        self._calls.clear()
        self._fails.clear()
        self.reason = ""
        self._set(BreakerState.CLOSED)

    def retry_in(self) -> float:
        """Seconds until this breaker lets a probe through (0 if it does now)."""
        return max(0.0, self.open_until - self._clock()) if self._state is BreakerState.OPEN \
            else 0.0
