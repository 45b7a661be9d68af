"""The ``watcher state`` commands: each watch's approved allow-list, phases applied."""
from __future__ import annotations

import datetime as dt

import click

from .. import state as states
from ..watches import resolve_watches
from . import views
from .app import AppContext, cloud_option, json_option, pass_app, present


def _parse_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time (e.g. 2025-11-04T12:00:00Z)",
                                 param_hint="--at") from None
    return states.as_utc(parsed)


def _at_option(help_text: str):
    return click.option("--at", "at_text", metavar="ISO-TIME", help=help_text)


@click.group("state")
def state_group() -> None:
    """The approved allow-list of each watch: what the firewall must allow now."""


@state_group.command("show")
@click.argument("watch")
@cloud_option
@_at_option("The state in force at this time (default: now).")
@json_option
@pass_app
def state_show(app: AppContext, watch: str, cloud: str, at_text: str | None, as_json: bool) -> None:
    """The approved state of WATCH (a registry name, mcr, or "(extra tags)"): effective and final lists."""
    at = _parse_at(at_text)
    with app.engine.connect() as conn:
        found = states.require(conn, cloud.lower(), watch, at)
    data = found.to_json(at or dt.datetime.now(dt.timezone.utc))
    present(as_json, lambda: data, lambda: views.state_lines(data))


@state_group.command("list")
@_at_option("The states in force at this time (default: now).")
@json_option
@pass_app
def state_list(app: AppContext, at_text: str | None, as_json: bool) -> None:
    """The approved state of every watch that has one (watches with nothing approved are noted on stderr)."""
    given = _parse_at(at_text)
    at = given or dt.datetime.now(dt.timezone.utc)
    with app.engine.connect() as conn:
        found = states.all_current(conn, given)
    data = [s.to_json(at) for s in found]
    present(as_json, lambda: data, lambda: views.state_list_lines(data))
    configured = {(w.cloud, w.name) for w in resolve_watches(app.settings, {})}
    for cloud, watch in sorted(configured - {(s.cloud, s.watch) for s in found}):
        click.echo(f"note: watch {watch!r} ({cloud}) has nothing approved yet", err=True)


COMMANDS = (state_group,)
