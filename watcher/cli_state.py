"""The ``watcher state`` commands and the ticket commands that follow the approved state.

Registered from ``cli.py`` by ``register(main, tickets_group)``: adds the
``state`` group and (re)defines ``tickets list/show/render`` and the review
steps, so that they carry ``kind``, ``superseded_by`` and ``changes``, render a
``--phase``, and take ``--by`` from the operating-system user by default.
Library calls only: the state logic lives in ``watcher.state`` and
``watcher.review``.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
from typing import Any

import click

from . import feed_consumers, notify, render, review, state as states, tickets
from .errors import TransitionError
from .settings import CLOUD_FILE_NAMES
from .watches import resolve_watches

CLOUD_CHOICE = click.Choice(sorted(CLOUD_FILE_NAMES), case_sensitive=False)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER variable (some containers)
        return ""


def _parse_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time (e.g. 2025-11-04T12:00:00Z)",
                                 param_hint="--at") from None
    return states.as_utc(parsed)


def ticket_json(t: tickets.TicketInfo) -> dict[str, Any]:
    """The ``tickets list --json`` contract, with the approved-state fields."""
    base = t.to_json() if hasattr(t, "to_json") else {
        "id": t.id, "uid": t.uid, "state": t.state, "registry": t.watch, "cloud": t.cloud,
        "date": t.file_date.isoformat(), "title": t.title, "held_for": list(t.context["hold"]["reasons"]),
        "removals_allowed": t.removals_allowed, "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }
    base.update({"watch": t.watch, "kind": t.kind, "superseded_by": t.superseded_by})
    return base


# ---------------------------------------------------------------- state


@click.group("state")
def state_group() -> None:
    """The approved allow-list of each watch: what the firewall must allow now."""


@state_group.command("show")
@click.argument("watch")
@click.option("--cloud", type=CLOUD_CHOICE, default="public", show_default=True, help="Azure cloud.")
@click.option("--at", "at_text", metavar="ISO-TIME", help="The state in force at this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def state_show(app: Any, watch: str, cloud: str, at_text: str | None, as_json: bool) -> None:
    """The approved state of WATCH (a registry name, mcr, or "(extra tags)"): effective and final lists."""
    at = _parse_at(at_text)
    with app.engine.connect() as conn:
        found = states.require(conn, cloud.lower(), watch, at)
    data = found.to_json(at or dt.datetime.now(dt.timezone.utc))
    if as_json:
        _emit_json(data)
        return
    _print_state(data)


def _print_state(data: dict[str, Any]) -> None:
    click.echo(f"{data['watch']} ({data['cloud']}): ticket {data['ticket']}, publication "
               f"{data['publication']['date']} (changeNumber {data['publication']['change_number']})")
    removals = data["removals_at"] or "not yet approved (additions only)"
    click.echo(f"  removals at: {removals}")
    for family in states.FAMILIES:
        click.echo(f"  effective {family}: {len(data['effective'][family])} CIDRs; "
                   f"final {family}: {len(data['final'][family])} CIDRs")


@state_group.command("list")
@click.option("--at", "at_text", metavar="ISO-TIME", help="The states in force at this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def state_list(app: Any, at_text: str | None, as_json: bool) -> None:
    """The approved state of every watch that has one."""
    given = _parse_at(at_text)
    at = given or dt.datetime.now(dt.timezone.utc)
    with app.engine.connect() as conn:
        found = states.all_current(conn, given)
    data = [s.to_json(at) for s in found]
    configured = {(w.cloud, w.name) for w in resolve_watches(app.settings, {})}
    missing = sorted(configured - {(s.cloud, s.watch) for s in found})
    if as_json:
        _emit_json(data)
    else:
        for item in data:
            _print_state(item)
        if not data:
            click.echo("no watch has an approved state yet")
    for cloud, watch in missing:
        click.echo(f"note: watch {watch!r} ({cloud}) has nothing approved yet", err=True)


# ---------------------------------------------------------------- tickets


def tickets_list(app: Any, state: str | None, as_json: bool) -> None:
    """List tickets: id, state, kind, watch, publication date, title."""
    with app.engine.connect() as conn:
        found = tickets.list_tickets(conn, state)
    if as_json:
        _emit_json([ticket_json(t) for t in found])
        return
    if not found:
        click.echo("no tickets" + (f" in state {state}" if state else ""))
    for t in found:
        click.echo(f"{t.id:>5}  {t.state:<10}  {t.kind:<8}  {t.watch:<20}  {t.cloud} {t.file_date}  "
                   f"{render.one_line(t.title)}")


def tickets_show(app: Any, ticket_id: int, as_json: bool) -> None:
    """A ticket's summary, changes against the approved state, review trail and deliveries."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
        events = tickets.ticket_events(conn, ticket_id)
        summary = render.render_ticket(conn, app.settings, ticket, "summary")
        pulls = feed_consumers.pulled_by(conn, ticket_id)
    deliveries = notify.outbox_status(app.engine, app.settings, ticket_id)
    if as_json:
        data = ticket_json(ticket)
        data["changes"] = ticket.changes
        data["events"] = [{"at": e.at.isoformat(), "by": e.actor, "action": e.action, "from": e.from_state,
                           "to": e.to_state, "comment": e.comment} for e in events]
        data["deliveries"] = [{"destination": d.destination, "state": d.state, "attempts": d.attempts,
                               "error": d.last_error} for d in deliveries]
        data["pulled_by"] = [p.to_json() for p in pulls]
        _emit_json(data)
        return
    click.echo(summary.rstrip())
    if ticket.state in ("approved", "applied"):
        click.echo(f"Feeds: {feed_consumers.pulled_line(pulls)}")
    click.echo("\nReview trail:")
    for e in events:
        comment = f"  ({render.one_line(e.comment)})" if e.comment else ""
        click.echo(f"  {e.at:%Y-%m-%d %H:%M} {render.one_line(e.actor)}: {e.action} {e.from_state or '-'} -> "
                   f"{e.to_state}{comment}")
    if deliveries:
        click.echo("Deliveries:")
        for d in deliveries:
            error = f"  ({d.last_error})" if d.last_error and d.state != "sent" else ""
            click.echo(f"  {d.state:<8} after {d.attempts} attempt(s)  {d.destination}{error}")


def tickets_render(app: Any, ticket_id: int, fmt: str, phase: str) -> None:
    """Print a ticket, or the full-state rule snippet of one kind of firewall for a phase."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
        text = render.render_ticket(conn, app.settings, ticket, fmt, phase)
    click.echo(text, nl=False)


def _review(action: str, help_text: str, additions: bool = False) -> click.Command:
    @click.argument("ticket_id", type=int, metavar="ID")
    @click.option("--by", "actor", default=_os_user, show_default="the operating-system user", metavar="NAME",
                  help="Who takes this step (recorded, shown in the ticket and messages).")
    @click.option("--comment", default="", metavar="TEXT", help="Why (recorded with the step).")
    @click.pass_obj
    def command(app: Any, ticket_id: int, actor: str, comment: str, additions_only: bool = False) -> None:
        step = "approve-adds" if additions_only else action
        if additions_only:
            with app.engine.connect() as conn:
                if tickets.get_ticket(conn, ticket_id).state != "hold":
                    raise TransitionError("--additions-only is for held tickets; approve an open ticket as a whole")
        ticket = review.transition(app.engine, ticket_id, step, actor, comment, settings=app.settings.tickets,
                                   announce=app.settings)
        if additions_only:
            click.echo(f"ticket {ticket.id} is still hold; its additions are approved (render --phase add)")
        else:
            click.echo(f"ticket {ticket.id} is now {ticket.state}")

    if additions:
        command = click.option("--additions-only", is_flag=True,
                               help="Approve only the additions of a held ticket; its removals wait.")(command)
    return click.command(action, help=help_text)(command)


def register(main: click.Group, tickets_group: click.Group) -> None:
    """Add ``state`` to the CLI and give ``tickets`` the commands that follow the approved state."""
    main.add_command(state_group)
    tickets_group.add_command(click.command("list")(
        click.option("--state", type=click.Choice(tickets.STATES), help="Only tickets in this state.")(
            click.option("--json", "as_json", is_flag=True, help="Print JSON.")(click.pass_obj(tickets_list)))))
    tickets_group.add_command(click.command("show")(
        click.argument("ticket_id", type=int, metavar="ID")(
            click.option("--json", "as_json", is_flag=True, help="Print JSON.")(click.pass_obj(tickets_show)))))
    tickets_group.add_command(click.command("render")(
        click.argument("ticket_id", type=int, metavar="ID")(
            click.option("--format", "fmt", type=click.Choice([*render.TICKET_FORMATS, *render.RULE_FORMATS]),
                         default="md", show_default=True,
                         help="The ticket (md, html, txt) or a firewall's full-state rule snippet.")(
                click.option("--phase", type=click.Choice(review.PHASES), default="add", show_default=True,
                             help="Snippets: add (old and new lists, apply now) or remove (the new list alone, "
                                  "from the removal date).")(click.pass_obj(tickets_render))))))
    tickets_group.add_command(_review("approve", "Approve an open ticket: the watch's approved state moves.",
                                      additions=True))
    tickets_group.add_command(_review("reject", "Reject an open or held ticket: the approved state stays."))
    tickets_group.add_command(_review("applied", "Record that an approved ticket's rules are in place."))
    tickets_group.add_command(_review("release", "Release a held ticket after review: it opens, and its removals "
                                                 "may be approved."))


__all__ = ["register", "state_group", "ticket_json"]
