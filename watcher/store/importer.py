"""Importing a file: place it among the stored publications, plan, and write the plan.

An import inserts one publication into each tag's timeline at the file's date,
whatever order files arrive in; only tags whose entry differs from their
previous version are looked at (see ``planner`` for what is written). Contents
(prefix sets) are stored once per distinct set. Everything happens in one
transaction, so a publication is stored whole or not at all.

What the previous publication had comes from the cloud's entry manifest when
that publication is the newest (the weekly case: one row), and from the
versions in force at P otherwise.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from array import array
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import orjson
from sqlalchemy import Connection, Engine, String, bindparam, delete, func, insert, select, text, update
from sqlalchemy import column as sa_column

from .. import db, diff as diffs
from ..errors import ConflictError, ParseError, translate_db_errors
from ..models import EntryManifest, Publication, TagVersion, day_key, utcnow
from ..parse import (
    Document, ParsedFile, content_hash, decode_document, file_cloud, normalize_prefixes, parse_document,
)
from .planner import ImportPlan, NewContent, NewSpans, plan_import, withdrawn_tags
from .records import (
    EMPTY_HASH, ImportHook, ImportResult, PublicationInfo, VersionInfo, missed_count, missed_note, publication_from_row,
)
from .packing import decoded_contents, load_texts, pack_content, remember_prefix_lists, remember_texts
from .sql import bulk_insert, fetch_in, insert_spans, no_collector_pauses, streamed_spans, update_rows
from .versions import Versions, tag_ids_of, uint32s, versions_at, versions_before

log = logging.getLogger(__name__)

ANALYZE_AFTER_ROWS = 20_000

VERSION_INSERT_COLUMNS = (
    "tag_id", "valid_from", "publication_id", "present", "change_number", "region", "region_id", "platform",
    "system_service", "network_features", "prefix_count", "content_hash", "entry_hash", "added_count",
    "removed_count",
)


def import_bytes(
    engine: Engine,
    data: bytes,
    source: str,
    *,
    file_date: dt.date | None = None,
    expected_cloud: str | None = None,
    on_imported: ImportHook | None = None,
    now: Callable[[], dt.datetime] | None = None,
    decoded: tuple[Document, str] | None = None,
    within: Connection | None = None,
) -> ImportResult:
    """Import one file's bytes as a publication; idempotent and atomic.

    ``decoded``: ``data``'s top level (``decode_document``) and SHA-256, when the caller has them already
    (a backfill reads, hashes and decodes the next file on a thread while it imports this one).
    ``within``: a writing transaction (``db.writer``) the caller holds and commits; the import runs in a
    savepoint of it, so a file that fails leaves that transaction as it found it.
    """
    with no_collector_pauses():
        return _import_bytes(engine, data, source, file_date, expected_cloud, on_imported, now or utcnow, decoded,
                             within)


def _import_bytes(engine: Engine, data: bytes, source: str, file_date: dt.date | None, expected_cloud: str | None,
                  on_imported: ImportHook | None, now: Callable[[], dt.datetime],
                  decoded: tuple[Document, str] | None = None, within: Connection | None = None) -> ImportResult:
    hashing = Sha256(data) if decoded is None else None
    try:
        document = decode_document(data, source) if decoded is None else decoded[0]
        cloud = file_cloud(document, source)
        if expected_cloud and cloud != expected_cloud:
            raise ParseError(f"{source}: is a {cloud} file, expected {expected_cloud}")
        file_date = file_date or date_from_source(source)
    finally:
        sha256 = hashing.hexdigest() if hashing is not None else decoded[1]
    # The bulk paths use the driver's cursor directly, so its own errors are translated too.
    with translate_db_errors(f"importing {source}"):
        if within is not None:
            with within.begin_nested():
                return _import_locked(within, document, source, cloud, sha256, file_date, now, on_imported)
        started = time.perf_counter()
        with db.writer(engine).begin() as conn:
            result = _import_locked(conn, document, source, cloud, sha256, file_date, now, on_imported)
            committing = time.perf_counter()
        log.debug("%s: transaction %.0f ms, of which commit %.0f ms", source,
                  (time.perf_counter() - started) * 1000, (time.perf_counter() - committing) * 1000)
        return result


def _import_locked(conn: Connection, document: Document, source: str, cloud: str, sha256: str,
                   file_date: dt.date, now: Callable[[], dt.datetime], on_imported: ImportHook | None) -> ImportResult:
    _lock_cloud(conn, cloud)
    result = _import(conn, document, source, cloud, sha256, file_date, now)
    if result.outcome == "imported" and on_imported is not None:
        on_imported(conn, result)
    return result


class Sha256:
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
    from ..parse import date_from_file_name

    found = date_from_file_name(source)
    if found is None:
        raise ParseError(f"{source}: no publication date: name the file ServiceTags_<Cloud>_<YYYYMMDD>.json or give a date")
    return found


def lock_cloud(conn: Connection, cloud: str) -> None:
    """Take the cloud's import lock for the rest of ``conn``'s transaction (what runs the ticket hooks needs it too)."""
    _lock_cloud(conn, cloud)


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
        # An empty database: this may be its first import, which rebuilds keys and foreign keys
        # (``_rebuilt_after``). Two clouds' first imports at once take turns, or their DDL could deadlock.
        if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM publications)")).scalar():
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('watcher-first-import:' || current_schema(), 0))"))


_PUBLICATION_COLUMNS = ", ".join(f"p.{c.name}" for c in Publication.__table__.columns)  # in the model's order
_PLACEMENT = text(
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
    """Where a file goes, in one round trip: the publication of its date, and its neighbours.

    A publication is a cloud and a date: the same bytes under another date are
    a publication of their own (a week that changed nothing).
    """
    rows = conn.execute(_PLACEMENT, {"cloud": cloud, "day": day})
    return {row.place: publication_from_row(row) for row in rows}


def _import(conn: Connection, document: Any, source: str, cloud: str, sha256: str, day: dt.date,
            now: Callable[[], dt.datetime]) -> ImportResult:
    place = _placement(conn, cloud, sha256, day)
    if "same day" in place and place["same day"].sha256 == sha256:
        return ImportResult("already imported", place["same day"],
                            reason="the same file (SHA-256) is already stored for this date")
    if "same day" in place:
        return _compare_with_existing(conn, document, source, place["same day"], sha256)

    clock = _Stopwatch()
    previous, following = place.get("previous"), place.get("following")
    before = versions_before(conn, cloud, previous)
    clock.lap("read versions")
    parsed = parse_document(document, source, sha256=sha256, file_date=day, known_entries=before.known_entries())
    clock.lap("validate")
    plan, first_load = _plan(conn, parsed, source, before, following)
    clock.lap("plan")
    missed = missed_count(previous.change_number if previous else None, parsed.change_number)
    publication_id, new_tag_ids = _write(conn, parsed, source, plan, following, now(), missed, first_load)
    if following is not None:  # the file fills (part of) a gap before the following publication
        _recount_missed(conn, following, parsed.change_number)
    if following is None:  # the newest publication now: the next week's import starts from it
        _write_manifest(conn, cloud, publication_id, parsed, before, plan, new_tag_ids)
    clock.lap("write")
    log.debug("imported %s %s: %s", cloud, day, clock)
    row = conn.execute(select(Publication.__table__).where(Publication.id == publication_id)).one()
    return ImportResult(
        "imported",
        publication_from_row(row),
        changes=tuple(sorted(plan.changes, key=lambda c: c.tag)),
        anomalies=diffs.publication_anomalies(previous.change_number if previous else None, parsed.change_number),
        notes=tuple(plan.notes) + ((missed_note(missed, previous.file_date, day),) if missed and previous else ()),
        previous_day=previous.day if previous else None,
    )


class _FirstLoad(NamedTuple):
    """What a first import into a PostgreSQL database wrote while it planned (``_plan``)."""

    tag_ids: dict[str, int]  # the tags new to the database, created before planning
    spans: int               # the spans sent meanwhile


def _plan(conn: Connection, parsed: ParsedFile, source: str, before: Versions,
          following: PublicationInfo | None) -> tuple[ImportPlan, _FirstLoad | None]:
    """Read what the planner needs for the tags the file touches, and plan.

    A first import into a PostgreSQL database (``_first_bulk_load``) creates its tags first and sends the
    spans to the server as the planner opens them: the server stores the rows (~35 ms for 91,000) while
    the planner checks and sorts the next tags' prefixes, instead of after. The spans' key is dropped
    meanwhile and added again after the last row (the rows come by tag, so its build sorts them).
    """
    withdrawn = withdrawn_tags(parsed, before)
    touched_names = [t.name for t in parsed.tags] + withdrawn
    before.load(touched_names)
    after: dict[str, VersionInfo] | Versions = (
        versions_at(conn, parsed.cloud, following.day, touched_names) if following else {}
    )
    stored = load_texts(conn, ({before[n].content_hash for n in touched_names if n in before}
                               | {after[n].content_hash for n in touched_names if n in after}) - {EMPTY_HASH})
    known = tag_ids_of(conn, parsed.cloud, [n for n in touched_names if n not in before])

    def plan(new_spans_to: Callable[[NewSpans], None] | None = None) -> ImportPlan:
        planned = plan_import(
            parsed, source, before=before, after=after, next_day=following.day if following else None,
            contents={EMPTY_HASH: (), **decoded_contents(stored)}, tag_ids=known, withdrawn=withdrawn,
            unchanged_prefixes=before.prefix_total(parsed.unchanged, touched_names), new_spans_to=new_spans_to,
        )
        planned.bases = stored  # the texts of the previous contents: deltas are written against them
        return planned

    if not _first_bulk_load(conn, parsed):
        return plan(), None
    created = _create_tags(conn, parsed.cloud, [n for n in touched_names if n not in before and n not in known])
    ids = {**known, **created}
    spans = 0
    with _rebuilt_after(conn, True, "prefix_spans", _SPAN_KEY), _span_index_rebuilt(conn, True):
        with streamed_spans(conn, day_key(parsed.file_date), None) as send:

            def opened(new: NewSpans) -> None:
                nonlocal spans
                send(ids[new.tag], new.prefixes)
                spans += len(new.prefixes)

            planned = plan(opened)
    return planned, _FirstLoad(created, spans)


def _create_tags(conn: Connection, cloud: str, names: Sequence[str]) -> dict[str, int]:
    """Store the tags ``names`` (new to the database): name -> id."""
    if not names:
        return {}
    bulk_insert(conn, "tags", ("cloud", "name"), [(cloud, n) for n in names])
    return tag_ids_of(conn, cloud, names)


def _compare_with_existing(conn: Connection, document: Any, source: str, existing: PublicationInfo,
                           sha256: str) -> ImportResult:
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


# ---------------------------------------------------------------- writing the plan


def _recount_missed(conn: Connection, following: PublicationInfo, number: int) -> None:
    """The publication after an out-of-order file now counts its missed publications from that file."""
    missed = missed_count(number, following.change_number)
    if missed != following.missed_before:
        conn.execute(update(Publication.__table__).where(Publication.id == following.id).values(missed_before=missed))


def _parse_warnings(parsed: ParsedFile) -> str | None:
    """The file's parse warnings as stored: a JSON list, or NULL (parse gives them as ``warnings``, when any)."""
    warnings = list(getattr(parsed, "warnings", ()) or ())
    return orjson.dumps([str(w) for w in warnings]).decode() if warnings else None


def _write(conn: Connection, parsed: ParsedFile, source: str, plan: ImportPlan, following: PublicationInfo | None,
           imported_at: dt.datetime, missed: int = 0,
           first_load: _FirstLoad | None = None) -> tuple[int, dict[str, int]]:
    """Write the publication and its plan; its id, and the ids of the tags new to the database.

    ``first_load``: what ``_plan`` wrote already (a first import into PostgreSQL): the new tags and spans.
    """
    publication_id = conn.execute(
        insert(Publication.__table__).returning(Publication.__table__.c.id),
        {
            "cloud": parsed.cloud, "file_date": parsed.file_date, "change_number": parsed.change_number,
            "sha256": parsed.sha256, "source": source[:1024], "imported_at": imported_at,
            "tag_count": parsed.tag_count, "prefix_count": plan.prefix_count,
            "missed_before": missed, "parse_warnings": _parse_warnings(parsed),
        },
    ).scalar_one()
    clock = _Stopwatch()
    rebuild = first_load is not None
    ids = {v.name: v.tag_id for v in plan.versions if v.tag_id}
    new_tag_ids: dict[str, int] = {}
    if plan.new_tags:
        if first_load is not None:
            new_tag_ids = {name: first_load.tag_ids[name] for name in plan.new_tags}
        else:
            new_tag_ids = _create_tags(conn, parsed.cloud, plan.new_tags)
        ids.update(new_tag_ids)
    clock.lap("tags")
    if plan.versions:
        _write_contents(conn, plan)
    clock.lap("contents")
    with _rebuilt_after(conn, rebuild, "tag_versions", _VERSION_FOREIGN_KEYS):
        _write_versions(conn, plan, ids, publication_id, following)
    if plan.refingerprint:
        conn.execute(
            text("UPDATE tag_versions SET entry_hash = :h WHERE tag_id = :t AND valid_from = :f"),
            [{"t": r.tag_id, "f": r.valid_from, "h": r.entry_hash} for r in plan.refingerprint],
        )
    clock.lap("versions")
    with _span_index_rebuilt(conn, first_load is None and _first_spans(conn, plan)):
        spans = _write_spans(conn, plan, ids) + (first_load.spans if first_load is not None else 0)
    if spans > ANALYZE_AFTER_ROWS and conn.dialect.name == "postgresql":
        log.debug("analyze after %d spans", spans)
        # Fresh tables have no statistics; without them PostgreSQL plans the
        # next imports' look-ups as if the tables were empty. A sample of 3,000
        # rows (statistics target 10) is plenty for those key look-ups, and costs
        # a tenth of the default's 30,000 (~140 ms on 91,000 spans); autovacuum
        # analyses again with the default target once the tables have grown.
        conn.exec_driver_sql(
            f"SET LOCAL default_statistics_target = 10; ANALYZE {_ANALYZED}; RESET default_statistics_target"
        )
    clock.lap("spans")
    log.debug("wrote %s %s: %s", parsed.cloud, parsed.file_date, clock)
    return publication_id, new_tag_ids


def _write_contents(conn: Connection, plan: ImportPlan) -> None:
    contents = {EMPTY_HASH: NewContent(0, b""), **plan.contents}  # what withdrawn versions point to
    stored = {bytes(h) for (h,) in fetch_in(conn, "SELECT hash FROM contents WHERE hash IN ({})", list(contents))}
    # Sizes are not counted here: every new set's (13,000 prefixes for AzureCloud each week, ~93,000 on a first
    # import) cost 0.5-6x json.loads of the import's time. The tag page counts a version's set when it first
    # shows it and keeps the sizes (``series.tag_series``).
    missing = [(h, new.prefix_count,
                *pack_content(new.encoded, new.base, plan.bases.get(new.base) if new.base else None))
               for h, new in contents.items() if h not in stored]
    bulk_insert(conn, "contents", ("hash", "prefix_count", "prefixes", "base_hash", "depth"), missing)
    remember_texts((digest, found.encoded) for digest, found in plan.contents.items())
    remember_prefix_lists((digest, found.prefixes) for digest, found in plan.contents.items())


def _version_row(version: VersionInfo, tag_id: int, publication_id: int, valid_from: int,
                 counts: tuple[int, int]) -> tuple:
    """A row for ``VERSION_INSERT_COLUMNS`` (``valid_until`` is linked afterwards); ``counts``: the prefixes it
    added and removed against the version before it."""
    return (tag_id, valid_from, publication_id, version.present, version.change_number, *version.metadata,
            version.prefix_count, version.content_hash, version.entry_hash, *counts)


_SET_VALID_UNTIL = "UPDATE tag_versions SET valid_until = :b_until WHERE tag_id = :b_tag AND valid_from = :b_from"
_SET_VALID_UNTIL_ALL = (
    "UPDATE tag_versions AS v SET valid_until = e.b_until "
    "FROM unnest(CAST(:b_tag AS integer[]), CAST(:b_from AS integer[]), CAST(:b_until AS integer[])) "
    "AS e(b_tag, b_from, b_until) WHERE v.tag_id = e.b_tag AND v.valid_from = e.b_from"
)
_COVERING = "tag_id = :tag_id AND prefix = :prefix AND first_day < :d AND (until_day IS NULL OR until_day > :d)"
_END_SPAN = f"UPDATE prefix_spans SET until_day = :d WHERE {_COVERING}"
_END_SPANS_ALL = (
    "UPDATE prefix_spans AS s SET until_day = :d "
    "FROM unnest(CAST(:tag_id AS integer[]), CAST(:prefix AS text[])) AS e(tag_id, prefix) "
    'WHERE s.tag_id = e.tag_id AND s.prefix = e.prefix COLLATE "C" AND s.first_day < :d '
    "AND (s.until_day IS NULL OR s.until_day > :d)"
)


def _set_valid_until(conn: Connection, rows: list[dict[str, Any]]) -> None:
    update_rows(conn, _SET_VALID_UNTIL, rows, _SET_VALID_UNTIL_ALL, ("b_tag", "b_from", "b_until"))


def _write_versions(conn: Connection, plan: ImportPlan, ids: dict[str, int], publication_id: int,
                    following: PublicationInfo | None) -> None:
    v = TagVersion.__table__
    d, next_day = plan.day, plan.next_day
    if plan.drop_at_next:
        conn.execute(
            delete(v).where(v.c.tag_id.in_([ids[n] for n in plan.drop_at_next]), v.c.valid_from == next_day)
        )
    # A new version at d adds and removes what the plan's change of its tag says (against P): its spans that
    # start at d are the new ones and those moved from S, those that end at d the ended and the split ones.
    counts = {change.tag: (change.added, change.removed) for change in plan.changes}
    rows = [_version_row(ver, ids[ver.name], publication_id, d, counts[ver.name]) for ver in plan.versions]
    if following is not None and next_day is not None:
        restored = {ver.name for ver in plan.restore_at_next}
        rows += [_version_row(ver, ids[ver.name], following.id, next_day, plan.counts_at_next[ver.name])
                 for ver in plan.restore_at_next]
        # The rows S kept: what they add and remove is now against d's versions. By key: no index by tag is
        # needed (a SQLite backfill batch writes without it).
        kept = [{"tag": ids[name], "day": next_day, "added": added, "removed": removed}
                for name, (added, removed) in plan.counts_at_next.items() if name not in restored]
        if kept:
            conn.execute(text(_SET_COUNTS), kept)
    bulk_insert(conn, "tag_versions", VERSION_INSERT_COLUMNS, rows)
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
    _set_valid_until(conn, ends)
    _relink_versions(conn, unknown, d, None)


def _relink_versions(conn: Connection, tag_id_list: list[int], d: int, next_day: int | None) -> None:
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
    rows = fetch_in(conn, statement, tag_id_list, {"low": d, "high": next_day or d})
    for index, (tag_id, valid_from, valid_until) in enumerate(rows):
        successor = rows[index + 1] if index + 1 < len(rows) and rows[index + 1][0] == tag_id else None
        if successor:
            wanted = successor[1]
        else:  # the newest version in the window: current, unless a later one exists
            wanted = None if next_day is None else _next_version_day(conn, tag_id, valid_from)
        if wanted != valid_until:
            fixes.append({"b_tag": tag_id, "b_from": valid_from, "b_until": wanted})
    _set_valid_until(conn, fixes)


#: A version's counts at S, by its key (no row at S for the tag: nothing changes).
_SET_COUNTS = ("UPDATE tag_versions SET added_count = :added, removed_count = :removed "
               "WHERE tag_id = :tag AND valid_from = :day")


def _next_version_day(conn: Connection, tag_id: int, valid_from: int) -> int | None:
    return conn.execute(
        select(func.min(TagVersion.valid_from)).where(TagVersion.tag_id == tag_id, TagVersion.valid_from > valid_from)
    ).scalar()


def _write_spans(conn: Connection, plan: ImportPlan, ids: dict[str, int]) -> int:
    """Write the plan's span changes; the number of new spans."""
    d, s = plan.day, plan.next_day
    covering_p = _COVERING
    if plan.split_spans:
        # Copy the span's tail first: it keeps the end the span had before it is cut at d.
        conn.execute(text(
            "INSERT INTO prefix_spans (tag_id, prefix, first_day, until_day) "
            f"SELECT tag_id, prefix, :s, until_day FROM prefix_spans WHERE {covering_p}"
        ), [{"tag_id": t, "prefix": p, "d": d, "s": s} for t, p in plan.split_spans])
    if plan.end_spans:
        update_rows(conn, _END_SPAN, [{"tag_id": t, "prefix": p, "d": d} for t, p in plan.end_spans],
                    _END_SPANS_ALL, ("tag_id", "prefix"))
    if plan.move_span_starts:
        conn.execute(text(
            "UPDATE prefix_spans SET first_day = :d WHERE tag_id = :tag_id AND prefix = :prefix AND first_day = :s"
        ), [{"tag_id": t, "prefix": p, "s": s, "d": d} for t, p in plan.move_span_starts])
    if not plan.new_spans:
        return 0
    runs = [(ids[name], prefixes) for name, prefixes in plan.new_spans]
    insert_spans(conn, runs, d, s)
    return sum(len(prefixes) for _, prefixes in runs)


#: What a first import analyses: the columns queries look rows up, join or filter by. The versions'
#: metadata and the contents' packed texts are only read out; sorting their values for statistics
#: (text under the database's collation) was half of the ANALYZE (~14 ms -> ~8 ms).
_ANALYZED = ("tags, tag_versions (tag_id, valid_from, valid_until, publication_id, present, content_hash), "
             "contents (hash, base_hash), prefix_spans")

#: Constraints a first import drops and adds again around its bulk writes, as the migrations made them.
_SPAN_KEY = ("pk_prefix_spans PRIMARY KEY (prefix, tag_id, first_day)",)
_VERSION_FOREIGN_KEYS = (
    "fk_tag_versions_tag_id_tags FOREIGN KEY (tag_id) REFERENCES tags (id) ON DELETE CASCADE",
    "fk_tag_versions_content_hash_contents FOREIGN KEY (content_hash) REFERENCES contents (hash)",
    "fk_tag_versions_publication_id_publications FOREIGN KEY (publication_id) REFERENCES publications (id) "
    "ON DELETE CASCADE",
)


def _first_bulk_load(conn: Connection, parsed: ParsedFile) -> bool:
    """Whether this is the first import into a PostgreSQL database, big enough to rebuild constraints for.

    Then no publication is stored (``_lock_cloud`` made concurrent first
    imports take turns), so nobody has anything to read from the tables it locks.
    """
    if conn.dialect.name != "postgresql" or sum(len(t.raw_prefixes) for t in parsed.tags) <= ANALYZE_AFTER_ROWS:
        return False
    return not conn.execute(text("SELECT EXISTS (SELECT 1 FROM publications)")).scalar()


@contextlib.contextmanager
def _rebuilt_after(conn: Connection, rebuild: bool, table: str, constraints: Sequence[str]) -> Iterator[None]:
    """With ``rebuild``: ``table``'s ``constraints`` are dropped for the writes inside and added again after.

    A key built once from all ~93,000 spans takes a third of the time of
    maintaining it row by row (server time of COPY and key: ~65 ms against
    ~105 ms), and three foreign keys checked by one query each instead of by
    a trigger per row and key (~9,000 look-ups) save ~30 ms more. In the
    import's transaction: a failure leaves them as they were, and adding them
    again checks every row, so a row that breaks one is refused as the COPY
    would have refused it.
    """
    names = [c.split(" ", 1)[0] for c in constraints]
    if rebuild:
        conn.exec_driver_sql(f"ALTER TABLE {table} " + ", ".join(f"DROP CONSTRAINT {n}" for n in names))
    yield
    if rebuild:
        conn.exec_driver_sql(f"ALTER TABLE {table} " + ", ".join(f"ADD CONSTRAINT {c}" for c in constraints))


#: The spans' index by tag (migration 0016), as the migration made it.
_SPAN_TAG_INDEX = "ix_prefix_spans_tag_id ON prefix_spans (tag_id, first_day, until_day)"


def _first_spans(conn: Connection, plan: ImportPlan) -> bool:
    """Whether the plan writes the database's first spans, enough of them to build the index by tag for."""
    return (sum(len(prefixes) for _, prefixes in plan.new_spans) > ANALYZE_AFTER_ROWS
            and not conn.execute(text("SELECT EXISTS (SELECT 1 FROM prefix_spans)")).scalar())


@contextlib.contextmanager
def _span_index_rebuilt(conn: Connection, rebuild: bool) -> Iterator[None]:
    """With ``rebuild`` (a first import): the spans' index by tag is dropped for the writes inside and built
    again after, once, from every row (maintained row by row, it cost a first import ~14 -> ~21x json.loads on
    both databases; built after, ~1x). In the import's transaction: a failure leaves it as it was."""
    if rebuild:
        drop_span_index(conn)
    yield
    if rebuild:
        build_span_index(conn)


def drop_span_index(conn: Connection) -> None:
    """Drop the spans' index by tag in ``conn``'s writing transaction, which must build it again before it commits
    (``build_span_index``): other connections never see it missing (on PostgreSQL, their reads of the spans wait
    for the commit). Dropped already (a backfill's batch of files drops it too): let be."""
    name = _SPAN_TAG_INDEX.split(" ", 1)[0]
    if conn.dialect.name == "postgresql":  # this schema's, never another's of the same name on the search path
        name = f'"{conn.execute(text("SELECT current_schema()")).scalar()}".{name}'
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def build_span_index(conn: Connection) -> None:
    """Build the spans' index by tag from every row (see ``drop_span_index``); there already: let be."""
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {_SPAN_TAG_INDEX}")


def _write_manifest(conn: Connection, cloud: str, publication_id: int, parsed: ParsedFile, before: Versions,
                    plan: ImportPlan, new_tag_ids: dict[str, int]) -> None:
    """Make the cloud's entry manifest describe the new newest publication."""
    old = before.manifest
    table = EntryManifest.__table__
    if old is not None and not plan.withdrawn and all(before.is_present(e.name) for e in plan.present):
        # The same tags as the week before: patch what changed, in place.
        if not plan.present:  # nothing did: rewriting the arrays would only leave dead copies (PostgreSQL)
            conn.execute(update(table).where(table.c.cloud == cloud).values(publication_id=publication_id))
            return
        position = {name: index for index, name in enumerate(old.names)}
        fingerprints, counts = bytearray(old.fingerprints), array("I", old.counts)
        for entry in plan.present:
            index = position[entry.name]
            fingerprints[16 * index:16 * index + 16] = entry.fingerprint
            counts[index] = entry.prefix_count
        conn.execute(update(table).where(table.c.cloud == cloud).values(
            publication_id=publication_id, fingerprints=bytes(fingerprints), prefix_counts=uint32s(counts),
        ))
        return
    known = before.rows_of(parsed.unchanged)  # fingerprints of the unchanged tags, in that order
    names = list(parsed.unchanged) + [e.name for e in plan.present]
    ids = [tag_id for tag_id, _, _, _ in known] + [e.tag_id or new_tag_ids[e.name] for e in plan.present]
    conn.execute(delete(table).where(table.c.cloud == cloud))
    conn.execute(insert(table), {
        "cloud": cloud, "publication_id": publication_id,
        "names": orjson.dumps(names),
        "fingerprints": b"".join([bytes(fp) for _, _, fp, _ in known] + [e.fingerprint for e in plan.present]),
        "tag_ids": uint32s(ids),
        "prefix_counts": uint32s([count for _, _, _, count in known] + [e.prefix_count for e in plan.present]),
    })
