"""Whether and how a request may use the cache: configuration per model and
key, the request's own controls, and the safety rules (docs/caching.md).

The rules, in order: the cache is on for the model (``cache.enabled`` or the
model's override), or the key turned it on (unless the model's own
``cache.enabled: false`` forbids it), and the key did not turn it off; the request did not say
``no-store``; it does not sample hotter than ``policy.max_temperature``; it
does not ask for logprobs (a cached answer has none) nor for several choices
(``n`` > 1: an entry holds one answer). Semantic matching is
further limited to a plain-text last user message (no tools unless allowed,
not too long).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.api.wire import CacheControl, ChatCompletionRequest
from seawall.cache.verify import CandidateVerifier
from seawall.config import CacheSettings, ModelCacheSettings
from seawall.errors import InvalidRequest


@dataclass(slots=True, frozen=True)
class ModelCachePolicy:
    """``cache`` settings with one model's overrides applied."""

    enabled: bool  # for keys that say nothing
    locked: bool  # the model itself says no: keys cannot turn it on
    ttl_s: float
    semantic: bool
    threshold: float
    guard: tuple[str, ...] | None  # None: every check
    verify: tuple[str, ...]  # the verifier's checks (empty: off)
    verify_model: str | None = None  # the verifier model (None: no model check)

    @classmethod
    def resolve(cls, base: CacheSettings, model: ModelCacheSettings) -> ModelCachePolicy:
        guard = base.semantic.guard if model.guard is None else model.guard
        verify = base.semantic.verify
        mode = verify.mode if model.verify is None else model.verify
        checks = CandidateVerifier.CHECKS if verify.checks is None else tuple(verify.checks)
        return cls(
            enabled=base.enabled if model.enabled is None else model.enabled,
            locked=model.enabled is False,
            ttl_s=base.ttl_s if model.ttl_s is None else model.ttl_s,
            semantic=base.semantic.enabled if model.semantic is None else model.semantic,
            threshold=base.semantic.threshold if model.threshold is None else model.threshold,
            guard=None if guard is None else tuple(guard),
            verify=() if mode == "off" else checks,
            verify_model=None if mode == "off" else verify.model,
        )


@dataclass(slots=True, frozen=True)
class Controls:
    """What the request asked of the cache."""

    read: bool = True
    write: bool = True
    max_age_s: float | None = None


DEFAULT_CONTROLS = Controls()


def parse_cache_control(header: str | None, body: CacheControl | bool | None) -> Controls:
    """Merge the ``Cache-Control`` header and ``extra_body={"seawall": {"cache": ...}}``;
    the stricter of the two wins."""
    if header is None and body is None:
        return DEFAULT_CONTROLS
    read, write, max_age = True, True, None
    if header:
        for part in header.split(","):
            name, _, value = part.strip().lower().partition("=")
            if name == "no-cache":
                read = False
            elif name == "no-store":
                read = write = False
            elif name == "max-age":
                try:
                    max_age = float(value)
                except ValueError:
                    raise InvalidRequest(
                        f"Cache-Control max-age must be a number of seconds, got {value!r}.",
                        code="invalid_cache_control") from None
                if max_age < 0:
                    raise InvalidRequest("Cache-Control max-age must not be negative.",
                                         code="invalid_cache_control")
    if body is False:
        read = write = False
    elif isinstance(body, CacheControl):
        if body.no_cache:
            read = False
        if body.no_store:
            read = write = False
        if body.max_age is not None:
            max_age = body.max_age if max_age is None else min(max_age, body.max_age)
    return Controls(read=read, write=write, max_age_s=max_age)


def bypass_reason(req: ChatCompletionRequest, max_temperature: float) -> str | None:
    """Why this request must not use the cache at all, or None."""
    temperature = 1.0 if req.temperature is None else req.temperature
    if temperature > max_temperature:
        return "temperature"
    if req.logprobs or req.top_logprobs:
        return "logprobs"
    if req.choices > 1:
        return "n"
    return None
