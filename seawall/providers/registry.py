"""Logical model names -> deployments (provider + upstream model + price).

Swapping the model behind a name is a config change: clients keep asking for
``gpt-4o`` or ``local`` and the registry decides which provider serves it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from seawall.config import Price, ProviderSettings, Settings
from seawall.errors import InvalidRequest, ModelNotFound
from seawall.providers.base import Provider, ProviderStatus


@dataclass(slots=True, frozen=True)
class Deployment:
    logical: str
    provider: Provider
    upstream_model: str
    kind: str
    price: Price

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.upstream_model}"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price.input_per_mtok
                + completion_tokens * self.price.output_per_mtok) / 1e6


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
    def __init__(self, settings: Settings) -> None:
        self.providers = {name: build_provider(name, p) for name, p in settings.providers.items()}
        self.deployments = {
            name: Deployment(logical=name, provider=self.providers[m.provider],
                             upstream_model=m.model or name, kind=m.kind, price=m.price)
            for name, m in settings.models.items()
        }

    def resolve(self, model: str, kind: str) -> Deployment:
        dep = self.deployments.get(model)
        if dep is None:
            known = ", ".join(n for n, d in self.deployments.items() if d.kind == kind)
            raise ModelNotFound(
                f"The model {model!r} does not exist on this gateway. "
                f"Available {kind} models: {known or 'none'} (GET /v1/models lists them).",
                param="model")
        if dep.kind != kind:
            raise InvalidRequest(f"The model {model!r} is a {dep.kind} model; "
                                 f"it cannot serve this {kind} endpoint.", param="model",
                                 code="wrong_model_kind")
        return dep

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.providers.values()))

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()),
                             return_exceptions=True)

    def status(self) -> dict[str, ProviderStatus]:
        return {name: p.status() for name, p in self.providers.items()}
