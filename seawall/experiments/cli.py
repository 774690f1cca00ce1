"""``seawall experiments status``: where each experiment stands, from the
config and the canary states the server saved (works beside a running server)."""

from __future__ import annotations

import time
from typing import Any

import click
import orjson

from seawall.cli_common import config_option, run_on_store, settings_from
from seawall.config import Settings
from seawall.experiments.service import fingerprint


def _saved_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """The canary states the servers saved (SQLite file or shared Postgres)."""
    if settings.store.kind == "sqlite" and not settings.db_path.exists():
        return {}
    states: dict[str, dict[str, Any]] = run_on_store(lambda s: s.experiment_states(), settings)
    return states


def describe(settings: Settings) -> list[dict[str, Any]]:
    saved = _saved_states(settings)
    out = []
    for name, e in settings.experiments.items():
        row: dict[str, Any] = {"name": name, "kind": e.kind, "model": e.model,
                               "enabled": e.enabled, "variants": [v.name for v in e.variants]}
        if e.kind == "canary":
            state = saved.get(name)
            if state is None or state.get("fingerprint") != fingerprint(e):
                row.update(status="running", share=e.canary.steps[0],
                           reason="not started (no request judged yet)", history=[])
            else:
                status = state["status"]
                share = (100.0 if status == "promoted" else 0.0 if status == "rolled_back"
                         else e.canary.steps[state["step"]])
                row.update(status=status, share=share, reason=state.get("reason"),
                           updated_at=state.get("updated_at"), history=state.get("history", []))
        else:
            total = sum(v.weight for v in e.variants)
            row["weights"] = {v.name: round(100 * v.weight / total, 2) for v in e.variants}
        out.append(row)
    return out


@click.group("experiments")
def experiments() -> None:
    """A/B tests and canary rollouts."""


@experiments.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per experiment.")
def status(config: str | None, as_json: bool) -> None:
    """Where each experiment stands: splits, canary step, verdict and why."""
    settings = settings_from(config)
    rows = describe(settings)
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    if not rows:
        click.echo("no experiments configured", err=True)
        return
    for row in rows:
        head = f"{row['name']}  ({row['kind']} on model {row['model']})"
        if not row["enabled"]:
            head += "  [disabled]"
        click.echo(head)
        if row["kind"] == "ab":
            click.echo("  split: " + ", ".join(f"{k} {v:g}%" for k, v in row["weights"].items()))
            continue
        baseline, candidate = row["variants"]
        click.echo(f"  {row['status']}: {candidate} at {row['share']:g}% "
                   f"(baseline {baseline}); {row['reason']}")
        for h in row["history"][-5:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["at"]))
            click.echo(f"    {when}  {h['status']} at {h['from_share']:g}%: {h['reason']}")
