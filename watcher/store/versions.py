"""The version view: which version of each tag was in force at a publication.

An import needs every tag's entry fingerprint but the full version of only the
few tags that changed, so ``Versions`` holds narrow fingerprints for all tags
and reads full rows on demand. For the newest publication the fingerprints come
from the cloud's entry manifest (one row of parallel arrays) instead of one
row per tag.
"""
from __future__ import annotations

import logging
import sys
from array import array
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Iterable, Iterator, Mapping, Sequence

import orjson
from sqlalchemy import Connection, bindparam, text

from .records import EMPTY_HASH, PublicationInfo, VersionInfo
from .packing import load_texts, split_text
from .sql import chunks, fetch_all, is_plain_text

log = logging.getLogger(__name__)

#: (tag id, present, entry fingerprint, prefix count) of a tag's version
Fingerprint = tuple[int, bool, bytes, int]

VERSION_COLUMNS = (
    "tag_id, valid_from, valid_until, present, change_number, region, region_id, "
    "platform, system_service, network_features, prefix_count, content_hash, entry_hash"
)


def version_from_row(name: str, row: Sequence[Any]) -> VersionInfo:
    """A row of ``VERSION_COLUMNS`` as a value."""
    (tag_id, valid_from, valid_until, present, change_number, region, region_id, platform, system_service,
     network_features, prefix_count, content_hash, entry_hash) = row
    return VersionInfo(
        tag_id, name, valid_from, valid_until, bool(present), change_number,
        (region, region_id, platform, system_service, network_features), prefix_count, bytes(content_hash),
        bytes(entry_hash),
    )


def _fingerprint_of(row: Sequence[Any]) -> Fingerprint:
    """The fingerprint of a row of ``VERSION_COLUMNS``."""
    tag_id, _, _, present, *_, prefix_count, _, entry_hash = row
    return (tag_id, present, entry_hash, prefix_count)


class Versions(Mapping[str, VersionInfo]):
    """Versions by tag name; full rows are read for the tags asked for, on first access."""

    def __init__(self, conn: Connection | None, day: int, fingerprints: dict[str, Fingerprint],
                 rows: dict[str, tuple] | None = None, manifest: "Manifest | None" = None) -> None:
        self._conn = conn
        self._day = day
        self._fingerprints = fingerprints
        self._rows: dict[str, tuple] = rows or {}
        self._built: dict[str, VersionInfo] = {}
        #: set when the versions come from the entry manifest (all of them published)
        self.manifest = manifest

    def __getitem__(self, name: str) -> VersionInfo:
        version = self._built.get(name)
        if version is None:
            if name not in self._rows:
                self.load([name])
            version = self._built[name] = version_from_row(name, self._rows[name])
        return version

    def __contains__(self, name: object) -> bool:
        return name in self._fingerprints

    def get(self, name: str, default: VersionInfo | None = None) -> VersionInfo | None:  # type: ignore[override]
        return self[name] if name in self._fingerprints else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._fingerprints)

    def __len__(self) -> int:
        return len(self._fingerprints)

    def load(self, names: Iterable[str]) -> None:
        """Read the full rows of these tags in one query per batch."""
        wanted = {self._fingerprints[n][0]: n for n in names if n in self._fingerprints and n not in self._rows}
        if not wanted or self._conn is None:
            return
        for row in in_force_rows(self._conn, list(wanted), self._day):
            self._rows[wanted[row[0]]] = tuple(row)

    def known_entries(self) -> dict[bytes, str]:
        """Fingerprint of a published entry -> its tag name, for the tags published."""
        if self.manifest is not None:
            return dict(zip(self.manifest.fingerprint_list, self.manifest.names))
        return {bytes(fingerprint): name for name, (_, present, fingerprint, _) in self._fingerprints.items()
                if present}

    def is_present(self, name: str) -> bool:
        found = self._fingerprints.get(name)
        return found is not None and bool(found[1])

    def present_count(self) -> int:
        if self.manifest is not None:
            return len(self.manifest.names)
        return sum(1 for _, present, _, _ in self._fingerprints.values() if present)

    def prefix_total(self, unchanged: Sequence[str], touched: Iterable[str]) -> int:
        """The prefixes of the ``unchanged`` tags: all published ones but the ``touched``."""
        if self.manifest is None:
            return sum(count for _, _, _, count in self.rows_of(unchanged))
        return sum(self.manifest.counts) - sum(self._fingerprints[n][3] for n in touched if self.is_present(n))

    def rows_of(self, names: Iterable[str]) -> list[Fingerprint]:
        """The fingerprint of each named tag, in order."""
        return list(map(self._fingerprints.__getitem__, names))

    def present_names(self) -> list[str]:
        return [name for name, (_, present, _, _) in self._fingerprints.items() if present]


def versions_at(conn: Connection, cloud: str, day: int, names: Sequence[str] | None = None) -> Versions:
    """Tag name -> the version in force at ``day`` (withdrawn ones included).

    The current versions (``valid_until`` NULL) and those ending after ``day``
    are index ranges, so the cost follows the number of tags and what changed
    since ``day``, never the length of the history.
    """
    fingerprints: dict[str, Fingerprint] = {}
    if names is None:
        tag_names = dict(fetch_all(conn, "SELECT id, name FROM tags WHERE cloud = :cloud", {"cloud": cloud}))
        for condition in ("valid_until IS NULL", "valid_until > :day"):
            query = (
                "SELECT tag_id, present, entry_hash, prefix_count FROM tag_versions "
                f"WHERE {condition} AND valid_from <= :day"
            )
            for tag, present, entry_hash, count in fetch_all(conn, query, {"day": day}):
                name = tag_names.get(tag)
                if name is not None:  # other clouds' versions share the index range
                    fingerprints[name] = (tag, present, entry_hash, count)
        return Versions(conn, day, fingerprints)
    lookup = text("SELECT id, name FROM tags WHERE cloud = :cloud AND name IN :names").bindparams(
        bindparam("names", expanding=True)
    )
    rows: dict[str, tuple] = {}
    for batch in chunks(list(names)):
        tag_names = dict(conn.execute(lookup, {"cloud": cloud, "names": list(batch)}).all())
        if tag_names:
            for row in in_force_rows(conn, list(tag_names), day):
                name = tag_names[row[0]]
                rows[name] = tuple(row)
                fingerprints[name] = _fingerprint_of(row)
    return Versions(conn, day, fingerprints, rows)


#: The version of each tag (the ids in a VALUES list on SQLite, an array on PostgreSQL) in force at a day: its
#: latest version starting on or before the day, if that one had not ended by then. Versions of a tag never
#: overlap, so this is the one row ``valid_from <= :day AND (valid_until IS NULL OR valid_until > :day)`` finds;
#: but that predicate reads (and, for ``valid_until``, looks up in the table) every version of the tag up to the
#: day, so a busy tag's read grew with its history (a backfill's late weeks read ~150 versions per busy tag: a
#: sixth of its profile). Here each tag costs one seek of the primary key for the latest start, then one fetch.
_IN_FORCE_SQLITE = (
    f"SELECT {VERSION_COLUMNS} FROM (SELECT column1 AS wanted, (SELECT max(s.valid_from) FROM tag_versions s "
    "WHERE s.tag_id = column1 AND s.valid_from <= :day) AS latest FROM (VALUES {})) m "
    "JOIN tag_versions v ON v.tag_id = m.wanted AND v.valid_from = m.latest "
    "WHERE v.valid_until IS NULL OR v.valid_until > :day"
)
_IN_FORCE_POSTGRESQL = (
    f"SELECT {VERSION_COLUMNS} FROM unnest(CAST(:ids AS integer[])) AS m(wanted) CROSS JOIN LATERAL "
    "(SELECT * FROM tag_versions s WHERE s.tag_id = m.wanted AND s.valid_from <= :day "
    "ORDER BY s.valid_from DESC LIMIT 1) v WHERE v.valid_until IS NULL OR v.valid_until > :day"
)


def in_force_rows(conn: Connection, tag_ids: Sequence[int], day: int) -> list[tuple]:
    """Rows of ``VERSION_COLUMNS``: the version of each of ``tag_ids`` in force at ``day`` (none for a tag with
    none then), whatever the length of the tags' histories."""
    if conn.dialect.name == "postgresql":
        return fetch_all(conn, _IN_FORCE_POSTGRESQL, {"ids": list(tag_ids), "day": day}) if tag_ids else []
    rows: list[tuple] = []
    for batch in chunks(tag_ids, 900):  # under SQLite's limit on bound parameters
        values = {f"v{i}": tag_id for i, tag_id in enumerate(batch)}
        rows += fetch_all(conn, _IN_FORCE_SQLITE.format(", ".join(f"(:{name})" for name in values)),
                          {**values, "day": day})
    return rows


def load_contents(conn: Connection, hashes: Iterable[bytes]) -> dict[bytes, tuple[str, ...]]:
    """Prefix sets by content hash."""
    found: dict[bytes, tuple[str, ...]] = {EMPTY_HASH: ()}
    for digest, stored in load_texts(conn, set(hashes) - {EMPTY_HASH}).items():
        found[digest] = split_text(stored.text)
    return found


def load_checked_contents(conn: Connection, hashes: Iterable[bytes]) -> dict[bytes, tuple[tuple[str, ...], bool]]:
    """``load_contents``, each with whether its text holds only plain prefix characters.

    The check runs on the stored text at C speed (a diff would otherwise join
    every prefix again to make it).
    """
    found: dict[bytes, tuple[tuple[str, ...], bool]] = {EMPTY_HASH: ((), True)}
    for digest, stored in load_texts(conn, set(hashes) - {EMPTY_HASH}).items():
        found[digest] = (split_text(stored.text), is_plain_text(stored.text))
    return found


def tag_ids_of(conn: Connection, cloud: str, names: Sequence[str]) -> dict[str, int]:
    """Name -> id of those of ``names`` the cloud has."""
    if len(names) > 500:  # a first import: one read of the cloud's tags beats batches of IN lists
        wanted = set(names)
        rows = fetch_all(conn, "SELECT name, id FROM tags WHERE cloud = :cloud", {"cloud": cloud})
        return {name: tag_id for name, tag_id in rows if name in wanted}
    found: dict[str, int] = {}
    statement = text("SELECT name, id FROM tags WHERE cloud = :cloud AND name IN :names").bindparams(
        bindparam("names", expanding=True)
    )
    for batch in chunks(list(names)):
        found.update(conn.execute(statement, {"cloud": cloud, "names": list(batch)}).all())
    return found


# ---------------------------------------------------------------- the entry manifest


def uint32s(values: Iterable[int]) -> bytes:
    """Little-endian unsigned 32-bit integers, as the manifest stores them."""
    packed = array("I", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def read_uint32s(data: bytes) -> array:
    values = array("I")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass
class Manifest:
    """A stored entry manifest: parallel lists, in the order of ``names``."""

    names: list[str]
    names_blob: bytes
    fingerprints: bytes               # 16 bytes per tag
    ids: array
    counts: array

    @property
    def fingerprint_list(self) -> list[bytes]:
        return [self.fingerprints[start:start + 16] for start in range(0, len(self.fingerprints), 16)]


def read_manifest(names: bytes, fingerprints: bytes, tag_ids: bytes, counts: bytes) -> Manifest | None:
    """The manifest, or None if its arrays do not agree."""
    names_blob = bytes(names)
    try:
        name_list = orjson.loads(names_blob)
        ids, prefix_counts = read_uint32s(bytes(tag_ids)), read_uint32s(bytes(counts))
    except (orjson.JSONDecodeError, ValueError):
        return None
    fps = bytes(fingerprints)
    if not isinstance(name_list, list) or not len(name_list) == len(ids) == len(prefix_counts) == len(fps) // 16 \
            or len(fps) % 16:
        return None
    return Manifest(name_list, names_blob, fps, ids, prefix_counts)


def versions_before(conn: Connection, cloud: str, previous: PublicationInfo | None) -> Versions:
    """The versions in force at the previous publication: from its manifest when it is the newest."""
    if previous is None:
        return Versions(None, 0, {})
    rows = fetch_all(
        conn, "SELECT publication_id, names, fingerprints, tag_ids, prefix_counts FROM entry_manifests "
        "WHERE cloud = :cloud", {"cloud": cloud},
    )
    if rows and rows[0][0] == previous.id:
        manifest = read_manifest(*rows[0][1:])
        if manifest is not None:
            fingerprints = dict(zip(manifest.names, zip(
                manifest.ids, repeat(True), manifest.fingerprint_list, manifest.counts
            )))
            return Versions(conn, previous.day, fingerprints, manifest=manifest)
        log.warning("the %s entry manifest is unreadable; reading the versions instead", cloud)
    return versions_at(conn, cloud, previous.day)
