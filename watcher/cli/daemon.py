"""The daemon's commands: poll once, report status and health, run the daemon."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import click

from .. import daemon, logs, overview, pipeline
from . import views
from .app import CLOUD_CHOICE, LOG_FORMAT_CHOICE, AppContext, emit_json, json_option, pass_app, present


@click.command("poll")
@click.option("--cloud", "clouds", type=CLOUD_CHOICE, multiple=True,
              help="Cloud to poll; repeat for several (default: the configured clouds).")
@click.option("--url", metavar="URL",
              help="Poll this page or file instead of Microsoft's download page (env WATCHER_SOURCE_URL).")
@click.option("--force", is_flag=True, help="Import a file even if it fails the plausibility check.")
@json_option
@pass_app
def poll_command(app: AppContext, clouds: tuple[str, ...], url: str | None, force: bool, as_json: bool) -> None:
    """Fetch and import the newest service-tag file of each cloud.

    Exits 0 when every poll worked (new data or not), 1 when any failed.
    """
    outcomes = pipeline.poll(app.engine, app.settings, tuple(c.lower() for c in clouds) or None, url=url, force=force)
    if as_json:
        emit_json([o.to_json() for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if not as_json and o.ok:
            click.echo(views.describe_poll(o))
    for o in failed:
        click.echo(f"Error: {views.describe_poll(o)}", err=True)
    if failed:
        raise SystemExit(1)


@click.command("status")
@json_option
@click.option("--check", is_flag=True, help="Exit 1 when unhealthy (for container and monitoring health checks).")
@pass_app
def status_command(app: AppContext, as_json: bool, check: bool) -> None:
    """Per cloud: last poll, last success, newest publication, staleness; the daemon's schedule, leader and health."""
    with app.engine.connect() as conn:
        report = overview.status_report(conn, app.settings, dt.datetime.now(dt.timezone.utc))
    present(as_json, report.to_json, lambda: views.status_lines(report))
    if check and not report.health.healthy:
        raise click.ClickException("unhealthy: " + "; ".join(report.health.reasons))


@click.command("run")
@click.option("--schedule", metavar="CRON", help="Cron expression in UTC, five fields or six with seconds first "
                                                  "(default: [daemon] schedule, WATCHER_SCHEDULE, or daily).")
@click.option("--http-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve /healthz and /metrics on this port ([daemon] http_port, WATCHER_HTTP_PORT).")
@click.option("--log-format", type=LOG_FORMAT_CHOICE, help="Log lines for people, or one JSON object per line.")
@pass_app
def run_command(app: AppContext, schedule: str | None, http_port: int | None, log_format: str | None) -> None:
    """Run the daemon: poll on schedule, catch up after downtime, ticket, notify, report health.

    Several replicas may run on one PostgreSQL database (one leads each run);
    on SQLite, one per database file. Stops cleanly on SIGTERM or SIGINT.
    """
    daemon_settings = dataclasses.replace(
        app.settings.daemon,
        schedule=schedule if schedule is not None else app.settings.daemon.schedule,
        http_port=http_port if http_port is not None else app.settings.daemon.http_port,
    )
    settings = dataclasses.replace(app.settings, daemon=daemon_settings)
    logs.configure_logging(log_format or app.log_format, logging.INFO, app.secrets, quiet_libraries=True)
    daemon.run_daemon(settings)


@click.command("serve")
@click.option("--host", metavar="HOST", help="Address to listen on ([web] http_host, WATCHER_HTTP_HOST; default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Port to listen on, 0 for a free one ([web] http_port; default 8080).")
@click.option("--log-format", type=LOG_FORMAT_CHOICE, help="Log lines for people, or one JSON object per line.")
@pass_app
def serve_command(app: AppContext, host: str | None, port: int | None, log_format: str | None) -> None:
    """Serve the HTTP app (/healthz, /metrics) until SIGTERM or SIGINT; prints "listening on URL" when ready."""
    logs.configure_logging(log_format or app.log_format, logging.INFO, app.secrets, quiet_libraries=True)
    daemon.serve(app.settings, click.echo, host, port)


COMMANDS = (poll_command, status_command, run_command, serve_command)
