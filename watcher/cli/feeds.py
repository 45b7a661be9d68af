"""Feed commands: consumers and their tokens, who has which version, the static export."""
from __future__ import annotations

import click

from .. import feed_consumers, feeds
from ..models import utcnow
from .app import AppContext, echo_lines, emit_json, json_option, pass_app, present


@click.group("feeds")
def feeds_group() -> None:
    """The feeds firewalls pull (/feeds/...): consumers, status, static export."""


@feeds_group.group("consumer")
def consumer_group() -> None:
    """Who may pull the feeds: each consumer has a token of its own."""


@consumer_group.command("add")
@click.argument("name")
@click.option("--watch", "watches", multiple=True, metavar="FEED",
              help="A feed it pulls (a watch's feed name, e.g. myreg or mcr); repeat; none: every feed.")
@json_option
@pass_app
def consumer_add(app: AppContext, name: str, watches: tuple[str, ...], as_json: bool) -> None:
    """Add a consumer and print its token, once (only a hash of it is stored)."""
    with app.engine.connect() as conn:
        known = feeds.watch_names(conn, app.settings)
    consumer, token = feed_consumers.add(app.engine, name, watches, known, utcnow())
    if as_json:
        emit_json({"name": consumer.name, "token": token, "watches": list(consumer.watches)})
        return
    echo_lines([f"consumer {consumer.name} added; its token (shown this once, keep it in the firewall):",
                token,
                "use it as the HTTP basic auth password (any user name) or as a bearer token"])


@consumer_group.command("list")
@json_option
@pass_app
def consumer_list(app: AppContext, as_json: bool) -> None:
    """The consumers and the feeds each pulls."""
    with app.engine.connect() as conn:
        found = feed_consumers.consumers(conn)
    present(as_json, lambda: [c.to_json() for c in found],
            lambda: [f"{c.name:<24} {', '.join(c.watches) or 'every feed'}  (added {c.created_at:%Y-%m-%d})"
                     for c in found] or ["no feed consumers (watcher feeds consumer add NAME)"])


@consumer_group.command("remove")
@click.argument("name")
@pass_app
def consumer_remove(app: AppContext, name: str) -> None:
    """Remove a consumer: its token stops working at once."""
    feed_consumers.remove(app.engine, name)
    click.echo(f"consumer {name} removed")


def _status_lines(found: list[feed_consumers.ConsumerStatus]) -> list[str]:
    if not found:
        return ["no feed consumers (watcher feeds consumer add NAME)"]
    lines = []
    for s in found:
        last = (f"last fetch {s.last_fetch_at:%Y-%m-%d %H:%M:%S} UTC ({s.last_path})" if s.last_fetch_at
                else "never fetched")
        flags = ("current" if s.current else "BEHIND") + (", STALE" if s.stale else "")
        lines.append(f"{s.consumer.name}: {last}; {flags}")
        lines += [f"  {f.feed}: {'current' if f.current else 'behind'}" for f in s.feeds]
    return lines


@feeds_group.command("status")
@json_option
@pass_app
def feeds_status(app: AppContext, as_json: bool) -> None:
    """Each consumer's last fetch, and whether it has each feed's state in force now."""
    with app.engine.connect() as conn:
        found = feed_consumers.report(conn, app.settings, feeds.clock(app.settings, utcnow)())
    present(as_json, lambda: [s.to_json() for s in found], lambda: _status_lines(found))


@feeds_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@pass_app
def feeds_export(app: AppContext, directory: str) -> None:
    """Write every feed file to DIRECTORY (atomically: a temporary file, then a rename), for a static server."""
    with app.engine.connect() as conn:
        changed = feeds.export(conn, app.settings, directory, feeds.clock(app.settings, utcnow)())
    click.echo(f"{len(changed)} file(s) written to {directory}")


COMMANDS = (feeds_group,)
