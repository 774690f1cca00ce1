"""When to try again: which failures are worth another attempt, how long to
back off, and a process-wide budget so retries cannot multiply an outage."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import Enum

from seawall.config import RetrySettings
from seawall.errors import (
    DeadlineExceeded,
    InvalidRequest,
    RateLimited,
    SeawallError,
    UpstreamTooLarge,
)
from seawall.routing.window import SlidingCount


class Verdict(Enum):
    FATAL = "fatal"  # the request itself is wrong: no deployment will do better
    RATE_LIMITED = "rate_limited"  # the deployment is busy: cool it down, try elsewhere
    FAILED = "failed"  # the deployment failed: count it against its breaker, try elsewhere


def classify(err: SeawallError) -> Verdict:
    """Which failures trigger another attempt is data, in one place:
    client errors (4xx except 429) are returned as they are, and so is the
    request's own deadline running out; an upstream 429
    cools the deployment down; everything else (5xx, timeouts, refused or cut
    connections, malformed answers, upstream auth failures) counts as a
    deployment failure and moves on. An answer over the size caps is the
    request's doing (another deployment would answer as long): fatal."""
    if isinstance(err, RateLimited):
        return Verdict.RATE_LIMITED
    if isinstance(err, InvalidRequest | DeadlineExceeded | UpstreamTooLarge):
        return Verdict.FATAL
    return Verdict.FAILED


def backoff_s(retry: int, settings: RetrySettings, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, 2015):
    uniform in [0, min(max, base * 2^retry)], which spreads synchronized
    clients apart better than fixed or "equal" jitter."""
    cap = min(settings.max_delay_s, settings.base_delay_s * (2 ** retry))
    return rng.uniform(0, cap)


class RetryBudget:
    """Retries may be at most ``ratio`` of first attempts over a sliding window,
    plus ``min_per_s`` always (so a quiet service can still retry). When an
    upstream is down, first attempts fail fast instead of tripling its load."""

    def __init__(self, settings: RetrySettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._requests = SlidingCount(settings.budget_window_s)
        self._retries = SlidingCount(settings.budget_window_s)
        self.refused = 0

    def on_request(self) -> None:
        self._requests.add(self._clock())

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and counted) if there is none."""
        now = self._clock()
        s = self.settings
        allowed = s.budget_ratio * self._requests.total(now) + \
            s.budget_min_per_s * self._requests.seconds
        if self._retries.total(now) >= allowed:
            self.refused += 1
            return False
        self._retries.add(now)
        return True
