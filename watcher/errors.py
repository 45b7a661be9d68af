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
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
