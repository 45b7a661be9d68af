"""A tag's whole history with its size at each version, read from the prefix spans: the tag page's data.

``store.history`` reads every version's prefix set to count what each added
and removed (AzureCloud over five years: ~250 sets of ~13,000 prefixes, seconds
of work), and a plot would then recount every set's address space. The prefix
spans already say when each prefix came and went: one read of the tag's spans
gives every version's additions and removals, and ``address_space`` keeps the
counts and address space up to date from them. No version's set is materialised.
"""
from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from .. import diff as diffs
from ..address_space import Sizes, SpaceTracker
from ..errors import translate_db_errors
from ..models import PrefixSpan, Publication, Tag, TagVersion, day_from_key
from .queries import _metadata_of, tag_name
from .records import HistoryEntry


@dataclass(frozen=True)
class TagSeries:
    name: str                       # as stored
    entries: list[HistoryEntry]     # as ``store.history`` gives them, oldest first
    sizes: dict[dt.date, Sizes]     # per version (by the day it starts): IPv4/IPv6 prefixes, IPv4 addresses, IPv6 /64s


def tag_series(conn: Connection, cloud: str, name: str) -> TagSeries:
    """The tag's versions (as ``store.history``) and each version's sizes, from two queries."""
    real_name = tag_name(conn, cloud, name)
    v, s = TagVersion.__table__, PrefixSpan.__table__
    with translate_db_errors(f"reading the history of {real_name}"):
        identity = conn.execute(select(Tag.id).where(Tag.cloud == cloud, Tag.name == real_name)).scalar_one()
        versions = conn.execute(select(v).where(v.c.tag_id == identity).order_by(v.c.valid_from)).all()
        spans = conn.execute(select(s.c.prefix, s.c.first_day, s.c.until_day).where(s.c.tag_id == identity)).all()
    added: dict[int, list[str]] = collections.defaultdict(list)
    removed: dict[int, list[str]] = collections.defaultdict(list)
    for prefix, first_day, until_day in spans:
        added[first_day].append(prefix)
        if until_day is not None:
            removed[until_day].append(prefix)
    # Every span starts and ends on a version's day (a version is written whenever the set changes); events
    # are applied at the first version on or after their day all the same.
    event_days = sorted(set(added) | set(removed))
    tracker, next_event = SpaceTracker(), 0
    entries: list[HistoryEntry] = []
    sizes: dict[dt.date, Sizes] = {}
    previous_number: int | None = None
    previous_metadata: tuple | None = None
    for version in versions:
        coming: list[str] = []
        going: list[str] = []
        while next_event < len(event_days) and event_days[next_event] <= version.valid_from:
            coming += added.get(event_days[next_event], ())
            going += removed.get(event_days[next_event], ())
            next_event += 1
        day = day_from_key(version.valid_from)
        sizes[day] = tracker.apply(coming, going)
        metadata = _metadata_of(version) if version.present else None
        entries.append(HistoryEntry(
            date=day, present=version.present, change_number=version.change_number,
            prefix_count=version.prefix_count, added=len(coming), removed=len(going),
            anomalies=diffs.change_number_anomalies(previous_number, version.change_number, bool(coming or going)),
            metadata=diffs.metadata_changes(previous_metadata, metadata),
        ))
        previous_number = version.change_number if version.present else None
        previous_metadata = metadata
    return TagSeries(real_name, entries, sizes)


def publications_stamp(conn: Connection, cloud: str) -> tuple[int, int | None]:
    """How many publications the cloud has and the newest id: it changes whenever a publication is imported
    (or a missing one back-filled), so it keys what is worked out from the history."""
    p = Publication.__table__
    with translate_db_errors(f"counting the {cloud} publications"):
        count, newest = conn.execute(select(func.count(), func.max(p.c.id)).where(p.c.cloud == cloud)).one()
    return int(count), newest
