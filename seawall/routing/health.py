"""What the router knows about one deployment right now: in-flight count,
time-to-first-token (EWMA for balancing, recent samples for the hedge delay),
its circuit breaker, its request and token caps, and any cool-down an
upstream asked for (429 Retry-After, rate-limit headers at zero).

All of it is in-process and updated on the event loop, so no locks. With
many replicas each keeps its own view; that is fine for health (each replica
sees the same upstream) and conservative for caps (set per-replica caps).
Cool-downs an upstream asks for are the exception: with Redis they reach
every replica (``on_upstream_cooldown``, seawall/routing/shared_cooldowns.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from seawall.config import BreakerSettings
from seawall.providers.upstream import RateLimitInfo
from seawall.routing.breaker import BreakerState, CircuitBreaker

TTFT_SAMPLES = 200
MIN_SAMPLES_FOR_P95 = 20


class DeploymentHealth:
    __slots__ = ("name", "max_concurrency", "rpm", "tpm", "alpha", "inflight", "ewma_ttft_s",
                 "_ttfts", "_p95", "cooldown_until", "cooldown_reason", "breaker", "_tat",
                 "_tokens", "learned", "_clock", "on_upstream_cooldown")

    def __init__(self, name: str, breaker: BreakerSettings, *, max_concurrency: int | None,
                 rpm: int | None, tpm: int | None, alpha: float,
                 on_breaker_change: Callable[[BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.alpha = alpha
        self.inflight = 0
        self.ewma_ttft_s: float | None = None
        self._ttfts: deque[float] = deque(maxlen=TTFT_SAMPLES)
        self._p95: float | None = None  # cached until the next sample
        self.cooldown_until = 0.0
        self.cooldown_reason = ""
        self.breaker = CircuitBreaker(breaker, on_breaker_change, clock)
        self._tat = 0.0  # GCRA theoretical arrival time for the rpm cap
        self._tokens: deque[tuple[float, int]] = deque()  # (when, tokens) in the last minute
        self.learned: RateLimitInfo | None = None
        self._clock = clock
        # (deployment, seconds, reason) of each cool-down the upstream asked for
        # that extends ours: shared with the other replicas when set.
        self.on_upstream_cooldown: Callable[[str, float, str], None] | None = None

    # -- may it take a request? ------------------------------------------------

    def unavailable_reason(self, now: float) -> str | None:
        """Why this deployment cannot take a request now, or None if it can.
        Checks without consuming: :meth:`take_rpm` consumes."""
        if not self.breaker.available():
            return "circuit_open"
        if now < self.cooldown_until:
            return "cooling_down"
        if self.at_concurrency_cap():
            return "at_concurrency_cap"
        if self.rpm is not None and self._tat - now > 60.0 - 60.0 / self.rpm:
            return "at_rpm_cap"
        if self.tpm is not None and self.tokens_last_minute(now) >= self.tpm:
            return "at_tpm_cap"
        return None

    def at_concurrency_cap(self) -> bool:
        return self.max_concurrency is not None and self.inflight >= self.max_concurrency

    def take_rpm(self, now: float) -> None:
        if self.rpm is not None:
            self._tat = max(self._tat, now) + 60.0 / self.rpm

    def tokens_last_minute(self, now: float) -> int:
        q = self._tokens
        while q and q[0][0] <= now - 60.0:
            q.popleft()
        return sum(n for _, n in q)

    def available_in(self, now: float) -> float:
        """Rough seconds until this deployment can take a request (for Retry-After)."""
        waits = [self.breaker.retry_in(), max(0.0, self.cooldown_until - now)]
        if self.rpm is not None:
            waits.append(max(0.0, self._tat - now - (60.0 - 60.0 / self.rpm)))
        return max(waits)

    # -- what happened ----------------------------------------------------------

    def observe_ttft(self, seconds: float) -> None:
        a = self.alpha
        self.ewma_ttft_s = seconds if self.ewma_ttft_s is None else \
            a * seconds + (1 - a) * self.ewma_ttft_s
        self._ttfts.append(seconds)
        self._p95 = None

    def p95_ttft(self) -> float | None:
        """The 95th percentile of recent TTFTs; None until there are enough."""
        if self._p95 is None and len(self._ttfts) >= MIN_SAMPLES_FOR_P95:
            ordered = sorted(self._ttfts)
            self._p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return self._p95

    def observe_tokens(self, now: float, tokens: int) -> None:
        if self.tpm is not None and tokens > 0:
            self._tokens.append((now, tokens))

    def cool_down(self, now: float, seconds: float, reason: str) -> bool:
        """Send nothing here for ``seconds``; True if that extends the cool-down."""
        until = now + seconds
        if until > self.cooldown_until:
            self.cooldown_until = until
            self.cooldown_reason = reason
            return True
        return False

    def upstream_cool_down(self, now: float, seconds: float, reason: str) -> None:
        """The upstream asked us to wait (429, Retry-After, limits at zero):
        cool down here and, if that is news, tell the other replicas."""
        if self.cool_down(now, seconds, reason) and self.on_upstream_cooldown is not None:
            self.on_upstream_cooldown(self.name, seconds, reason)

    def learn(self, now: float, info: RateLimitInfo) -> None:
        """Rate-limit headers: remember them; at zero remaining, cool down until reset."""
        self.learned = info
        wait = info.exhausted_for_s
        if wait is not None:
            self.upstream_cool_down(now, wait, "upstream rate limit exhausted")

    def snapshot(self, now: float) -> dict[str, object]:
        """For ``/ready`` details."""
        b = self.breaker
        out: dict[str, object] = {"circuit": b.state.label, "inflight": self.inflight}
        if b.reason:
            out["circuit_reason"] = b.reason
        if b.state is BreakerState.OPEN:
            out["circuit_retry_in_s"] = round(b.retry_in(), 3)
        if self.ewma_ttft_s is not None:
            out["ttft_ewma_ms"] = round(self.ewma_ttft_s * 1000, 1)
        if now < self.cooldown_until:
            out["cooling_down_s"] = round(self.cooldown_until - now, 3)
            out["cooldown_reason"] = self.cooldown_reason
        if self.learned is not None:
            out["upstream_limits"] = {k: v for k, v in (
                ("remaining_requests", self.learned.remaining_requests),
                ("remaining_tokens", self.learned.remaining_tokens),
                ("limit_requests", self.learned.limit_requests),
                ("limit_tokens", self.learned.limit_tokens)) if v is not None}
        return out
