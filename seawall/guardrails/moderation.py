"""The moderation hook: ask a model (Llama Guard style) or an OpenAI-compatible
``/v1/moderations`` endpoint whether a text is safe, within a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from seawall.api.wire import ChatCompletionRequest
from seawall.config import ModerationSettings
from seawall.guardrails.texts import message_slots
from seawall.pipeline.context import RequestContext

# Runs a chat request through the gateway's own router: (context, model) -> answer text.
AskModel = Callable[[RequestContext, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()


class Moderation:
    def __init__(self, settings: ModerationSettings, ask_model: AskModel) -> None:
        self.settings = settings
        self._ask_model = ask_model
        self._session: aiohttp.ClientSession | None = None

    async def check(self, ctx: RequestContext, messages: list[dict[str, Any]]) -> Verdict:
        """The verdict on ``messages``; raises on failure or timeout (the
        caller applies ``fail_open``)."""
        s = self.settings
        async with asyncio.timeout(s.timeout_s):
            if s.model is not None:
                return await self._by_model(ctx, s.model, messages)
            return await self._by_url(messages)

    async def _by_model(self, ctx: RequestContext, model: str,
                        messages: list[dict[str, Any]]) -> Verdict:
        convo = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                 for m in messages if m.get("role") in ("user", "assistant", "system")]
        if self.settings.prompt:
            convo.insert(0, {"role": "system", "content": self.settings.prompt})
        raw = {"model": model, "messages": convo, "max_tokens": 32, "temperature": 0}
        sub = RequestContext(endpoint="moderation", raw=raw, model=model,
                             request=msgspec.convert(raw, ChatCompletionRequest),
                             tenant=ctx.tenant, key=ctx.key, client_host=ctx.client_host)
        answer = (await self._ask_model(sub, model)).strip()
        head, _, rest = answer.partition("\n")
        flagged = head.strip().lower().startswith("unsafe")
        cats = tuple(c.strip() for c in rest.replace(",", "\n").split("\n") if c.strip())
        return Verdict(flagged, cats[:8] if flagged else ())

    async def _by_url(self, messages: list[dict[str, Any]]) -> Verdict:
        s = self.settings
        assert s.url is not None
        text = "\n".join(box[key] for box, key in message_slots(messages))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        async with self._session.post(s.url, json={"input": text}, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"moderation endpoint answered {resp.status}")
            body = await resp.json()
        results = body.get("results") or [{}]
        first = results[0]
        flagged = bool(first.get("flagged"))
        cats = tuple(sorted(k for k, v in (first.get("categories") or {}).items() if v))
        return Verdict(flagged, cats[:8])

    async def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
