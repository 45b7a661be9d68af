"""The store's value types: what the other modules and the faces see of the database.

Plain frozen dataclasses with no database access, so that modules which only
show or pass these values along (render, notify, polls, status, tickets) do
not depend on the store's SQL.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, Literal

from sqlalchemy import Connection

from .. import diff as diffs
from ..models import day_from_key, day_key
from ..parse import content_hash
from ..prefixes import decode_prefixes

#: The hash of the empty prefix set: what withdrawn versions point to.
EMPTY_HASH = content_hash(())
#: (region, regionId, platform, systemService, networkFeatures): each None when the file has none.
Metadata = tuple[str | None, int | None, str | None, str | None, str | None]
#: The metadata of a withdrawn version, and of an entry without any: absent, not a made-up 0 or "".
NO_METADATA: Metadata = (None, None, None, None, None)
METADATA_NAMES = ("region", "regionId", "platform", "systemService", "networkFeatures")


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
    #: publications the global changeNumber says were not seen since the previous stored one
    missed_before: int = 0
    #: what parsing the file warned about (wrong-typed optional metadata)
    parse_warnings: tuple[str, ...] = ()

    @property
    def day(self) -> int:
        return day_key(self.file_date)

    def to_json(self) -> dict[str, Any]:
        """The one JSON shape of a publication, wherever one is printed (publications, poll, status, import)."""
        imported_at = self.imported_at
        # SQLite hands back naive datetimes; the store only ever writes UTC.
        imported_at = (imported_at.replace(tzinfo=dt.timezone.utc) if imported_at.tzinfo is None
                       else imported_at.astimezone(dt.timezone.utc))
        return {
            "id": self.id,
            "cloud": self.cloud,
            "date": self.file_date.isoformat(),
            "change_number": self.change_number,
            "sha256": self.sha256,
            "source": self.source,
            "imported_at": imported_at.isoformat(),
            "tags": self.tag_count,
            "prefixes": self.prefix_count,
            "missed_before": self.missed_before,
            "parse_warnings": list(self.parse_warnings),
        }


def missed_count(previous_number: int | None, number: int) -> int:
    """Publications a global changeNumber says were not seen after ``previous_number`` (a reset: none)."""
    if previous_number is None or number <= previous_number + 1:
        return 0
    return number - previous_number - 1


def missed_note(count: int, after: dt.date | None, before: dt.date) -> str:
    """"N publication(s) not seen between D1 and D2"."""
    return f"{count} publication(s) not seen between {after} and {before}"


@dataclass(frozen=True)
class MissedPublications:
    """A gap in a cloud's global changeNumber: ``count`` publications not seen between two stored ones."""

    count: int
    after: dt.date
    before: dt.date

    def describe(self) -> str:
        return missed_note(self.count, self.after, self.before)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "after": self.after.isoformat(), "before": self.before.isoformat()}


def missed_gaps(pubs: "list[PublicationInfo]") -> list[MissedPublications]:
    """The gaps in one cloud's publications (oldest first), as their ``missed_before`` records them."""
    return [MissedPublications(p.missed_before, q.file_date, p.file_date)
            for q, p in zip(pubs, pubs[1:]) if p.missed_before]


@dataclass(frozen=True)
class ResolvedPublication:
    """The publication a reference named; ``asked`` is the date given, when one was."""

    publication: PublicationInfo
    asked: dt.date | None = None

    @property
    def resolved_from(self) -> dt.date | None:
        """The date asked for, when it had no publication and the one before it was taken."""
        return self.asked if self.asked is not None and self.asked != self.publication.file_date else None

    def note(self) -> str | None:
        """The line that says so, or None when the date named a publication."""
        if self.resolved_from is None:
            return None
        pub = self.publication
        return (f"note: no {pub.cloud} publication on {self.resolved_from}; "
                f"using the one on or before it, {pub.file_date} (--exact refuses instead)")


def publication_from_row(row: Any) -> PublicationInfo:
    """A ``publications`` row (any object with its columns as attributes) as a value."""
    return PublicationInfo(
        id=row.id, cloud=row.cloud, file_date=row.file_date, change_number=row.change_number,
        sha256=row.sha256, source=row.source, imported_at=row.imported_at,
        tag_count=row.tag_count, prefix_count=row.prefix_count,
        missed_before=getattr(row, "missed_before", 0) or 0,
        parse_warnings=tuple(json.loads(row.parse_warnings)) if getattr(row, "parse_warnings", None) else (),
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
    metadata: Metadata
    prefix_count: int
    content_hash: bytes
    entry_hash: bytes

    def same_as(self, other: "VersionInfo") -> bool:
        """Same presence, content, changeNumber and metadata (the entry's bytes may differ)."""
        return (self.present, self.content_hash, self.change_number, self.metadata) == (
            other.present, other.content_hash, other.change_number, other.metadata
        )

    def to_json(self) -> dict[str, Any]:
        region, region_id, platform, system_service, network_features = self.metadata
        return {
            "tag": self.name,
            "valid_from": day_from_key(self.valid_from).isoformat(),
            "valid_until": None if self.valid_until is None else day_from_key(self.valid_until).isoformat(),
            "present": self.present,
            "change_number": self.change_number,
            "region": region,
            "region_id": region_id,
            "platform": platform,
            "system_service": system_service,
            "network_features": network_features,
            "prefixes": self.prefix_count,
            "content_hash": self.content_hash.hex(),
        }


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

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag, "status": self.status, "added": self.added, "removed": self.removed,
            "change_number_before": self.change_number_before, "change_number_after": self.change_number_after,
            "anomalies": list(self.anomalies),
        }


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

    def to_json(self) -> dict[str, Any]:
        """The outcome, the publication's keys (as ``PublicationInfo.to_json``) and the tags that changed."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            **self.publication.to_json(),
            "anomalies": list(self.anomalies),
            "notes": list(self.notes),
            "changes": [c.to_json() for c in self.changed_tags],
        }


#: Called inside the import transaction, so that work derived from a new
#: publication (tickets, an outbox) is committed with it or not at all.
ImportHook = Callable[[Connection, ImportResult], None]


@dataclass(frozen=True)
class TagSnapshot:
    """A tag as published in one publication, its prefixes kept as the stored text.

    ``text`` is the canonical text (the sorted prefixes joined by newlines, as
    ``contents`` stores it): a face that prints the list writes it as it is
    (``prefix_text``), and AzureCloud's 13,000 strings are made only for a
    reader of ``prefixes`` (once, on first use).
    """

    tag: str
    publication: PublicationInfo
    version: VersionInfo
    text: bytes

    @functools.cached_property
    def prefixes(self) -> tuple[str, ...]:
        return decode_prefixes(self.text)

    @property
    def prefix_count(self) -> int:
        return self.text.count(b"\n") + 1 if self.text else 0

    @property
    def prefix_text(self) -> str:
        """The prefixes one a line (no newline after the last)."""
        return self.text.decode()

    @property
    def since(self) -> dt.date:
        return day_from_key(self.version.valid_from)

    def to_json(self, resolved_from: dt.date | None = None) -> dict[str, Any]:
        """``resolved_from``: the date asked for, when it had no publication and this is the one before."""
        return {**self.heading_json(resolved_from), "prefixes": list(self.prefixes)}

    def heading_json(self, resolved_from: dt.date | None = None) -> dict[str, Any]:
        """``to_json()`` but its last key, ``prefixes``: what a face writing the list from ``text`` adds it to."""
        return {
            "tag": self.tag,
            "cloud": self.publication.cloud,
            "date": self.publication.file_date.isoformat(),
            "resolved_from": resolved_from.isoformat() if resolved_from else None,
            "change_number": self.version.change_number,
            "since": self.since.isoformat(),
        }


@dataclass(frozen=True)
class HistoryEntry:
    date: dt.date
    present: bool
    change_number: int | None
    prefix_count: int
    added: int
    removed: int
    anomalies: tuple[str, ...]
    #: metadata properties that changed from the version before (both present)
    metadata: tuple[diffs.MetadataChange, ...] = ()

    def to_json(self, tag: str, resolved_from: dt.date | None = None) -> dict[str, Any]:
        """``tag``: the tag's name, which the entry itself does not carry; ``resolved_from`` as in ``--since``."""
        return {
            "tag": tag, "date": self.date.isoformat(),
            "resolved_from": resolved_from.isoformat() if resolved_from else None, "present": self.present, "change_number": self.change_number,
            "prefixes": self.prefix_count, "added": self.added, "removed": self.removed,
            "anomalies": list(self.anomalies), "metadata": [m.to_json() for m in self.metadata],
        }


@dataclass(frozen=True)
class LookupHit:
    tag: str
    prefix: str
    since: dt.date

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "prefix": self.prefix, "since": self.since.isoformat()}


@dataclass(frozen=True)
class AddressHolder:
    """A tag that held an address at some time: from its first to its last publication with the prefix."""

    tag: str
    prefix: str
    first: dt.date
    last: dt.date
    #: still published in the newest publication
    current: bool

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "prefix": self.prefix, "first": self.first.isoformat(),
                "last": self.last.isoformat(), "current": self.current}
