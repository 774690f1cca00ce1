"""One call to a judge model through the gateway's own provider layer
(router, retries, breakers, fallbacks), not over HTTP to itself: no client
key, limit or budget is charged; the cost is the judge's own."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.pipeline.context import RequestContext
from seawall.providers.registry import ModelRegistry
from seawall.routing.router import Router

JUDGE_TENANT = "_judges"  # the tenant of judge jobs and calls: the gateway's own work


class JudgeCallError(Exception):
    """The judge model gave no usable answer (timeout, upstream down, degraded)."""


@dataclass(frozen=True, slots=True)
class JudgeAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class JudgeCaller:
    def __init__(self, registry: ModelRegistry, router: Router) -> None:
        self.registry = registry
        self.router = router

    async def ask(self, model: str, messages: list[dict[str, Any]], *, timeout_s: float,
                  max_tokens: int, response_format: dict[str, Any] | None = None
                  ) -> JudgeAnswer:
        """The judge's whole answer to ``messages`` (temperature 0)."""
        raw: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0,
                               "max_tokens": max_tokens}
        if response_format is not None:
            raw["response_format"] = response_format
        ctx = RequestContext(endpoint="judge", authenticated=True)
        ctx.tenant, ctx.model, ctx.raw = JUDGE_TENANT, model, raw
        ctx.request = convert(raw, ChatCompletionRequest)
        stream = self.router.chat(ctx, self.registry.resolve(model, "chat"))
        try:
            async with asyncio.timeout(timeout_s):
                async for item in stream:
                    ctx.gatherer.add_item(item)
        except TimeoutError:
            raise JudgeCallError(f"judge model {model!r} did not answer within "
                                 f"{timeout_s:g}s") from None
        except Exception as e:  # noqa: BLE001 - an upstream failure is the call's outcome
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            raise JudgeCallError(f"judge model {model!r} failed: {message}"[:500]) from e
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()
        if ctx.degraded:
            raise JudgeCallError(f"judge model {model!r} gave a degraded answer "
                                 f"({ctx.degraded}), not a verdict")
        text = ctx.gatherer.text
        usage = ctx.gatherer.usage or {}
        # Without a usage block: ~4 characters a token, enough for a budget.
        prompt = int(usage.get("prompt_tokens") or sum(
            len(str(m.get("content", ""))) for m in messages) // 4)
        completion = int(usage.get("completion_tokens") or len(text) // 4)
        dep = ctx.deployment
        cost = dep.cost(prompt, completion) if dep is not None else 0.0
        return JudgeAnswer(text, prompt, completion, cost)
