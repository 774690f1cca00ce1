"""Experiments as a pipeline stage: put the request in an arm and apply what
the arm changes (model, preferred deployment, prompt version) before anything
else reads them; after the answer, feed its outcome to the canary."""

from __future__ import annotations

import msgspec

from seawall.experiments.service import Experiments
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext

__all__ = ["ExperimentStage"]


class ExperimentStage:
    name = "experiment"
    traced = False

    def __init__(self, experiments: Experiments) -> None:
        self.experiments = experiments

    async def before(self, ctx: RequestContext) -> None:
        if ctx.endpoint not in CHAT_ENDPOINTS or not self.experiments.by_model:
            return None
        found = self.experiments.assign(ctx)
        if found is None:
            return None
        ctx.experiment, exp = found
        variant = exp.variants[ctx.experiment.arm]
        assert ctx.raw is not None and ctx.request is not None
        if variant.model is not None:
            # raw["model"] too: it is part of the cache key, so arms never share answers.
            ctx.model = ctx.raw["model"] = variant.model
        ctx.prefer_deployment = variant.deployment
        prompt = getattr(ctx.request, "prompt", None)
        if prompt is not None and (variant.prompt_label or variant.prompt_version):
            ctx.request = msgspec.structs.replace(ctx.request, prompt=msgspec.structs.replace(
                prompt, label=variant.prompt_label, version=variant.prompt_version))
        return None

    async def after(self, ctx: RequestContext) -> None:
        self.experiments.observe(ctx)
