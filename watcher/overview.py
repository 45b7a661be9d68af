"""What ``watcher status`` reports (and the web app's status page will): each cloud, the daemon, the health.

One library call for the faces: ``status_report`` reads everything in one
connection and returns a value whose ``to_json`` is the ``status --json`` shape.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from . import health, scheduler, status
from .errors import ConfigError
from .settings import Settings


@dataclass(frozen=True)
class DaemonState:
    """The daemon's schedule, its next run, its last run and the outbox backlog, as the database sees them."""

    schedule: str
    schedule_is_default: bool
    #: why the configured schedule cannot run; then there is no next run
    schedule_error: str | None
    next_run: dt.datetime | None
    last_run: health.RunRecord | None
    #: outbox messages per state
    outbox: dict[str, int]

    @property
    def outbox_backlog(self) -> int:
        return self.outbox.get("pending", 0) + self.outbox.get("sending", 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "schedule_is_default": self.schedule_is_default,
            "schedule_error": self.schedule_error,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "leader": self.last_run.runner if self.last_run else None,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "outbox": dict(self.outbox),
            "outbox_backlog": self.outbox_backlog,
        }


@dataclass(frozen=True)
class StatusReport:
    clouds: tuple[status.CloudStatus, ...]
    daemon: DaemonState
    health: health.Health

    def to_json(self) -> dict[str, Any]:
        return {"clouds": [c.to_json() for c in self.clouds], "daemon": self.daemon.to_json(),
                "health": self.health.to_json()}


def daemon_state(conn: Connection, settings: Settings, now: dt.datetime, last_run: health.RunRecord | None) -> DaemonState:
    expression = settings.daemon.schedule or scheduler.default_schedule()
    try:
        next_run = scheduler.make_trigger(expression).get_next_fire_time(None, now)
        schedule_error = None
    except ConfigError as exc:
        next_run, schedule_error = None, str(exc)
    return DaemonState(
        schedule=expression,
        schedule_is_default=settings.daemon.schedule is None,
        schedule_error=schedule_error,
        next_run=next_run,
        last_run=last_run,
        outbox=health.outbox_counts(conn),
    )


def status_report(conn: Connection, settings: Settings, now: dt.datetime) -> StatusReport:
    """Each configured cloud's status, the daemon's state and the health at ``now``."""
    state = health.evaluate(conn, settings, now)
    return StatusReport(
        clouds=state.clouds,  # health judged these; the report shows the same ones
        daemon=daemon_state(conn, settings, now, state.last_run),
        health=state,
    )
