"""RequestContext: the one object every stage reads and writes."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seawall.errors import SeawallError
from seawall.providers.base import Gatherer

if TYPE_CHECKING:
    from seawall.api.wire import ChatCompletionRequest
    from seawall.cache.service import CacheState
    from seawall.experiments.service import Assignment
    from seawall.guardrails.stage import GuardState
    from seawall.observe.records import AttemptRecord
    from seawall.pipeline.spend import Spend
    from seawall.providers.registry import Deployment
    from seawall.rag.stage import RagState
    from seawall.routing.route_stage import RouteDecision
    from seawall.store.base import ApiKey


# The endpoints whose request is a chat completion (``ctx.raw``/``ctx.request``
# in the OpenAI shape): the Messages and Responses APIs are translated into one
# on the way in.
CHAT_ENDPOINTS = frozenset({"chat.completions", "messages", "responses"})


def new_trace_id() -> str:
    """32 hex digits, a valid W3C/OTel trace id: 48 bits of milliseconds then
    80 random bits.

    Time-ordered ids keep the store's trace-id index appending at its right
    edge instead of touching random pages (random ids made each stored
    record cost several times more, bench/). The random part comes from
    Python's Mersenne Twister, not os.urandom: ids need uniqueness, not
    secrecy, and uuid4's syscall was 5% of a proxied request.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


@dataclass(slots=True)
class RequestContext:
    endpoint: str
    trace_id: str = field(default_factory=new_trace_id)
    started_at: float = field(default_factory=time.time)
    started_ns: int = field(default_factory=time.time_ns)
    # From the HTTP layer.
    authorization: str | None = None
    client_host: str | None = None
    traceparent: str | None = None
    cache_control: str | None = None
    prompt_version: str | None = None  # of the prompt the request was made from
    body: bytes = b""
    raw: dict[str, Any] | None = None
    request: ChatCompletionRequest | None = None
    model: str = ""  # the logical model asked for
    # Set by stages.
    key: ApiKey | None = None
    tenant: str = ""
    authenticated: bool = False  # key/tenant set before the pipeline (a background job)
    deployment: Deployment | None = None
    result: Any = None  # non-chat endpoints: the value to return
    # Outcome.
    gatherer: Gatherer = field(default_factory=Gatherer)
    first_token_ns: int | None = None
    finished_ns: int | None = None
    usage: dict[str, Any] | None = None
    usage_estimated: bool = False
    error: SeawallError | None = None
    status: int = 200
    # Resilience: every upstream attempt, and how the answer was degraded, if it was.
    attempts: list[AttemptRecord] = field(default_factory=list)  # ended ones
    attempts_started: int = 0
    degraded: str | None = None
    admitted: bool = False  # holds an admission slot (released when the request ends)
    done: bool = False  # Pipeline.finish has run (it runs once per request)
    answered_by: int | None = None  # index of the stage whose stream answers
    cache: CacheState | None = None  # what the cache did, if it is on for the model
    rag: RagState | None = None  # what retrieval gave the model, if the request used it
    experiment: Assignment | None = None  # the experiment arm the request was put in
    route: RouteDecision | None = None  # the tier a routed request ("auto") was sent to
    prefer_deployment: str | None = None  # try this deployment first (an experiment arm)
    spend: Spend | None = None  # tokens and budget taken before the call, settled after
    guard: GuardState | None = None  # what the guardrails found and did, when a policy applies
    spans: list[tuple[str, int, int]] = field(default_factory=list)

    def span(self, name: str, start_ns: int) -> None:
        self.spans.append((name, start_ns, time.time_ns()))

    def fail(self, err: SeawallError) -> None:
        self.error = err
        self.status = err.status

    @property
    def latency_ms(self) -> float:
        end = self.finished_ns or time.time_ns()
        return (end - self.started_ns) / 1e6

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.started_ns) / 1e6
