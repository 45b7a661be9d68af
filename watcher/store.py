"""Store stage: record publications and keep every tag's history as change.

An import inserts one publication into each tag's timeline at the file's date,
whatever order files arrive in. Only tags whose entry differs from their
previous version are looked at; for such a tag with content A at the previous
publication (day P), new content N at day d, and content B at the next
publication (day S, when the file is older than the newest one):

* a version row is written at d (content, changeNumber, metadata); the version
  that held before d is written again at S when S had no row of its own, and
  S's row is dropped when it equals the new version; ``valid_until`` links
  each version to the next;
* prefixes in A but not N end at d; if they come back at S (in B) the span is
  split and resumes at S;
* prefixes in N but not A start at d; a span that started at S now starts at
  d, otherwise the new span ends at S (or stays open).

Contents (prefix sets) are stored once per distinct set. Everything happens in
one transaction, so a publication is stored whole or not at all.

What the previous publication had comes from the cloud's entry manifest when
that publication is the newest (the weekly case: one row), and from the
versions in force at P otherwise.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import ipaddress
import logging
import re
import sys
import threading
import time
import zlib
from array import array
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Callable, Collection, Iterable, Literal, Mapping, Sequence

import orjson
from sqlalchemy import Connection, Engine, String, bindparam, delete, func, insert, select, text, update
from sqlalchemy import column as sa_column
from sqlalchemy.exc import SQLAlchemyError
import zstandard

from . import db, diff as diffs
from .errors import ConflictError, NotFoundError, ParseError, StoreError, database_detail
from .models import EntryManifest, Publication, Tag, TagVersion, day_from_key, day_key, utcnow
from .parse import (
    ParsedFile, PrefixCache, ServiceTag, content_hash, decode_document, encode_prefixes, file_cloud, normalize_against,
    normalize_prefixes, parse_document,
)

log = logging.getLogger(__name__)

EMPTY_HASH = content_hash(())
ANALYZE_AFTER_ROWS = 20_000
NO_METADATA = ("", 0, "", "", "")


# ---------------------------------------------------------------- values


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
        }


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


# ---------------------------------------------------------------- rows


_VERSION_COLUMNS = (
    "tag_id, valid_from, valid_until, present, change_number, region, region_id, "
    "platform, system_service, network_features, prefix_count, content_hash, entry_hash"
)


def _version(name: str, row: Sequence[Any]) -> VersionInfo:
    return VersionInfo(
        row[0], name, row[1], row[2], bool(row[3]), row[4], (row[5], row[6], row[7], row[8], row[9]),
        row[10], bytes(row[11]), bytes(row[12]),
    )


_VERSION_INSERT_COLUMNS = (
    "tag_id", "valid_from", "publication_id", "present", "change_number", "region", "region_id", "platform",
    "system_service", "network_features", "prefix_count", "content_hash", "entry_hash",
)


def _version_row(version: VersionInfo, tag_id: int, publication_id: int, valid_from: int) -> tuple:
    """A row for ``_VERSION_INSERT_COLUMNS`` (``valid_until`` is linked afterwards)."""
    return (tag_id, valid_from, publication_id, version.present, version.change_number, *version.metadata,
            version.prefix_count, version.content_hash, version.entry_hash)


def _publication(row: Any) -> PublicationInfo:
    return PublicationInfo(
        id=row.id, cloud=row.cloud, file_date=row.file_date, change_number=row.change_number,
        sha256=row.sha256, source=row.source, imported_at=row.imported_at,
        tag_count=row.tag_count, prefix_count=row.prefix_count,
    )


#: For modules that read ``publications`` rows themselves (polls, status).
publication_from_row = _publication


def _translate(exc: SQLAlchemyError, doing: str) -> StoreError:
    return StoreError(f"database error while {doing}: {database_detail(exc)}")


def publications(conn: Connection, cloud: str) -> list[PublicationInfo]:
    rows = conn.execute(
        select(Publication.__table__).where(Publication.cloud == cloud).order_by(Publication.file_date)
    )
    return [_publication(r) for r in rows]


def publication_by_day(conn: Connection, cloud: str, day: dt.date) -> PublicationInfo | None:
    row = conn.execute(
        select(Publication.__table__).where(Publication.cloud == cloud, Publication.file_date == day)
    ).first()
    return _publication(row) if row else None


_PUBLICATION_COLUMNS = ", ".join(f"p.{c.name}" for c in Publication.__table__.columns)  # in the model's order
_PLACEMENT = text(
    f"SELECT * FROM (SELECT 'same bytes' AS place, {_PUBLICATION_COLUMNS} FROM publications p WHERE cloud = :cloud "
    "AND sha256 = :sha256 LIMIT 1) AS a UNION ALL "
    f"SELECT * FROM (SELECT 'same day' AS place, {_PUBLICATION_COLUMNS} FROM publications p WHERE cloud = :cloud "
    "AND file_date = :day) AS b UNION ALL "
    f"SELECT * FROM (SELECT 'previous' AS place, {_PUBLICATION_COLUMNS} FROM publications p WHERE cloud = :cloud "
    "AND file_date < :day ORDER BY file_date DESC LIMIT 1) AS c UNION ALL "
    f"SELECT * FROM (SELECT 'following' AS place, {_PUBLICATION_COLUMNS} FROM publications p WHERE cloud = :cloud "
    "AND file_date > :day ORDER BY file_date LIMIT 1) AS d"
).bindparams(bindparam("day", type_=Publication.__table__.c.file_date.type)).columns(
    sa_column("place", String()), *Publication.__table__.columns
)


def _placement(conn: Connection, cloud: str, sha256: str, day: dt.date) -> dict[str, PublicationInfo]:
    """Where a file goes, in one round trip: a publication with its bytes or its date, and its neighbours."""
    rows = conn.execute(_PLACEMENT, {"cloud": cloud, "sha256": sha256, "day": day})
    return {row.place: _publication(row) for row in rows}


def tag_ids(conn: Connection, cloud: str) -> dict[str, int]:
    """Every tag the cloud has ever had: name -> id."""
    return dict(conn.execute(select(Tag.name, Tag.id).where(Tag.cloud == cloud)).all())


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    """Slices small enough for every driver's limit on bound parameters."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _driver_sql(conn: Connection, sql: str) -> str:
    """``:name`` parameters as the driver takes them (sqlite3 as they are, psycopg as ``%(name)s``)."""
    return re.sub(r":(\w+)", r"%(\1)s", sql) if conn.dialect.name == "postgresql" else sql


def _fetch_all(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple]:
    """Plain tuples straight from the driver, for the few reads of thousands of rows per import.

    ``sql`` uses ``:name`` parameters (no lists); SQLAlchemy's Row objects cost
    more than the query itself here.
    """
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(_driver_sql(conn, sql), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _execute_many(conn: Connection, sql: str, params: Sequence[dict[str, Any]]) -> None:
    """``sql`` (``:name`` parameters) once per dictionary, through the driver (see ``_fetch_all``)."""
    if not params:
        return
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(_driver_sql(conn, sql), params)
    finally:
        cursor.close()


def _fetch_in(conn: Connection, sql: str, values: Sequence[Any], params: dict[str, Any] | None = None) -> list[tuple]:
    """Rows of ``sql`` whose ``IN ({})`` takes ``values``, in batches, through the driver."""
    rows: list[tuple] = []
    for batch in _chunks(values, 900):
        names = {f"v{i}": value for i, value in enumerate(batch)}
        rows += _fetch_all(conn, sql.format(", ".join(f":{name}" for name in names)), {**(params or {}), **names})
    return rows


class _Versions(Mapping[str, VersionInfo]):
    """Versions by tag name; full rows are read for the tags asked for, on first access.

    An import needs every tag's entry fingerprint but the full version of only
    the few tags that changed, so the bulk read is three narrow columns.
    """

    def __init__(self, conn: Connection | None, day: int, fingerprints: dict[str, tuple[int, bool, bytes, int]],
                 rows: dict[str, tuple] | None = None, manifest: "_Manifest | None" = None):
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
            version = self._built[name] = _version(name, self._rows[name])
        return version

    def __contains__(self, name: object) -> bool:
        return name in self._fingerprints

    def get(self, name: str, default: VersionInfo | None = None) -> VersionInfo | None:
        return self[name] if name in self._fingerprints else default

    def __iter__(self):
        return iter(self._fingerprints)

    def __len__(self) -> int:
        return len(self._fingerprints)

    def load(self, names: Iterable[str]) -> None:
        """Read the full rows of these tags in one query per batch."""
        wanted = {self._fingerprints[n][0]: n for n in names if n in self._fingerprints and n not in self._rows}
        if not wanted or self._conn is None:
            return
        query = (f"SELECT {_VERSION_COLUMNS} FROM tag_versions WHERE tag_id IN ({{}}) AND valid_from <= :day "
                 "AND (valid_until IS NULL OR valid_until > :day)")
        for row in _fetch_in(self._conn, query, list(wanted), {"day": self._day}):
            self._rows[wanted[row[0]]] = tuple(row)

    def known_entries(self) -> dict[bytes, str]:
        """Fingerprint of a published entry -> its tag name, for the tags published."""
        if self.manifest is not None:
            return dict(zip(self.manifest.fingerprint_list, self.manifest.names))
        return {bytes(f[2]): name for name, f in self._fingerprints.items() if f[1]}

    def is_present(self, name: str) -> bool:
        found = self._fingerprints.get(name)
        return found is not None and found[1]

    def present_count(self) -> int:
        if self.manifest is not None:
            return len(self.manifest.names)
        return sum(1 for f in self._fingerprints.values() if f[1])

    def prefix_total(self, unchanged: Sequence[str], touched: Iterable[str]) -> int:
        """The prefixes of the ``unchanged`` tags: all published ones but the ``touched``."""
        if self.manifest is None:
            return sum(row[3] for row in self.rows_of(unchanged))
        return sum(self.manifest.counts) - sum(self._fingerprints[n][3] for n in touched if self.is_present(n))

    def rows_of(self, names: Iterable[str]) -> list[tuple[int, bool, bytes, int]]:
        """(tag id, present, entry fingerprint, prefix count) of each named tag, in order."""
        return list(map(self._fingerprints.__getitem__, names))

    def manifest_entry(self, name: str) -> tuple[int, bytes, int]:
        """(tag id, entry fingerprint, prefix count) of a published tag."""
        tag_id, _, fingerprint, count = self._fingerprints[name]
        return tag_id, bytes(fingerprint), count

    def present_names(self) -> list[str]:
        return [name for name, f in self._fingerprints.items() if f[1]]


def versions_at(conn: Connection, cloud: str, day: int, names: Sequence[str] | None = None) -> _Versions:
    """Tag name -> the version in force at ``day`` (withdrawn ones included).

    The current versions (``valid_until`` NULL) and those ending after ``day``
    are index ranges, so the cost follows the number of tags and what changed
    since ``day``, never the length of the history.
    """
    fingerprints: dict[str, tuple[int, bool, bytes, int]] = {}
    if names is None:
        tag_names = dict(_fetch_all(conn, "SELECT id, name FROM tags WHERE cloud = :cloud", {"cloud": cloud}))
        for condition in ("valid_until IS NULL", "valid_until > :day"):
            query = (
                "SELECT tag_id, present, entry_hash, prefix_count FROM tag_versions "
                f"WHERE {condition} AND valid_from <= :day"
            )
            for tag, present, entry_hash, count in _fetch_all(conn, query, {"day": day}):
                name = tag_names.get(tag)
                if name is not None:  # other clouds' versions share the index range
                    fingerprints[name] = (tag, present, entry_hash, count)
        return _Versions(conn, day, fingerprints)
    lookup = text("SELECT id, name FROM tags WHERE cloud = :cloud AND name IN :names").bindparams(
        bindparam("names", expanding=True)
    )
    query = text(
        f"SELECT {_VERSION_COLUMNS} FROM tag_versions WHERE tag_id IN :ids AND valid_from <= :day "
        "AND (valid_until IS NULL OR valid_until > :day)"
    ).bindparams(bindparam("ids", expanding=True))
    rows: dict[str, tuple] = {}
    for batch in _chunks(list(names)):
        tag_names = dict(conn.execute(lookup, {"cloud": cloud, "names": list(batch)}).all())
        if tag_names:
            for row in conn.execute(query, {"day": day, "ids": list(tag_names)}).all():
                name = tag_names[row[0]]
                rows[name] = tuple(row)
                fingerprints[name] = (row[0], row[3], row[12], row[10])
    return _Versions(conn, day, fingerprints, rows)


def load_contents(conn: Connection, hashes: Iterable[bytes]) -> dict[bytes, tuple[str, ...]]:
    """Prefix sets by content hash."""
    wanted = sorted(set(hashes) - {EMPTY_HASH})
    found: dict[bytes, tuple[str, ...]] = {EMPTY_HASH: ()}
    for digest, packed in _fetch_in(conn, "SELECT hash, prefixes FROM contents WHERE hash IN ({})", wanted):
        found[bytes(digest)] = _unpack(packed)
    return found


#: Contents shorter than this are stored as plain text: compressing them saves
#: a few bytes, and most tags hold a handful of prefixes.
_COMPRESS_FROM = 512
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_codecs = threading.local()  # zstd contexts are reusable, but not across threads


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_codecs, "zstd", None)
    if pair is None:
        # Level 1: AzureCloud's 13,000 prefixes change every week; it compresses in
        # half a millisecond (zlib: 1.3 ms) to 37 KB (zlib: 48 KB).
        pair = _codecs.zstd = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return pair


def _unpack(packed: bytes) -> tuple[str, ...]:
    data = bytes(packed)
    if data[:4] == _ZSTD_MAGIC:
        data = _zstd()[1].decompress(data)
    elif data[:1] == b"x":  # a zlib stream (databases written before zstd); no prefix text starts with "x"
        data = zlib.decompress(data)
    text_ = data.decode()
    return tuple(text_.split("\n")) if text_ else ()


def _pack(prefixes: Sequence[str]) -> bytes:
    return _compress(encode_prefixes(prefixes))


def _compress(encoded: bytes) -> bytes:
    return encoded if len(encoded) < _COMPRESS_FROM else _zstd()[0].compress(encoded)


# ---------------------------------------------------------------- import


@dataclass
class _Plan:
    """The writes one import makes, computed before any of them."""

    new_tags: list[str] = field(default_factory=list)
    contents: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # hash -> (prefix count, encoding)
    versions: list[VersionInfo] = field(default_factory=list)         # new versions at d
    restore_at_next: list[VersionInfo] = field(default_factory=list)  # versions written again at S
    drop_at_next: list[str] = field(default_factory=list)             # tags whose row at S goes
    end_spans: list[dict[str, Any]] = field(default_factory=list)     # span covering P ends at d
    split_spans: list[dict[str, Any]] = field(default_factory=list)   # ... and resumes at S
    move_span_starts: list[dict[str, Any]] = field(default_factory=list)  # span from S now from d
    new_spans: list[tuple[str, Collection[str]]] = field(default_factory=list)  # (tag, prefixes) from d
    #: versions whose content is the file's but whose entry bytes differ: (tag_id, valid_from, entry_hash)
    refingerprint: list[tuple[int, int, bytes]] = field(default_factory=list)
    prefix_count: int = 0                                             # of the whole publication
    #: every tag of the file that was decoded: (name, tag id or None if new, fingerprint, prefix count)
    present: list[tuple[str, int | None, bytes, int]] = field(default_factory=list)
    new_tag_ids: dict[str, int] = field(default_factory=dict)         # filled in by _write
    withdrawn: list[str] = field(default_factory=list)                # published before, not now
    predecessors: dict[str, int] = field(default_factory=dict)        # tag -> valid_from of the version at P
    changes: list[TagChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_bytes(
    engine: Engine,
    data: bytes,
    source: str,
    *,
    file_date: dt.date | None = None,
    expected_cloud: str | None = None,
    on_imported: ImportHook | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> ImportResult:
    """Import one file's bytes as a publication; idempotent and atomic."""
    with _no_collector_pauses():
        return _import_bytes(engine, data, source, file_date, expected_cloud, on_imported, now)


@contextlib.contextmanager
def _no_collector_pauses():
    """Keep Python's cyclic garbage collector out of an import.

    An import allocates tens of thousands of short-lived strings and tuples
    that reference counting frees; each allocation burst would otherwise start
    a full collection that walks every object of the process (tens of ms in a
    daemon holding SQLAlchemy, Jinja and apprise), for no cycles to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _import_bytes(engine, data, source, file_date, expected_cloud, on_imported, now) -> ImportResult:
    hashing = _Sha256(data)
    try:
        document = decode_document(data, source)
        cloud = file_cloud(document, source)
        if expected_cloud and cloud != expected_cloud:
            raise ParseError(f"{source}: is a {cloud} file, expected {expected_cloud}")
        file_date = file_date or date_from_source(source)
    finally:
        sha256 = hashing.hexdigest()
    try:
        started = time.perf_counter()
        with db.writer(engine).begin() as conn:
            _lock_cloud(conn, cloud)
            result = _import(conn, document, source, cloud, sha256, file_date, now or utcnow)
            if result.outcome == "imported" and on_imported is not None:
                on_imported(conn, result)
            committing = time.perf_counter()
        log.debug("%s: transaction %.0f ms, of which commit %.0f ms", source,
                  (time.perf_counter() - started) * 1000, (time.perf_counter() - committing) * 1000)
        return result
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
        # The bulk paths use the driver's cursor directly, so its own errors arrive untranslated.
        raise _translate(exc, f"importing {source}") from exc


class _Sha256:
    """SHA-256 of a file's bytes, computed on a second thread while the first decodes them.

    hashlib releases the GIL while it hashes a large buffer, so on a machine
    with two cores the hash of a 5 MB file costs no wall-clock time.
    """

    def __init__(self, data: bytes) -> None:
        self._digest = ""
        self._thread = threading.Thread(target=self._run, args=(data,), name="sha256", daemon=True)
        self._thread.start()

    def _run(self, data: bytes) -> None:
        self._digest = hashlib.sha256(data).hexdigest()

    def hexdigest(self) -> str:
        self._thread.join()
        return self._digest


def date_from_source(source: str) -> dt.date:
    from .parse import date_from_file_name

    found = date_from_file_name(source)
    if found is None:
        raise ParseError(f"{source}: no publication date: name the file ServiceTags_<Cloud>_<YYYYMMDD>.json or give a date")
    return found



def _lock_cloud(conn: Connection, cloud: str) -> None:
    """Serialise imports of one cloud (SQLite's BEGIN IMMEDIATE already does).

    The key includes the schema: advisory locks are per database, and two
    watchers in two schemas of one database have nothing to serialise.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended('watcher-import:' || current_schema() || ':' || :cloud, 0))"),
            {"cloud": cloud},
        )


def _import(conn, document, source, cloud, sha256, day: dt.date, now) -> ImportResult:
    place = _placement(conn, cloud, sha256, day)
    if "same bytes" in place:
        return ImportResult("already imported", place["same bytes"], reason="the same file (SHA-256) is already stored")
    if "same day" in place:
        return _compare_with_existing(conn, document, source, place["same day"], sha256)

    clock = _Stopwatch()
    previous, following = place.get("previous"), place.get("following")
    before = _versions_before(conn, cloud, previous)
    clock.lap("read versions")
    parsed = parse_document(document, source, sha256=sha256, file_date=day, known_entries=before.known_entries())
    clock.lap("validate")
    plan = _plan(conn, parsed, source, before, following)
    clock.lap("plan")
    publication_id = _write(conn, parsed, source, plan, previous, following, now())
    if following is None:  # the newest publication now: the next week's import starts from it
        _write_manifest(conn, cloud, publication_id, parsed, before, plan)
    clock.lap("write")
    log.debug("imported %s %s: %s", cloud, day, clock)
    row = conn.execute(select(Publication.__table__).where(Publication.id == publication_id)).one()
    return ImportResult(
        "imported",
        _publication(row),
        changes=tuple(sorted(plan.changes, key=lambda c: c.tag)),
        anomalies=diffs.publication_anomalies(previous.change_number if previous else None, parsed.change_number),
        notes=tuple(plan.notes),
        previous_day=previous.day if previous else None,
    )


def _versions_before(conn, cloud: str, previous: PublicationInfo | None) -> _Versions:
    """The versions in force at the previous publication: from its manifest when it is the newest."""
    if previous is None:
        return _Versions(None, 0, {})
    rows = _fetch_all(
        conn, "SELECT publication_id, names, fingerprints, tag_ids, prefix_counts FROM entry_manifests "
        "WHERE cloud = :cloud", {"cloud": cloud},
    )
    if rows and rows[0][0] == previous.id:
        manifest = _read_manifest(*rows[0][1:])
        if manifest is not None:
            fingerprints = dict(zip(manifest.names, zip(
                manifest.ids, repeat(True), manifest.fingerprint_list, manifest.counts
            )))
            return _Versions(conn, previous.day, fingerprints, manifest=manifest)
        log.warning("the %s entry manifest is unreadable; reading the versions instead", cloud)
    return versions_at(conn, cloud, previous.day)


def _uint32s(values: Iterable[int]) -> bytes:
    packed = array("I", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _read_uint32s(data: bytes) -> array:
    values = array("I")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass
class _Manifest:
    """A stored entry manifest: parallel lists, in the order of ``names``."""

    names: list[str]
    names_blob: bytes
    fingerprints: bytes               # 16 bytes per tag
    ids: array
    counts: array

    @property
    def fingerprint_list(self) -> list[bytes]:
        return [self.fingerprints[start:start + 16] for start in range(0, len(self.fingerprints), 16)]


def _read_manifest(names: bytes, fingerprints: bytes, tag_ids: bytes, counts: bytes) -> _Manifest | None:
    """The manifest, or None if its arrays do not agree."""
    names_blob = bytes(names)
    try:
        name_list = orjson.loads(names_blob)
        ids, prefix_counts = _read_uint32s(bytes(tag_ids)), _read_uint32s(bytes(counts))
    except (orjson.JSONDecodeError, ValueError):
        return None
    fps = bytes(fingerprints)
    if not isinstance(name_list, list) or not len(name_list) == len(ids) == len(prefix_counts) == len(fps) // 16 \
            or len(fps) % 16:
        return None
    return _Manifest(name_list, names_blob, fps, ids, prefix_counts)


def _write_manifest(conn, cloud: str, publication_id: int, parsed: ParsedFile, before: _Versions, plan: _Plan) -> None:
    old = before.manifest
    table = EntryManifest.__table__
    if old is not None and not plan.withdrawn and all(before.is_present(e[0]) for e in plan.present):
        # The same tags as the week before: patch what changed, in place.
        if not plan.present:  # nothing did: rewriting the arrays would only leave dead copies (PostgreSQL)
            conn.execute(update(table).where(table.c.cloud == cloud).values(publication_id=publication_id))
            return
        position = {name: index for index, name in enumerate(old.names)} if plan.present else {}
        fingerprints, counts = bytearray(old.fingerprints), array("I", old.counts)
        for name, _, fingerprint, count in plan.present:
            index = position[name]
            fingerprints[16 * index:16 * index + 16] = fingerprint
            counts[index] = count
        conn.execute(update(table).where(table.c.cloud == cloud).values(
            publication_id=publication_id, fingerprints=bytes(fingerprints), prefix_counts=_uint32s(counts),
        ))
        return
    known = before.rows_of(parsed.unchanged)  # (tag id, present, fingerprint, count), in that order
    names = list(parsed.unchanged) + [e[0] for e in plan.present]
    ids = [k[0] for k in known] + [e[1] or plan.new_tag_ids[e[0]] for e in plan.present]
    conn.execute(delete(table).where(table.c.cloud == cloud))
    conn.execute(insert(table), {
        "cloud": cloud, "publication_id": publication_id,
        "names": orjson.dumps(names),
        "fingerprints": b"".join([bytes(k[2]) for k in known] + [e[2] for e in plan.present]),
        "tag_ids": _uint32s(ids),
        "prefix_counts": _uint32s([k[3] for k in known] + [e[3] for e in plan.present]),
    })


class _Stopwatch:
    """Where an import's time goes, for the debug log and the benchmarks."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.laps.items())


def _compare_with_existing(conn, document, source, existing: PublicationInfo, sha256: str) -> ImportResult:
    """A file for a date already stored: the same content is fine, other content is a conflict."""
    versions = versions_at(conn, existing.cloud, existing.day)
    versions.load(versions)
    stored = {n: v for n, v in versions.items() if v.present}
    parsed = parse_document(
        document, source, sha256=sha256, file_date=existing.file_date,
        known_entries={v.entry_hash: n for n, v in stored.items()},
    )
    differs = set(parsed.tag_names) != set(stored) or parsed.change_number != existing.change_number
    for tag in parsed.tags:
        if differs:
            break
        prefixes, _ = normalize_prefixes(tag.name, tag.raw_prefixes, source)
        version = stored[tag.name]
        differs = (content_hash(prefixes), tag.change_number, tag.metadata) != (
            version.content_hash, version.change_number, version.metadata
        )
    if differs:
        raise ConflictError(
            f"{source}: a different {existing.cloud} file for {existing.file_date} is already stored "
            f"(SHA-256 {existing.sha256[:12]}…, from {existing.source}); nothing was imported"
        )
    return ImportResult(
        "already imported", existing,
        reason="the same content is already stored for this date (the bytes differ, e.g. line endings)",
    )


def _plan(conn, parsed: ParsedFile, source: str, before: _Versions, following) -> _Plan:
    plan = _Plan()
    d = day_key(parsed.file_date)
    next_day = following.day if following else None
    changed_names = [t.name for t in parsed.tags]
    if len(parsed.unchanged) + sum(map(before.is_present, changed_names)) == before.present_count():
        withdrawn: list[str] = []  # every tag published before is in the file
    else:
        in_file = set(parsed.tag_names)
        withdrawn = [name for name in before.present_names() if name not in in_file]
    plan.withdrawn = withdrawn
    touched_names = changed_names + withdrawn
    before.load(touched_names)
    after = versions_at(conn, parsed.cloud, next_day, touched_names) if following else {}
    old_contents = load_contents(
        conn, [before[n].content_hash for n in touched_names if n in before]
        + [after[n].content_hash for n in touched_names if n in after]
    )
    known_ids = _tag_ids(conn, parsed.cloud, [n for n in touched_names if n not in before])

    items: list[tuple[str, ServiceTag | None]] = [(t.name, t) for t in parsed.tags] + [(n, None) for n in withdrawn]
    seen_prefixes = PrefixCache()  # a prefix is often in several tags (AzureCloud has them all)
    plan.prefix_count = before.prefix_total(parsed.unchanged, touched_names)
    for name, item in items:
        old_version = before.get(name)
        tag_id = old_version.tag_id if old_version else known_ids.get(name)
        old = old_contents[old_version.content_hash] if old_version is not None else ()
        if item is not None:
            change = normalize_against(name, item.raw_prefixes, source, old, cache=seen_prefixes)
            plan.notes.extend(change.notes)
            prefixes, added, removed = change.prefixes, change.added, change.removed
            encoded = encode_prefixes(prefixes)
            digest = content_hash(prefixes, encoded)
            plan.contents[digest] = (len(prefixes), encoded)
            plan.prefix_count += len(prefixes)
            plan.present.append((name, tag_id, item.entry_hash, len(prefixes)))
            new_version = VersionInfo(
                tag_id or 0, name, d, None, True, item.change_number, item.metadata, len(prefixes), digest,
                item.entry_hash,
            )
        else:
            prefixes, added, removed = (), set(), set(old)
            new_version = absent_version(tag_id, name, d)
        if tag_id is None:
            plan.new_tags.append(name)
        if old_version is not None and new_version.same_as(old_version):
            # E.g. prefixes reordered or the entry re-indented: nothing to record but its new
            # fingerprint, so that the next file with these bytes skips the work again.
            if new_version.entry_hash != old_version.entry_hash:
                plan.refingerprint.append((old_version.tag_id, old_version.valid_from, new_version.entry_hash))
            continue
        next_version = after.get(name)
        nxt = set(old_contents[next_version.content_hash]) if next_version is not None else set()
        _plan_spans(plan, name, tag_id, d, next_day, nxt, added, removed)
        _plan_versions(plan, name, tag_id, new_version, old_version, next_version, next_day)
        plan.changes.append(_tag_change(name, old_version, new_version, len(added), len(removed)))
    return plan


def _tag_ids(conn, cloud: str, names: Sequence[str]) -> dict[str, int]:
    if len(names) > 500:  # a first import: one read of the cloud's tags beats batches of IN lists
        wanted = set(names)
        rows = _fetch_all(conn, "SELECT name, id FROM tags WHERE cloud = :cloud", {"cloud": cloud})
        return {name: tag_id for name, tag_id in rows if name in wanted}
    found: dict[str, int] = {}
    statement = text("SELECT name, id FROM tags WHERE cloud = :cloud AND name IN :names").bindparams(
        bindparam("names", expanding=True)
    )
    for batch in _chunks(list(names)):
        found.update(conn.execute(statement, {"cloud": cloud, "names": list(batch)}).all())
    return found


def _plan_spans(plan: _Plan, name, tag_id, d, next_day, nxt: set[str], added, removed) -> None:
    for prefix in removed:
        plan.end_spans.append({"tag_id": tag_id, "prefix": prefix, "d": d})
        if prefix in nxt:  # present again at S: the span that covered P and S is split
            plan.split_spans.append({"tag_id": tag_id, "prefix": prefix, "d": d, "s": next_day})
    if not nxt:  # the usual case: the newest publication
        if added:
            plan.new_spans.append((name, added))
        return
    for prefix in added:
        if prefix in nxt:  # not present at P, present at S: its span started at S
            plan.move_span_starts.append({"tag_id": tag_id, "prefix": prefix, "s": next_day, "d": d})
        else:
            plan.new_spans.append((name, (prefix,)))


def _plan_versions(plan: _Plan, name, tag_id, new_version, old_version, next_version, next_day) -> None:
    plan.versions.append(new_version)
    if old_version is not None:
        plan.predecessors[name] = old_version.valid_from
    if next_day is None:
        return
    if next_version is not None and next_version.valid_from == next_day:
        if next_version.same_as(new_version):
            plan.drop_at_next.append(name)
        return
    # S had no row of its own: what held before d held at S, and still must.
    plan.restore_at_next.append(old_version or absent_version(tag_id, name, next_day))


def _tag_change(name, old_version: VersionInfo | None, new_version: VersionInfo, added: int, removed: int) -> TagChange:
    was_present = old_version is not None and old_version.present
    if not was_present:
        status: diffs.Status = "appeared"
    elif not new_version.present:
        status = "withdrawn"
    else:
        status = "changed" if added or removed else "unchanged"
    before_number = old_version.change_number if was_present else None
    return TagChange(
        tag=name, status=status, added=added, removed=removed,
        change_number_before=before_number,
        change_number_after=new_version.change_number,
        anomalies=diffs.change_number_anomalies(before_number, new_version.change_number, bool(added or removed))
        if new_version.present else (),
    )


def _write(conn, parsed: ParsedFile, source, plan: _Plan, previous, following, imported_at) -> int:
    d = day_key(parsed.file_date)
    next_day = following.day if following else None
    publication_id = conn.execute(
        insert(Publication.__table__).returning(Publication.__table__.c.id),
        {
            "cloud": parsed.cloud, "file_date": parsed.file_date, "change_number": parsed.change_number,
            "sha256": parsed.sha256, "source": source[:1024], "imported_at": imported_at,
            "tag_count": parsed.tag_count, "prefix_count": plan.prefix_count,
        },
    ).scalar_one()
    clock = _Stopwatch()
    ids = {v.name: v.tag_id for v in plan.versions if v.tag_id}
    if plan.new_tags:
        _bulk_insert(conn, "tags", ("cloud", "name"), [(parsed.cloud, n) for n in plan.new_tags])
        plan.new_tag_ids = _tag_ids(conn, parsed.cloud, plan.new_tags)
        ids.update(plan.new_tag_ids)
    clock.lap("tags")
    if plan.versions:
        _write_contents(conn, plan.contents)
    clock.lap("contents")
    _write_versions(conn, plan, ids, publication_id, d, previous, following)
    if plan.refingerprint:
        conn.execute(
            text("UPDATE tag_versions SET entry_hash = :h WHERE tag_id = :t AND valid_from = :f"),
            [{"t": t, "f": f, "h": h} for t, f, h in plan.refingerprint],
        )
    clock.lap("versions")
    _write_spans(conn, plan, ids, d, next_day)
    clock.lap("spans")
    log.debug("wrote %s %s: %s", parsed.cloud, parsed.file_date, clock)
    return publication_id


def _write_contents(conn, contents: dict[bytes, tuple[int, bytes]]) -> None:
    contents = {EMPTY_HASH: (0, b""), **contents}  # what withdrawn versions point to
    stored = {bytes(h) for (h,) in _fetch_in(conn, "SELECT hash FROM contents WHERE hash IN ({})", list(contents))}
    missing = [(h, count, _compress(encoded)) for h, (count, encoded) in contents.items() if h not in stored]
    _bulk_insert(conn, "contents", ("hash", "prefix_count", "prefixes"), missing)


def _write_versions(conn, plan: _Plan, ids, publication_id, d, previous, following) -> None:
    v = TagVersion.__table__
    next_day = following.day if following else None
    if plan.drop_at_next:
        conn.execute(
            delete(v).where(v.c.tag_id.in_([ids[n] for n in plan.drop_at_next]), v.c.valid_from == next_day)
        )
    rows = [_version_row(ver, ids[ver.name], publication_id, d) for ver in plan.versions]
    rows += [_version_row(ver, ids[ver.name], following.id, next_day) for ver in plan.restore_at_next]
    _bulk_insert(conn, "tag_versions", _VERSION_INSERT_COLUMNS, rows)
    if next_day is not None:
        _relink_versions(conn, [ids[ver.name] for ver in plan.versions], d, next_day)
        return
    # The file is the newest: each new version's predecessor is the one that held at
    # P, current until now, and it ends at d. A tag new to the database has none;
    # one known only by name here (a tag coming back) is looked up.
    new_tags = set(plan.new_tags)
    ends, unknown = [], []
    for ver in plan.versions:
        start = plan.predecessors.get(ver.name)
        if start is not None:
            ends.append({"b_tag": ids[ver.name], "b_from": start, "b_until": d})
        elif ver.name not in new_tags:
            unknown.append(ids[ver.name])
    _execute_many(conn, "UPDATE tag_versions SET valid_until = :b_until WHERE tag_id = :b_tag AND valid_from = :b_from",
                  ends)
    _relink_versions(conn, unknown, d, None)


def _relink_versions(conn, tag_id_list: list[int], d: int, next_day: int | None) -> None:
    """Set ``valid_until`` of the versions around d to the valid_from of their successor.

    Only the version before d, the one at d and the one at S can have changed.
    """
    if not tag_id_list:
        return
    statement = (
        "SELECT tag_id, valid_from, valid_until FROM tag_versions WHERE tag_id IN ({}) "
        "AND (valid_until IS NULL OR valid_until >= :low) AND valid_from <= :high ORDER BY tag_id, valid_from"
    )
    fixes = []
    # Each batch is ordered by tag, and a tag's rows are all in one batch.
    rows = _fetch_in(conn, statement, tag_id_list, {"low": d, "high": next_day or d})
    for index, (tag_id, valid_from, valid_until) in enumerate(rows):
        successor = rows[index + 1] if index + 1 < len(rows) and rows[index + 1][0] == tag_id else None
        if successor:
            wanted = successor[1]
        else:  # the newest version in the window: current, unless a later one exists
            wanted = None if next_day is None else _next_version_day(conn, tag_id, valid_from)
        if wanted != valid_until:
            fixes.append({"b_tag": tag_id, "b_from": valid_from, "b_until": wanted})
    _execute_many(conn, "UPDATE tag_versions SET valid_until = :b_until WHERE tag_id = :b_tag AND valid_from = :b_from",
                  fixes)


def _next_version_day(conn, tag_id: int, valid_from: int) -> int | None:
    return conn.execute(
        select(func.min(TagVersion.valid_from)).where(TagVersion.tag_id == tag_id, TagVersion.valid_from > valid_from)
    ).scalar()


def _write_spans(conn, plan: _Plan, ids, d: int, next_day: int | None) -> None:
    covering_p = "tag_id = :tag_id AND prefix = :prefix AND first_day < :d AND (until_day IS NULL OR until_day > :d)"
    if plan.split_spans:
        # Copy the span's tail first: it keeps the end the span had before it is cut at d.
        conn.execute(text(
            "INSERT INTO prefix_spans (tag_id, prefix, first_day, until_day) "
            f"SELECT tag_id, prefix, :s, until_day FROM prefix_spans WHERE {covering_p}"
        ), plan.split_spans)
    if plan.end_spans:
        _execute_many(conn, f"UPDATE prefix_spans SET until_day = :d WHERE {covering_p}", plan.end_spans)
    if plan.move_span_starts:
        conn.execute(text(
            "UPDATE prefix_spans SET first_day = :d WHERE tag_id = :tag_id AND prefix = :prefix AND first_day = :s"
        ), plan.move_span_starts)
    if plan.new_spans:
        rows = list(chain.from_iterable(zip(prefixes, repeat(ids[name])) for name, prefixes in plan.new_spans))
        # In key order: the B-tree grows at its right edge instead of splitting pages all over.
        rows.sort(key=itemgetter(0))
        _bulk_insert(conn, "prefix_spans", ("prefix", "tag_id"), rows, same={"first_day": d, "until_day": next_day})
        if len(rows) > ANALYZE_AFTER_ROWS and conn.dialect.name == "postgresql":
            log.debug("analyze after %d spans", len(rows))
            # Fresh tables have no statistics; without them PostgreSQL plans the
            # next imports' look-ups as if the tables were empty.
            conn.execute(text("ANALYZE tags, tag_versions, contents, prefix_spans"))


def _bulk_insert(conn, table: str, columns: Sequence[str], rows: Sequence[tuple],
                 same: Mapping[str, int | None] | None = None) -> None:
    """Insert many rows with the driver's fastest path: COPY on PostgreSQL, executemany on SQLite.

    A first import writes ~3,000 tags, versions and contents and ~93,000
    spans; building SQLAlchemy parameter dictionaries for them costs more than
    the database's work. ``same`` gives columns whose value (an integer or
    NULL) every row shares.
    """
    if not rows:
        return
    same = dict(same or {})
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        constant = tuple(same.values())
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join([*columns, *same])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + constant if constant else row)
        return
    # Many rows per statement: SQLite's per-statement work (reset, bind, step)
    # costs about as much as inserting the row, so this halves a first import's
    # span writes. 900 parameters stay under every SQLite's limit (999 before 3.32).
    # Shared values are written into the statement, not bound once per row.
    per_statement = max(1, 900 // len(columns))
    literals = ["NULL" if value is None else str(int(value)) for value in same.values()]
    one_row = f"({', '.join(['?'] * len(columns) + literals)})"
    insert_into = f"INSERT INTO {table} ({', '.join([*columns, *same])}) VALUES "
    whole = len(rows) - len(rows) % per_statement
    cursor = raw.cursor()
    try:
        if whole:
            cursor.executemany(
                insert_into + ", ".join([one_row] * per_statement),
                (list(chain.from_iterable(rows[start:start + per_statement])) for start in range(0, whole, per_statement)),
            )
        if whole < len(rows):
            cursor.executemany(insert_into + one_row, rows[whole:])
    finally:
        cursor.close()


# ---------------------------------------------------------------- reading


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
    if isinstance(wanted, dt.date):
        row = conn.execute(query.where(table.c.file_date <= wanted).limit(1)).first()
        if row is None:
            raise NotFoundError(f"no {cloud} publication on or before {wanted}")
        return _publication(row)
    rows = conn.execute(query.limit(2)).all()
    index = 0 if wanted == "latest" else 1
    if len(rows) <= index:
        have = "no publication" if not rows else "only one publication"
        raise NotFoundError(f"{wanted}: the database has {have} for the {cloud} cloud; import some files first")
    return _publication(rows[index])


def tag_name(conn: Connection, cloud: str, name: str) -> str:
    """A tag's stored name, found case-insensitively (an exact match wins)."""
    if conn.execute(select(Tag.id).where(Tag.cloud == cloud, Tag.name == name)).first() is not None:
        return name  # the unique index answers the common case
    found = list(conn.execute(select(Tag.name).where(Tag.cloud == cloud, func.lower(Tag.name) == name.lower())).scalars())
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError(f"unknown {cloud} tag {name!r}")
    raise NotFoundError(f"tag name {name!r} is ambiguous: {', '.join(found)}")


@dataclass(frozen=True)
class TagSnapshot:
    tag: str
    publication: PublicationInfo
    version: VersionInfo
    prefixes: tuple[str, ...]

    @property
    def since(self) -> dt.date:
        return day_from_key(self.version.valid_from)

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "cloud": self.publication.cloud,
            "date": self.publication.file_date.isoformat(),
            "change_number": self.version.change_number,
            "since": self.since.isoformat(),
            "prefixes": list(self.prefixes),
        }


def snapshot(conn: Connection, cloud: str, name: str, publication: PublicationInfo) -> TagSnapshot | None:
    """A tag's prefixes as published in ``publication``; None if it was not published then.

    One query (tag, version in force, content) for the usual exact name; a
    name in other letter case is resolved first.
    """
    columns = ", ".join(f"v.{c.strip()}" for c in _VERSION_COLUMNS.split(","))
    query = (
        f"SELECT {columns}, c.prefixes FROM tags t JOIN tag_versions v ON v.tag_id = t.id "
        "JOIN contents c ON c.hash = v.content_hash WHERE t.cloud = :cloud AND t.name = :name "
        "AND v.valid_from <= :day AND (v.valid_until IS NULL OR v.valid_until > :day)"
    )
    rows = _fetch_all(conn, query, {"cloud": cloud, "name": name, "day": publication.day})
    if not rows:
        real_name = tag_name(conn, cloud, name)  # raises for an unknown tag
        if real_name == name:
            return None  # the tag exists but has no version yet at that publication
        return snapshot(conn, cloud, real_name, publication)
    row = rows[0]
    version = _version(name, row[:-1])
    if not version.present:
        return None
    return TagSnapshot(name, publication, version, _unpack(row[-1]))


def tag_states(conn: Connection, cloud: str, day: int, names: Sequence[str] | None) -> dict[str, diffs.TagState]:
    """Tag name -> state at ``day``, for the tags published then (all, or those named)."""
    versions = {n: v for n, v in versions_at(conn, cloud, day, names).items() if v.present}
    contents = load_contents(conn, [v.content_hash for v in versions.values()])
    return {n: diffs.TagState.of_sorted(v.change_number, contents[v.content_hash]) for n, v in versions.items()}


def changed_tag_names(conn: Connection, cloud: str, first_day: int, last_day: int) -> list[str]:
    """Tags with any version row in (first_day, last_day]: the only ones that can differ."""
    low, high = min(first_day, last_day), max(first_day, last_day)
    v = TagVersion.__table__
    return list(conn.execute(
        select(Tag.name).distinct().join(v, Tag.id == v.c.tag_id)
        .where(Tag.cloud == cloud, v.c.valid_from > low, v.c.valid_from <= high)
    ).scalars())


def diff_publications(
    conn: Connection, cloud: str, old: PublicationInfo, new: PublicationInfo, names: Sequence[str] | None = None
) -> list[diffs.TagDiff]:
    """Per-tag diffs from ``old`` to ``new``: the named tags, or every tag that changed."""
    if names is None:
        wanted = changed_tag_names(conn, cloud, old.day, new.day)
    else:
        wanted = list(dict.fromkeys(tag_name(conn, cloud, n) for n in names))
    before = tag_states(conn, cloud, old.day, wanted)
    after = tag_states(conn, cloud, new.day, wanted)
    result = []
    cache: diffs.ParseCache = {}
    for name in wanted:
        if name not in before and name not in after:
            continue  # not published at either point
        change = diffs.diff_tag(name, before.get(name), after.get(name), cache)
        if names is None and change.status == "unchanged" and not change.anomalies:
            continue
        result.append(change)
    return sorted(result, key=lambda c: c.tag)


@dataclass(frozen=True)
class HistoryEntry:
    date: dt.date
    present: bool
    change_number: int | None
    prefix_count: int
    added: int
    removed: int
    anomalies: tuple[str, ...]

    def to_json(self, tag: str) -> dict[str, Any]:
        """``tag``: the tag's name, which the entry itself does not carry."""
        return {
            "tag": tag, "date": self.date.isoformat(), "present": self.present, "change_number": self.change_number,
            "prefixes": self.prefix_count, "added": self.added, "removed": self.removed,
            "anomalies": list(self.anomalies),
        }


def history(conn: Connection, cloud: str, name: str) -> tuple[str, list[HistoryEntry]]:
    """Each version of a tag, with what it added and removed relative to the version before."""
    real_name = tag_name(conn, cloud, name)
    identity = conn.execute(select(Tag.id).where(Tag.cloud == cloud, Tag.name == real_name)).scalar_one()
    v = TagVersion.__table__
    versions = list(conn.execute(select(v).where(v.c.tag_id == identity).order_by(v.c.valid_from)))
    contents = load_contents(conn, [bytes(r.content_hash) for r in versions])
    entries: list[HistoryEntry] = []
    previous_set: frozenset[str] = frozenset()
    previous_number: int | None = None
    for version in versions:
        current = frozenset(contents[bytes(version.content_hash)])
        added, removed = len(current - previous_set), len(previous_set - current)
        entries.append(HistoryEntry(
            date=day_from_key(version.valid_from), present=version.present, change_number=version.change_number,
            prefix_count=version.prefix_count, added=added, removed=removed,
            anomalies=diffs.change_number_anomalies(previous_number, version.change_number, bool(added or removed)),
        ))
        previous_set, previous_number = current, (version.change_number if version.present else None)
    return real_name, entries


@dataclass(frozen=True)
class LookupHit:
    tag: str
    prefix: str
    since: dt.date

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "prefix": self.prefix, "since": self.since.isoformat()}


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


def present_tag_names(conn: Connection, cloud: str, publication: PublicationInfo | None = None) -> list[str]:
    """Names of the tags published in ``publication`` (default: the latest of the cloud)."""
    if publication is None:
        try:
            publication = resolve_publication(conn, cloud, "latest")
        except NotFoundError:
            return []
    return sorted(n for n, v in versions_at(conn, cloud, publication.day).items() if v.present)
