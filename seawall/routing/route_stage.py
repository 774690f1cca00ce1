"""Cost-aware routing as a pipeline stage: a request for a route (say
``model: "auto"``) is scored (the probability that the cheapest tier's answer
is good enough) and sent to the cheapest tier whose cut point the score
clears (seawall/routing/complexity/).

It runs after the prompt stage (the route sees the prompt's messages) and
before retrieval (retrieved context would make every question look long and
hard): the decision is about the user's question, not about our own context.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from seawall.config import RouteSettings, Settings
from seawall.ml.embedder import Embedder
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import CHAT_ENDPOINTS, RequestContext
from seawall.routing.complexity import (
    CostTarget,
    RouterModel,
    RulesRouter,
    TierPolicy,
    routing_text,
    text_features,
)
from seawall.routing.complexity.combined import CombinedRouter
from seawall.routing.complexity.model import embedder_id
from seawall.routing.complexity.shipped import load_shipped

__all__ = ["RouteDecision", "RouteStage"]


@dataclass(slots=True, frozen=True)
class RouteDecision:
    route: str
    tier: int  # 0 = cheapest
    model: str
    score: float  # P(the cheapest tier is good enough)
    threshold: float | None  # the cut point that decided it (None: below every one)
    reason: str
    router: str  # "rules", "learned:<version prefix>" or "combined:<version prefix>"

    def record(self) -> dict[str, Any]:
        return {"route": self.route, "tier": self.tier, "model": self.model,
                "score": round(self.score, 4),
                "threshold": None if self.threshold is None else round(self.threshold, 4),
                "reason": self.reason, "router": self.router}


class _Route:
    """One configured route: its scorer and its tier policy."""

    def __init__(self, name: str, s: RouteSettings) -> None:
        self.name = name
        self.settings = s
        self.policy = TierPolicy(s.tiers, s.static_thresholds())
        self.rules = RulesRouter(s.rules)
        path = s.model_path
        if s.router == "rules":
            self.model: RouterModel | None = None
        elif path:
            self.model = RouterModel.load(path, expect_embedder=embedder_id())
        else:  # combined without a file: the router shipped with Seawall
            self.model = load_shipped()
        self.combined = (CombinedRouter(self.model, self.rules, s.ood_cutoff)
                         if s.router == "combined" and self.model is not None else None)
        self.label = ("rules" if self.model is None else f"{s.router}:{self.model.version[:12]}")
        shares = ([1 - s.strong_share, s.strong_share] if s.strong_share is not None
                  else s.shares)
        self.target = (CostTarget(shares, window=s.window, min_samples=s.min_samples,
                                  fallback=self.policy.thresholds) if shares else None)


class RouteStage:
    name = "route"
    traced = False  # a span only when a route was asked for

    def __init__(self, settings: Settings, embedder: Embedder, metrics: Metrics) -> None:
        self.routes = {name: _Route(name, r) for name, r in settings.routes.items()}
        self.embedder = embedder
        self.metrics = metrics

    async def before(self, ctx: RequestContext) -> None:
        if ctx.endpoint not in CHAT_ENDPOINTS or not self.routes:
            return None
        route = self.routes.get(ctx.model)
        if route is None:
            return None
        t0 = time.time_ns()
        assert ctx.raw is not None
        messages = ctx.raw["messages"]
        features = text_features(messages)
        by_kind = route.combined.decide_by_kind(features) if route.combined else None
        if route.model is None:
            ruled = route.rules.decide_features(features)
            score, reason = ruled.score, ruled.reason
        elif by_kind is not None:  # another kind of task: the rules, no embedding needed
            score, reason = by_kind.score, by_kind.reason
        else:
            vector = (await asyncio.to_thread(self.embedder.embed, [routing_text(messages)]))[0]
            if route.combined is not None:  # learned if familiar, else the rules
                both = route.combined.decide(vector, features)
                score, reason = both.score, both.reason
            else:
                score = route.model.score(vector, features)
                ruled = route.rules.decide_features(features)
                reason = f"learned P(cheap ok) {score:.2f}; signals: {ruled.reason}"
        cuts = route.target.thresholds() if route.target is not None else None
        choice = route.policy.choose(score, cuts)
        if route.target is not None:
            route.target.observe(score)
        ctx.route = RouteDecision(route.name, choice.index, choice.tier, score,
                                  choice.threshold, reason, route.label)
        ctx.model = ctx.raw["model"] = choice.tier  # the cache keys on the tier too
        self.metrics.route_decisions.labels(route.name, choice.tier).inc()
        self.metrics.route_score.labels(route.name).observe(score)
        ctx.span(self.name, t0)
        return None

    async def after(self, ctx: RequestContext) -> None:
        return None
