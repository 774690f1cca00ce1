"""Experiments at run time: which arm a request joins, what that changes,
and (for canaries) what its outcome says about the rollout.

Assignment is stateless (seawall/experiments/assign.py); a canary's step and
verdict are persisted in the main store, so a restart resumes the rollout
where it stood and ``seawall experiments status`` can show it. Outcome
windows are per process: with several replicas each judges its own share of
traffic (a shared window in Redis comes with the distributed store).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from seawall.config import ExperimentSettings, Settings
from seawall.experiments.assign import draw, pick
from seawall.experiments.canary import Canary, CanaryState
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext
from seawall.providers.registry import ModelRegistry
from seawall.store.base import ExperimentStore

__all__ = ["Assignment", "Experiments"]

log = logging.getLogger("seawall.experiments")


@dataclass(slots=True, frozen=True)
class Assignment:
    experiment: str
    arm: int
    variant: str

    @property
    def label(self) -> str:
        return f"{self.experiment}={self.variant}"


def fingerprint(exp: ExperimentSettings) -> str:
    """A canary restarts from its first step when what it compares changes."""
    arms = [v.model_dump() for v in exp.variants]
    blob = orjson.dumps([exp.model, arms, exp.canary.model_dump()], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


class Experiments:
    def __init__(self, settings: Settings, registry: ModelRegistry,
                 store: ExperimentStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.by_model: dict[str, tuple[str, ExperimentSettings]] = {
            e.model: (name, e) for name, e in settings.experiments.items() if e.enabled}
        self.canaries: dict[str, Canary] = {}
        self._saving: set[asyncio.Task[None]] = set()
        for name, e in settings.experiments.items():
            for i, v in enumerate(e.variants):
                target = registry.models.get(v.model or e.model)
                if v.deployment is not None and target is not None and v.deployment not in {
                        d.name for d in target.deployments}:
                    known = ", ".join(d.name for d in target.deployments)
                    raise ValueError(f"experiments.{name}.variants.{i}.deployment: "
                                     f"{v.deployment!r} is not a deployment of "
                                     f"{target.name!r} ({known})")

    async def start(self) -> None:
        saved = await self.store.experiment_states()
        for name, e in self.settings.experiments.items():
            if e.kind != "canary":
                continue
            mark = fingerprint(e)
            state = None
            if name in saved and saved[name].get("fingerprint") == mark:
                state = CanaryState.from_dict(saved[name])
            self.canaries[name] = Canary(name, e.canary, state or CanaryState(mark),
                                         self._changed)
            self._gauge(name)

    def assign(self, ctx: RequestContext) -> tuple[Assignment, ExperimentSettings] | None:
        found = self.by_model.get(ctx.model)
        if found is None:
            return None
        name, exp = found
        canary = self.canaries.get(name)
        weights = canary.weights() if canary is not None else [v.weight for v in exp.variants]
        req = ctx.request
        key_id = ctx.key.id if ctx.key is not None else None
        sticky = (None if exp.sticky == "request" else
                  key_id if exp.sticky == "key" else
                  (req.user if req is not None and req.user else key_id))
        arm = pick(weights, draw(name, sticky))
        return Assignment(name, arm, exp.variants[arm].name), exp

    def observe(self, ctx: RequestContext) -> None:
        a = ctx.experiment
        if a is None:
            return
        failed = ctx.status >= 500
        hung_up = ctx.status == 499  # a caller hanging up says nothing about the arm
        outcome = "cancelled" if hung_up else "error" if failed else "ok"
        self.metrics.experiment_requests.labels(a.experiment, a.variant, outcome).inc()
        canary = self.canaries.get(a.experiment)
        if canary is not None and not hung_up:
            canary.observe(a.arm, failed, ctx.latency_ms)

    def _gauge(self, name: str) -> None:
        canary = self.canaries[name]
        exp = self.settings.experiments[name]
        for v, w in zip(exp.variants, canary.weights(), strict=True):
            self.metrics.experiment_weight.labels(name, v.name).set(w)

    def _changed(self, name: str, state: CanaryState) -> None:
        level = logging.WARNING if state.status == "rolled_back" else logging.INFO
        log.log(level, "canary %s: %s (%s)", name, state.status, state.reason,
                extra={"experiment": name, "status": state.status})
        self._gauge(name)
        task = asyncio.get_running_loop().create_task(
            self.store.save_experiment_state(name, state.to_dict()))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def settle(self) -> None:
        """Wait for state writes in flight (tests, shutdown)."""
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for name, e in self.settings.experiments.items():
            row: dict[str, Any] = {"name": name, "kind": e.kind, "model": e.model,
                                   "enabled": e.enabled,
                                   "variants": [v.name for v in e.variants]}
            canary = self.canaries.get(name)
            if canary is not None:
                st = canary.state
                row.update(status=st.status, share=canary.share, reason=st.reason,
                           step=st.step, steps=e.canary.steps,
                           window=[w.summary() for w in canary.windows],
                           history=st.history)
            else:
                total = sum(v.weight for v in e.variants)
                row["weights"] = {v.name: round(100 * v.weight / total, 2) for v in e.variants}
            out.append(row)
        return out
