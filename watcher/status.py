"""Per-cloud status: the last poll attempt, the last success, the newest publication, staleness.

A library function so that ``watcher status`` and the daemon's health endpoint
report the same thing; the daemon extends ``CloudStatus.to_json`` with its
schedule, leadership and backlog.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from . import polls
from .polls import PollRecord
from .settings import Settings
from .store import queries
from .store.records import MissedPublications, PublicationInfo, missed_gaps


@dataclass(frozen=True)
class CloudStatus:
    cloud: str
    now: dt.datetime
    last_attempt: PollRecord | None
    last_success: PollRecord | None
    newest: PublicationInfo | None
    #: days from the newest publication's file date to today (UTC); None without a publication
    age_days: int | None
    stale_after_days: int
    #: gaps in the global changeNumber: publications a poll never saw
    missed: tuple[MissedPublications, ...] = ()

    @property
    def stale(self) -> bool:
        """No publication at all, or none newer than ``stale_after_days`` days.

        Judged by the file date, not by when we fetched it: a mirror that keeps
        serving last month's file must not look fresh because it answers.
        """
        return self.age_days is None or self.age_days > self.stale_after_days

    def to_json(self) -> dict[str, Any]:
        pub = self.newest
        return {
            "cloud": self.cloud,
            "now": self.now.isoformat(),
            "last_attempt": self.last_attempt.to_json() if self.last_attempt else None,
            "last_success": self.last_success.to_json() if self.last_success else None,
            "newest_publication": None if pub is None else pub.to_json(),
            "age_days": self.age_days,
            "stale_after_days": self.stale_after_days,
            "stale": self.stale,
            "missed_publications": [m.to_json() for m in self.missed],
        }


def cloud_status(conn: Connection, cloud: str, now: dt.datetime, settings: Settings) -> CloudStatus:
    """The status of ``cloud`` at ``now`` (timezone-aware; naive means UTC)."""
    now = polls.as_utc(now)
    newest = polls.newest_publication(conn, cloud)
    return CloudStatus(
        cloud=cloud,
        now=now,
        last_attempt=polls.last_attempt(conn, cloud),
        last_success=polls.last_success(conn, cloud),
        newest=newest,
        age_days=(now.date() - newest.file_date).days if newest else None,
        stale_after_days=settings.daemon.stale_after_days,
        missed=tuple(missed_gaps(queries.publications(conn, cloud))),
    )


def status(conn: Connection, settings: Settings, now: dt.datetime, clouds: tuple[str, ...] | None = None) -> list[CloudStatus]:
    """``cloud_status`` of each configured cloud."""
    return [cloud_status(conn, cloud, now, settings) for cloud in (clouds or settings.clouds)]
