"""``seawall audit`` (the log, newest first) and :func:`cli_auditor`, which
every CLI command that changes something records through."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
import orjson

from seawall.audit.model import AuditEvent
from seawall.audit.query import DEFAULT_LIMIT, build_query
from seawall.audit.record import CliAuditor
from seawall.cli_common import config_option, open_stores, settings_from
from seawall.config import Settings

if TYPE_CHECKING:
    from seawall.store.factory import Stores

CLI_MAX_LIMIT = 100_000


@contextlib.contextmanager
def cli_auditor(settings: Settings, stores: Stores | None = None) -> Iterator[CliAuditor]:
    """The audit log for one command: on ``stores`` when the command has them
    open (sync), else on its own. A failed write is a ClickException (exit 1)
    saying the change was applied but not recorded."""
    from seawall.audit.record import AuditWriteFailed

    with contextlib.ExitStack() as stack:
        if stores is None:
            stores = stack.enter_context(open_stores(settings))
        log = stores.audit_sync()  # opens on its first write
        stack.callback(log.close)
        try:
            yield CliAuditor(log)
        except AuditWriteFailed as e:
            raise click.ClickException(e.message) from None


def _line(e: AuditEvent) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
    change = ""
    if e.before is not None or e.after is not None:
        change = (f"  before={orjson.dumps(e.before).decode()}"
                  f" after={orjson.dumps(e.after).decode()}")
    return (f"{e.id:>6}  {when}  {e.action:20} {e.tenant:16} {e.target:24} "
            f"by {e.actor.id} ({e.actor.role}) from {e.source}{change}")


@click.command("audit")
@config_option
@click.option("--tenant", help="Only actions on this tenant ('*': gateway-wide ones).")
@click.option("--action", help="Only this action (key.revoke) or family (key.*).")
@click.option("--since", help="Only since this time: epoch seconds, ISO 8601, or an age "
              "(30m, 24h, 7d).")
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True,
              help=f"At most this many rows (1 to {CLI_MAX_LIMIT}).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(config: str | None, tenant: str | None, action: str | None, since: str | None,
          limit: int, as_json: bool) -> None:
    """The audit log of admin actions (who, when, from where, before and
    after), newest first."""
    try:
        q = build_query(tenant, action, since, limit, max_limit=CLI_MAX_LIMIT)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    settings = settings_from(config)
    with open_stores(settings) as stores:
        log = stores.audit_sync()
        log.open()
        try:
            rows = log.query(q)
        finally:
            log.close()
    if not rows:
        click.echo("no audit records", err=True)
        return
    for row in rows:
        click.echo(orjson.dumps(row.to_json()).decode() if as_json else _line(row))
