"""A tag's whole history with its size at each version: the tag page's data, from one read of its versions.

``store.history`` reads every version's prefix set to count what each added
and removed (AzureCloud over five years: ~250 sets of ~13,000 prefixes, seconds
of work). Here nothing is decoded or recounted: each stored set carries its
sizes, counted once (``contents``, migration 0015) and copied onto the versions
that hold it (``tag_versions``, migration 0018), and each version what it added
and removed (``added_count`` and ``removed_count``, stored by the import,
migration 0017), all read with the versions. What the import left uncounted is
counted or copied by the tag's first view, or before it by a server's warm-up
(``count_uncounted``).
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Engine, bindparam, func, literal, select, text, union_all, update
from sqlalchemy.exc import SQLAlchemyError

from .. import db, diff as diffs
from ..address_space import STORABLE_BELOW, Sizes, SpaceTracker, family_sizes, storable_sizes
from ..errors import translate_db_errors
from ..models import Content, PrefixSpan, Publication, TagVersion, day_from_key
from ..prefixes import passing_prefix_gate
from .packing import load_texts, split_text
from .queries import tag_identity
from .sql import fetch_all, fetch_in
from .records import HistoryEntry

log = logging.getLogger(__name__)

SIZE_COLUMNS = ("v4_prefixes", "v6_prefixes", "v4_addresses", "v6_networks_64")
#: What the series reads of each version (not its publication, end or fingerprint), with its set's sizes as copied
#: onto it (migration 0018: the versions alone, no content row per version); the driver's plain rows (SQLAlchemy's
#: Row objects cost as much as the read for a busy tag's 240 versions).
_VersionRow = collections.namedtuple("_VersionRow", (
    "tag_id", "valid_from", "present", "change_number", "region", "region_id", "platform", "system_service",
    "network_features", "prefix_count", "content_hash", "added_count", "removed_count", *SIZE_COLUMNS))
_VERSIONS_READ = (f"SELECT {', '.join(_VersionRow._fields)} FROM tag_versions WHERE tag_id = {{tag}} "
                  "ORDER BY valid_from")
#: By the tag's id (``:tag``), or by its exact name (``:cloud``, ``:name``: the common case, read in the same round
#: trip as the publication dates).
_VERSIONS_BY_ID = _VERSIONS_READ.format(tag=":tag")
_VERSIONS_BY_NAME = _VERSIONS_READ.format(tag="(SELECT t.id FROM tags t WHERE t.cloud = :cloud AND t.name = :name)")
_DATES_STATEMENT = text("SELECT file_date FROM publications WHERE cloud = :cloud ORDER BY file_date")
_VERSIONS_BY_NAME_STATEMENT = text(_VERSIONS_BY_NAME)
#: The sizes of the sets given, where counted (the sets its versions lack them for).
_CONTENT_SIZES = (f"SELECT hash, {', '.join(SIZE_COLUMNS)} FROM contents WHERE hash IN ({{}}) "
                  "AND v4_prefixes IS NOT NULL")
#: Uncounted sets are counted from the tag's spans when they are at least one in this many of its versions
#: (AzureCloud, 240 versions: from the texts, 2 sets 0.1 s, 60 sets 0.3 s; from the spans, 0.2 s whatever the number).
SPANS_COUNT_SHARE = 5


@dataclass(frozen=True)
class TagSeries:
    name: str                       # as stored
    entries: list[HistoryEntry]     # as ``store.history`` gives them, oldest first
    sizes: dict[dt.date, Sizes]     # per version (by the day it starts): IPv4/IPv6 prefixes, IPv4 addresses, IPv6 /64s
    dates: list[dt.date]            # the cloud's publications, oldest first


def tag_series_reads(cloud: str, name: str) -> list[tuple[Any, dict[str, Any]]]:
    """The reads of ``tag_series`` for a tag named as stored (statement, parameters), for ``db.read_together``:
    the tag page sends them with its sign-in check on PostgreSQL, one round trip for all."""
    return [(_DATES_STATEMENT, {"cloud": cloud}), (_VERSIONS_BY_NAME_STATEMENT, {"cloud": cloud, "name": name})]


def _read_series(conn: Connection, cloud: str, name: str) -> list[list[Any]]:
    """The rows of ``tag_series_reads``: on PostgreSQL in one round trip (``db.read_together``), elsewhere as the
    driver's plain rows (SQLAlchemy's Row objects cost as much as the read for a busy tag's 240 versions)."""
    with translate_db_errors(f"reading the history of {cloud} tag {name!r}"):
        if db.pipelined(conn):
            return db.read_together(conn, tag_series_reads(cloud, name))
        return [fetch_all(conn, statement.text, params) for statement, params in tag_series_reads(cloud, name)]


def tag_series(conn: Connection, cloud: str, name: str, read: Sequence[Sequence[Any]] | None = None) -> TagSeries:
    """The tag's versions (as ``store.history``), each version's sizes, and the cloud's publication dates;
    ``read``: the rows of ``tag_series_reads``, read already (else read here). The tag is read by the name it is
    stored under (the pages' links name it so)."""
    date_rows, rows = read if read is not None else _read_series(conn, cloud, name)
    if rows:
        real_name, identity = name, rows[0][0]
    else:  # named otherwise (case), or unknown: found as ``store.tag_name`` finds it, then read by its id
        real_name, identity = tag_identity(conn, cloud, name)
        rows = None
    with translate_db_errors(f"reading the history of {real_name}"):
        versions, events, stored, counted = _versions_counted(conn, identity, rows)
    if stored or counted:
        _keep_sizes(conn.engine, stored, counted)
    lacking = {**stored, **counted}
    # Every span starts and ends on a version's day (a version is written whenever the set changes); events
    # are applied at the first version on or after their day all the same.
    event_days = sorted(events or ())
    next_event = 0
    entries: list[HistoryEntry] = []
    sizes: dict[dt.date, Sizes] = {}
    previous_number: int | None = None
    previous_metadata: tuple | None = None
    for (_tag, valid_from, present, change_number, region, region_id, platform, system_service, network_features,
         prefix_count, content_hash, added_count, removed_count, v4_prefixes, v6_prefixes, v4_addresses,
         v6_networks_64) in versions:
        if events is None:  # as stored with the version (migration 0017)
            coming, going = added_count, removed_count
        else:
            coming = going = 0
            while next_event < len(event_days) and event_days[next_event] <= valid_from:
                coming += events[event_days[next_event]][0]
                going += events[event_days[next_event]][1]
                next_event += 1
        day = day_from_key(valid_from)
        sizes[day] = lacking[bytes(content_hash)] if v4_prefixes is None else \
            (v4_prefixes, v6_prefixes, v4_addresses, v6_networks_64)
        metadata = (region, region_id, platform, system_service, network_features) if present else None
        entries.append(HistoryEntry(
            day, bool(present), change_number, prefix_count, coming, going,
            diffs.change_number_anomalies(previous_number, change_number, bool(coming or going)),
            () if metadata == previous_metadata else diffs.metadata_changes(previous_metadata, metadata),
        ))
        previous_number = change_number if present else None
        previous_metadata = metadata
    # SQLite hands the ISO text back, PostgreSQL a date.
    dates = [day if isinstance(day, dt.date) else dt.date.fromisoformat(day) for (day,) in date_rows]
    return TagSeries(real_name, entries, sizes, dates)


@dataclass(frozen=True)
class SizesCounted:
    """What ``count_uncounted`` did: tags whose sets it counted, sets counted and kept, tags left for later."""

    tags: int
    sets: int
    left: int


#: Sets counted by ``count_uncounted`` before they are written (one write per batch, not per tag).
KEEP_BATCH = 2000


def count_uncounted(engine: Engine, deadline: float, clock: Callable[[], float] = time.monotonic) -> SizesCounted:
    """Count and keep the sizes of the prefix sets stored without them (the import does not count them), and copy
    them onto the versions that lack them, tag by tag, the tags with the most such versions first, until
    ``clock()`` passes ``deadline``: what a view of each tag would do, done before anyone asks (``watcher serve``
    and the HTTP server of ``watcher run`` do it before they listen). The tags left are done by their first views,
    as before."""
    v = TagVersion.__table__
    with engine.connect() as conn, translate_db_errors("finding the versions without their sets' sizes"):
        tags = conn.execute(select(v.c.tag_id, func.count()).where(v.c.v4_prefixes.is_(None))
                            .group_by(v.c.tag_id).order_by(func.count().desc(), v.c.tag_id)).all()
    done = kept = 0
    stored: dict[bytes, Sizes] = {}
    counted: dict[bytes, Sizes] = {}
    for tag_id, _lacking in tags:
        if clock() >= deadline:
            break
        with engine.connect() as conn, translate_db_errors(f"counting the sizes of tag {tag_id}'s prefix sets"):
            _versions, _events, found, made = _versions_counted(conn, tag_id)
        stored.update(found)
        counted.update(made)
        done += 1
        if len(stored) + len(counted) >= KEEP_BATCH:
            kept += _keep_sizes(engine, stored, counted, wait=max(0.0, deadline - clock()))
            stored, counted = {}, {}
    if stored or counted:
        kept += _keep_sizes(engine, stored, counted, wait=max(0.0, deadline - clock()))
    return SizesCounted(done, kept, len(tags) - done)


def _versions_counted(conn: Connection, identity: Any, rows: Sequence[Any] | None = None
                      ) -> tuple[list[Any], dict[int, list[int]] | None, dict[bytes, Sizes], dict[bytes, Sizes]]:
    """The versions of the tag ``identity`` (its id) with their sizes (``rows``: as read already), the prefixes
    each day added and removed (None when every version has them stored: the spans are not read), and, for the
    sets of the versions that lack their sizes, those stored with the set and those counted now (not kept yet)."""
    s = PrefixSpan.__table__
    if rows is None:
        rows = fetch_all(conn, _VERSIONS_BY_ID, {"tag": identity})
    versions = [_VersionRow._make(row) for row in rows]
    lacking = list(dict.fromkeys(bytes(r.content_hash) for r in versions if r.v4_prefixes is None))
    stored: dict[bytes, Sizes] = {bytes(digest): tuple(sizes) for digest, *sizes in
                                  fetch_in(conn, _CONTENT_SIZES, lacking)} if lacking else {}
    uncounted = [digest for digest in lacking if digest not in stored]
    # Each version's additions and removals are stored with it (by the import, and by migration 0017 for the
    # versions before it). Should one lack them (a row written by hand), the tag's are counted from its spans,
    # as every view did before 0017.
    events: dict[int, list[int]] | None = None
    if any(r.added_count is None for r in versions):
        events = collections.defaultdict(lambda: [0, 0])
    counted: dict[bytes, Sizes] | None = None
    if len(uncounted) > 1 and SPANS_COUNT_SHARE * len(uncounted) >= len(versions):
        # Many sets to count (a history imported but never shown): from the spans themselves, which say
        # what each version added and removed (~25,000 rows for AzureCloud over five years; a pass over the
        # whole history, cheaper than the texts past about a fifth of it).
        spans = conn.execute(select(s.c.prefix, s.c.first_day, s.c.until_day).where(s.c.tag_id == identity)
                             ).all()
        if events is not None:
            for _prefix, first_day, until_day in spans:
                events[first_day][0] += 1
                if until_day is not None:
                    events[until_day][1] += 1
        counted = _count_from_spans(spans, versions, set(uncounted))
    elif events is not None:
        # The tag's spans (their index by tag, migration 0016, answers it alone), counted per first day and per
        # end day: a row per version and kind. Counted per (first day, end day) pair they were a row per pair:
        # 5,044 rows for a busy AzureCloud over 200 weeks, against 362 (the query alone on SQLite 15 -> 10 ms).
        added = select(s.c.first_day, func.count(), literal(0)).where(s.c.tag_id == identity) \
            .group_by(s.c.first_day)
        removed = select(s.c.until_day, literal(0), func.count()) \
            .where(s.c.tag_id == identity, s.c.until_day.is_not(None)).group_by(s.c.until_day)
        for day, coming, going in conn.execute(union_all(added, removed)):
            events[day][0] += coming
            events[day][1] += going
    if counted is None:
        counted = _count(conn, uncounted) if uncounted else {}
    return versions, events, stored, counted


def _count_from_spans(spans: Sequence[Any], versions: Sequence[Any], uncounted: set[bytes]
                      ) -> dict[bytes, Sizes] | None:
    """The sizes of the sets ``uncounted`` (stored without them), from the tag's prefix spans: the spans of each day
    removed and added (``SpaceTracker``), in day order, the gate checked once per distinct prefix. None when, at
    any version, the spans do not hold as many prefixes as its stored set (then the sets are counted instead):
    sizes are kept for good, and a history is trusted only where it agrees with what was stored."""
    passing = set(passing_prefix_gate(list({prefix for prefix, _, _ in spans})))
    days: dict[int, tuple[list[str], list[str]]] = collections.defaultdict(lambda: ([], []))
    for prefix, first_day, until_day in spans:
        days[first_day][0].append(prefix)
        if until_day is not None:
            days[until_day][1].append(prefix)
    ordered = sorted(days)
    tracker, present, at, counted = SpaceTracker(), 0, 0, {}
    for version in versions:
        while at < len(ordered) and ordered[at] <= version.valid_from:
            added, removed = days[ordered[at]]
            present += len(added) - len(removed)
            tracker.apply([p for p in added if p in passing], [p for p in removed if p in passing])
            at += 1
        if present != version.prefix_count:
            log.info("the prefix spans of tag %s disagree with its version of day %d: its sets are counted",
                     version.tag_id, version.valid_from)
            return None
        if bytes(version.content_hash) in uncounted:
            counted[bytes(version.content_hash)] = tracker.sizes()
    return counted


def _count(conn: Connection, hashes: list[bytes]) -> dict[bytes, Sizes]:
    """Sizes of sets stored without them (the import does not count them, see ``importer._write_contents``), in
    the order of the tag's history.

    A set alone is counted whole (``family_sizes``). Many (a history imported but never shown: AzureCloud over five
    years, ~250 sets of ~13,000 prefixes that differ by a few dozen from one to the next) are counted as a run:
    the first whole, each next one from its difference with the one before (``SpaceTracker``), and the gate is
    checked once per distinct prefix; ~10x faster than counting each set whole.
    """
    texts = load_texts(conn, set(hashes))
    if len(texts) == 1:
        (digest, found), = texts.items()
        # A prefix an older version stored past today's gate is skipped, as the diff skips it.
        return {digest: family_sizes(passing_prefix_gate(split_text(found.text)))}
    counted: dict[bytes, Sizes] = {}
    tracker, previous, passing = SpaceTracker(), frozenset[str](), set[str]()
    for digest in hashes:
        if digest in counted:  # a set the tag had before (a change undone)
            continue
        current = frozenset(split_text(texts[digest].text))
        added, removed = current - previous, previous - current
        passing.update(passing_prefix_gate(list(added - passing)))
        counted[digest] = tracker.apply([p for p in added if p in passing], [p for p in removed if p in passing])
        previous = current
    return counted


def _keep_sizes(engine: Engine, stored: dict[bytes, Sizes], counted: dict[bytes, Sizes],
                wait: float | None = None) -> int:
    """Keep the sizes just counted (``counted``: with their sets, so that each set is counted once, by the first
    view that shows it) and copy them, and those read from their sets (``stored``), onto the versions that lack
    them: how many sets were counted and kept. Best effort: a database that refuses the write (read-only, busy past
    the timeout) costs the next view a recount, and the view goes on; a set too big for the columns stays NULL
    (``storable_sizes``). ``wait``: the longest the write waits for SQLite's write lock, held by another writer
    (an import), instead of the usual 30 s (the warm-up has a deadline)."""
    contents, versions = Content.__table__, TagVersion.__table__

    def rows(sizes: dict[bytes, Sizes]) -> list[dict[str, Any]]:
        return [{"h": digest, **dict(zip((f"n_{c}" for c in SIZE_COLUMNS), storable_sizes(found)))}
                for digest, found in sizes.items() if max(found) < STORABLE_BELOW]

    new, copied = rows(counted), rows({**stored, **counted})
    if not copied:
        return 0
    try:
        with db.writer(engine).connect() as conn, db.lock_wait_limited(conn, wait):
            with conn.begin():
                if new:
                    conn.execute(update(contents)
                                 .where(contents.c.hash == bindparam("h"), contents.c.v4_prefixes.is_(None))
                                 .values({c: bindparam(f"n_{c}") for c in SIZE_COLUMNS}), new)
                conn.execute(update(versions)
                             .where(versions.c.content_hash == bindparam("h"), versions.c.v4_prefixes.is_(None))
                             .values({c: bindparam(f"n_{c}") for c in SIZE_COLUMNS}), copied)
    except SQLAlchemyError as exc:
        log.info("the sizes of %d prefix sets were counted but not kept (%s): counted again next time",
                 len(copied), type(exc).__name__)
        return 0
    return len(new)


def publications_stamp(conn: Connection, cloud: str) -> tuple[int, int | None]:
    """How many publications the cloud has and the newest id: it changes whenever a publication is imported
    (or a missing one back-filled), so it keys what is worked out from the history."""
    with translate_db_errors(f"counting the {cloud} publications"):
        return publications_stamp_from(conn.execute(*publications_stamp_read(cloud)).all())


def publications_stamp_read(cloud: str) -> tuple[Any, dict[str, Any]]:
    """The read of ``publications_stamp`` (statement, parameters), for ``db.read_together``."""
    return _PUBLICATIONS_STAMP, {"cloud": cloud}


def publications_stamp_from(rows: Sequence[Any]) -> tuple[int, int | None]:
    """``publications_stamp`` from the rows of its read."""
    count, newest = rows[0]
    return int(count), newest


#: Built once (each tag page view runs it).
_PUBLICATIONS_STAMP = select(func.count(), func.max(Publication.__table__.c.id)).where(
    Publication.__table__.c.cloud == bindparam("cloud"))
