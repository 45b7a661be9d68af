"""Store stage: record publications and keep every tag's history as change.

An import inserts one publication into each tag's timeline at the file's date,
whatever order files arrive in. For a tag with state A at the previous
publication (day P), new state N at day d, and state B at the next publication
(day S, when the file is older than the newest one):

* prefixes in A but not N end at d; if they come back at S (in B) the span is
  split and resumes at S;
* prefixes in N but not A start at d; if they were to start at S, that span
  now starts at d, otherwise the new span ends at S (or stays open);
* a version row is written at d when the entry (content, changeNumber or
  metadata) differs from A's version; the version that held before d is
  written again at S when S had no row of its own, and S's row is dropped
  when it equals the new version.

Everything happens in one transaction, so a publication is stored whole or
not at all.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import diff as diffs
from .errors import ConflictError, NotFoundError, ParseError, StoreError
from .models import Publication, PrefixSpan, Tag, TagVersion, day_from_key, day_key
from .parse import ParsedFile, ServiceTag, content_hash, decode_document, file_cloud, normalize_prefixes, parse_document

log = logging.getLogger(__name__)

EMPTY_HASH = content_hash(())


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


@dataclass(frozen=True)
class VersionInfo:
    """A tag's version in effect at some publication."""

    tag_id: int
    valid_from: int
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


def absent_version(tag_id: int | None, valid_from: int) -> VersionInfo:
    """The version that records a tag as not published."""
    return VersionInfo(
        tag_id=tag_id or 0, valid_from=valid_from, present=False, change_number=None,
        metadata=("", 0, "", "", ""), prefix_count=0, content_hash=EMPTY_HASH, entry_hash=EMPTY_HASH,
    )


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


# ---------------------------------------------------------------- helpers


def _publication(row: Any) -> PublicationInfo:
    return PublicationInfo(
        id=row.id, cloud=row.cloud, file_date=row.file_date, change_number=row.change_number,
        sha256=row.sha256, source=row.source, imported_at=row.imported_at,
        tag_count=row.tag_count, prefix_count=row.prefix_count,
    )


#: For modules that read ``publications`` rows themselves (polls, status).
publication_from_row = _publication


def _version(row: Any) -> VersionInfo:
    return VersionInfo(
        tag_id=row.tag_id,
        valid_from=row.valid_from,
        present=bool(row.present),
        change_number=row.change_number,
        metadata=(row.region, row.region_id, row.platform, row.system_service, row.network_features),
        prefix_count=row.prefix_count,
        content_hash=bytes(row.content_hash),
        entry_hash=bytes(row.entry_hash),
    )


def _version_values(version: VersionInfo, publication_id: int, valid_from: int) -> dict[str, Any]:
    region, region_id, platform, system_service, features = version.metadata
    return {
        "tag_id": version.tag_id, "valid_from": valid_from, "publication_id": publication_id,
        "present": version.present, "change_number": version.change_number,
        "region": region, "region_id": region_id, "platform": platform,
        "system_service": system_service, "network_features": features,
        "prefix_count": version.prefix_count, "content_hash": version.content_hash,
        "entry_hash": version.entry_hash,
    }


def _translate(exc: SQLAlchemyError, doing: str) -> StoreError:
    detail = getattr(exc, "orig", None) or exc
    return StoreError(f"database error while {doing}: {str(detail).splitlines()[0]}")


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


def _neighbour_days(conn: Connection, cloud: str, day: dt.date) -> tuple[PublicationInfo | None, PublicationInfo | None]:
    table = Publication.__table__
    before = conn.execute(
        select(table).where(table.c.cloud == cloud, table.c.file_date < day).order_by(table.c.file_date.desc()).limit(1)
    ).first()
    after = conn.execute(
        select(table).where(table.c.cloud == cloud, table.c.file_date > day).order_by(table.c.file_date).limit(1)
    ).first()
    return (_publication(before) if before else None, _publication(after) if after else None)


def tag_ids(conn: Connection, cloud: str) -> dict[str, int]:
    return dict(conn.execute(select(Tag.name, Tag.id).where(Tag.cloud == cloud)).all())


def versions_at(conn: Connection, cloud: str, day: int, tag_id_filter: Sequence[int] | None = None) -> dict[int, VersionInfo]:
    """tag id -> the version in effect at ``day`` (withdrawn versions included)."""
    v = TagVersion.__table__
    latest = (
        select(v.c.tag_id, func.max(v.c.valid_from).label("valid_from"))
        .join(Tag.__table__, Tag.id == v.c.tag_id)
        .where(Tag.cloud == cloud, v.c.valid_from <= day)
        .group_by(v.c.tag_id)
    )
    if tag_id_filter is not None:
        latest = latest.where(v.c.tag_id.in_(list(tag_id_filter)))
    latest = latest.subquery()
    rows = conn.execute(
        select(v).join(latest, and_(v.c.tag_id == latest.c.tag_id, v.c.valid_from == latest.c.valid_from))
    )
    return {row.tag_id: _version(row) for row in rows}


def spans_at(conn: Connection, tag_id_list: Iterable[int], day: int) -> dict[int, dict[str, tuple[int, int | None]]]:
    """tag id -> {prefix: (first_day, until_day) of its span} for the prefixes present at ``day``."""
    ids = list(tag_id_list)
    result: dict[int, dict[str, tuple[int, int | None]]] = {i: {} for i in ids}
    if not ids:
        return result
    s = PrefixSpan.__table__
    query = select(s.c.tag_id, s.c.prefix, s.c.first_day, s.c.until_day).where(
        s.c.tag_id.in_(bindparam("ids", expanding=True)),
        s.c.first_day <= day,
        or_(s.c.until_day.is_(None), s.c.until_day > day),
    )
    # Chunked: some drivers cap the number of bound parameters.
    for start in range(0, len(ids), 500):
        for tag_id, prefix, first_day, until_day in conn.execute(query, {"ids": ids[start:start + 500]}):
            result[tag_id][prefix] = (first_day, until_day)
    return result


# ---------------------------------------------------------------- import


@dataclass
class _Plan:
    """The writes one import makes, computed before any of them."""

    new_tags: list[str] = field(default_factory=list)
    versions: list[tuple[str, VersionInfo]] = field(default_factory=list)        # (tag name, version at d)
    restore_at_next: list[tuple[str, VersionInfo]] = field(default_factory=list)  # versions re-written at S
    drop_at_next: list[int] = field(default_factory=list)                      # tag ids whose row at S goes
    end_spans: list[dict[str, Any]] = field(default_factory=list)              # span covering P ends at d
    split_spans: list[dict[str, Any]] = field(default_factory=list)            # ... and resumes at S
    move_span_starts: list[dict[str, Any]] = field(default_factory=list)       # span starting at S starts at d
    new_spans: list[dict[str, Any]] = field(default_factory=list)              # (tag, prefix) from d
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
    document = decode_document(data, source)
    cloud = file_cloud(document, source)
    if expected_cloud and cloud != expected_cloud:
        raise ParseError(f"{source}: is a {cloud} file, expected {expected_cloud}")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with engine.begin() as conn:
            _lock_cloud(conn, cloud)
            result = _import(conn, document, source, cloud, sha256, file_date, now or _utcnow)
            if result.outcome == "imported" and on_imported is not None:
                on_imported(conn, result)
            return result
    except IntegrityError as exc:
        # Another process imported the same publication between our check and insert.
        raise ConflictError(f"{source}: a concurrent import stored this publication first; run the import again") from exc
    except SQLAlchemyError as exc:
        raise _translate(exc, f"importing {source}") from exc


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _lock_cloud(conn: Connection, cloud: str) -> None:
    """Serialise imports of one cloud (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(f"watcher-import-{cloud}".encode(), digest_size=8).digest(), "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _import(conn, document, source, cloud, sha256, file_date, now) -> ImportResult:
    same_bytes = conn.execute(
        select(Publication.__table__).where(Publication.cloud == cloud, Publication.sha256 == sha256)
    ).first()
    if same_bytes:
        return ImportResult("already imported", _publication(same_bytes), reason="the same file (SHA-256) is already stored")

    probe = parse_document(document, source, sha256=sha256, file_date=file_date)  # validates date and structure
    day = probe.file_date
    existing = publication_by_day(conn, cloud, day)
    if existing is not None:
        return _compare_with_existing(conn, document, source, existing, sha256)

    previous, following = _neighbour_days(conn, cloud, day)
    ids = tag_ids(conn, cloud)
    names_by_id = {i: n for n, i in ids.items()}
    before = versions_at(conn, cloud, previous.day) if previous else {}
    known = {names_by_id[i]: v.entry_hash for i, v in before.items() if v.present}
    parsed = parse_document(document, source, sha256=sha256, file_date=day, known_entries=known)

    plan = _plan(conn, parsed, source, ids, before, previous, following)
    publication_id = _write(conn, parsed, source, plan, ids, following, now())
    row = conn.execute(select(Publication.__table__).where(Publication.id == publication_id)).one()
    return ImportResult(
        "imported",
        _publication(row),
        changes=tuple(sorted(plan.changes, key=lambda c: c.tag)),
        anomalies=diffs.publication_anomalies(previous.change_number if previous else None, parsed.change_number),
        notes=tuple(plan.notes),
        previous_day=previous.day if previous else None,
    )


def _compare_with_existing(conn, document, source, existing: PublicationInfo, sha256: str) -> ImportResult:
    """A file for a date already stored: the same content is fine, other content is a conflict."""
    ids = tag_ids(conn, existing.cloud)
    names_by_id = {i: n for n, i in ids.items()}
    stored = {names_by_id[i]: v for i, v in versions_at(conn, existing.cloud, existing.day).items() if v.present}
    parsed = parse_document(
        document, source, sha256=sha256, file_date=existing.file_date,
        known_entries={n: v.entry_hash for n, v in stored.items()},
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


def _plan(conn, parsed: ParsedFile, source, ids, before, previous, following) -> _Plan:
    plan = _Plan()
    d = day_key(parsed.file_date)
    next_day = following.day if following else None
    after = versions_at(conn, parsed.cloud, next_day) if following else {}

    # Tags whose entry differs from the previous version, and tags withdrawn.
    touched: list[ServiceTag | str] = list(parsed.tags)
    in_file = set(parsed.tag_names)
    for name, tag_id in ids.items():
        version = before.get(tag_id)
        if version is not None and version.present and name not in in_file:
            touched.append(name)  # withdrawn at d

    old_ids = [ids[t.name if isinstance(t, ServiceTag) else t] for t in touched
               if (t.name if isinstance(t, ServiceTag) else t) in ids]
    old_spans = spans_at(conn, [i for i in old_ids if i in before and before[i].present], previous.day) if previous else {}
    next_spans: dict[int, dict[str, int]] = {}
    if following:
        next_spans = spans_at(conn, [i for i in old_ids if i in after and after[i].present], next_day)

    for item in touched:
        name = item.name if isinstance(item, ServiceTag) else item
        tag_id = ids.get(name)
        old_version = before.get(tag_id) if tag_id is not None else None
        old = old_spans.get(tag_id, {}) if old_version is not None and old_version.present else {}
        nxt = next_spans.get(tag_id, {}) if tag_id is not None else {}
        if isinstance(item, ServiceTag):
            prefixes, notes = normalize_prefixes(name, item.raw_prefixes, source, known=old)
            plan.notes.extend(notes)
            new_version = VersionInfo(
                tag_id=tag_id or 0, valid_from=d, present=True, change_number=item.change_number,
                metadata=item.metadata, prefix_count=len(prefixes), content_hash=content_hash(prefixes),
                entry_hash=item.entry_hash,
            )
        else:
            prefixes = ()
            new_version = absent_version(tag_id, d)
        if tag_id is None:
            plan.new_tags.append(name)
        if old_version is not None and new_version.same_as(old_version):
            continue  # e.g. prefixes reordered: nothing to record
        new_set = set(prefixes)
        added = new_set.difference(old)
        removed = set(old).difference(new_set)
        _plan_spans(plan, tag_id, name, d, next_day, old, nxt, added, removed)
        _plan_versions(plan, name, tag_id, new_version, old_version, after.get(tag_id) if tag_id else None, next_day)
        plan.changes.append(_tag_change(name, old_version, new_version, len(added), len(removed)))
    return plan


Spans = Mapping[str, tuple[int, "int | None"]]


def _plan_spans(plan: _Plan, tag_id, name, d, next_day, old: Spans, nxt: Spans, added, removed) -> None:
    for prefix in removed:
        first_day, until_day = old[prefix]
        plan.end_spans.append({"tag_id": tag_id, "prefix": prefix, "first_day": first_day, "until_day": d})
        if prefix in nxt:  # present again at S: the span that covered P and S is split
            plan.split_spans.append({"tag_id": tag_id, "prefix": prefix, "first_day": next_day, "until_day": until_day})
    for prefix in added:
        if prefix in nxt and nxt[prefix][0] == next_day:
            plan.move_span_starts.append({"tag_id": tag_id, "prefix": prefix, "old_first": next_day, "first_day": d})
        else:
            plan.new_spans.append({"tag": name, "tag_id": tag_id, "prefix": prefix, "first_day": d,
                                   "until_day": next_day})


def _plan_versions(plan: _Plan, name, tag_id, new_version, old_version, next_version, next_day) -> None:
    plan.versions.append((name, new_version))
    if next_day is None:
        return
    if next_version is not None and next_version.valid_from == next_day:
        if next_version.same_as(new_version):
            plan.drop_at_next.append(tag_id)
        return
    # S had no row of its own: what held before d held at S, and still must.
    plan.restore_at_next.append((name, old_version or absent_version(tag_id, next_day)))


def _tag_change(name, old_version: VersionInfo | None, new_version: VersionInfo, added: int, removed: int) -> TagChange:
    was_present = old_version is not None and old_version.present
    if not was_present:
        status: diffs.Status = "appeared"
    elif not new_version.present:
        status = "withdrawn"
    else:
        status = "changed" if added or removed else "unchanged"
    return TagChange(
        tag=name, status=status, added=added, removed=removed,
        change_number_before=old_version.change_number if was_present else None,
        change_number_after=new_version.change_number,
        anomalies=diffs.change_number_anomalies(
            old_version.change_number if was_present else None, new_version.change_number, bool(added or removed)
        ) if new_version.present else (),
    )


def _write(conn, parsed: ParsedFile, source, plan: _Plan, ids: dict[str, int], following, imported_at) -> int:
    publication_id = conn.execute(
        insert(Publication.__table__).returning(Publication.__table__.c.id),
        {
            "cloud": parsed.cloud, "file_date": parsed.file_date, "change_number": parsed.change_number,
            "sha256": parsed.sha256, "source": source[:1024], "imported_at": imported_at,
            "tag_count": parsed.tag_count, "prefix_count": parsed.prefix_count,
        },
    ).scalar_one()
    if plan.new_tags:
        conn.execute(insert(Tag.__table__), [{"cloud": parsed.cloud, "name": n} for n in plan.new_tags])
        ids.update(
            conn.execute(select(Tag.name, Tag.id).where(Tag.cloud == parsed.cloud, Tag.name.in_(plan.new_tags))).all()
            if len(plan.new_tags) < 500 else tag_ids(conn, parsed.cloud)
        )
    v = TagVersion.__table__
    s = PrefixSpan.__table__
    d = day_key(parsed.file_date)
    if plan.versions:
        conn.execute(insert(v), [_version_values(_with_tag(ver, ids[name]), publication_id, d) for name, ver in plan.versions])
    if plan.drop_at_next:
        conn.execute(delete(v).where(v.c.tag_id.in_(plan.drop_at_next), v.c.valid_from == following.day))
    if plan.restore_at_next:
        conn.execute(insert(v), [
            _version_values(_with_tag(ver, ids[name]), following.id, following.day) for name, ver in plan.restore_at_next
        ])
    if plan.end_spans:
        conn.execute(
            update(s).where(s.c.tag_id == bindparam("b_tag"), s.c.prefix == bindparam("b_prefix"),
                            s.c.first_day == bindparam("b_first")).values(until_day=bindparam("b_until")),
            [{"b_tag": r["tag_id"], "b_prefix": r["prefix"], "b_first": r["first_day"], "b_until": r["until_day"]}
             for r in plan.end_spans],
        )
    if plan.split_spans:
        conn.execute(insert(s), plan.split_spans)
    if plan.move_span_starts:
        conn.execute(
            update(s).where(s.c.tag_id == bindparam("b_tag"), s.c.prefix == bindparam("b_prefix"),
                            s.c.first_day == bindparam("b_old")).values(first_day=bindparam("b_first")),
            [{"b_tag": r["tag_id"], "b_prefix": r["prefix"], "b_old": r["old_first"], "b_first": r["first_day"]}
             for r in plan.move_span_starts],
        )
    if plan.new_spans:
        conn.execute(insert(s), [
            {"tag_id": ids[r["tag"]], "prefix": r["prefix"], "first_day": r["first_day"], "until_day": r["until_day"]}
            for r in plan.new_spans
        ])
    return publication_id


def _with_tag(version: VersionInfo, tag_id: int) -> VersionInfo:
    return version if version.tag_id == tag_id else VersionInfo(
        tag_id, version.valid_from, version.present, version.change_number, version.metadata,
        version.prefix_count, version.content_hash, version.entry_hash,
    )


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


def tag_id(conn: Connection, cloud: str, name: str) -> int:
    """The id of a tag by name (case-insensitive, exact name wins)."""
    found = conn.execute(select(Tag.id, Tag.name).where(Tag.cloud == cloud, func.lower(Tag.name) == name.lower())).all()
    exact = [i for i, n in found if n == name]
    if exact or len(found) == 1:
        return (exact or [found[0][0]])[0]
    if not found:
        raise NotFoundError(f"unknown {cloud} tag {name!r}")
    raise NotFoundError(f"tag name {name!r} is ambiguous: {', '.join(n for _, n in found)}")


@dataclass(frozen=True)
class TagSnapshot:
    tag: str
    publication: PublicationInfo
    version: VersionInfo
    prefixes: tuple[str, ...]

    @property
    def since(self) -> dt.date:
        return day_from_key(self.version.valid_from)


def snapshot(conn: Connection, cloud: str, name: str, publication: PublicationInfo) -> TagSnapshot | None:
    """A tag's prefixes as published in ``publication``; None if it was not published then."""
    identity = tag_id(conn, cloud, name)
    real_name = conn.execute(select(Tag.name).where(Tag.id == identity)).scalar_one()
    version = versions_at(conn, cloud, publication.day, [identity]).get(identity)
    if version is None or not version.present:
        return None
    prefixes = spans_at(conn, [identity], publication.day)[identity]
    return TagSnapshot(real_name, publication, version, tuple(sorted(prefixes)))


def tag_states(conn: Connection, cloud: str, day: int, ids: Sequence[int]) -> dict[int, diffs.TagState | None]:
    versions = versions_at(conn, cloud, day, ids)
    present = [i for i in ids if i in versions and versions[i].present]
    spans = spans_at(conn, present, day)
    return {
        i: diffs.TagState(versions[i].change_number, frozenset(spans[i])) if i in spans else None
        for i in ids
    }


def changed_tag_ids(conn: Connection, cloud: str, first_day: int, last_day: int) -> list[int]:
    """Tags with any version row in (first_day, last_day]: the only ones that can differ."""
    low, high = min(first_day, last_day), max(first_day, last_day)
    v = TagVersion.__table__
    return list(conn.execute(
        select(v.c.tag_id).distinct().join(Tag.__table__, Tag.id == v.c.tag_id)
        .where(Tag.cloud == cloud, v.c.valid_from > low, v.c.valid_from <= high)
    ).scalars())


def diff_publications(
    conn: Connection, cloud: str, old: PublicationInfo, new: PublicationInfo, names: Sequence[str] | None = None
) -> list[diffs.TagDiff]:
    """Per-tag diffs from ``old`` to ``new``: the named tags, or every tag that changed."""
    if names is None:
        ids = changed_tag_ids(conn, cloud, old.day, new.day)
    else:
        ids = [tag_id(conn, cloud, n) for n in names]
    id_names = dict(conn.execute(select(Tag.id, Tag.name).where(Tag.id.in_(ids))).all()) if ids else {}
    before = tag_states(conn, cloud, old.day, ids)
    after = tag_states(conn, cloud, new.day, ids)
    result = []
    for i in ids:
        if before[i] is None and after[i] is None:
            continue  # not published at either point
        change = diffs.diff_tag(id_names[i], before[i], after[i])
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


def history(conn: Connection, cloud: str, name: str) -> tuple[str, list[HistoryEntry]]:
    identity = tag_id(conn, cloud, name)
    real_name = conn.execute(select(Tag.name).where(Tag.id == identity)).scalar_one()
    v, s = TagVersion.__table__, PrefixSpan.__table__
    versions = [_version(r) for r in conn.execute(select(v).where(v.c.tag_id == identity).order_by(v.c.valid_from))]
    starts = dict(conn.execute(
        select(s.c.first_day, func.count()).where(s.c.tag_id == identity).group_by(s.c.first_day)
    ).all())
    ends = dict(conn.execute(
        select(s.c.until_day, func.count()).where(s.c.tag_id == identity, s.c.until_day.is_not(None))
        .group_by(s.c.until_day)
    ).all())
    entries: list[HistoryEntry] = []
    previous: VersionInfo | None = None
    for version in versions:
        added, removed = starts.get(version.valid_from, 0), ends.get(version.valid_from, 0)
        was = previous.change_number if previous is not None and previous.present else None
        entries.append(HistoryEntry(
            date=day_from_key(version.valid_from), present=version.present, change_number=version.change_number,
            prefix_count=version.prefix_count, added=added, removed=removed,
            anomalies=diffs.change_number_anomalies(was, version.change_number, bool(added or removed)),
        ))
        previous = version
    return real_name, entries


@dataclass(frozen=True)
class LookupHit:
    tag: str
    prefix: str
    since: dt.date


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
    """Tags whose prefixes contain ``address`` in ``publication``, and since when (exact index look-ups)."""
    candidates = containing_networks(address)
    s = PrefixSpan.__table__
    day = publication.day
    rows = conn.execute(
        select(Tag.name, s.c.prefix, s.c.first_day)
        .join(Tag.__table__, Tag.id == s.c.tag_id)
        .where(s.c.prefix.in_(candidates), Tag.cloud == cloud, s.c.first_day <= day,
               or_(s.c.until_day.is_(None), s.c.until_day > day))
    ).all()
    return sorted((LookupHit(name, prefix, day_from_key(first)) for name, prefix, first in rows),
                  key=lambda h: (h.tag, h.prefix))


def present_tag_names(conn: Connection, cloud: str, publication: PublicationInfo | None = None) -> list[str]:
    """Names of the tags published in ``publication`` (default: the latest of the cloud)."""
    if publication is None:
        try:
            publication = resolve_publication(conn, cloud, "latest")
        except NotFoundError:
            return []
    versions = versions_at(conn, cloud, publication.day)
    ids = [i for i, v in versions.items() if v.present]
    if not ids:
        return []
    return sorted(conn.execute(select(Tag.name).where(Tag.id.in_(ids))).scalars())
