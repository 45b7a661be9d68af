"""The import planner: what one import writes, computed from what it read, with no database access.

For a tag whose entry differs from its version at the previous publication
(day P), with content A there, new content N at the file's day d, and content
B at the following publication (day S, when the file is older than the newest):

* a version row is written at d; the version that held before d is written
  again at S when S had no row of its own, and S's row is dropped when it
  equals the new version;
* prefixes in A but not N end at d; if they come back at S (in B) the span is
  split and resumes at S;
* prefixes in N but not A start at d; a span that started at S now starts at
  d, otherwise the new span ends at S (or stays open).

The importer reads the inputs (versions before and at S, stored contents, tag
ids), calls ``plan_import``, and writes the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, NamedTuple, Sequence

from .. import diff as diffs
from ..models import day_key
from ..parse import ParsedFile, PrefixCache, ServiceTag, content_hash, encode_prefixes, normalize_against
from .packing import StoredText
from .records import TagChange, VersionInfo, absent_version
from .versions import Versions


class NewContent(NamedTuple):
    """A prefix set the import may have to store."""

    prefix_count: int
    encoded: bytes
    base: bytes | None = None  # the tag's previous content: a delta may be stored against it
    prefixes: tuple[str, ...] = ()  # the set, sorted (``encoded`` decoded): a backfill's next import's ``contents``


class PresentEntry(NamedTuple):
    """A tag of the file that was decoded (not skipped as unchanged)."""

    name: str
    tag_id: int | None  # None: new to the database
    fingerprint: bytes
    prefix_count: int


class SpanEnd(NamedTuple):
    """The span of ``prefix`` covering P ends at d."""

    tag_id: int
    prefix: str


class SpanSplit(NamedTuple):
    """The span of ``prefix`` covering P and S ends at d and resumes at S."""

    tag_id: int
    prefix: str


class SpanStartMove(NamedTuple):
    """The span of ``prefix`` that started at S now starts at d."""

    tag_id: int
    prefix: str


class NewSpans(NamedTuple):
    """Spans of ``tag`` that start at d (and end at S, if there is one)."""

    tag: str
    prefixes: Collection[str]


class Refingerprint(NamedTuple):
    """A version whose content is the file's but whose entry bytes differ: its new fingerprint."""

    tag_id: int
    valid_from: int
    entry_hash: bytes


@dataclass
class ImportPlan:
    """The writes one import makes, computed before any of them."""

    day: int                                                   # d
    next_day: int | None                                       # S, if the file is not the newest
    new_tags: list[str] = field(default_factory=list)
    contents: dict[bytes, NewContent] = field(default_factory=dict)  # by content hash
    versions: list[VersionInfo] = field(default_factory=list)         # new versions at d
    restore_at_next: list[VersionInfo] = field(default_factory=list)  # versions written again at S
    drop_at_next: list[str] = field(default_factory=list)             # tags whose row at S goes
    #: what each touched tag's version at S adds and removes once d is in place (its row kept or restored)
    counts_at_next: dict[str, tuple[int, int]] = field(default_factory=dict)
    end_spans: list[SpanEnd] = field(default_factory=list)
    split_spans: list[SpanSplit] = field(default_factory=list)
    move_span_starts: list[SpanStartMove] = field(default_factory=list)
    new_spans: list[NewSpans] = field(default_factory=list)
    refingerprint: list[Refingerprint] = field(default_factory=list)
    prefix_count: int = 0                                             # of the whole publication
    present: list[PresentEntry] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)                # published before, not now
    predecessors: dict[str, int] = field(default_factory=dict)        # tag -> valid_from of the version at P
    changes: list[TagChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bases: Mapping[bytes, StoredText] = field(default_factory=dict)  # the stored texts read: delta bases


def withdrawn_tags(parsed: ParsedFile, before: Versions) -> list[str]:
    """The tags published at P that the file no longer has."""
    changed_names = [t.name for t in parsed.tags]
    if len(parsed.unchanged) + sum(map(before.is_present, changed_names)) == before.present_count():
        return []  # every tag published before is in the file
    in_file = set(parsed.tag_names)
    return [name for name in before.present_names() if name not in in_file]


def plan_import(
    parsed: ParsedFile,
    source: str,
    *,
    before: Mapping[str, VersionInfo],
    after: Mapping[str, VersionInfo],
    next_day: int | None,
    contents: Mapping[bytes, tuple[str, ...]],
    tag_ids: Mapping[str, int],
    withdrawn: Sequence[str],
    unchanged_prefixes: int,
    new_spans_to: Callable[[NewSpans], None] | None = None,
) -> ImportPlan:
    """The plan for ``parsed``'s changed tags (``parsed.tags``) and the ``withdrawn`` ones.

    ``before``: the versions at P of (at least) those tags; ``after``: their
    versions at S (empty when the file is the newest); ``contents``: the prefix
    sets those versions point to; ``tag_ids``: ids of the tags not in
    ``before`` that the database knows; ``unchanged_prefixes``: the prefix count
    of the tags the file left unchanged; ``new_spans_to``: takes each tag's new
    spans as they are planned, instead of ``plan.new_spans`` (a first import
    sends them to the database meanwhile).
    """
    d = day_key(parsed.file_date)
    plan = ImportPlan(day=d, next_day=next_day, withdrawn=list(withdrawn), prefix_count=unchanged_prefixes)
    items: list[tuple[str, ServiceTag | None]] = [(t.name, t) for t in parsed.tags] + [(n, None) for n in withdrawn]
    seen_prefixes = PrefixCache()  # a prefix is often in several tags (AzureCloud has them all)
    for name, item in items:
        old_version = before.get(name)
        tag_id = old_version.tag_id if old_version else tag_ids.get(name)
        old = contents[old_version.content_hash] if old_version is not None else ()
        if item is not None:
            change = normalize_against(name, item.raw_prefixes, source, old, cache=seen_prefixes)
            plan.notes.extend(change.notes)
            prefixes, added, removed = change.prefixes, change.added, change.removed
            encoded = encode_prefixes(prefixes)
            digest = content_hash(prefixes, encoded)
            plan.contents[digest] = NewContent(len(prefixes), encoded,
                                               old_version.content_hash if old_version is not None else None,
                                               prefixes)
            plan.prefix_count += len(prefixes)
            plan.present.append(PresentEntry(name, tag_id, item.entry_hash, len(prefixes)))
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
                plan.refingerprint.append(
                    Refingerprint(old_version.tag_id, old_version.valid_from, new_version.entry_hash)
                )
            continue
        next_version = after.get(name)
        nxt = set(contents[next_version.content_hash]) if next_version is not None else set()
        # All of a tag's prefixes are new (a first import): its sorted tuple, so that the spans'
        # sort by prefix merges ~3,000 sorted runs instead of ordering 93,000 rows from sets.
        plan_spans(plan, name, tag_id, nxt, prefixes if len(added) == len(prefixes) else added, removed,
                   new_spans_to)
        plan_versions(plan, name, tag_id, new_version, old_version, next_version)
        if next_day is not None and name not in plan.drop_at_next:
            # The version at S now follows d's: it adds what S has and d has not, and removes the converse.
            now = set(prefixes)
            plan.counts_at_next[name] = (len(nxt - now), len(now - nxt))
        plan.changes.append(tag_change(name, old_version, new_version, len(added), len(removed)))
    return plan


def plan_spans(plan: ImportPlan, name: str, tag_id: int | None, nxt: Collection[str],
               added: Collection[str], removed: Collection[str],
               new_spans_to: Callable[[NewSpans], None] | None = None) -> None:
    """The span changes of one tag: ``added`` and ``removed`` relative to P, ``nxt`` the prefixes at S; new spans
    go to ``new_spans_to`` if given, else to ``plan.new_spans``."""
    opened = new_spans_to or plan.new_spans.append
    for prefix in removed:
        assert tag_id is not None  # only a stored tag has prefixes to remove
        plan.end_spans.append(SpanEnd(tag_id, prefix))
        if prefix in nxt:  # present again at S: the span that covered P and S is split
            plan.split_spans.append(SpanSplit(tag_id, prefix))
    if not nxt:  # the usual case: the newest publication
        if added:
            opened(NewSpans(name, added))
        return
    for prefix in added:
        if prefix in nxt:  # not present at P, present at S: its span started at S
            assert tag_id is not None  # only a stored tag has a version at S
            plan.move_span_starts.append(SpanStartMove(tag_id, prefix))
        else:
            opened(NewSpans(name, (prefix,)))


def plan_versions(plan: ImportPlan, name: str, tag_id: int | None, new_version: VersionInfo,
                  old_version: VersionInfo | None, next_version: VersionInfo | None) -> None:
    """The version rows of one tag: the new one at d, and what happens at S."""
    plan.versions.append(new_version)
    if old_version is not None:
        plan.predecessors[name] = old_version.valid_from
    if plan.next_day is None:
        return
    if next_version is not None and next_version.valid_from == plan.next_day:
        if next_version.same_as(new_version):
            plan.drop_at_next.append(name)
        return
    # S had no row of its own: what held before d held at S, and still must.
    plan.restore_at_next.append(old_version or absent_version(tag_id, name, plan.next_day))


def tag_change(name: str, old_version: VersionInfo | None, new_version: VersionInfo, added: int,
               removed: int) -> TagChange:
    was_present = old_version is not None and old_version.present
    if not was_present:
        status: diffs.Status = "appeared"
    elif not new_version.present:
        status = "withdrawn"
    else:
        status = "changed" if added or removed else "unchanged"
    before_number = old_version.change_number if was_present and old_version is not None else None
    return TagChange(
        tag=name, status=status, added=added, removed=removed,
        change_number_before=before_number,
        change_number_after=new_version.change_number,
        anomalies=diffs.change_number_anomalies(before_number, new_version.change_number, bool(added or removed))
        if new_version.present else (),
    )
