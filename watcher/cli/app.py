"""What every command shares: the application context, the error translation and the common options."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import click
from sqlalchemy import Engine

from .. import db, jsontext, logs
from ..errors import WatcherError
from ..settings import CLOUD_FILE_NAMES, Settings

F = TypeVar("F", bound=Callable[..., Any])

CLOUD_CHOICE = click.Choice(sorted(CLOUD_FILE_NAMES), case_sensitive=False)
LOG_FORMAT_CHOICE = click.Choice(logs.LOG_FORMATS)


@dataclass
class AppContext:
    """What every command shares: the settings, and the database opened on first use."""

    settings: Settings
    log_format: str = "human"
    secrets: tuple[str, ...] = field(default=(), repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.open_database(self.settings.database_url)
        return self._engine


pass_app = click.make_pass_decorator(AppContext)


class WatcherGroup(click.Group):
    """Turns the watcher's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WatcherError as exc:
            raise click.ClickException(str(exc)) from None


def json_option(f: F) -> F:
    """``--json``: print the value's ``to_json()`` instead of the text view (passed as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def cloud_option(f: F) -> F:
    return click.option("--cloud", type=CLOUD_CHOICE, default="public", show_default=True,
                        help="Which cloud's publications.")(f)


def at_option(help_text: str) -> Callable[[F], F]:
    """``--at PUB``: which publication to read (passed as ``at_ref``)."""
    return click.option("--at", "at_ref", default="latest", show_default=True, metavar="PUB", help=help_text)


def exact_option(f: F) -> F:
    """``--exact``: a date must name a publication (passed as ``exact``)."""
    return click.option("--exact", is_flag=True,
                        help="Refuse a date with no publication instead of using the one on or before it.")(f)


def say_resolved(*resolved: Any) -> None:
    """One line on stderr for each date that had no publication and resolved to the one before it."""
    for item in resolved:
        note = item.note()
        if note:
            click.echo(note, err=True)


def emit_json(data: Any) -> None:
    """Print data that ``to_json()`` methods built (plain JSON types)."""
    click.echo(jsontext.dumps(data))


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def present(as_json: bool, data: Callable[[], Any], text: Callable[[], list[str]]) -> None:
    """Print ``data()`` (built by ``to_json()`` methods) as JSON, or the text view's lines."""
    if as_json:
        emit_json(data())
    else:
        echo_lines(text())
