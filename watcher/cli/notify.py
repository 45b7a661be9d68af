"""Notification commands: deliver what is due, show the outbox, send a test message."""
from __future__ import annotations

import click

from .. import notify
from . import views
from .app import AppContext, echo_lines, json_option, pass_app, present


@click.group("notify", invoke_without_command=True)
@pass_app
@click.pass_context
def notify_group(ctx: click.Context, app: AppContext) -> None:
    """Deliver the notifications that are due (status, test: see the subcommands)."""
    if ctx.invoked_subcommand is not None:
        return
    echo_lines(views.delivery_lines(notify.deliver_due(app.engine, app.settings)))


@notify_group.command("status")
@json_option
@pass_app
def notify_status(app: AppContext, as_json: bool) -> None:
    """Queued, sent and failed notifications, per ticket and destination."""
    report = notify.outbox_report(app.engine, app.settings)
    present(as_json, report.to_json, lambda: views.outbox_lines(report))


@notify_group.command("test")
@pass_app
def notify_test(app: AppContext) -> None:
    """Send a test message to each configured destination and print each result."""
    results = notify.send_test(app.settings)
    if not results:
        raise click.ClickException("no notification destinations configured ([notify] urls or WATCHER_NOTIFY_URLS)")
    echo_lines(views.notify_test_lines(results))
    if not all(r.ok for r in results):
        raise click.ClickException(f"{sum(not r.ok for r in results)} destination(s) failed")


COMMANDS = (notify_group,)
