"""``seawall keys rotate|budget|show`` and ``seawall tenants``: key
lifecycle and spend management from the command line (the operator: the
CLI acts with the master key's rights). Changes are sent as change notices,
so running servers apply them within a second with ``redis.url`` set, else
within ``auth.key_cache_ttl_s``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from seawall.audit.record import budget_state, key_state
from seawall.cli_common import config_option, run_on_store, settings_from
from seawall.config import Settings
from seawall.pipeline.budgets import PERIODS, BudgetLimit

MAX_GRACE_S = 30 * 86400


def _audit(settings: Settings, action: str, tenant: str, target: str,
           before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """The change in the audit log (a failed write: exit 1, the change applied)."""
    from seawall.audit.cli import cli_auditor

    with cli_auditor(settings) as audit:
        audit.record(action, tenant=tenant, target=target, before=before, after=after)


def _told(settings: Settings, event: dict[str, Any]) -> str:
    from seawall.store.bus import publish_once

    if publish_once(settings, event):
        return "servers apply it now"
    return f"servers apply it within {settings.auth.key_cache_ttl_s:g}s"


def _find(settings: Settings, which: str, include_revoked: bool = True) -> Any:
    try:
        key = run_on_store(lambda s: s.find_key(which, include_revoked=include_revoked),
                           settings)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if key is None:
        raise click.ClickException(f"no {'' if include_revoked else 'active '}key with id or "
                                   f"name {which!r}")
    return key


def spend_lines(settings: Settings, limits: list[BudgetLimit]) -> list[dict[str, Any]]:
    """Each budget's spend this period: from Redis with redis.url set (what
    the servers count), else from the trace records (what a server starts
    from; a few seconds behind the requests)."""
    from seawall.pipeline.budget_admin import spend_line
    from seawall.pipeline.budgets import InMemoryBudgets
    from seawall.store.factory import Stores

    async def from_redis() -> list[dict[str, Any]]:
        stores = Stores(settings)
        try:
            budgets = stores.budgets()
            return [await spend_line(budgets, lim) for lim in limits]
        finally:
            if stores.redis is not None:
                await stores.redis.close()

    async def from_traces(store: Any) -> list[dict[str, Any]]:
        budgets = InMemoryBudgets(ledger=store)
        out = []
        for lim in limits:
            await budgets.reserve([lim], 0.0)  # starts the period from the records
            out.append(await spend_line(budgets, lim))
        return out

    return (asyncio.run(from_redis()) if settings.redis.url
            else run_on_store(from_traces, settings))


def _limits(settings: Settings, key: Any = None, tenant: str | None = None
            ) -> list[BudgetLimit]:
    from seawall.pipeline.budget_admin import BudgetLimits

    async def go(store: Any) -> list[BudgetLimit]:
        found = BudgetLimits(settings.limits, store)
        if key is not None:
            return await found.for_key(key)
        assert tenant is not None
        lim = await found.tenant(tenant)
        return [] if lim is None else [lim]
    result: list[BudgetLimit] = run_on_store(go, settings)
    return result


def _echo_spend(lines: list[dict[str, Any]]) -> None:
    for b in lines:
        spent = "?" if b["spent_usd"] is None else f"${b['spent_usd']:.4f}"
        used = "" if b["used"] is None else f" ({b['used']:.0%})"
        click.echo(f"  {b['budget']}: {spent} of ${b['usd']:g} per {b['period']}{used} "
                   f"since {b['counted_since']}; resets {b['resets_at']}")


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@click.command("rotate")
@config_option
@click.argument("key")
@click.option("--grace", default="1h", show_default=True,
              help="How long the current secret keeps working (e.g. 0s, 30m, 1h, 7d; at most "
                   "30d).")
def keys_rotate(config: str | None, key: str, grace: str) -> None:
    """Give KEY (id or name) a new secret, printed once; the current one
    stays valid for --grace, so clients can switch without a gap."""
    from seawall.keys import parse_duration, rotated_secret

    settings = settings_from(config)
    try:
        grace_s = parse_duration(grace)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grace") from None
    if grace_s > MAX_GRACE_S:
        raise click.BadParameter("at most 30d", param_hint="--grace")
    found = _find(settings, key, include_revoked=False)
    secret, key_hash, prefix = rotated_secret()
    until = time.time() + grace_s
    rotated = run_on_store(lambda s: s.rotate_key(found.id, key_hash, prefix, until), settings)
    if rotated is None:
        raise click.ClickException(f"no active key with id or name {key!r}")
    told = _told(settings, {"kind": "key_changed", "id": found.id})
    _audit(settings, "key.rotate", found.tenant, found.id, key_state(found),
           key_state(rotated))
    click.echo(f"rotated {found.id} ({found.name}); the old secret works until "
               f"{_when(until)}; {told}", err=True)
    click.echo("the new secret is shown once; store it now:", err=True)
    click.echo(secret)


@click.command("budget")
@config_option
@click.argument("key")
@click.option("--usd", type=click.FloatRange(min=0), default=None,
              help="The spend limit in USD per --period.")
@click.option("--period", type=click.Choice(PERIODS), default=None,
              help="The UTC period (default: the key's, else month).")
@click.option("--none", "clear", is_flag=True, help="Remove the key's budget.")
@click.option("--reset", is_flag=True,
              help="Count spend from now on (this period's earlier spend is forgiven).")
def keys_budget(config: str | None, key: str, usd: float | None, period: str | None,
                clear: bool, reset: bool) -> None:
    """Set, remove or reset KEY's budget (id or name)."""
    settings = settings_from(config)
    if not (usd is not None or clear or reset or period):
        raise click.UsageError("say what to change: --usd, --period, --none or --reset")
    found = _find(settings, key, include_revoked=False)
    changes: dict[str, Any] = {}
    if clear:
        changes.update(budget_usd=None, budget_period=None)
    elif usd is not None or period is not None:
        if usd is None and found.budget_usd is None:
            raise click.UsageError("the key has no budget yet: give --usd")
        changes.update(budget_usd=found.budget_usd if usd is None else usd,
                       budget_period=period or found.budget_period or "month")
    if reset:
        changes["budget_reset_at"] = time.time()
    updated = run_on_store(lambda s: s.update_key(found.id, **changes), settings)
    told = _told(settings, {"kind": "key_changed", "id": found.id})
    _audit(settings, "key.budget", found.tenant, found.id,
           budget_state(found.budget_usd, found.budget_period, found.budget_reset_at),
           budget_state(updated.budget_usd, updated.budget_period, updated.budget_reset_at))
    what = ("no budget" if updated.budget_usd is None
            else f"${updated.budget_usd:g} per {updated.budget_period}")
    click.echo(f"key {updated.name}: {what}{'; spend counted from now' if reset else ''}; "
               f"{told}")


@click.command("show")
@config_option
@click.argument("key")
def keys_show(config: str | None, key: str) -> None:
    """KEY's role, scopes, limits, expiry and its spend against its (and its
    tenant's) budget this period."""
    from seawall.keys import public

    settings = settings_from(config)
    found = _find(settings, key)
    p = public(found)
    state = ("revoked " + _when(found.revoked_at) if found.revoked_at
             else "expired" if found.expired(time.time()) else "active")
    click.echo(f"key {p['id']} ({p['name']}), tenant {p['tenant']}, role {p['role']}, {state}")
    click.echo(f"  prefix {p['prefix']}…  created {_when(found.created_at)}  expires "
               f"{_when(found.expires_at)}")
    if found.prev_expires_at is not None and found.prev_expires_at > time.time():
        click.echo(f"  previous secret valid until {_when(found.prev_expires_at)}")
    click.echo(f"  scopes: {', '.join(p['scopes']) or 'none'}")
    click.echo(f"  models: {', '.join(p['models']) if p['models'] is not None else 'any'}")
    for what in ("collections_read", "collections_write"):
        click.echo(f"  {what}: {', '.join(p[what]) if p[what] is not None else 'any'}")
    click.echo(f"  rpm {p['rpm'] or '-'}, tpm {p['tpm'] or '-'}, priority "
               f"{'-' if p['priority'] is None else p['priority']}")
    limits = _limits(settings, key=found)
    if not limits:
        click.echo(f"  no budget (key or tenant {found.tenant})")
        return
    _echo_spend(spend_lines(settings, limits))


@click.group()
def tenants() -> None:
    """Tenants' budgets: set, show, reset (the config file's
    limits.tenants.<name>.budget_usd applies until one is set here)."""


@tenants.command("budget")
@config_option
@click.argument("tenant")
@click.option("--usd", type=click.FloatRange(min=0), default=None,
              help="The tenant's spend limit in USD per --period.")
@click.option("--period", type=click.Choice(PERIODS), default=None,
              help="The UTC period (default: as set before, else month).")
@click.option("--none", "clear", is_flag=True,
              help="No budget for this tenant (overrides the config file's).")
@click.option("--reset", is_flag=True, help="Count the tenant's spend from now on.")
def tenants_budget(config: str | None, tenant: str, usd: float | None, period: str | None,
                   clear: bool, reset: bool) -> None:
    """Set, remove or reset TENANT's budget."""
    from seawall.store.base import TenantBudget

    settings = settings_from(config)
    if not (usd is not None or clear or reset or period):
        raise click.UsageError("say what to change: --usd, --period, --none or --reset")
    if not 0 < len(tenant) <= 200:
        raise click.BadParameter("1 to 200 characters", param_hint="TENANT")

    before: dict[str, Any] = {}

    async def go(store: Any) -> TenantBudget:
        now = time.time()
        old = await store.tenant_budget(tenant)
        conf = settings.limits.tenants.get(tenant)
        base_usd = old.budget_usd if old is not None else conf.budget_usd if conf else None
        base_period = (old.budget_period if old is not None
                       else conf.budget_period if conf else "month")
        new_usd = None if clear else usd if usd is not None else base_usd
        if new_usd is None and not clear:
            raise click.UsageError(f"tenant {tenant} has no budget yet: give --usd")
        reset_at = now if reset else old.reset_at if old is not None else None
        before.update(budget_state(base_usd, base_period, old.reset_at if old else None))
        b = TenantBudget(tenant, new_usd, period or base_period, reset_at, now)
        await store.set_tenant_budget(b)
        return b

    b = run_on_store(go, settings)
    told = _told(settings, {"kind": "tenant_budget", "tenant": tenant})
    _audit(settings, "tenant.budget", tenant, tenant, before,
           budget_state(b.budget_usd, b.budget_period, b.reset_at))
    what = "no budget" if b.budget_usd is None else f"${b.budget_usd:g} per {b.budget_period}"
    click.echo(f"tenant {tenant}: {what}{'; spend counted from now' if reset else ''}; {told}")


@tenants.command("show")
@config_option
@click.argument("tenant")
def tenants_show(config: str | None, tenant: str) -> None:
    """TENANT's budget and spend this period, and its keys."""
    settings = settings_from(config)
    keys = run_on_store(lambda s: s.list_keys(False, tenant=tenant), settings)
    click.echo(f"tenant {tenant}: {len(keys)} active key{'' if len(keys) == 1 else 's'}"
               + (f" ({', '.join(k.name for k in keys[:20])}{'…' if len(keys) > 20 else ''})"
                  if keys else ""))
    limits = _limits(settings, tenant=tenant)
    if not limits:
        click.echo("  no budget")
        return
    _echo_spend(spend_lines(settings, limits))


@tenants.command("list")
@config_option
def tenants_list(config: str | None) -> None:
    """Tenants with a budget set here or in the config file."""
    settings = settings_from(config)
    stored = {b.tenant: b for b in run_on_store(lambda s: s.tenant_budgets(), settings)}
    names = sorted(set(stored) | {t for t, c in settings.limits.tenants.items()
                                  if c.budget_usd is not None})
    if not names:
        click.echo("no tenant budgets", err=True)
    for t in names:
        b = stored.get(t)
        if b is not None:
            what = "none" if b.budget_usd is None else f"${b.budget_usd:g}/{b.budget_period}"
            click.echo(f"{t:24} {what:16} (set with the CLI {_when(b.updated_at)})")
        else:
            c = settings.limits.tenants[t]
            click.echo(f"{t:24} ${c.budget_usd:g}/{c.budget_period:10} (config file)")
