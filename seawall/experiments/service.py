"""Experiments at run time: which arm a request joins, what that changes,
and (for canaries) what its outcome says about the rollout.

Assignment is stateless (seawall/experiments/assign.py); a canary's step and
verdict are persisted in the main store, so a restart resumes the rollout
where it stood and ``seawall experiments status`` can show it.

With Redis (several replicas): every replica adds its outcomes to a window
shared in Redis (seawall/experiments/shared_window.py); one replica at a
time, the holder of the ``experiments`` lease (seawall/store/lease.py),
judges it, saves the new state with compare-and-set on the store's revision
and sends an ``experiment`` change notice, on which every other replica
reloads the state from the store (seawall/store/bus.py). Without Redis each
process judges its own window.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from seawall.config import ExperimentSettings, Settings
from seawall.experiments.assign import draw, pick
from seawall.experiments.canary import Canary, CanaryState, Quality, Status
from seawall.experiments.shared_window import SharedWindows
from seawall.observe.metrics import Metrics
from seawall.pipeline.context import RequestContext
from seawall.providers.registry import ModelRegistry
from seawall.store.base import ExperimentStore
from seawall.store.bus import ChangeBus, Event
from seawall.store.lease import Lease, LocalLease

if TYPE_CHECKING:
    from seawall.store.redis_link import RedisLink

__all__ = ["Assignment", "Experiments"]

log = logging.getLogger("seawall.experiments")

SALT_NAME = "_seawall_salt"  # the generated assignment salt's row in the experiments table


class OverrideRefused(Exception):
    """A hand rollback or promotion that cannot apply (the message says why)."""


def parse_label(label: str) -> tuple[str, str] | None:
    """(experiment, variant) of a trace record's ``experiment`` ("name=variant";
    a variant name never holds "=" or ":", an experiment's name may)."""
    for sep in ("=", ":"):
        name, found, variant = label.rpartition(sep)
        if found and name and variant:
            return name, variant
    return None


def output_tokens(ctx: RequestContext) -> int:
    """The answer's output tokens as reported, else estimated from its length
    (characters / 4: cheap, and only used to normalise latency)."""
    usage = ctx.usage or ctx.gatherer.usage or {}
    n = usage.get("completion_tokens")
    if isinstance(n, int) and n > 0:
        return n
    return len(ctx.gatherer.text) // 4


@dataclass(slots=True, frozen=True)
class Assignment:
    experiment: str
    arm: int
    variant: str

    @property
    def label(self) -> str:
        return f"{self.experiment}={self.variant}"


# Canary settings added after rollouts were already running: left out of the
# fingerprint while at their defaults, so an upgrade does not restart (or
# re-run a rolled-back) rollout.
_LATER_CANARY_FIELDS = ("per_token", "min_tenants", "max_quality_drop", "min_judged",
                        "max_negative_rate_increase", "min_rated")


def fingerprint(exp: ExperimentSettings) -> str:
    """A canary restarts from its first step when what it compares changes."""
    arms = [v.model_dump() for v in exp.variants]
    canary = exp.canary.model_dump()
    defaults = type(exp.canary)()
    for name in _LATER_CANARY_FIELDS:
        if canary[name] == getattr(defaults, name):
            del canary[name]
    blob = orjson.dumps([exp.model, arms, canary], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


class Experiments:
    def __init__(self, settings: Settings, registry: ModelRegistry,
                 store: ExperimentStore, metrics: Metrics, bus: ChangeBus | None = None,
                 lease: Lease | None = None, redis: RedisLink | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.bus = bus
        self.lease: Lease = lease or LocalLease()
        self.by_model: dict[str, tuple[str, ExperimentSettings]] = {
            e.model: (name, e) for name, e in settings.experiments.items() if e.enabled}
        self.canaries: dict[str, Canary] = {}
        self.salt = ""  # loaded (or made) at start: see _load_salt
        self.revisions: dict[str, int] = {}  # of each canary's state as this process has it
        self._save_locks: dict[str, asyncio.Lock] = {}
        self._unsaved: set[str] = set()  # moved here, CAS not done yet: not judged again
        self.shared = None if redis is None else SharedWindows(
            redis, self.canaries, lambda name: self.revisions.get(name, 0),
            lambda name: self.lease.held and name not in self._unsaved, metrics)
        self._saving: set[asyncio.Task[None]] = set()
        if bus is not None:
            bus.subscribe("experiment", self._notice, resync=self.reload_all)
        for name, e in settings.experiments.items():
            for i, v in enumerate(e.variants):
                target = registry.models.get(v.model or e.model)
                if v.deployment is not None and target is not None and v.deployment not in {
                        d.name for d in target.deployments}:
                    known = ", ".join(d.name for d in target.deployments)
                    raise ValueError(f"experiments.{name}.variants.{i}.deployment: "
                                     f"{v.deployment!r} is not a deployment of "
                                     f"{target.name!r} ({known})")

    async def _load_salt(self) -> None:
        """The secret the arm draw is keyed with: one for every replica, made
        by whichever starts first (compare-and-set) and kept in the store."""
        saved, revision = await self.store.experiment_state(SALT_NAME)
        if saved is None or not isinstance(saved.get("salt"), str):
            fresh = {"salt": secrets.token_hex(32)}
            if await self.store.save_experiment_state(
                    SALT_NAME, fresh, expect_revision=revision) is not None:
                saved = fresh
            else:  # another replica made it first
                saved, _ = await self.store.experiment_state(SALT_NAME)
        assert saved is not None
        self.salt = str(saved["salt"])

    async def start(self) -> None:
        if any(e.enabled and e.salt is None for e in self.settings.experiments.values()):
            await self._load_salt()
        for name, e in self.settings.experiments.items():
            if e.kind != "canary":
                continue
            mark = fingerprint(e)
            saved, self.revisions[name] = await self.store.experiment_state(name)
            state = None
            if saved is not None and saved.get("fingerprint") == mark:
                state = CanaryState.from_dict(saved)
            # Shared windows: the lease holder judges every replica's outcomes
            # (SharedWindows); its own window alone is never judged.
            decide = (lambda: False) if self.shared else (lambda: self.lease.held)
            self.canaries[name] = Canary(name, e.canary, state or CanaryState(mark),
                                         self._changed, may_decide=decide)
            self._gauge(name)
        if self.canaries:
            await self.lease.start()
            if self.shared is not None:
                await self.shared.start()

    async def close(self) -> None:
        """Hand in this process's counts, finish state writes, hand the lease over."""
        if self.shared is not None:
            await self.shared.close()
        await self.settle()
        await self.lease.close()

    # -- other replicas' moves --

    def _notice(self, event: Event) -> Any:
        name = event.get("name")
        if isinstance(name, str) and name in self.canaries:
            return self.reload(name)
        return None

    async def reload_all(self) -> None:
        """Change notices may have been missed: read every canary's state again."""
        for name in list(self.canaries):
            await self.reload(name)

    async def reload(self, name: str) -> None:
        """Take the stored state of ``name`` if it is newer than ours."""
        saved, revision = await self.store.experiment_state(name)
        canary = self.canaries[name]
        if saved is None or revision <= self.revisions.get(name, 0):
            return
        if saved.get("fingerprint") != canary.state.fingerprint:
            log.warning("canary %s: the stored state is for another configuration of this "
                        "experiment (replicas with different configs?); keeping ours", name,
                        extra={"experiment": name})
            return
        self.revisions[name] = revision
        canary.replace_state(CanaryState.from_dict(saved))
        log.info("canary %s: now %s at %g%% (moved by another replica)", name,
                 canary.state.status, canary.share, extra={"experiment": name})
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
        arm = pick(weights, draw(name, sticky, exp.salt or self.salt))
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
            tokens = output_tokens(ctx)
            # A failure that never reached an upstream (refused by an open
            # breaker) is not its tenant's: Canary.observe. An answer always is.
            attempted = not failed or bool(ctx.attempts)
            canary.observe(a.arm, failed, ctx.latency_ms, ctx.tenant, tokens, attempted)
            if self.shared is not None:
                self.shared.add(a.experiment, a.arm, failed, ctx.latency_ms, ctx.tenant,
                                canary.settings.per_token, tokens, attempted)

    def observe_quality(self, label: str | None, tenant: str, q: Quality) -> bool:
        """A judge score or rating of an answer served in arm ``label`` (the
        trace record's ``experiment``); True if a running canary took it."""
        found = parse_label(label) if label else None
        if found is None:
            return False
        name, variant = found
        canary = self.canaries.get(name)
        exp = self.settings.experiments.get(name)
        if canary is None or exp is None or canary.state.status != "running":
            return False
        arms = [v.name for v in exp.variants]
        if variant not in arms:
            return False
        arm = arms.index(variant)
        canary.observe_quality(arm, tenant, q)
        if self.shared is not None:
            self.shared.add_quality(name, arm, tenant, q)
        return True

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
        self._unsaved.add(name)
        task = asyncio.get_running_loop().create_task(self._save(name, state.to_dict()))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, name: str, state: dict[str, Any]) -> None:
        """Compare-and-set on the revision we had, then tell the others. Saves
        of one canary go one at a time (each expects the previous one's revision)."""
        async with self._save_locks.setdefault(name, asyncio.Lock()):
            try:
                revision = await self._save_until_stored(name, state)
                if revision is None:
                    log.warning("canary %s: another replica moved it first; taking its "
                                "state", name, extra={"experiment": name})
                    await self.reload(name)
                    return
                self.revisions[name] = revision
            finally:
                self._unsaved.discard(name)
        if self.bus is not None:
            await self.bus.publish({"kind": "experiment", "name": name, "revision": revision})

    async def _save_until_stored(self, name: str, state: dict[str, Any]) -> int | None:
        """A decision taken must be stored: a failing store is retried with a
        backoff (the canary is not judged again meanwhile); shutdown cancels."""
        delay = 0.5
        while True:
            try:
                return await self.store.save_experiment_state(
                    name, state, expect_revision=self.revisions.get(name, 0))
            except Exception:
                log.exception("canary %s: saving its state failed; retrying in %.1fs",
                              name, delay, extra={"experiment": name})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def override(self, name: str, status: Status, reason: str, by: str) -> dict[str, Any]:
        """Roll back or promote canary ``name`` by hand: from the newest stored
        state, moved and saved like a verdict (compare-and-set, then the change
        notice every replica reloads on). Raises OverrideRefused when there is
        nothing to move (not a canary, already ended, or another replica moved
        it at the same moment)."""
        canary = self.canaries.get(name)
        if canary is None:
            raise OverrideRefused(f"{name!r} is not a running canary experiment here.")
        await self.reload(name)
        now = canary.state.status
        if now == status or (now != "running" and not (now == "promoted"
                                                        and status == "rolled_back")):
            raise OverrideRefused(f"canary {name!r} is already {now.replace('_', ' ')}.")
        before = {"status": now, "share": canary.share, "step": canary.state.step}
        seen = self.shared.seen.get(name) if self.shared is not None else None
        canary.override(status, reason, by, seen)  # -> _changed -> _save
        await self.settle()
        if canary.state.status != status:
            raise OverrideRefused(f"another replica moved canary {name!r} at the same moment "
                                  f"(now {canary.state.status}); look again and retry.")
        return {"before": before, "after": {"status": status, "share": canary.share,
                                             "step": canary.state.step}}

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
                seen = self.shared.seen.get(name) if self.shared is not None else None
                row.update(status=st.status, share=canary.share, reason=st.reason,
                           step=st.step, steps=e.canary.steps,
                           window=[w.summary() for w in seen or canary.windows],
                           history=st.history)
            else:
                total = sum(v.weight for v in e.variants)
                row["weights"] = {v.name: round(100 * v.weight / total, 2) for v in e.variants}
            out.append(row)
        return out
