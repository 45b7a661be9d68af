"""Reading the stored history: publications, a tag's history and snapshot, look-ups and diffs.

Every public function here translates database errors into a ``StoreError``
that names what was being read, so a face shows one line instead of a traceback.
"""
from __future__ import annotations

import bisect
import datetime as dt
import ipaddress
from typing import Any, Sequence

from sqlalchemy import Connection, bindparam, func, select, text

from .. import diff as diffs
from ..errors import NotFoundError, translate_db_errors
from ..models import Publication, Tag, TagVersion, day_from_key, day_key
from .records import (
    AddressHolder, HistoryEntry, LookupHit, PublicationInfo, ResolvedPublication, TagSnapshot, publication_from_row,
)
from .packing import text_of_stored
from .sql import fetch_all, fetch_in, no_collector_pauses
from .versions import VERSION_COLUMNS, load_checked_contents, load_contents, version_from_row, versions_at


def publications(conn: Connection, cloud: str) -> list[PublicationInfo]:
    """The cloud's publications, oldest first."""
    with translate_db_errors(f"listing the {cloud} publications"):
        rows = conn.execute(
            select(Publication.__table__).where(Publication.cloud == cloud).order_by(Publication.file_date)
        )
        return [publication_from_row(r) for r in rows]


def publication_by_day(conn: Connection, cloud: str, day: dt.date) -> PublicationInfo | None:
    with translate_db_errors(f"reading the {cloud} publication of {day}"):
        row = conn.execute(
            select(Publication.__table__).where(Publication.cloud == cloud, Publication.file_date == day)
        ).first()
        return publication_from_row(row) if row else None


def tag_ids(conn: Connection, cloud: str) -> dict[str, int]:
    """Every tag the cloud has ever had: name -> id."""
    with translate_db_errors(f"reading the {cloud} tags"):
        return dict(conn.execute(select(Tag.name, Tag.id).where(Tag.cloud == cloud)).all())


def parse_publication_ref(ref: str) -> str | dt.date:
    """``latest``, ``previous`` or a date (``YYYYMMDD`` or ``YYYY-MM-DD``)."""
    ref = ref.strip().lower()
    if ref in ("latest", "previous"):
        return ref
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(ref, fmt).date()
        except ValueError:
            pass
    raise NotFoundError(f"{ref!r} is not a publication: use latest, previous, YYYYMMDD or YYYY-MM-DD")


def resolve_publication(conn: Connection, cloud: str, ref: str) -> PublicationInfo:
    """The publication a reference names; a date means the publication in force on that day."""
    wanted = parse_publication_ref(ref)
    table = Publication.__table__
    query = select(table).where(table.c.cloud == cloud).order_by(table.c.file_date.desc())
    with translate_db_errors(f"finding the {cloud} publication {ref!r}"):
        if isinstance(wanted, dt.date):
            row = conn.execute(query.where(table.c.file_date <= wanted).limit(1)).first()
            if row is None:
                raise NotFoundError(f"no {cloud} publication on or before {wanted}")
            return publication_from_row(row)
        rows = conn.execute(query.limit(2)).all()
    index = 0 if wanted == "latest" else 1
    if len(rows) <= index:
        have = "no publication" if not rows else "only one publication"
        raise NotFoundError(f"{wanted}: the database has {have} for the {cloud} cloud; import some files first")
    return publication_from_row(rows[index])


def resolve_at(conn: Connection, cloud: str, ref: str, *, exact: bool = False) -> ResolvedPublication:
    """``resolve_publication``, saying which date was asked for; ``exact``: a date must name a publication."""
    wanted = parse_publication_ref(ref)
    publication = resolve_publication(conn, cloud, ref) if not (exact and isinstance(wanted, dt.date)) else None
    if publication is None:
        assert isinstance(wanted, dt.date)
        publication = publication_by_day(conn, cloud, wanted)
        if publication is None:
            raise NotFoundError(f"no {cloud} publication on {wanted} (--exact); "
                                "`watcher publications` lists the dates there are")
    return ResolvedPublication(publication, wanted if isinstance(wanted, dt.date) else None)


def entries_since(entries: Sequence[HistoryEntry], day: dt.date) -> list[HistoryEntry]:
    """The version in force on ``day`` and every later one (pure)."""
    start = max((i for i, e in enumerate(entries) if e.date <= day), default=0)
    return list(entries[start:])


def tag_name(conn: Connection, cloud: str, name: str) -> str:
    """A tag's stored name, found case-insensitively (an exact match wins)."""
    return tag_identity(conn, cloud, name)[0]


_TAG_ID = "SELECT id FROM tags WHERE cloud = :cloud AND name = :name"


def tag_identity(conn: Connection, cloud: str, name: str) -> tuple[str, int]:
    """A tag's stored name and id, found case-insensitively (an exact match wins)."""
    with translate_db_errors(f"looking up the {cloud} tag {name!r}"):
        # The driver's row: the unique index answers the common case, and SQLAlchemy's statement cost more.
        exact = fetch_all(conn, _TAG_ID, {"cloud": cloud, "name": name})
        if exact:
            return name, exact[0][0]
        found = conn.execute(
            select(Tag.name, Tag.id).where(Tag.cloud == cloud, func.lower(Tag.name) == name.lower())
        ).all()
    if len(found) == 1:
        return found[0][0], found[0][1]
    if not found:
        raise NotFoundError(f"unknown {cloud} tag {name!r}")
    raise NotFoundError(f"tag name {name!r} is ambiguous: {', '.join(n for n, _ in found)}")


# Sub-queries, not a three-table join: PostgreSQL plans this in half the time, and a
# snapshot is one round trip whose planning is a good part of the server's work.
_SNAPSHOT = (
    f"SELECT {', '.join(f'v.{c.strip()}' for c in VERSION_COLUMNS.split(','))}, "
    "(SELECT c.prefixes FROM contents c WHERE c.hash = v.content_hash), "
    "(SELECT c.base_hash FROM contents c WHERE c.hash = v.content_hash) FROM tag_versions v "
    "WHERE v.tag_id = (SELECT t.id FROM tags t WHERE t.cloud = :cloud AND t.name = :name) "
    "AND v.valid_from <= :day AND (v.valid_until IS NULL OR v.valid_until > :day)"
)


def snapshot(conn: Connection, cloud: str, name: str, publication: PublicationInfo) -> TagSnapshot | None:
    """A tag's prefixes as published in ``publication``; None if it was not published then.

    One query (tag, version in force, content) for the usual exact name; a
    name in other letter case is resolved first.
    """
    with translate_db_errors(f"reading {name} in the {cloud} publication of {publication.file_date}"):
        rows = fetch_all(conn, _SNAPSHOT, {"cloud": cloud, "name": name, "day": publication.day}, binary=True)
    if not rows:
        real_name = tag_name(conn, cloud, name)  # raises for an unknown tag
        if real_name == name:
            return None  # the tag exists but has no version yet at that publication
        return snapshot(conn, cloud, real_name, publication)
    *version_row, packed, base_hash = rows[0]
    version = version_from_row(name, version_row)
    if not version.present:
        return None
    # A delta (the newest AzureCloud, usually) not in the cache reads its bases in one more query.
    # The text is kept as it is: ``watcher show`` writes it out whole, and the strings are made on first use.
    return TagSnapshot(name, publication, version, text_of_stored(conn, version.content_hash, packed, base_hash))


def tag_states(conn: Connection, cloud: str, day: int, names: Sequence[str] | None) -> dict[str, diffs.TagState]:
    """Tag name -> state at ``day``, for the tags published then (all, or those named)."""
    with translate_db_errors(f"reading the {cloud} tags of {day_from_key(day)}"):
        versions = {n: v for n, v in versions_at(conn, cloud, day, names).items() if v.present}
        contents = load_contents(conn, [v.content_hash for v in versions.values()])
    return {n: diffs.TagState.of_sorted(v.change_number, contents[v.content_hash], v.metadata)
            for n, v in versions.items()}


def changed_tag_names(conn: Connection, cloud: str, first_day: int, last_day: int) -> list[str]:
    """Tags with any version row in (first_day, last_day]: the only ones that can differ."""
    low, high = min(first_day, last_day), max(first_day, last_day)
    v = TagVersion.__table__
    with translate_db_errors(f"finding the {cloud} tags that changed"):
        return list(conn.execute(
            select(Tag.name).distinct().join(v, Tag.id == v.c.tag_id)
            .where(Tag.cloud == cloud, v.c.valid_from > low, v.c.valid_from <= high)
        ).scalars())


def diff_publications(
    conn: Connection, cloud: str, old: PublicationInfo, new: PublicationInfo, names: Sequence[str] | None = None
) -> list[diffs.TagDiff]:
    """Per-tag diffs from ``old`` to ``new``: the named tags, or every tag that changed."""
    if names is None:
        wanted = None
    else:
        wanted = list(dict.fromkeys(tag_name(conn, cloud, n) for n in names))
    with no_collector_pauses():  # a diff across many weeks builds ~100,000 sets, tuples and strings
        with translate_db_errors(f"reading the {cloud} tags of {old.file_date} and {new.file_date}"):
            pairs = _versions_at_both(conn, cloud, old.day, new.day, wanted)
            if names is None:
                # Same content, changeNumber and metadata on both sides: "unchanged" with no anomaly, left
                # out below anyway; its prefixes need not even be read.
                pairs = {n: (b, a) for n, (b, a) in pairs.items() if b is None or a is None or b[1:] != a[1:]}
            states = _states_of(conn, pairs)
        result = []
        for change in diffs.diff_tags((name, before, after) for name, (before, after) in states.items()):
            if names is None and change.status == "unchanged" and not change.anomalies and not change.metadata:
                continue
            result.append(change)
        for change in result:  # its readers need no order; freed here, the tuples cost no collection later
            for state in (change.before, change.after):
                if state is not None:
                    state.forget_order()
    return sorted(result, key=lambda c: c.tag)


#: (present, change_number, content_hash) of a tag's version
#: (present, changeNumber, content hash, metadata): what decides whether two versions differ
_VersionKey = tuple[bool, int | None, bytes, tuple[Any, ...]]


def _versions_at_both(conn: Connection, cloud: str, old_day: int, new_day: int,
                      names: Sequence[str] | None) -> dict[str, tuple[_VersionKey | None, _VersionKey | None]]:
    """Tag -> its published versions at ``old_day`` and ``new_day`` (None: not published), in one query.

    Without ``names``: the tags with any version row between the two days,
    the only ones that can differ (as ``changed_tag_names``).
    """
    low, high = min(old_day, new_day), max(old_day, new_day)
    query = (
        "SELECT t.name, v.valid_from, v.valid_until, v.present, v.change_number, v.content_hash, "
        "v.region, v.region_id, v.platform, v.system_service, v.network_features "
        "FROM tag_versions v JOIN tags t ON t.id = v.tag_id WHERE t.cloud = :cloud "
        "AND ((v.valid_from <= :low AND (v.valid_until IS NULL OR v.valid_until > :low)) "
        "OR (v.valid_from <= :high AND (v.valid_until IS NULL OR v.valid_until > :high)))"
    )
    params = {"cloud": cloud, "low": low, "high": high}
    if names is None:
        rows = fetch_all(conn, query + " AND v.tag_id IN (SELECT c.tag_id FROM tag_versions c "
                         "WHERE c.valid_from > :low AND c.valid_from <= :high)", params, binary=True)
    else:
        rows = fetch_in(conn, query + " AND t.name IN ({})", list(names), params, binary=True) if names else []
    found: dict[str, list[_VersionKey | None]] = {}
    for name, valid_from, valid_until, present, change_number, content_hash, *metadata in rows:
        sides = found.setdefault(name, [None, None])
        version = (bool(present), change_number, bytes(content_hash), tuple(metadata)) if present else None
        for index, day in enumerate((old_day, new_day)):
            if valid_from <= day and (valid_until is None or valid_until > day):
                sides[index] = version
    return {name: (before, after) for name, (before, after) in found.items() if before or after}


def _states_of(conn: Connection, pairs: dict[str, tuple[_VersionKey | None, _VersionKey | None]]
               ) -> dict[str, tuple[diffs.TagState | None, diffs.TagState | None]]:
    """The versions' tag states: each content read and unpacked once, its set built once."""
    contents = load_checked_contents(conn, [v[2] for pair in pairs.values() for v in pair if v is not None])
    sets: dict[bytes, frozenset[str]] = {}

    def state(version: _VersionKey | None) -> diffs.TagState | None:
        if version is None:
            return None
        _, change_number, digest, metadata = version
        ordered, plain = contents[digest]
        prefixes = sets.get(digest)
        if prefixes is None:
            prefixes = sets[digest] = frozenset(ordered)
        return diffs.TagState(change_number, prefixes, ordered, metadata, plain=plain)

    return {name: (state(before), state(after)) for name, (before, after) in pairs.items()}


def history(conn: Connection, cloud: str, name: str) -> tuple[str, list[HistoryEntry]]:
    """Each version of a tag, with what it added and removed relative to the version before."""
    real_name = tag_name(conn, cloud, name)
    v = TagVersion.__table__
    with translate_db_errors(f"reading the history of {real_name}"):
        identity = conn.execute(select(Tag.id).where(Tag.cloud == cloud, Tag.name == real_name)).scalar_one()
        versions = list(conn.execute(select(v).where(v.c.tag_id == identity).order_by(v.c.valid_from)))
        contents = load_contents(conn, [bytes(r.content_hash) for r in versions])
    entries: list[HistoryEntry] = []
    previous_set: frozenset[str] = frozenset()
    previous_number: int | None = None
    previous_metadata: tuple | None = None
    for version in versions:
        current = frozenset(contents[bytes(version.content_hash)])
        added, removed = len(current - previous_set), len(previous_set - current)
        metadata = _metadata_of(version) if version.present else None
        entries.append(HistoryEntry(
            date=day_from_key(version.valid_from), present=version.present, change_number=version.change_number,
            prefix_count=version.prefix_count, added=added, removed=removed,
            anomalies=diffs.change_number_anomalies(previous_number, version.change_number, bool(added or removed)),
            metadata=diffs.metadata_changes(previous_metadata, metadata),
        ))
        previous_set, previous_number = current, (version.change_number if version.present else None)
        previous_metadata = metadata
    return real_name, entries


def _metadata_of(row) -> tuple:
    return (row.region, row.region_id, row.platform, row.system_service, row.network_features)


def containing_networks(address: str) -> list[str]:
    """Every canonical CIDR that contains ``address`` (33 for IPv4, 129 for IPv6)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        raise NotFoundError(f"{address!r} is not an IP address") from None
    width = ip.max_prefixlen
    network = ipaddress.IPv4Network if ip.version == 4 else ipaddress.IPv6Network
    return [str(network((int(ip) >> (width - n) << (width - n), n))) for n in range(width + 1)]


def lookup(conn: Connection, cloud: str, address: str, publication: PublicationInfo) -> list[LookupHit]:
    """Tags whose prefixes contain ``address`` in ``publication``, and since when.

    At most 33 (IPv4) or 129 (IPv6) exact look-ups in the prefix index; the
    query deliberately starts from ``prefix_spans`` (joining ``tags`` first
    would probe every tag of the cloud), and tag names are matched afterwards.
    """
    candidates = containing_networks(address)
    day = publication.day
    with translate_db_errors(f"looking up {address} in the {cloud} publication of {publication.file_date}"):
        spans = conn.execute(
            text("SELECT tag_id, prefix, first_day FROM prefix_spans WHERE prefix IN :candidates "
                 "AND first_day <= :day AND (until_day IS NULL OR until_day > :day)")
            .bindparams(bindparam("candidates", expanding=True)),
            {"candidates": candidates, "day": day},
        ).all()
        if not spans:
            return []
        names = dict(conn.execute(
            select(Tag.id, Tag.name).where(Tag.cloud == cloud, Tag.id.in_(list({s[0] for s in spans})))
        ).all())
    hits = (LookupHit(names[tag], prefix, day_from_key(first)) for tag, prefix, first in spans if tag in names)
    return sorted(hits, key=lambda h: (h.tag, h.prefix))


def lookup_all_time(conn: Connection, cloud: str, address: str) -> list[AddressHolder]:
    """Every tag that ever held ``address``, with the first and last publication it was in, per prefix."""
    candidates = containing_networks(address)
    with translate_db_errors(f"looking up {address} in the whole {cloud} history"):
        spans = conn.execute(
            text("SELECT tag_id, prefix, first_day, until_day FROM prefix_spans WHERE prefix IN :candidates")
            .bindparams(bindparam("candidates", expanding=True)),
            {"candidates": candidates},
        ).all()
        if not spans:
            return []
        names = dict(conn.execute(
            select(Tag.id, Tag.name).where(Tag.cloud == cloud, Tag.id.in_(list({s[0] for s in spans})))
        ).all())
        days = sorted(day_key(d) for d in conn.execute(
            select(Publication.file_date).where(Publication.cloud == cloud)).scalars())
    found: dict[tuple[str, str], tuple[int, int, bool]] = {}
    for tag_id, prefix, first_day, until_day in spans:
        if tag_id not in names:
            continue
        # A span ends before ``until_day``: its last publication is the one before that day.
        last_index = (bisect.bisect_left(days, until_day) if until_day is not None else len(days)) - 1
        last = days[last_index] if last_index >= 0 else first_day
        key = (names[tag_id], prefix)
        old = found.get(key)
        current = until_day is None
        found[key] = (min(first_day, old[0]), max(last, old[1]), current or old[2]) if old else (first_day, last, current)
    return sorted((AddressHolder(tag, prefix, day_from_key(f), day_from_key(l), c)
                   for (tag, prefix), (f, l, c) in found.items()), key=lambda h: (h.tag, h.prefix))


def present_tag_names(conn: Connection, cloud: str, publication: PublicationInfo | None = None) -> list[str]:
    """Names of the tags published in ``publication`` (default: the latest of the cloud)."""
    if publication is None:
        try:
            publication = resolve_publication(conn, cloud, "latest")
        except NotFoundError:
            return []
    with translate_db_errors(f"reading the {cloud} tags of {publication.file_date}"):
        return sorted(n for n, v in versions_at(conn, cloud, publication.day).items() if v.present)


def all_publications(conn: Connection) -> list[PublicationInfo]:
    """Every publication of every cloud, by cloud and date: what a backfill checks its files against."""
    with translate_db_errors("listing the publications"):
        rows = conn.execute(select(Publication.__table__).order_by(Publication.cloud, Publication.file_date))
        return [publication_from_row(r) for r in rows]
