"""Configuration commands: ``init``, ``config check``, ``db upgrade`` and ``db check``."""
from __future__ import annotations

import click

from .. import config as configuration
from .. import db, dbcheck
from . import views
from .app import AppContext, echo_lines, emit_json, json_option, pass_app, present


@click.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Bring the database schema up to the latest revision (every command also does this)."""
    engine = db.create_db_engine(app.settings.database_url)
    try:
        db.upgrade(engine, revision)
        click.echo(f"database {db.safe_url(app.settings.database_url)} is at revision {db.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("check")
@json_option
@pass_app
def db_check(app: AppContext, as_json: bool) -> None:
    """Check the database's invariants (names and prefixes pass today's checks); exit 1 on a violation."""
    report = dbcheck.check_database(app.engine)
    present(as_json, report.to_json, lambda: views.db_check_lines(report))
    if not report.ok:
        raise click.ClickException("the database breaks its invariants (listed above); readers skip those rows")


@click.command("init")
@click.argument("path", default="watcher.toml", type=click.Path(dir_okay=False), required=False)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_command(path: str, force: bool) -> None:
    """Write the commented example configuration to PATH (default watcher.toml)."""
    written = configuration.write_example(path, force=force)
    click.echo(f"wrote {written}; edit it, then check it with: watcher --config {written} config check")


@click.group("config")
def config_group() -> None:
    """Configuration commands: check the configuration and show the effective settings."""


@config_group.command("check")
@json_option
@pass_app
def config_check(app: AppContext, as_json: bool) -> None:
    """Check every part of the configuration and print the effective settings, secrets masked."""
    checks = configuration.check(app.settings)
    effective = configuration.effective_settings(app.settings)
    if as_json:
        emit_json({"ok": all(c.ok for c in checks), "checks": [c.to_json() for c in checks], "settings": effective})
    else:
        source = app.settings.config_path or "no config file (defaults and WATCHER_* variables)"
        echo_lines(views.config_check_lines(str(source), checks, effective))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} configuration problem(s): "
                                   + "; ".join(f"{c.part}: {c.detail}" for c in failed))


COMMANDS = (db_group, init_command, config_group)
