"""Ticket commands: list, show, render, the review steps that move the approved state, and the template check."""
from __future__ import annotations

import getpass

import click

from .. import feed_consumers, render, review, tickets
from ..ticket_detail import ticket_detail
from ..errors import TransitionError
from . import views
from .app import AppContext, echo_lines, emit_json, json_option, pass_app, present


#: A ticket id out of range is a usage error, not a driver's OverflowError.
TICKET_ID = click.IntRange(1, tickets.MAX_TICKET_ID)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER variable (some containers)
        return ""


@click.group("tickets")
def tickets_group() -> None:
    """Firewall change tickets: list, show, render and review them."""


@tickets_group.command("list")
@click.option("--state", type=click.Choice(tickets.STATES), help="Only tickets in this state.")
@json_option
@pass_app
def tickets_list(app: AppContext, state: str | None, as_json: bool) -> None:
    """List tickets: id, state, kind, watch, publication date, title."""
    with app.engine.connect() as conn:
        found = tickets.list_tickets(conn, state)
    present(as_json, lambda: [t.to_json() for t in found], lambda: views.ticket_list_lines(found, state))


@tickets_group.command("show")
@click.argument("ticket_id", type=TICKET_ID, metavar="ID")
@json_option
@pass_app
def tickets_show(app: AppContext, ticket_id: int, as_json: bool) -> None:
    """A ticket's summary, changes against the approved state, review trail, deliveries and feed pulls."""
    detail = ticket_detail(app.engine, app.settings, ticket_id)
    if as_json:
        emit_json(detail.to_json())
        return
    with app.engine.connect() as conn:
        click.echo(render.render_ticket(conn, app.settings, detail.ticket, "summary").rstrip())
    if detail.ticket.state in ("approved", "applied"):
        click.echo(f"Feeds: {feed_consumers.pulled_line(list(detail.pulled_by))}")
    echo_lines(views.ticket_trail_lines(detail.events, detail.deliveries))


@tickets_group.command("render")
@click.argument("ticket_id", type=TICKET_ID, metavar="ID")
@click.option("--format", "fmt", type=click.Choice([*render.TICKET_FORMATS, *render.RULE_FORMATS]),
              default="md", show_default=True, help="The ticket (md, html, txt) or a firewall's full-state rule snippet.")
@click.option("--phase", type=click.Choice(review.PHASES), default="add", show_default=True,
              help="Snippets: add (old and new lists, apply now) or remove (the new list alone, from the removal date).")
@pass_app
def tickets_render(app: AppContext, ticket_id: int, fmt: str, phase: str) -> None:
    """Print a ticket, or the full-state rule snippet of one kind of firewall for a phase."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
        text = render.render_ticket(conn, app.settings, ticket, fmt, phase)
    click.echo(text, nl=False)


def _review_command(action: str, help_text: str, additions: bool = False) -> None:
    @click.argument("ticket_id", type=TICKET_ID, metavar="ID")
    @click.option("--by", "actor", default=_os_user, show_default="the operating-system user", metavar="NAME",
                  help="Who takes this step (recorded, shown in the ticket and messages).")
    @click.option("--comment", default="", metavar="TEXT", help="Why (recorded with the step).")
    @pass_app
    def command(app: AppContext, ticket_id: int, actor: str, comment: str, additions_only: bool = False) -> None:
        if additions_only:
            with app.engine.connect() as conn:
                if tickets.get_ticket(conn, ticket_id, view=False).state != "hold":
                    raise TransitionError("--additions-only is for held tickets; approve an open ticket as a whole")
        step = "approve-adds" if additions_only else action
        ticket = review.transition(app.engine, ticket_id, step, actor, comment, settings=app.settings.tickets,
                                   announce=app.settings)
        if additions_only:
            click.echo(f"ticket {ticket.id} is still hold; its additions are approved (render --phase add)")
        else:
            click.echo(f"ticket {ticket.id} is now {ticket.state}")

    if additions:
        command = click.option("--additions-only", is_flag=True,
                               help="Approve only the additions of a held ticket; its removals wait.")(command)
    tickets_group.command(action, help=help_text)(command)


_review_command("approve", "Approve an open ticket: the watch's approved state moves.", additions=True)
_review_command("reject", "Reject an open or held ticket: the approved state stays.")
_review_command("applied", "Record that an approved ticket's rules are in place.")
_review_command("release", "Release a held ticket after review: it opens, and its removals may be approved.")


@tickets_group.command("check-templates")
@pass_app
def tickets_check_templates(app: AppContext) -> None:
    """Render every template (built-in or from [tickets] template_dir) against sample tickets."""
    results = render.check_templates(app.settings)
    echo_lines(views.template_check_lines(results))
    broken = [r for r in results if not r.ok]
    if broken:
        raise click.ClickException(f"{len(broken)} template(s) broken")


COMMANDS = (tickets_group,)
