"""The ``watcher`` command line: a thin click layer over the library functions.

Every command builds the settings once (config file, ``WATCHER_*`` variables,
options), opens the database (upgrading its schema), calls one library
function and prints: a text view from ``views``, or with ``--json`` the
value's ``to_json()``. A ``WatcherError`` becomes one line on stderr and exit
status 1; wrong usage exits 2.

Commands live in modules per family: ``reading`` (import, publications,
history, diff, show, lookup, watches), ``tickets``, ``notify``, ``daemon``
(poll, status, run, serve), ``state`` and ``config`` (init, config, db).
"""
from __future__ import annotations

import logging
import os

import click

from .. import __version__, logs
from .. import config as configuration
from ..errors import WatcherError
from ..settings import load_settings
from . import config, daemon, feeds, notify, reading, state, tickets, users
from .app import LOG_FORMAT_CHOICE, AppContext, WatcherGroup

__all__ = ["main", "AppContext"]


@click.group(cls=WatcherGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "database_url", metavar="URL", help="Database URL (default sqlite:///watcher.db; env WATCHER_DATABASE_URL).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML config file (env WATCHER_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.option("--log-format", type=LOG_FORMAT_CHOICE, default="human", show_default=True,
              help="Log lines for people, or one JSON object per line.")
@click.version_option(__version__, prog_name="watcher")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, config_path: str | None, verbose: bool, log_format: str) -> None:
    """Keep firewall rules in step with Microsoft's Azure IP Ranges and Service Tags."""
    try:
        settings = load_settings(config_path, os.environ).with_overrides(database_url=database_url)
        secrets = configuration.secrets(settings)
    except WatcherError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure_logging(log_format, logging.INFO if verbose else logging.WARNING, secrets)
    ctx.obj = AppContext(settings, log_format=log_format, secrets=secrets)
    ctx.call_on_close(logs.remove_handler)
    ctx.call_on_close(lambda: ctx.obj._engine and ctx.obj._engine.dispose())


for _module in (config, reading, tickets, state, notify, daemon, feeds, users):
    for _command in _module.COMMANDS:
        main.add_command(_command)

