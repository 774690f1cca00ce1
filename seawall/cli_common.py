"""What every ``seawall`` subcommand shares: the --config option and loading it."""

from __future__ import annotations

import os
import sys

import click

from seawall.config import ConfigError, Settings, load_settings

CONFIG_HELP = "YAML config file (default: $SEAWALL_CONFIG, else the built-in offline setup)."

config_option = click.option("--config", "-c", "config", type=click.Path(dir_okay=False),
                             help=CONFIG_HELP)


def settings_from(config: str | None) -> Settings:
    """The settings, or exit 2 with the configuration's problems listed."""
    path = config or os.environ.get("SEAWALL_CONFIG") or None
    try:
        return load_settings(path)
    except ConfigError as e:
        click.echo(f"seawall: invalid configuration:\n{e}", err=True)
        sys.exit(2)
