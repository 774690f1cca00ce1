"""The ``seawall`` command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import click

from seawall.cli_common import config_option, run_on_store, settings_from, store_line
from seawall.config import Settings

_settings = settings_from


@click.group()
@click.version_option(package_name="seawall")
def main() -> None:
    """Seawall: the production layer between an LLM application and its models."""


@main.command()
@config_option
@click.option("--host", help="Listen address (default: server.host).")
@click.option("--port", type=int, help="Listen port (default: server.port).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (more than 1 needs store.kind "
                   "postgres: see docs/scaling.md).")
def serve(config: str | None, host: str | None, port: int | None, workers: int) -> None:
    """Start the OpenAI-compatible gateway."""
    settings = _settings(config, announce=False)
    _check_schema(settings)
    if workers == 1:
        _serve_process(config, host, port)
        return
    if settings.store.kind != "postgres":
        raise click.UsageError(
            "--workers above 1 needs store.kind: postgres (and redis.url for shared limits): "
            "with SQLite files each process would keep its own cache index, limits and "
            "budgets. See docs/scaling.md.")
    from seawall.supervisor import serve_workers

    sys.exit(serve_workers(config, host or settings.server.host,
                           settings.server.port if port is None else port, workers))


def _check_schema(settings: Settings) -> None:
    """Refuse to start on a shared database whose schema is not this code's."""
    if settings.store.kind != "postgres":
        return
    from seawall.store.factory import Stores
    from seawall.store.migrate import SchemaError

    try:
        asyncio.run(Stores(settings).check_schema())
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # noqa: BLE001 - any connection failure: say what and where
        from seawall.store.factory import safe_url

        raise click.ClickException(
            f"cannot reach the database at {safe_url(settings.store.url or '')}: "
            f"{type(e).__name__}: {e}") from None


def _serve_process(config: str | None, host: str | None, port: int | None,
                   sock: Any = None) -> None:
    """One server process: on its own port, or on ``sock`` shared with others."""
    import uvicorn

    from seawall.app import create_app
    from seawall.observe.logs import setup_logging
    from seawall.serving import CUT_GRACE_S, raise_fd_limit, uvicorn_options

    settings = _settings(config, announce=False)
    srv = settings.server
    # Worker threads (SQLite writes, span export) hand the GIL back to the
    # event loop after at most this long; CPython's 5 ms default shows up
    # directly in tail latency.
    sys.setswitchinterval(srv.gil_switch_interval_s)
    setup_logging(srv.log_level, settings.observe.json_logs)
    import logging

    logging.getLogger("seawall").info("%s", store_line(settings))
    raise_fd_limit(settings)
    app = create_app(settings)
    # Uvicorn drains in-flight requests on SIGTERM/SIGINT, restores the
    # handlers it found, then re-raises the signal. Finding these, a drained
    # shutdown ends with exit status 0 instead of death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_drain)
    server_config = uvicorn.Config(
        app, host=host or srv.host, port=srv.port if port is None else port,
        access_log=srv.access_log, log_config=None, log_level=srv.log_level,
        **uvicorn_options(settings, app.state.services.metrics))
    _serve_draining(server_config, app.state.services.begin_drain,
                    settings.shutdown.drain_timeout_s + CUT_GRACE_S + SHUTDOWN_GRACE_S, sock)


@main.command()
@config_option
@click.option("--metrics-port", type=int, help="Serve /metrics on this port (loopback).")
def worker(config: str | None, metrics_port: int | None) -> None:
    """Run queued jobs (docs/jobs.md) without the HTTP server; SIGTERM drains."""
    from seawall.jobs.worker import run_worker
    from seawall.observe.logs import setup_logging

    settings = _settings(config)
    _check_schema(settings)
    setup_logging(settings.server.log_level, settings.observe.json_logs)
    sys.exit(asyncio.run(run_worker(settings, metrics_port)))


@main.command()
@config_option
@click.option("--check", is_flag=True, help="Only say whether the schema is current "
              "(exit 1 if not).")
def migrate(config: str | None, check: bool) -> None:
    """Bring the shared Postgres database's schema up to this version (safe to run
    any number of times, from any machine, while replicas serve)."""
    from seawall.store import migrate as migrations
    from seawall.store.factory import safe_url

    settings = _settings(config, announce=False)
    if settings.store.kind != "postgres" or not settings.store.url:
        click.echo("store.kind is sqlite: its files are brought up to date when opened; "
                   "nothing to migrate", err=True)
        return
    where = safe_url(settings.store.url)
    try:
        if check:
            version = migrations.check(settings.store.url)
            click.echo(f"{where}: schema at version {version}, current")
            return
        applied = migrations.migrate(settings.store.url)
    except migrations.SchemaError as e:
        click.echo(f"{where}: {e}", err=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - connection failures: say what and where
        raise click.ClickException(f"{where}: {type(e).__name__}: {e}") from None
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"{where}: schema at version {migrations.latest_version()}"
               f"{'' if applied else ' (already current)'}")


SHUTDOWN_GRACE_S = 20.0  # then closing every part (each bounded, app.Services.close)


def _serve_draining(config: Any, on_drain: Callable[[], None], exit_within_s: float,
                    sock: Any = None) -> None:
    """Run uvicorn, telling the app when a drain starts, so /ready turns 503
    and requests still arriving on open connections are refused. A watchdog
    ends the process if shutdown has not finished ``exit_within_s`` after
    the signal, whatever hangs (a stuck thread must not keep it alive)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            on_drain()
            _arm_exit_watchdog(exit_within_s)
            super().handle_exit(sig, frame)

    DrainingServer(config).run(sockets=[sock] if sock is not None else None)


_watchdog: list[threading.Thread] = []


def _arm_exit_watchdog(within_s: float) -> None:
    if _watchdog:
        return

    def bite() -> None:
        time.sleep(within_s)
        import logging
        logging.getLogger("seawall").critical(
            "shutdown did not finish within %.0fs; exiting now", within_s)
        logging.shutdown()
        os._exit(1)

    t = threading.Thread(target=bite, name="seawall-exit-watchdog", daemon=True)
    _watchdog.append(t)
    t.start()


def _exit_after_drain(signum: int, frame: object) -> None:
    raise SystemExit(0)


@main.group()
def keys() -> None:
    """Create, list and revoke virtual API keys (stored hashed)."""


@keys.command("create")
@config_option
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option("--tenant", default=None,
              help="Tenant the key belongs to (default: its name). Reserved names "
                   "(default, anonymous, ...) are refused.")
@click.option("--role", type=click.Choice(["app", "tenant_admin"]), default="app",
              show_default=True, help="tenant_admin: manages its own tenant (docs/security.md).")
@click.option("--scopes", default=None,
              help="Comma-separated scopes (default for app: chat,embeddings,rag:read,"
                   "feedback,jobs; tenant_admin: all).")
@click.option("--models", default=None,
              help="Comma-separated models/routes it may use (default: any).")
@click.option("--collections-read", default=None,
              help="Comma-separated RAG collections it may read (default: any of its tenant).")
@click.option("--collections-write", default=None,
              help="Comma-separated RAG collections it may write (with scope rag:write).")
@click.option("--expires", default=None,
              help="Expiry: a duration (30d, 12h) or an ISO date (2027-01-31; UTC).")
@click.option("--rpm", type=click.IntRange(min=1), default=None,
              help="Requests per minute allowed (default: limits.default_rpm).")
@click.option("--tpm", type=click.IntRange(min=1), default=None,
              help="Tokens per minute allowed (default: limits.default_tpm).")
@click.option("--budget-usd", type=click.FloatRange(min=0), default=None,
              help="Spend limit in USD per --budget-period (default: none).")
@click.option("--budget-period", type=click.Choice(["day", "month"]), default="month",
              show_default=True, help="The UTC period a budget is for.")
@click.option("--priority", type=int, default=None,
              help="Admission queue priority, lower first (default: "
                   "admission.default_priority).")
@click.option("--cache/--no-cache", "cache", default=None,
              help="Turn the response cache on or off for this key's requests "
                   "(default: as configured per model).")
def keys_create(config: str | None, name: str, tenant: str | None, role: str,
                scopes: str | None, models: str | None, collections_read: str | None,
                collections_write: str | None, expires: str | None, rpm: int | None,
                tpm: int | None, budget_usd: float | None, budget_period: str,
                priority: int | None, cache: bool | None) -> None:
    from seawall.keys import make_key, names, parse_expires

    settings = _settings(config)
    try:
        key, secret = make_key(
            name, tenant, role=role, scopes=names(scopes, "--scopes"), models=models,
            collections_read=collections_read, collections_write=collections_write,
            expires_at=parse_expires(expires) if expires else None, rpm=rpm, priority=priority,
            cache=cache, tpm=tpm, budget_usd=budget_usd,
            budget_period=budget_period if budget_usd is not None else None)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    run_on_store(lambda s: s.create_key(key), settings)
    from seawall.audit.cli import cli_auditor
    from seawall.audit.record import key_state

    try:
        with cli_auditor(settings) as audit:
            audit.record("key.create", tenant=key.tenant, target=key.id, after=key_state(key))
    except click.ClickException as e:  # unrecorded: take it back before anyone sees the secret
        run_on_store(lambda s: s.revoke_key(key.id), settings)
        raise click.ClickException(f"key {key.id} was not issued (revoked again, its secret "
                                   f"never shown): {e.message}") from None
    click.echo(f"created key {key.id} (name {name}, tenant {key.tenant}, role {role}"
               f"{f', {rpm} rpm' if rpm else ''}{f', {tpm} tpm' if tpm else ''}"
               f"{'' if budget_usd is None else ', budget ' + _budget(budget_usd, budget_period)}"
               f"{f', priority {priority}' if priority is not None else ''}"
               f"{'' if cache is None else ', cache on' if cache else ', cache off'}"
               f"{f', models {models}' if models else ''}"
               f"{', expires ' + time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(key.expires_at)) if key.expires_at else ''}"  # noqa: E501
               f"; scopes {','.join(key.scopes or ())})", err=True)
    click.echo("the secret is shown once; store it now:", err=True)
    click.echo(secret)


@keys.command("list")
@config_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def keys_list(config: str | None, include_revoked: bool) -> None:
    settings = _settings(config)
    rows = run_on_store(lambda s: s.list_keys(include_revoked), settings)
    if not rows:
        click.echo("no keys", err=True)
        return
    click.echo(f"{'id':18} {'name':20} {'tenant':16} {'prefix':12} {'rpm':>6} {'prio':>4} "
               f"{'cache':5} {'tpm':>8} {'budget':>14}  created              revoked"
               "              role          expires")
    for k in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.created_at))
        revoked = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.revoked_at))
                   if k.revoked_at else "-")
        click.echo(f"{k.id:18} {k.name:20} {k.tenant:16} {k.prefix + '…':12} "
                   f"{k.rpm or '-':>6} {'-' if k.priority is None else k.priority:>4} "
                   f"{'-' if k.cache is None else 'on' if k.cache else 'off':5} "
                   f"{k.tpm or '-':>8} {_budget(k.budget_usd, k.budget_period):>14}  "
                   f"{created}  {revoked:19}  {k.role:12}  {_day(k.expires_at)}")


def _day(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d", time.gmtime(t))


def _budget(usd: float | None, period: str | None) -> str:
    return "-" if usd is None else f"${usd:g}/{period or 'month'}"


@keys.command("spend")
@config_option
@click.argument("key")
def keys_spend(config: str | None, key: str) -> None:
    """Show what KEY (id or name) and its tenant spent of their budgets this
    period: from Redis when redis.url is set, else from the trace records
    (what the server starts from; it may be a few seconds ahead)."""
    from seawall.keys_cli import _find, _limits, spend_lines

    settings = _settings(config)
    k = _find(settings, key)
    limits = _limits(settings, key=k)
    if not limits:
        click.echo(f"key {k.name} and tenant {k.tenant} have no budget")
        return
    where = "held by requests in flight" if settings.redis.url else "from the trace records"
    for b in spend_lines(settings, limits):
        reserved = f"${b['reserved_usd'] or 0:.4f} {where}" if settings.redis.url else where
        click.echo(f"{b['budget'].replace(chr(39), '')}: ${b['spent_usd'] or 0:.4f} of "
                   f"${b['usd']:g} spent in {b['period_id']} ({reserved}); resets "
                   f"{b['resets_at'].replace('T', ' ').replace(':00Z', ' UTC')}")


@keys.command("revoke")
@config_option
@click.argument("key")
def keys_revoke(config: str | None, key: str) -> None:
    """Revoke KEY (its id or name). Servers stop accepting it within a second
    with redis.url set (a change notice), else within auth.key_cache_ttl_s."""
    from seawall.store.bus import publish_once

    settings = _settings(config)
    try:
        revoked = run_on_store(lambda s: s.revoke_key(key), settings)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if revoked is None:
        raise click.ClickException(f"no active key with id or name {key!r}")
    told = publish_once(settings, {"kind": "key_revoked", "id": revoked.id})
    from seawall.audit.cli import cli_auditor
    from seawall.audit.record import key_state

    with cli_auditor(settings) as audit:
        audit.record("key.revoke", tenant=revoked.tenant, target=revoked.id,
                     before={**key_state(revoked), "revoked_at": None},
                     after=key_state(revoked))
    click.echo(f"revoked {revoked.id} ({revoked.name}); servers refuse it "
               + ("now" if told else f"within {settings.auth.key_cache_ttl_s:g}s"))


@main.group()
def traces() -> None:
    """Read trace records."""


def _trace_line(t: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(t["started_at"]))
    ttft = f"{t['ttft_ms']:.0f}" if t["ttft_ms"] is not None else "-"
    err = f" {t['error_code']}" if t["error_code"] else ""
    est = "~" if t["usage_estimated"] else ""
    return (f"{when} {t['trace_id']} {t['status']} {t['endpoint']:16} {t['model']:18} "
            f"{t['deployment'] or '-':28} {t['latency_ms']:8.1f}ms ttft {ttft:>5}ms "
            f"tok {est}{t['prompt_tokens']}+{t['completion_tokens']} "
            f"${t['cost_usd']:.6f}{err}")


@traces.command("tail")
@config_option
@click.option("-n", "count", default=20, show_default=True, help="How many recent records.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they land.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def traces_tail(config: str | None, count: int, follow: bool, as_json: bool) -> None:
    import orjson

    settings = _settings(config)

    def show(rows: list[dict[str, Any]]) -> None:
        for t in rows:
            click.echo(orjson.dumps(t).decode() if as_json else _trace_line(t))

    async def go(store: Any) -> None:
        rows = await store.recent_traces(count)
        show(rows)
        last = rows[-1]["rowid"] if rows else 0
        while follow:
            await asyncio.sleep(1.0)
            rows = await store.recent_traces(500, after_rowid=last)
            show(rows)
            if rows:
                last = rows[-1]["rowid"]

    with contextlib.suppress(KeyboardInterrupt):
        run_on_store(go, settings)


@traces.command("show")
@config_option
@click.argument("request_id")
def traces_show(config: str | None, request_id: str) -> None:
    """Print one whole record (an x-request-id or resp_ id) with its feedback and
    judge scores, as JSON."""
    import orjson

    from seawall.quality.trace_view import trace_with_feedback

    settings = _settings(config)

    async def go(stores: Any) -> dict[str, Any] | None:
        feedback, scores = stores.feedback(), stores.scores()
        await feedback.open()
        await scores.open()
        try:
            return await trace_with_feedback(stores.main, feedback, request_id, scores)
        finally:
            await feedback.close()
            await scores.close()

    doc = run_on_store(go, settings, whole=True)
    if doc is None:
        raise click.ClickException(f"no trace record {request_id!r}")
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


@main.command()
@config_option
@click.option("--port", type=int, help="Port to check (default: server.port).")
@click.option("--skip-models", is_flag=True, help="Do not load local models (faster).")
@click.option("--no-network", "--offline", "offline", is_flag=True,
              help="Do not contact the openai/anthropic upstreams (by default each one's "
                   "models list is fetched, to prove it answers and takes the key).")
def doctor(config: str | None, port: int | None, skip_models: bool, offline: bool) -> None:
    """Check the config, data directory, port, upstreams and models; print what was found."""
    from seawall.doctor import run_checks

    settings = _settings(config)
    click.echo(f"config: ok ({config or os.environ.get('SEAWALL_CONFIG') or 'built-in default'};"
               f" {len(settings.providers)} providers, {len(settings.models)} models)")
    ok = asyncio.run(run_checks(settings, port, skip_models, click.echo, network=not offline))
    sys.exit(0 if ok else 1)


@main.command("fake-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9100, show_default=True)
@click.option("--text", default=None, help="Fixed answer (default: echo the last user message).")
@click.option("--ttft-s", type=float, default=0.0, show_default=True)
@click.option("--tokens-per-s", type=float, default=0.0, show_default=True)
@click.option("--error-status", type=click.IntRange(400, 599), default=None,
              help="Fail requests with this HTTP status.")
@click.option("--error-probability", type=click.FloatRange(0.0, 1.0), default=1.0,
              show_default=True, help="With --error-status: the share of requests that fail.")
@click.option("--seed", type=int, default=None,
              help="Seed for --error-probability, for a repeatable run (default: random).")
@click.option("--fill-max-tokens/--no-fill-max-tokens", default=False, show_default=True,
              help="Answer with exactly max_tokens words, finish reason length.")
@click.option("--prefill-tokens-per-s", type=click.FloatRange(min=0.0), default=0.0,
              show_default=True, help="Add prompt words / this to the TTFT (0 = off).")
def fake_upstream(host: str, port: int, text: str | None, ttft_s: float,
                  tokens_per_s: float, error_status: int | None, error_probability: float,
                  seed: int | None, fill_max_tokens: bool,
                  prefill_tokens_per_s: float) -> None:
    """Run the scriptable fake model server (OpenAI and Anthropic wire formats)."""
    from seawall.providers import fake_server
    from seawall.providers.fake import FakeBehavior

    try:
        behavior = FakeBehavior(
            text=text, ttft_s=ttft_s, tokens_per_s=tokens_per_s, error_status=error_status,
            error_probability=error_probability, fill_max_tokens=fill_max_tokens,
            prefill_tokens_per_s=prefill_tokens_per_s)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    fake_server.run(host, port, behavior, seed=seed)


@main.group()
def cache() -> None:
    """Inspect and purge the response cache (works on the file; safe while serving)."""


def _cache_db(settings: Settings) -> sqlite3.Connection:
    path = settings.cache_path
    if not path.exists():
        raise click.ClickException(f"no cache at {path} (is cache.enabled on, and has the "
                                   "server stored anything yet?)")
    db = sqlite3.connect(path, timeout=5)
    db.execute("PRAGMA busy_timeout=5000")
    return db


_CACHE_SUMMARY = ("SELECT tenant, model, COUNT(*), COUNT({vector}), SUM(hits), "
                  "SUM(hits * cost_usd) FROM cache_entries GROUP BY tenant, model "
                  "ORDER BY tenant, model")


def _on_shared_cache(settings: Settings, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
    """One statement on the shared cache table (postgres), through the factory."""
    from seawall.store.factory import Stores

    async def go() -> list[tuple[Any, ...]]:
        stores = Stores(settings)
        try:
            await stores.check_schema()
            assert stores.pg is not None
            pool = await stores.pg.pool()
            async with pool.connection() as conn:
                return list(await (await conn.execute(sql, args)).fetchall())
        finally:
            await stores.close()

    try:
        return asyncio.run(go())
    except Exception as e:  # noqa: BLE001 - schema or connection: one clean line
        raise click.ClickException(f"{type(e).__name__}: {e}") from None


@cache.command("stats")
@config_option
def cache_stats(config: str | None) -> None:
    """Entries per tenant and model, with hits and what they saved."""
    settings = _settings(config)
    if settings.store.kind == "postgres":
        rows = _on_shared_cache(settings, _CACHE_SUMMARY.format(vector="embedding"), [])
    else:
        with contextlib.closing(_cache_db(settings)) as db:
            rows = db.execute(_CACHE_SUMMARY.format(vector="vector")).fetchall()
    if not rows:
        click.echo("the cache is empty", err=True)
        return
    click.echo(f"{'tenant':16} {'model':24} {'entries':>8} {'semantic':>8} {'hits':>8} "
               f"{'saved_usd':>10}")
    for tenant, model, n, sem, hits, saved in rows:
        click.echo(f"{tenant:16} {model:24} {n:>8} {sem:>8} {hits or 0:>8} {saved or 0:>10.4f}")


@cache.command("purge")
@config_option
@click.option("--tenant", help="Only this tenant's entries.")
@click.option("--model", help="Only entries of this model (or route).")
@click.option("--prompt-version", help="Only entries made with this prompt version.")
@click.option("--entry", type=int, help="Only this entry (its id, from a trace's cache_entry).")
@click.option("--all", "everything", is_flag=True, help="Every entry (needed with no filter).")
def cache_purge(config: str | None, tenant: str | None, model: str | None,
                prompt_version: str | None, entry: int | None, everything: bool) -> None:
    """Delete cache entries; given filters must all match. Every server stops
    serving them at once (the shared table; with SQLite, the server's index
    skips entries whose rows are gone)."""
    from seawall.cache.store import Purge
    from seawall.store.bus import publish_once

    settings = _settings(config)
    what = Purge(tenant=tenant, model=model, prompt_version=prompt_version, entry_id=entry)
    if what.everything and not everything:
        raise click.ClickException("say what to purge (--tenant, --model, --prompt-version, "
                                   "--entry) or --all")
    if settings.store.kind == "postgres":
        from seawall.cache.pg_store import purge_sql as pg_purge_sql

        sql, args = pg_purge_sql(what)
        purged = int(_on_shared_cache(settings, sql, args)[0][0])
    else:
        from seawall.cache.sqlite_store import purge_sql

        sql, args = purge_sql(what)
        with contextlib.closing(_cache_db(settings)) as db, db:
            purged = db.execute(sql, args).rowcount
    publish_once(settings, {"kind": "cache_purge", "tenant": tenant, "model": model,
                            "prompt_version": prompt_version, "entry": entry,
                            "all": everything})
    from seawall.audit.cli import cli_auditor
    from seawall.audit.record import purge_audit

    with cli_auditor(settings) as audit:
        audit.record("cache.purge", **purge_audit(SimpleNamespace(
            tenant=tenant, model=model, prompt_version=prompt_version, entry=entry,
            all=everything), purged))
    click.echo(f"purged {purged} entr{'y' if purged == 1 else 'ies'}")


@cache.command("release")
@config_option
@click.argument("entry", type=int)
def cache_release(config: str | None, entry: int) -> None:
    """Serve a quarantined entry again (ENTRY: its id, from a trace's cache_entry)."""
    settings = _settings(config)
    if settings.store.kind == "postgres":
        from seawall.cache.pg_store import RELEASE_SQL as PG_RELEASE_SQL

        rows = _on_shared_cache(settings, PG_RELEASE_SQL, [entry])
    else:
        from seawall.cache.sqlite_store import RELEASE_SQL

        with contextlib.closing(_cache_db(settings)) as db, db:
            rows = db.execute(RELEASE_SQL, (entry,)).fetchall()
    if not rows:
        raise click.ClickException(f"no quarantined entry {entry}")
    from seawall.audit.cli import cli_auditor

    with cli_auditor(settings) as audit:
        audit.record("cache.release", tenant=str(rows[0][0]), target=f"entry={entry}",
                     before={"quarantined": True}, after={"quarantined": False})
    click.echo(f"released entry {entry}: it is served again")


def _add_feature_commands() -> None:
    from seawall.audit import cli as audit_cli
    from seawall.experiments import cli as experiments_cli
    from seawall.jobs import cli as jobs_cli
    from seawall.prompts import cli as prompts_cli
    from seawall.quality import eval_cli
    from seawall.quality import status_cli as quality_cli
    from seawall.rag import cli as rag_cli
    from seawall.routing.complexity import cli as router_cli

    main.add_command(rag_cli.ingest)
    main.add_command(rag_cli.collections)
    main.add_command(rag_cli.search)
    main.add_command(experiments_cli.experiments)
    main.add_command(prompts_cli.prompts)
    main.add_command(router_cli.router)
    main.add_command(jobs_cli.jobs)
    main.add_command(eval_cli.eval_group)
    main.add_command(quality_cli.quality)
    main.add_command(audit_cli.audit)
    from seawall import keys_cli

    keys.add_command(keys_cli.keys_rotate)
    keys.add_command(keys_cli.keys_budget)
    keys.add_command(keys_cli.keys_show)
    main.add_command(keys_cli.tenants)


_add_feature_commands()


if __name__ == "__main__":
    main()
