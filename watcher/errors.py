"""The watcher's one error tree.

Every failure the watcher reports is a ``WatcherError``; outside exceptions
(SQLAlchemy, httpx, apprise, jinja2, OS errors) are translated into one of these
at the edge of the stage that called them, so the CLI and the daemon have one
thing to catch and one message to show.

    WatcherError
    ├── ConfigError          settings, config file, watches, templates
    ├── FetchError           finding or downloading a file
    │   └── ImplausibleFileError   a downloaded file that looks wrong (kept aside)
    ├── ParseError           a malformed service-tag file
    ├── StoreError           the database
    │   ├── ConflictError          a different file for a publication already stored
    │   └── NotFoundError          an unknown tag, publication or ticket
    ├── TransitionError      a ticket review step its state does not allow
    ├── RenderError          a ticket template
    ├── NotifyError          delivering a notification
    └── LeadershipError      another daemon holds the lock

Messages never carry secrets: URLs that may hold tokens are masked before
they are put into an error.
"""
from __future__ import annotations

import contextlib
import sqlite3
import sys
from typing import Iterator

from sqlalchemy.exc import SQLAlchemyError


class WatcherError(Exception):
    """Base of every error the watcher reports to a user."""


class ConfigError(WatcherError):
    """The settings, the config file, a watch or a template is invalid."""


class FetchError(WatcherError):
    """A service-tag file could not be found or downloaded."""


class ImplausibleFileError(FetchError):
    """A downloaded file does not look like the expected cloud's publication."""


class ParseError(WatcherError):
    """A service-tag file is malformed; names the file and the offending part."""


class StoreError(WatcherError):
    """The database refused or failed an operation."""


class ConflictError(StoreError):
    """A publication already stored conflicts with the one being imported."""


class NotFoundError(StoreError):
    """An unknown tag, publication or ticket was asked for."""


class TransitionError(WatcherError):
    """A ticket cannot take the review step asked for in its current state."""


class RenderError(WatcherError):
    """A ticket template is broken or produced invalid output."""


class NotifyError(WatcherError):
    """A notification could not be delivered."""


class LeadershipError(WatcherError):
    """Another watcher daemon already runs against this database."""


def database_detail(exc: BaseException) -> str:
    """The first line of what the database driver said (SQLAlchemy wraps it in ``orig``)."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(getattr(exc, "orig", None) or exc).__name__


def is_database_error(exc: BaseException) -> bool:
    """An error raised by SQLAlchemy or by a database driver used directly (sqlite3, psycopg)."""
    if isinstance(exc, (SQLAlchemyError, sqlite3.Error)):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only when a PostgreSQL engine was made
    return psycopg is not None and isinstance(exc, psycopg.Error)


@contextlib.contextmanager
def translate_db_errors(doing: str) -> Iterator[None]:
    """Turn database errors raised inside the block into a ``StoreError`` that says what was being done.

        with translate_db_errors(f"reading the history of {tag}"):
            ...

    The watcher's own errors pass through unchanged; so does anything that is
    not a database error (a bug should surface as one).
    """
    try:
        yield
    except WatcherError:
        raise
    except Exception as exc:
        if not is_database_error(exc):
            raise
        raise StoreError(f"database error while {doing}: {database_detail(exc)}") from exc
