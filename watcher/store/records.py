"""The store's value types: what the other modules and the faces see of the database.

Plain frozen dataclasses with no database access, so that modules which only
show or pass these values along (render, notify, polls, status, tickets) do
not depend on the store's SQL.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Literal

from sqlalchemy import Connection

from .. import diff as diffs
from ..models import day_from_key, day_key
from ..parse import content_hash

#: The hash of the empty prefix set: what withdrawn versions point to.
EMPTY_HASH = content_hash(())
#: (region, regionId, platform, systemService, networkFeatures) of a withdrawn version.
NO_METADATA: tuple[str, int, str, str, str] = ("", 0, "", "", "")


@dataclass(frozen=True)
class PublicationInfo:
    id: int
    cloud: str
    file_date: dt.date
    change_number: int
    sha256: str
    source: str
    imported_at: dt.datetime
    tag_count: int
    prefix_count: int

    @property
    def day(self) -> int:
        return day_key(self.file_date)


def publication_from_row(row: Any) -> PublicationInfo:
    """A ``publications`` row (any object with its columns as attributes) as a value."""
    return PublicationInfo(
        id=row.id, cloud=row.cloud, file_date=row.file_date, change_number=row.change_number,
        sha256=row.sha256, source=row.source, imported_at=row.imported_at,
        tag_count=row.tag_count, prefix_count=row.prefix_count,
    )


@dataclass(frozen=True)
class VersionInfo:
    """A tag's version in force at some publication."""

    tag_id: int
    name: str
    valid_from: int
    valid_until: int | None
    present: bool
    change_number: int | None
    metadata: tuple[str, int, str, str, str]
    prefix_count: int
    content_hash: bytes
    entry_hash: bytes

    def same_as(self, other: "VersionInfo") -> bool:
        """Same presence, content, changeNumber and metadata (the entry's bytes may differ)."""
        return (self.present, self.content_hash, self.change_number, self.metadata) == (
            other.present, other.content_hash, other.change_number, other.metadata
        )


def absent_version(tag_id: int | None, name: str, valid_from: int) -> VersionInfo:
    """The version that records a tag as not published."""
    return VersionInfo(tag_id or 0, name, valid_from, None, False, None, NO_METADATA, 0, EMPTY_HASH, EMPTY_HASH)


@dataclass(frozen=True)
class TagChange:
    """What an import changed for one tag, relative to the previous publication."""

    tag: str
    status: diffs.Status
    added: int
    removed: int
    change_number_before: int | None
    change_number_after: int | None
    anomalies: tuple[str, ...]


@dataclass(frozen=True)
class ImportResult:
    outcome: Literal["imported", "already imported"]
    publication: PublicationInfo
    changes: tuple[TagChange, ...] = ()
    anomalies: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    previous_day: int | None = None
    #: why the import was skipped, when it was
    reason: str = ""

    @property
    def changed_tags(self) -> tuple[TagChange, ...]:
        return tuple(c for c in self.changes if c.status != "unchanged" or c.added or c.removed)


#: Called inside the import transaction, so that work derived from a new
#: publication (tickets, an outbox) is committed with it or not at all.
ImportHook = Callable[[Connection, ImportResult], None]


@dataclass(frozen=True)
class TagSnapshot:
    tag: str
    publication: PublicationInfo
    version: VersionInfo
    prefixes: tuple[str, ...]

    @property
    def since(self) -> dt.date:
        return day_from_key(self.version.valid_from)


@dataclass(frozen=True)
class HistoryEntry:
    date: dt.date
    present: bool
    change_number: int | None
    prefix_count: int
    added: int
    removed: int
    anomalies: tuple[str, ...]


@dataclass(frozen=True)
class LookupHit:
    tag: str
    prefix: str
    since: dt.date
