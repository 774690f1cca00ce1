"""Errors as values with a shape: every failure a client can see maps to one
OpenAI-style envelope with a stable ``type`` and ``code`` and a message that
says what to fix. Nothing else (no stack trace, no secret) reaches the wire."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson


class SeawallError(Exception):
    """Base class: an error that is safe to show to the client as is."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds, rounded *up* (a client that waits
        exactly that long must not come back too early), and ``retry-after-ms``
        with the precise wait, which openai-python and openai-node prefer."""
        if self.retry_after is None:
            return {}
        wait = min(max(0.0, self.retry_after), 86_400.0)  # NaN -> 0; inf -> a day
        return {"retry-after": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}


class InvalidRequest(SeawallError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "body_too_large"

    def headers(self) -> dict[str, str]:
        # The rest of the body is never read: close the connection instead of
        # reading and discarding it (the client may be sending 10 MB more).
        return {**super().headers(), "connection": "close"}


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class AuthenticationFailed(SeawallError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class RateLimited(SeawallError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """A key's or tenant's spend limit for the period is used up. Retrying
    before the period ends cannot help, so SDKs are told not to
    (``x-should-retry``, honoured by openai-python and openai-node)."""

    type = "budget_exceeded"
    code = "budget_exceeded"

    def __init__(self, message: str, *, resets_at: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.resets_at = resets_at

    def headers(self) -> dict[str, str]:
        out = {**super().headers(), "x-should-retry": "false"}
        if self.resets_at is not None:  # when the period ends, for clients and dashboards
            out["x-seawall-budget-reset"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.resets_at))
        return out


class UpstreamError(SeawallError):
    """A provider failed. ``status`` is what we answer; ``upstream_status`` what it said."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status


class UpstreamTooLarge(UpstreamError):
    """An upstream's answer, body or stream line is over a configured cap."""

    code = "upstream_response_too_large"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class DeadlineExceeded(UpstreamTimeout):
    """The request's own deadline ran out (resilience.timeouts.request_s):
    no attempt, retry or fallback is started after it."""

    code = "request_deadline_exceeded"


class ServiceUnavailable(SeawallError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ShuttingDown(ServiceUnavailable):
    """The process is draining for shutdown (another replica will answer)."""

    code = "shutting_down"


def internal_error(trace_id: str) -> SeawallError:
    """What a client sees for a bug: a request id to report, nothing else."""
    return SeawallError(
        f"Internal error in the gateway. Report request id {trace_id} to the operator."
    )
