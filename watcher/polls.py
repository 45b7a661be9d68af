"""The record of poll attempts (table ``polls``): written by the pipeline, read by status.

Rows are written after the attempt, in a transaction of their own: a poll that
imported a publication but failed to record itself loses only the record; the
next poll finds the publication by its URL or its SHA-256.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import Connection, Engine, insert, or_, select

from . import db
from .errors import translate_db_errors
from .redact import redact_text
from .models import Poll, Publication
from .store.records import PublicationInfo, publication_from_row

#: Outcomes after which nothing is left to do until Microsoft publishes again.
SUCCESS_OUTCOMES = ("new", "unchanged", "skipped-known-url", "already-imported")
MAX_URL = 1024


@dataclass(frozen=True)
class PollRecord:
    """One row of ``polls``; times are timezone-aware UTC."""

    id: int
    cloud: str
    started_at: dt.datetime
    finished_at: dt.datetime
    url: str
    outcome: str
    error: str | None
    publication_id: int | None
    sha256: str | None

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "outcome": self.outcome,
            "error": self.error,
            "url": self.url,
            "publication_id": self.publication_id,
            "sha256": self.sha256,
        }


def as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for DateTime(timezone=True); we only ever write UTC.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _record(row: Any) -> PollRecord:
    return PollRecord(
        id=row.id, cloud=row.cloud, started_at=as_utc(row.started_at), finished_at=as_utc(row.finished_at),
        url=row.url, outcome=row.outcome, error=row.error, publication_id=row.publication_id, sha256=row.sha256,
    )


def record_poll(
    engine: Engine,
    *,
    cloud: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    url: str,
    outcome: str,
    error: str | None = None,
    publication_id: int | None = None,
    sha256: str | None = None,
) -> int:
    """Write one attempt; URLs in ``url`` and ``error`` are redacted here too (belt and braces)."""
    values = {
        "cloud": cloud, "started_at": started_at, "finished_at": finished_at,
        "url": redact_text(url)[:MAX_URL], "outcome": outcome,
        "error": redact_text(error) if error is not None else None,
        "publication_id": publication_id, "sha256": sha256,
    }
    with translate_db_errors(f"recording the {cloud} poll"), db.writer(engine).begin() as conn:
        return conn.execute(insert(Poll.__table__).returning(Poll.__table__.c.id), values).scalar_one()


def polls(conn: Connection, cloud: str | None = None) -> list[PollRecord]:
    """Every recorded attempt, oldest first."""
    table = Poll.__table__
    query = select(table).order_by(table.c.started_at, table.c.id)
    if cloud is not None:
        query = query.where(table.c.cloud == cloud)
    with translate_db_errors("reading the polls"):
        return [_record(r) for r in conn.execute(query)]


def _latest(conn: Connection, cloud: str, outcomes: Iterable[str] | None) -> PollRecord | None:
    table = Poll.__table__
    query = select(table).where(table.c.cloud == cloud)
    if outcomes is not None:
        query = query.where(table.c.outcome.in_(list(outcomes)))
    with translate_db_errors(f"reading the last {cloud} poll"):
        row = conn.execute(query.order_by(table.c.started_at.desc(), table.c.id.desc()).limit(1)).first()
    return _record(row) if row else None


def last_attempt(conn: Connection, cloud: str) -> PollRecord | None:
    return _latest(conn, cloud, None)


def last_success(conn: Connection, cloud: str) -> PollRecord | None:
    return _latest(conn, cloud, SUCCESS_OUTCOMES)


def publication_for_url(conn: Connection, cloud: str, safe_url: str) -> PublicationInfo | None:
    """The stored publication a (redacted) file URL already gave, if any.

    Either the publication was imported from that URL, or a poll of that URL
    found its bytes already stored. Compared redacted: two URLs that differ only
    in a secret (a rotated SAS token) name the same file.
    """
    pubs, table = Publication.__table__, Poll.__table__
    polled = select(table.c.publication_id).where(
        table.c.cloud == cloud, table.c.url == safe_url, table.c.publication_id.is_not(None)
    )
    with translate_db_errors(f"finding the {cloud} publication of a URL"):
        row = conn.execute(
            select(pubs).where(pubs.c.cloud == cloud, or_(pubs.c.source == safe_url, pubs.c.id.in_(polled)))
            .order_by(pubs.c.file_date.desc()).limit(1)
        ).first()
    return publication_from_row(row) if row else None


def publication_with_sha256(conn: Connection, cloud: str, sha256: str,
                            file_date: dt.date | None = None) -> PublicationInfo | None:
    """The stored publication with these bytes: on ``file_date`` when given (a publication is a cloud and a
    date: the same bytes under a new date are a week that changed nothing), else under any date."""
    pubs = Publication.__table__
    query = select(pubs).where(pubs.c.cloud == cloud, pubs.c.sha256 == sha256)
    if file_date is not None:
        query = query.where(pubs.c.file_date == file_date)
    with translate_db_errors(f"finding a {cloud} publication by its SHA-256"):
        row = conn.execute(query.order_by(pubs.c.file_date.desc()).limit(1)).first()
    return publication_from_row(row) if row else None


def newest_publication(conn: Connection, cloud: str) -> PublicationInfo | None:
    """The publication with the latest file date of ``cloud``; None before the first import."""
    pubs = Publication.__table__
    with translate_db_errors(f"reading the newest {cloud} publication"):
        row = conn.execute(
            select(pubs).where(pubs.c.cloud == cloud).order_by(pubs.c.file_date.desc()).limit(1)
        ).first()
    return publication_from_row(row) if row else None
