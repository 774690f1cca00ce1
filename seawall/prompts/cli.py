"""``seawall prompts``: push prompt files, inspect versions, move labels and
roll back, working on the registry file directly (safe beside a running
server: it sees every change on its next request)."""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import Iterator
from pathlib import Path

import click

from seawall.audit.cli import cli_auditor
from seawall.audit.model import ALL_TENANTS
from seawall.audit.record import CliAuditor
from seawall.cli_common import config_option, open_stores, settings_from
from seawall.errors import SeawallError
from seawall.prompts.errors import LabelError, SpecError
from seawall.prompts.files import PromptFilesError, dump_yaml, load_files
from seawall.prompts.model import PRODUCTION, LabelMove
from seawall.prompts.registry import PromptRegistry

__all__ = ["prompts"]


def _actor() -> str:
    """Who made a change, for the history: $SEAWALL_ACTOR (set it in CI), else
    the login name."""
    if actor := os.environ.get("SEAWALL_ACTOR"):
        return actor
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"

@contextlib.contextmanager
def _registry(config: str | None, changes: str | None = None) -> Iterator[PromptRegistry]:
    with _session(config, changes) as (registry, _):
        yield registry

@contextlib.contextmanager
def _session(config: str | None, changes: str | None = None
             ) -> Iterator[tuple[PromptRegistry, CliAuditor]]:
    """The registry of this configuration and the audit log its changes are
    recorded in; registry errors become one clean line.
    ``changes`` (a prompt name): labels may move, so every replica is told
    (through Redis; each also notices by itself within half a second)."""
    settings = settings_from(config)
    with open_stores(settings) as stores:
        registry = PromptRegistry(stores.prompt_store())
        try:
            with cli_auditor(settings, stores) as audit:
                yield registry, audit
            if changes is not None:
                from seawall.store.bus import publish_once

                publish_once(settings, {"kind": "prompt_label", "prompt": changes})
        except SeawallError as e:
            raise click.ClickException(e.message) from None
        except (SpecError, LabelError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        finally:
            registry.close()

def _record_move(audit: CliAuditor, m: LabelMove) -> None:
    """A label move in the audit log: ``prompt.label``, or ``prompt.rollback``."""
    action = "prompt.rollback" if m.action == "rollback" else "prompt.label"
    audit.record(action, tenant=ALL_TENANTS, target=f"{m.name}:{m.label}",
                 before={"label": m.label, "version": m.from_version},
                 after={"label": m.label, "version": m.to_version})

def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

def _move(m: LabelMove) -> str:
    start = "(new)" if m.from_version is None else f"v{m.from_version}"
    return f"{m.name}: {m.label} {start} → v{m.to_version}"

@click.group("prompts")
def prompts() -> None:
    """Versioned prompts: push files, promote with labels, roll back."""

@prompts.command("push")
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--label", "-l", "labels", multiple=True, metavar="LABEL",
              help="Move this label to each pushed version (repeatable), e.g. staging.")
@click.option("--no-production", is_flag=True,
              help=f"Do not label a new prompt's first version {PRODUCTION!r}.")
@click.option("--dry-run", is_flag=True, help="Validate the files, push nothing.")
def push(config: str | None, paths: tuple[Path, ...], labels: tuple[str, ...],
         no_production: bool, dry_run: bool) -> None:
    """Push prompt files (*.yaml, *.yml, *.md with front matter) or folders.

    A prompt whose content changed gets a new version; an unchanged one keeps
    its latest version (and still gets --label). Every file is validated
    first: if any is invalid, nothing is pushed.
    """
    try:
        files = load_files(paths)
    except PromptFilesError as e:
        raise click.ClickException("invalid prompt files:\n" + str(e)) from None
    if not files:
        raise click.ClickException("no prompt files (*.yaml, *.yml, *.md) under "
                                   + ", ".join(map(str, paths)))
    if dry_run:
        click.echo(f"{len(files)} prompt file(s) valid: " + ", ".join(f.name for f in files))
        return
    actor = _actor()
    with _session(config, changes=",".join(f.name for f in files)[:1000]) as (registry, audit):
        for f in files:
            out = registry.push(f.name, f.spec, labels,
                                label_new=() if no_production else (PRODUCTION,),
                                source=f.path.as_posix(), actor=actor)
            if out.created:
                audit.record("prompt.create", tenant=ALL_TENANTS, target=out.version.ref,
                             after={"version": out.version.version,
                                    "content_hash": out.version.content_hash,
                                    "source": out.version.source,
                                    "labels": {m.label: m.to_version for m in out.moves}})
            else:
                for m in out.moves:
                    _record_move(audit, m)
            state = "new" if out.created else "unchanged"
            moved = "; ".join(f"{m.label} → v{m.to_version}" for m in out.moves)
            click.echo(f"{f.name}: v{out.version.version} {state}"
                       + (f" ({moved})" if moved else ""))

@prompts.command("list")
@config_option
def list_(config: str | None) -> None:
    """Every prompt with its latest version and labels."""
    with _registry(config) as registry:
        rows = registry.list()
    if not rows:
        click.echo("no prompts", err=True)
        return
    click.echo(f"{'name':28} {'latest':>6} {'versions':>8}  {'updated':19}  labels")
    for r in rows:
        labels = ", ".join(f"{k}=v{v}" for k, v in r.labels.items())
        click.echo(f"{r.name:28} {r.latest:>6} {r.versions:>8}  {_when(r.updated_at)}  {labels}")

@prompts.command("show")
@config_option
@click.argument("name")
@click.option("--version", "-v", "version", type=click.IntRange(min=1),
              help="This version number.")
@click.option("--label", "-l", "label", help="The version this label points at "
              f"(default: {PRODUCTION}; 'latest' is the newest version).")
def show(config: str | None, name: str, version: int | None, label: str | None) -> None:
    """One version, as a prompt file."""
    if version is not None and label is not None:
        raise click.UsageError("give --version or --label, not both")
    with _registry(config) as registry:
        found = registry.get(name, label=label, version=version)
        labels = [k for k, v in registry.store.labels(name).items() if v == found.version]
    click.echo(f"# {found.ref}" + (f"  [{', '.join(labels)}]" if labels else "")
               + f"  created {_when(found.created_at)}"
               + (f" by {found.author}" if found.author else "")
               + (f" from {found.source}" if found.source else ""))
    click.echo(f"# sha256 {found.content_hash}")
    click.echo(dump_yaml(found.spec.document(name)), nl=False)

@prompts.command("history")
@config_option
@click.argument("name")
def history(config: str | None, name: str) -> None:
    """A prompt's versions and every move of its labels."""
    with _registry(config) as registry:
        h = registry.history(name)
    click.echo("versions:")
    for v in h.versions:
        labels = [k for k, n in h.labels.items() if n == v.version]
        click.echo(f"  v{v.version:<4} {_when(v.created_at)}  {v.content_hash[:12]}  "
                   f"{v.author or '-':12} {v.source or '-'}"
                   + (f"  [{', '.join(labels)}]" if labels else ""))
    click.echo("label moves:")
    for m in h.moves:
        start = "(new)" if m.from_version is None else f"v{m.from_version}"
        click.echo(f"  {_when(m.at)}  {m.label:12} {start:>6} → v{m.to_version:<4} "
                   f"{m.action:8} {m.actor or '-'}")

@prompts.command("diff")
@config_option
@click.argument("name")
@click.argument("v1", type=click.IntRange(min=1))
@click.argument("v2", type=click.IntRange(min=1))
def diff(config: str | None, name: str, v1: int, v2: int) -> None:
    """What changed between two versions (a unified diff of their files)."""
    with _registry(config) as registry:
        text = registry.diff(name, v1, v2)
    if text:
        click.echo(text, nl=False)
    else:
        click.echo(f"{name}: v{v1} and v{v2} have the same content", err=True)

@prompts.command("label")
@config_option
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.argument("label")
def label(config: str | None, name: str, version: int, label: str) -> None:
    """Point LABEL at VERSION (promote or pin).

    For example `seawall prompts label support-answer 4 production`.
    """
    with _session(config, changes=name) as (registry, audit):
        move = registry.label(name, version, label, actor=_actor())
        if move is not None:
            _record_move(audit, move)
    click.echo(_move(move) if move else f"{name}: {label} already points at v{version}")

@prompts.command("rollback")
@config_option
@click.argument("name")
@click.option("--label", "-l", "label", default=PRODUCTION, show_default=True)
def rollback(config: str | None, name: str, label: str) -> None:
    """Move a label back to where it pointed before its last move (repeat to
    go further back)."""
    with _session(config, changes=name) as (registry, audit):
        move = registry.rollback(name, label, actor=_actor())
        _record_move(audit, move)
    click.echo(_move(move))

if __name__ == "__main__":  # python -m seawall.prompts.cli, before it is wired into seawall.cli
    prompts()
