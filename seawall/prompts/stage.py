"""The prompt as a pipeline stage: a request that names a prompt gets its
rendered messages in front of its own, and the prompt's parameters where it
set none.

It runs before retrieval and the cache on purpose: retrieval then sees the
model the prompt chose, and the cache keys on the messages the model actually
receives, scoped by ``ctx.prompt_version`` (``name@version``), so moving a
label (or rolling it back) can never serve an answer made from another
version.

Rules (docs/prompts.md):
- messages: the prompt's, rendered, then the request's own (often just the
  user turn);
- parameters: the request wins; the prompt's apply where the request sent
  none (``max_tokens`` and ``max_completion_tokens`` count as one);
- model: the request's, unless it is the literal ``"prompt"``: then the
  prompt version's ``model``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import msgspec

from seawall.api.wire import ChatCompletionRequest, Message
from seawall.errors import InvalidRequest
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.pipeline.permissions import require_model
from seawall.prompts.model import PARAMS
from seawall.prompts.registry import PromptRegistry

__all__ = ["MODEL_FROM_PROMPT", "PromptStage"]

MODEL_FROM_PROMPT = "prompt"  # request model meaning "the prompt's model"
_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")
_STRUCT_FIELDS = frozenset(ChatCompletionRequest.__struct_fields__)


class PromptStage:
    name = "prompt"
    traced = False  # a span only when a prompt was used (added in before)

    def __init__(self, registry: PromptRegistry) -> None:
        self.registry = registry

    async def before(self, ctx: RequestContext) -> None:
        if ctx.endpoint not in CHAT_ENDPOINTS:
            return None
        req, raw = ctx.request, ctx.raw
        if req is None or raw is None:
            return None
        ref = req.prompt
        if ref is None:
            return None
        t0 = time.time_ns()
        prompt = await self.registry.aresolve(ref.name, ref.label, ref.version)
        spec = prompt.version.spec
        model = None
        if ctx.model == MODEL_FROM_PROMPT:  # ctx.model: an earlier stage may have set it
            model = spec.model
            if model is None:
                raise InvalidRequest(f"Prompt {prompt.ref} sets no model; send a model name "
                                     f"instead of {MODEL_FROM_PROMPT!r}.", param="model",
                                     code="prompt_model_missing")
            require_model(ctx, model)  # the key's --models apply to the prompt's model too
        rendered = prompt.render(ref.variables)  # before any change: a 400 leaves ctx as it was

        changes: dict[str, Any] = {
            "messages": [Message(role=m["role"], content=m["content"]) for m in rendered]
            + list(req.messages)}
        if not changes["messages"]:  # possible only if the request may send no messages
            raise InvalidRequest(f"Prompt {prompt.ref} rendered no messages and the request "
                                 "has none.", param="messages", code="prompt_empty")
        raw["messages"] = [*rendered, *raw.get("messages", ())]
        limit_set = any(raw.get(k) is not None for k in _TOKEN_LIMITS)
        for key in PARAMS:
            value = spec.params.get(key)
            if value is None or raw.get(key) is not None or (limit_set and key in _TOKEN_LIMITS):
                continue
            value = copy.deepcopy(value) if isinstance(value, dict | list) else value
            raw[key] = value  # the cached version's values are never shared with a request
            if key in _STRUCT_FIELDS:
                changes[key] = value
        if model is not None:
            raw["model"] = ctx.model = changes["model"] = model
        raw.pop("prompt", None)  # ours: never sent upstream
        changes["prompt"] = None
        ctx.request = msgspec.structs.replace(req, **changes)
        ctx.prompt_version = prompt.ref
        ctx.span(self.name, t0)
        return None

    async def after(self, ctx: RequestContext) -> None:
        return None
