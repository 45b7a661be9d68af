"""Logging: one line per event, human-readable on a terminal or JSON, never a secret.

Secrets reach log records through URLs (apprise destinations carry tokens,
mirrors and proxies carry passwords) and through messages of libraries we do
not control, so every record passes through one redaction filter on the
handler, whatever logger it came from; the rules are ``watcher.redact``'s.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Iterable, TextIO

from .redact import RedactingFilter

LOG_FORMATS = ("human", "json")
_OURS = "_watcher_handler"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("cloud", "event", "outcome", "ticket", "destination"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\n", " | ")  # one line per event


def configure_logging(
    log_format: str = "human",
    level: int = logging.INFO,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    *,
    quiet_libraries: bool = False,
) -> logging.Handler:
    """Route every logger to one handler (``human`` or ``json`` lines, on stderr); returns the handler.

    Replaces a handler installed by an earlier call, and leaves other handlers
    alone (a test's log capture keeps working). ``quiet_libraries`` keeps
    libraries that log each request or step at INFO (httpx, uvicorn, alembic's
    migration context) at WARNING: the watcher's own lines say what was done.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter())
    handler.addFilter(RedactingFilter(secrets))
    handler.setLevel(level)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    remove_handler()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    if quiet_libraries:
        for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn", "alembic"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


def remove_handler() -> None:
    """Take the handler of ``configure_logging`` off the root logger (when the command ends)."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _OURS, False):
            root.removeHandler(existing)
