"""What every ``seawall`` subcommand shares: the --config option and loading it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from seawall.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from seawall.store.factory import Stores

CONFIG_HELP = "YAML config file (default: $SEAWALL_CONFIG, else the built-in offline setup)."

config_option = click.option("--config", "-c", "config", type=click.Path(dir_okay=False),
                             help=CONFIG_HELP)


def settings_from(config: str | None, announce: bool = True) -> Settings:
    """The settings, or exit 2 with the configuration's problems listed. With
    ``announce``, says on stderr which store the command works on: run from
    another folder, a command would otherwise silently use another, empty one."""
    path = config or os.environ.get("SEAWALL_CONFIG") or None
    try:
        settings = load_settings(path)
    except ConfigError as e:
        click.echo(f"seawall: invalid configuration:\n{e}", err=True)
        sys.exit(2)
    if announce:
        click.echo(store_line(settings), err=True)
    return settings


def store_line(settings: Settings) -> str:
    if settings.store.kind == "postgres":
        from seawall.store.factory import safe_url

        return f"using store postgres {safe_url(settings.store.url or '')} (store.url)"
    return f"using store {settings.data_dir} ({settings.data_dir_origin})"


@contextlib.contextmanager
def open_stores(settings: Settings) -> Iterator[Stores]:
    """The configured stores, for a command that uses them from sync code (RAG,
    prompts): every command goes through the one factory, so it works on the
    SQLite files and on the shared Postgres alike. A database whose schema is
    not this version's is one clean error line."""
    from seawall.store.factory import Stores
    from seawall.store.migrate import SchemaError

    stores = Stores(settings)
    try:
        asyncio.run(stores.check_schema())
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    try:
        yield stores
    finally:
        if stores.pg is not None:
            stores.pg.close_sync()


def run_on_store(make: Callable[[Any], Awaitable[Any]], settings: Settings,
                 whole: bool = False) -> Any:
    """Run ``make(store)`` on the configured main store (keys, traces, canary
    state); ``whole``: ``make(stores)``, the opened :class:`Stores`."""
    from seawall.store.factory import Stores
    from seawall.store.migrate import SchemaError

    async def go() -> Any:
        stores = Stores(settings)
        try:
            await stores.open(key_reader=False)
            return await make(stores if whole else stores.main)
        except SchemaError as e:
            raise click.ClickException(str(e)) from None
        finally:
            await stores.close()

    return asyncio.run(go())


def walk_files(roots: Iterable[Path], suffixes: Iterable[str]) -> Iterator[Path]:
    """Files named on the command line as they are; folders walked in name
    order for files with one of ``suffixes``, skipping hidden entries."""
    wanted = {s.lower() for s in suffixes}
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(folder) / name
                if not name.startswith(".") and path.suffix.lower() in wanted:
                    yield path
