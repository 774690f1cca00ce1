"""Which budgets apply, what was spent of them, and the 50/80/100% marks
(docs/limits.md#budgets, docs/security.md).

A key's budget is on the key (`seawall keys budget`). A tenant's is the one
set with `seawall tenants budget` (in the store), else the config file's
``limits.tenants.<name>.budget_usd``. Stored tenant budgets are read through
a short cache (``auth.key_cache_ttl_s``) that a ``tenant_budget`` change
notice empties at once. A reset (``--reset``) moves the start of the counted
spend to now: the budget starts a new bucket, seeded from the trace records
after the reset.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from seawall.config import LimitSettings
from seawall.pipeline.budgets import BudgetLimit, Budgets, micros, period_bounds

if TYPE_CHECKING:
    from seawall.observe.metrics import Metrics
    from seawall.pipeline.context import RequestContext
    from seawall.quality.alerts import AlertSink
    from seawall.store.base import ApiKey, KeyStore, TenantBudget

log = logging.getLogger("seawall.budgets")

THRESHOLDS = (0.5, 0.8, 1.0)


def key_limit(key: ApiKey) -> BudgetLimit | None:
    if key.budget_usd is None:
        return None
    return BudgetLimit(f"key:{key.id}", key.budget_usd, key.budget_period or "month",
                       f"key {key.name!r}", key.tenant, key.id, key.budget_reset_at or 0.0)


class BudgetLimits:
    """The budgets a request is held to, from the key and the tenant."""

    def __init__(self, settings: LimitSettings, store: KeyStore | None,
                 ttl_s: float = 5.0) -> None:
        self.settings = settings
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[TenantBudget | None, float]] = {}

    def changed(self, event: dict[str, Any] | None = None) -> None:
        """A ``tenant_budget`` notice (or a resync): read them afresh."""
        tenant = (event or {}).get("tenant")
        if tenant is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant, None)

    async def _stored(self, tenant: str) -> TenantBudget | None:
        if self.store is None:
            return None
        now = time.monotonic()
        hit = self._cache.get(tenant)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            found = await self.store.tenant_budget(tenant)
        except Exception:
            log.warning("could not read the budget of tenant %s; using the last known one",
                        tenant, exc_info=True)
            return hit[0] if hit is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: cheap to refill
        self._cache[tenant] = (found, now + self.ttl_s)
        return found

    async def tenant(self, tenant: str) -> BudgetLimit | None:
        stored = await self._stored(tenant)
        if stored is not None:
            if stored.budget_usd is None:
                return None  # set to "no budget" with the CLI: overrides the config file
            return BudgetLimit(f"tenant:{tenant}", stored.budget_usd, stored.budget_period,
                               f"tenant {tenant!r}", tenant, None, stored.reset_at or 0.0)
        conf = self.settings.tenants.get(tenant)
        if conf is None or conf.budget_usd is None:
            return None
        return BudgetLimit(f"tenant:{tenant}", conf.budget_usd, conf.budget_period,
                           f"tenant {tenant!r}", tenant)

    async def for_key(self, key: ApiKey | None, tenant: str | None = None) -> list[BudgetLimit]:
        out = []
        own = key_limit(key) if key is not None else None
        if own is not None:
            out.append(own)
        t = await self.tenant(tenant if tenant is not None else key.tenant if key else "")
        if t is not None:
            out.append(t)
        return out

    async def for_request(self, ctx: RequestContext) -> list[BudgetLimit]:
        return await self.for_key(ctx.key, ctx.tenant)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def spend_line(budgets: Budgets, lim: BudgetLimit) -> dict[str, Any]:
    """One budget's state for people and the admin API."""
    now = time.time()
    try:
        spent, reserved = await budgets.spent(lim)
    except Exception:  # Redis away: say so rather than fail the whole answer
        log.warning("could not read the spend of %s", lim.label, exc_info=True)
        spent, reserved = float("nan"), float("nan")
    pid, _, end = period_bounds(lim.period, now)
    return {"budget": lim.label, "usd": lim.usd, "period": lim.period, "period_id": pid,
            "spent_usd": None if spent != spent else round(spent, 6),
            "reserved_usd": None if reserved != reserved else round(reserved, 6),
            "used": None if spent != spent or not lim.usd else round(spent / lim.usd, 4),
            "counted_since": _when(lim.start(now)), "resets_at": _when(end)}


class Thresholds:
    """Logs, counts and alerts a budget passing 50, 80 and 100% of its limit.

    Fed by :meth:`Budgets.settle`, which answers the spend right after each
    cost was added in the same atomic step that added it: a threshold is
    passed by the one settle whose cost spans it (spend before < mark <= spend
    after), so each budget, period and threshold is marked exactly once
    across every replica sharing the spend, without reading the spend back.
    """

    def __init__(self, budgets: Budgets, metrics: Metrics,
                 alerts: AlertSink | None = None) -> None:
        self.budgets = budgets
        self.metrics = metrics
        self.alerts = alerts  # the alert webhooks (alerts.webhooks), when configured

    @staticmethod
    def passed(lim: BudgetLimit, spent: float, cost: float) -> list[float]:
        """The thresholds that adding ``cost`` to reach ``spent`` passed
        (in whole micro-dollars: exact, whatever the float sums)."""
        limit, after = micros(lim.usd), micros(spent)
        before = after - micros(cost)
        return [t for t in THRESHOLDS if before < t * limit <= after]

    async def check(self, lim: BudgetLimit, spent: float, cost: float,
                    bucket: str | None = None) -> None:
        """``spent``: the budget's spend right after ``cost`` was added to
        ``bucket`` (the period it was reserved in; default: the current one)."""
        if lim.usd <= 0 or cost <= 0:
            return
        passed = self.passed(lim, spent, cost)
        if not passed:
            return
        if bucket is None:
            bucket = lim.bucket(time.time())[0]
        kind = lim.scope.split(":", 1)[0]
        for t in passed:
            self.metrics.budget_thresholds.labels(kind, f"{t:.0%}").inc()
        log.warning("budget of %s passed %.0f%%: $%.4f of $%g per %s spent", lim.label,
                    passed[-1] * 100, spent, lim.usd, lim.period,
                    extra={"budget": lim.scope, "threshold": passed[-1], "spent_usd": spent})
        if self.alerts is not None and self.alerts.enabled:
            await self._alert(lim, bucket, passed[-1], spent)

    async def _alert(self, lim: BudgetLimit, bucket: str, threshold: float,
                     spent: float) -> None:
        """One alert per budget, period and threshold: keyed by the period's
        bucket, so the shared alert state (Postgres) sends it once however many
        replicas saw the crossing; a failure is logged, never raised."""
        from seawall.quality.alerts import Alert

        assert self.alerts is not None
        alert = Alert(
            key=f"budget:{bucket}:{threshold:.0%}",
            title=f"Budget of {lim.label} passed {threshold:.0%}",
            severity="page" if threshold >= 1.0 else "ticket", source="budget",
            summary=(f"${spent:.4f} of ${lim.usd:g} per {lim.period} spent"
                     + ("; requests are refused with 429 budget_exceeded until it resets"
                        if threshold >= 1.0 else "")),
            labels={"budget": lim.scope, "period": lim.period},
            values={"threshold": threshold, "spent_usd": round(spent, 6), "budget_usd": lim.usd})
        try:
            if self.alerts.state is not None:
                await self.alerts.update(alert)
            else:
                self.alerts.send(alert)
        except Exception:
            log.exception("budget alert for %s not sent", lim.label)
