"""``watcher db check``: the database's invariants, checked.

An older, laxer version may have stored what today's gate refuses (a tag name
with a newline, a prefix with a scope id). Readers skip such rows instead of
failing on them (see ``diff.diff_tag``); this check reports them, so an
operator learns what is there and can decide. Read-only: it changes nothing.

Checked:

* every tag name passes today's name gate;
* every stored prefix set (``contents``) decodes (a delta through its bases, each
  stored, at the depth it says), hashes to its key, has as many prefixes as it
  says, and each prefix passes today's prefix gate (plain, canonical);
* every prefix of the address index (``prefix_spans``) passes the gate;
* every tag has at most one current version (``valid_until`` NULL), and each
  version's prefix count is its content's, and so are its sizes where copied;
* each version's additions and removals are what the prefix spans starting and
  ending on its day count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from . import store
from .errors import StoreError, database_detail
from .models import Content, PrefixSpan, Tag, TagVersion
from .parse import content_hash, passes_prefix_gate, passes_tag_name_gate
from .store.packing import MAX_DEPTH, split_text
from .store.series import SIZE_COLUMNS

#: Violations listed per check; the rest are counted (a poisoned import can leave thousands).
MAX_LISTED = 20
#: Content rows read per batch.
BATCH = 200


@dataclass(frozen=True)
class CheckResult:
    """One invariant: how many rows were looked at, and what breaks it."""

    name: str
    checked: int
    violations: tuple[str, ...] = ()
    #: violations beyond those listed
    more: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "checked": self.checked,
                "violations": list(self.violations), "more": self.more}


@dataclass(frozen=True)
class DatabaseCheck:
    results: tuple[CheckResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [r.to_json() for r in self.results]}


def check_database(engine: Engine) -> DatabaseCheck:
    """Check every invariant; StoreError if the database cannot be read at all."""
    try:
        with engine.connect() as conn:
            return DatabaseCheck((
                _tag_names(conn), _contents(conn), _spans(conn), _current_versions(conn), _version_counts(conn),
                _version_changes(conn),
            ))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot check the database: {database_detail(exc)}") from None


class _Collector:
    def __init__(self, name: str) -> None:
        self.name, self.checked, self.found, self.total = name, 0, [], 0

    def add(self, violation: str) -> None:
        self.total += 1
        if len(self.found) < MAX_LISTED:
            self.found.append(violation)

    def result(self) -> CheckResult:
        return CheckResult(self.name, self.checked, tuple(self.found), self.total - len(self.found))


def _shown(text: str) -> str:
    return repr(text[:80]) + (f" (cut; {len(text)} characters)" if len(text) > 80 else "")


def _tag_names(conn: Connection) -> CheckResult:
    found = _Collector("tag names pass the gate")
    for tag_id, cloud, name in conn.execute(select(Tag.id, Tag.cloud, Tag.name).order_by(Tag.id)):
        found.checked += 1
        if not passes_tag_name_gate(name):
            found.add(f"tag {tag_id} ({cloud}): name {_shown(name)} is refused by today's gate")
    return found.result()


def _content_batches(conn: Connection) -> Iterator[list[tuple[bytes, int, bytes | None, int | None]]]:
    rows = [(bytes(h), n, None if b is None else bytes(b), d) for h, n, b, d in conn.execute(
        select(Content.hash, Content.prefix_count, Content.base_hash, Content.depth).order_by(Content.hash))]
    for start in range(0, len(rows), BATCH):
        yield rows[start:start + BATCH]


def _contents(conn: Connection) -> CheckResult:
    found = _Collector("stored prefixes pass the gate")
    depths = {h: d for h, d in conn.execute(select(Content.hash, Content.depth).where(Content.depth.is_not(None)))}
    for batch in _content_batches(conn):
        try:
            # The store's own reading path: deltas are decoded through their bases.
            loaded = store.load_texts(conn, [h for h, *_ in batch], cached=False)
        except Exception:  # a row that does not decompress, a missing base: find which, go on
            loaded = {}
            for digest, *_ in batch:
                try:
                    loaded.update(store.load_texts(conn, [digest], cached=False))
                except Exception as exc:
                    found.add(f"content {digest.hex()[:12]}…: cannot be read ({type(exc).__name__}: {exc})")
        for digest, count, base, depth in batch:
            found.checked += 1
            if digest not in loaded:
                continue  # reported above
            if base is not None:
                expected = depths.get(base, 0) + 1  # a full copy's depth is NULL: 0
                if depth != expected or depth > MAX_DEPTH:
                    found.add(f"content {digest.hex()[:12]}…: a delta of depth {depth}, expected {expected} "
                              f"(at most {MAX_DEPTH})")
            elif depth is not None:
                found.add(f"content {digest.hex()[:12]}…: a full copy that says depth {depth}")
            text = loaded[digest].text
            if content_hash((), text) != digest:
                found.add(f"content {digest.hex()[:12]}…: decodes to a set of another hash")
            prefixes = split_text(text)
            if len(prefixes) != count:
                found.add(f"content {digest.hex()[:12]}…: says {count} prefixes, holds {len(prefixes)}")
            for prefix in prefixes:
                if not passes_prefix_gate(prefix):
                    found.add(f"content {digest.hex()[:12]}… ({_tags_of(conn, digest)}): prefix {_shown(prefix)} "
                              "is refused by today's gate")
    return found.result()


def _tags_of(conn: Connection, digest: bytes) -> str:
    rows = conn.execute(
        select(Tag.cloud, Tag.name).join(TagVersion, TagVersion.tag_id == Tag.id)
        .where(TagVersion.content_hash == digest).distinct().limit(3)
    ).all()
    return ", ".join(f"{cloud} {_shown(name)}" for cloud, name in rows) or "no tag"


def _spans(conn: Connection) -> CheckResult:
    found = _Collector("indexed prefixes pass the gate")
    for prefix, tag_id in conn.execute(select(PrefixSpan.prefix, PrefixSpan.tag_id).distinct()):
        found.checked += 1
        if not passes_prefix_gate(prefix):
            found.add(f"prefix index: tag {tag_id} has prefix {_shown(prefix)}, refused by today's gate")
    return found.result()


def _current_versions(conn: Connection) -> CheckResult:
    found = _Collector("one current version per tag")
    found.checked = conn.execute(select(func.count()).select_from(Tag)).scalar_one()
    rows = conn.execute(
        select(TagVersion.tag_id, func.count()).where(TagVersion.valid_until.is_(None))
        .group_by(TagVersion.tag_id).having(func.count() > 1)
    )
    for tag_id, count in rows:
        found.add(f"tag {tag_id} has {count} current versions")
    return found.result()


#: Versions whose copied sizes (migration 0018) are not their content's: copied, and the content's missing or other.
_SIZES_AGAINST_CONTENTS = (
    f"SELECT v.tag_id, v.valid_from, {', '.join(f'v.{n}' for n in SIZE_COLUMNS)}, {', '.join(f'c.{n}' for n in SIZE_COLUMNS)} "
    "FROM tag_versions v JOIN contents c ON c.hash = v.content_hash WHERE v.v4_prefixes IS NOT NULL AND ("
    + " OR ".join(f"c.{n} IS NULL OR v.{n} IS NULL OR v.{n} <> c.{n}" for n in SIZE_COLUMNS) + ")"
)


def _version_counts(conn: Connection) -> CheckResult:
    found = _Collector("version prefix counts and sizes match their content")
    found.checked = conn.execute(select(func.count()).select_from(TagVersion)).scalar_one()
    rows = conn.execute(
        select(TagVersion.tag_id, TagVersion.valid_from, TagVersion.prefix_count, Content.prefix_count)
        .join(Content, Content.hash == TagVersion.content_hash)
        .where(TagVersion.present.is_(True), TagVersion.prefix_count != Content.prefix_count)
    )
    for tag_id, valid_from, version_count, content_count in rows:
        found.add(f"tag {tag_id} version of {valid_from}: {version_count} prefixes, its content has {content_count}")
    for tag_id, valid_from, *sizes in conn.execute(text(_SIZES_AGAINST_CONTENTS)):
        found.add(f"tag {tag_id} version of {valid_from}: sizes {tuple(sizes[:4])}, its content's "
                  f"{tuple(sizes[4:])}")
    return found.result()


_CHANGES_AGAINST_SPANS = (
    "SELECT v.tag_id, v.valid_from, v.added_count, v.removed_count, coalesce(a.n, 0), coalesce(r.n, 0) "
    "FROM tag_versions v "
    "LEFT JOIN (SELECT tag_id, first_day AS day, count(*) AS n FROM prefix_spans GROUP BY tag_id, first_day) a "
    "ON a.tag_id = v.tag_id AND a.day = v.valid_from "
    "LEFT JOIN (SELECT tag_id, until_day AS day, count(*) AS n FROM prefix_spans WHERE until_day IS NOT NULL "
    "GROUP BY tag_id, until_day) r ON r.tag_id = v.tag_id AND r.day = v.valid_from "
    "WHERE v.added_count IS NULL OR v.removed_count IS NULL "
    "OR v.added_count <> coalesce(a.n, 0) OR v.removed_count <> coalesce(r.n, 0)"
)


def _version_changes(conn: Connection) -> CheckResult:
    """The additions and removals stored with each version (the tag page's history reads them) are what the
    prefix spans starting and ending on its day count."""
    found = _Collector("version additions and removals match the prefix spans")
    found.checked = conn.execute(select(func.count()).select_from(TagVersion)).scalar_one()
    for tag_id, valid_from, added, removed, spans_added, spans_removed in conn.execute(text(_CHANGES_AGAINST_SPANS)):
        found.add(f"tag {tag_id} version of {valid_from}: stores +{added} -{removed}, "
                  f"its spans say +{spans_added} -{spans_removed}")
    return found.result()
