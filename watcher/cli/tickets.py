"""Ticket commands: list, show, render, the review steps, and the template check."""
from __future__ import annotations

import click

from .. import notify, render, tickets
from . import views
from .app import AppContext, echo_lines, emit_json, json_option, pass_app, present


@click.group("tickets")
def tickets_group() -> None:
    """Firewall change tickets: list, show, render and review them."""


@tickets_group.command("list")
@click.option("--state", type=click.Choice(tickets.STATES), help="Only tickets in this state.")
@json_option
@pass_app
def tickets_list(app: AppContext, state: str | None, as_json: bool) -> None:
    """List tickets: id, state, registry, publication date, title."""
    with app.engine.connect() as conn:
        found = tickets.list_tickets(conn, state)
    present(as_json, lambda: [t.to_json() for t in found], lambda: views.ticket_list_lines(found, state))


@tickets_group.command("show")
@click.argument("ticket_id", type=int, metavar="ID")
@json_option
@pass_app
def tickets_show(app: AppContext, ticket_id: int, as_json: bool) -> None:
    """A ticket's summary, review trail and deliveries."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
        events = tickets.ticket_events(conn, ticket_id)
    deliveries = notify.outbox_status(app.engine, app.settings, ticket_id)
    if as_json:
        emit_json({**ticket.to_json(), "events": [e.to_json() for e in events],
                   "deliveries": [d.to_json() for d in deliveries]})
        return
    click.echo(render.render(app.settings, "summary", tickets.view(ticket)).rstrip())
    echo_lines(views.ticket_trail_lines(events, deliveries))


@tickets_group.command("render")
@click.argument("ticket_id", type=int, metavar="ID")
@click.option("--format", "fmt", type=click.Choice([*render.TICKET_FORMATS, *render.RULE_FORMATS]),
              default="md", show_default=True, help="The ticket (md, html, txt) or a firewall's rule snippet.")
@pass_app
def tickets_render(app: AppContext, ticket_id: int, fmt: str) -> None:
    """Print a ticket, or its rule snippet for one kind of firewall."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
    click.echo(render.render(app.settings, fmt, tickets.view(ticket)), nl=False)


def _review_command(action: str, help_text: str) -> None:
    @tickets_group.command(action, help=help_text)
    @click.argument("ticket_id", type=int, metavar="ID")
    @click.option("--by", "actor", required=True, metavar="NAME", help="Who takes this step (recorded).")
    @click.option("--comment", default="", metavar="TEXT", help="Why (recorded with the step).")
    @pass_app
    def command(app: AppContext, ticket_id: int, actor: str, comment: str) -> None:
        ticket = tickets.transition(app.engine, ticket_id, action, actor, comment)
        click.echo(f"ticket {ticket.id} is now {ticket.state}")


_review_command("approve", "Approve an open ticket.")
_review_command("reject", "Reject an open or held ticket.")
_review_command("applied", "Record that an approved ticket's rules are in place.")
_review_command("release", "Release a held ticket after review: it opens, and its snippets include removals.")


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
