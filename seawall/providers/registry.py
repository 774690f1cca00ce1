"""Logical model names -> deployments (provider + upstream model + price).

Swapping the model behind a name is a config change: clients keep asking for
``gpt-4o`` or ``local`` and the registry knows which deployments (provider +
upstream model) can serve it; the router (seawall.routing) picks one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from seawall.config import DegradedSettings, Price, ProviderSettings, Settings, TimeoutSettings
from seawall.errors import InvalidRequest, ModelNotFound
from seawall.providers.base import Provider, ProviderStatus
from seawall.providers.upstream import ResponseLimits
from seawall.routing.breaker import BreakerState
from seawall.routing.health import DeploymentHealth


@dataclass(slots=True, eq=False)
class Deployment:
    """One place a logical model is served: a provider, its model name, its
    limits and timeouts, and the live health the router keeps for it."""

    logical: str
    provider: Provider
    upstream_model: str
    kind: str
    price: Price
    name: str
    weight: float = 1.0
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    hedge: bool = False
    hedge_after_s: float | None = None
    health: DeploymentHealth = field(init=False)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price.input_per_mtok
                + completion_tokens * self.price.output_per_mtok) / 1e6


@dataclass(slots=True, eq=False)
class LogicalModel:
    """A name clients ask for: its deployments, how to balance them, and what
    to fall back to (other models, then a degraded answer)."""

    name: str
    kind: str
    deployments: list[Deployment]
    strategy: str
    fallbacks: list[str]
    degraded: DegradedSettings
    chain: list[LogicalModel] = field(default_factory=list)  # itself, then its fallbacks


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """Construct (not start) the backend for one ``providers.NAME`` entry."""
    # Imports are local so a deployment pays only for the backends it uses.
    if settings.type == "openai":
        from seawall.providers.openai import OpenAIProvider
        return OpenAIProvider(name, settings)
    if settings.type == "anthropic":
        from seawall.providers.anthropic import AnthropicProvider
        return AnthropicProvider(name, settings)
    if settings.type == "local":
        from seawall.providers.local import LocalProvider
        return LocalProvider(name, settings)
    if settings.type == "fake":
        from seawall.providers.fake import FakeProvider
        return FakeProvider(name, settings)
    if settings.type == "embedder":
        from seawall.providers.embedder import EmbedderProvider
        return EmbedderProvider(name, settings)
    raise AssertionError(f"unhandled provider type {settings.type}")


class ModelRegistry:
    def __init__(self, settings: Settings,
                 on_breaker_change: Callable[[str, BreakerState], None] | None = None) -> None:
        self.providers = {name: build_provider(name, p) for name, p in settings.providers.items()}
        limits = ResponseLimits(settings.server.max_upstream_body_bytes,
                                settings.server.max_sse_line_bytes)
        for provider in self.providers.values():
            provider.limits = limits
        res = settings.resilience
        self.models: dict[str, LogicalModel] = {}
        self.by_name: dict[str, Deployment] = {}  # deployment name -> deployment
        for logical, m in settings.models.items():
            deps = []
            for d in m.all_deployments:
                upstream = d.model or logical
                name = f"{d.provider}/{upstream}"
                n = 2
                while name in self.by_name:  # the same upstream twice: keep names distinct
                    name, n = f"{d.provider}/{upstream}#{n}", n + 1
                dep = Deployment(logical=logical, provider=self.providers[d.provider],
                                 upstream_model=upstream, kind=m.kind, price=d.price or m.price,
                                 name=name, weight=d.weight, timeouts=d.timeouts.over(res.timeouts),
                                 hedge=d.hedge or d.hedge_after_s is not None,
                                 hedge_after_s=d.hedge_after_s)
                notify = (None if on_breaker_change is None else
                          (lambda st, _n=name: on_breaker_change(_n, st)))
                dep.health = DeploymentHealth(name, res.breaker, max_concurrency=d.max_concurrency,
                                              rpm=d.rpm, tpm=d.tpm, alpha=res.ewma_alpha,
                                              on_breaker_change=notify)
                self.by_name[name] = dep
                deps.append(dep)
            self.models[logical] = LogicalModel(name=logical, kind=m.kind, deployments=deps,
                                                strategy=m.strategy, fallbacks=list(m.fallbacks),
                                                degraded=m.degraded)

        for lm in self.models.values():
            lm.chain = [lm, *(self.models[f] for f in lm.fallbacks)]

    def resolve(self, model: str, kind: str) -> LogicalModel:
        found = self.models.get(model)
        if found is None:
            known = ", ".join(n for n, m in self.models.items() if m.kind == kind)
            raise ModelNotFound(
                f"The model {model!r} does not exist on this gateway. "
                f"Available {kind} models: {known or 'none'} (GET /v1/models lists them).",
                param="model")
        if found.kind != kind:
            raise InvalidRequest(f"The model {model!r} is a {found.kind} model; "
                                 f"it cannot serve this {kind} endpoint.", param="model",
                                 code="wrong_model_kind")
        return found

    def health(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {name: d.health.snapshot(now) for name, d in self.by_name.items()}

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.providers.values()))

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()),
                             return_exceptions=True)

    def status(self) -> dict[str, ProviderStatus]:
        return {name: p.status() for name, p in self.providers.items()}
