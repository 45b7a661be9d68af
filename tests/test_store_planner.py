"""The import planner (watcher.store.planner) on its own: span and version linking without a database.

Timeline used throughout: the previous publication P (2025-08-04), the file's
day d (2025-08-11) and, for a file older than the newest, the following
publication S (2025-08-18).
"""
from __future__ import annotations

import datetime as dt

from watcher.models import day_key
from watcher.parse import ParsedFile, ServiceTag, content_hash, normalize_prefixes
from watcher.store.planner import (
    NewSpans, PresentEntry, Refingerprint, SpanEnd, SpanSplit, SpanStartMove, plan_import, withdrawn_tags,
)
from watcher.store.records import EMPTY_HASH, VersionInfo, absent_version
from watcher.store.versions import Versions

P, D, S = dt.date(2025, 8, 4), dt.date(2025, 8, 11), dt.date(2025, 8, 18)
A_, B_, C_, E_ = "10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"
SOURCE = "ServiceTags_Public_20250811.json"


def tag(name: str, prefixes: list[str], change_number: int = 2, entry: bytes = b"entry-new") -> ServiceTag:
    return ServiceTag(name=name, change_number=change_number, region="", region_id=0, platform="Azure",
                      system_service="", network_features=("API",), raw_prefixes=prefixes,
                      entry_hash=entry.ljust(16, b"."))


def canonical(prefixes: list[str]) -> tuple[str, ...]:
    return normalize_prefixes("t", prefixes, "test")[0]


def version(tag_id: int, name: str, day: dt.date, prefixes: list[str], change_number: int = 1,
            entry: bytes = b"entry-old", valid_until: dt.date | None = None) -> VersionInfo:
    stored = canonical(prefixes)
    return VersionInfo(tag_id, name, day_key(day), day_key(valid_until) if valid_until else None, True,
                       change_number, ("", 0, "Azure", "", "API"), len(stored), content_hash(stored),
                       entry.ljust(16, b"."))


def parsed(*tags: ServiceTag, unchanged: tuple[str, ...] = ()) -> ParsedFile:
    return ParsedFile(cloud="public", change_number=100, file_date=D, sha256="0" * 64, tags=tags, unchanged=unchanged)


def contents_of(sets: dict[str, list[str]]) -> dict[bytes, tuple[str, ...]]:
    """The stored prefix sets the planner is given, by content hash."""
    found: dict[bytes, tuple[str, ...]] = {EMPTY_HASH: ()}
    for prefixes in sets.values():
        found[content_hash(canonical(prefixes))] = canonical(prefixes)
    return found


def plan(file: ParsedFile, before: dict[str, VersionInfo], after: dict[str, VersionInfo] | None = None,
         stored: dict[str, list[str]] | None = None, *, withdrawn: tuple[str, ...] = (),
         tag_ids: dict[str, int] | None = None, unchanged_prefixes: int = 0):
    return plan_import(
        file, SOURCE, before=before, after=after or {}, next_day=day_key(S) if after is not None else None,
        contents=contents_of(stored or {}), tag_ids=tag_ids or {}, withdrawn=list(withdrawn),
        unchanged_prefixes=unchanged_prefixes,
    )


def test_newest_file_ends_removed_spans_and_opens_added_ones():
    old = version(7, "Sql", P, [A_, B_])
    result = plan(parsed(tag("Sql", [B_, C_])), {"Sql": old}, stored={"p": [A_, B_]}, unchanged_prefixes=40)

    assert result.end_spans == [SpanEnd(7, A_)]
    assert result.new_spans == [NewSpans("Sql", {C_})]
    assert result.split_spans == [] and result.move_span_starts == []
    assert [(v.name, v.valid_from, v.content_hash) for v in result.versions] == [
        ("Sql", day_key(D), content_hash(canonical([B_, C_])))
    ]
    assert result.predecessors == {"Sql": day_key(P)}  # its valid_until becomes d
    assert result.restore_at_next == [] and result.drop_at_next == []
    assert result.present == [PresentEntry("Sql", 7, b"entry-new".ljust(16, b"."), 2)]
    assert result.prefix_count == 42
    (change,) = result.changes
    assert (change.status, change.added, change.removed, change.change_number_before, change.change_number_after) \
        == ("changed", 1, 1, 1, 2)


def test_older_file_splits_a_span_that_comes_back_and_moves_a_start_to_d():
    # P {A, B} -> d {B, C} -> S {A, C}: A ends at d and resumes at S; C's span from S now starts at d.
    old = version(7, "Sql", P, [A_, B_], valid_until=S)
    at_next = version(7, "Sql", S, [A_, C_], change_number=3)
    result = plan(parsed(tag("Sql", [B_, C_])), {"Sql": old}, {"Sql": at_next},
                  stored={"p": [A_, B_], "s": [A_, C_]})

    assert result.end_spans == [SpanEnd(7, A_)]
    assert result.split_spans == [SpanSplit(7, A_)]
    assert result.move_span_starts == [SpanStartMove(7, C_)]
    assert result.new_spans == []
    # S has a row of its own that differs from d's: it stays, and nothing is restored.
    assert result.restore_at_next == [] and result.drop_at_next == []


def test_older_file_bounds_a_new_span_at_the_following_publication():
    old = version(7, "Sql", P, [A_])
    at_next = version(7, "Sql", S, [A_, E_])
    result = plan(parsed(tag("Sql", [A_, C_])), {"Sql": old}, {"Sql": at_next}, stored={"p": [A_], "s": [A_, E_]})
    # C is not at S: a span of its own from d (the writer ends it at S).
    assert result.new_spans == [NewSpans("Sql", (C_,))]
    assert result.end_spans == [] and result.move_span_starts == []
    assert result.next_day == day_key(S)


def test_older_file_restores_the_previous_version_at_s_when_s_had_no_row():
    old = version(7, "Sql", P, [A_, B_])  # still in force at S: S has no row of its own
    result = plan(parsed(tag("Sql", [B_])), {"Sql": old}, {"Sql": old}, stored={"p": [A_, B_]})

    assert result.restore_at_next == [old]
    assert result.drop_at_next == []
    # A ends at d, and, being in force again at S, resumes there.
    assert result.split_spans == [SpanSplit(7, A_)]


def test_older_file_drops_the_row_at_s_that_equals_the_new_version():
    old = version(7, "Sql", P, [A_])
    new_tag = tag("Sql", [A_, B_], change_number=2)
    same_at_next = version(7, "Sql", S, [A_, B_], change_number=2)
    result = plan(parsed(new_tag), {"Sql": old}, {"Sql": same_at_next}, stored={"p": [A_], "s": [A_, B_]})

    assert result.drop_at_next == ["Sql"]
    assert result.restore_at_next == []
    assert result.move_span_starts == [SpanStartMove(7, B_)]  # B's span from S now starts at d


def test_a_withdrawn_tag_gets_an_absent_version_and_all_its_spans_end():
    old = version(7, "Sql", P, [A_, B_])
    result = plan(parsed(), {"Sql": old}, stored={"p": [A_, B_]}, withdrawn=("Sql",))

    assert result.versions == [absent_version(7, "Sql", day_key(D))]
    assert sorted(result.end_spans) == [SpanEnd(7, A_), SpanEnd(7, B_)]
    assert result.withdrawn == ["Sql"]
    assert result.changes[0].status == "withdrawn" and result.changes[0].removed == 2
    assert result.present == []


def test_a_tag_new_to_the_database_is_created_and_appears():
    result = plan(parsed(tag("Storage", [A_, B_])), {})

    assert result.new_tags == ["Storage"]
    assert result.versions[0].tag_id == 0  # the writer fills in the id it creates
    assert result.new_spans == [NewSpans("Storage", (A_, B_))]  # all new: the sorted tuple, in key order
    assert result.predecessors == {}
    assert result.changes[0].status == "appeared" and result.changes[0].change_number_before is None
    assert result.present == [PresentEntry("Storage", None, b"entry-new".ljust(16, b"."), 2)]


def test_a_tag_coming_back_keeps_its_id_and_makes_no_new_tag():
    result = plan(parsed(tag("Storage", [A_])), {}, tag_ids={"Storage": 9})
    assert result.new_tags == []
    assert result.versions[0].tag_id == 9


def test_same_content_with_other_entry_bytes_only_records_the_new_fingerprint():
    old = version(7, "Sql", P, [A_, B_], change_number=2)
    result = plan(parsed(tag("Sql", [B_, A_], change_number=2, entry=b"reordered")), {"Sql": old},
                  stored={"p": [A_, B_]})

    assert result.refingerprint == [Refingerprint(7, day_key(P), b"reordered".ljust(16, b"."))]
    assert result.versions == [] and result.changes == []
    assert result.end_spans == [] and result.new_spans == []


def test_host_bits_are_repaired_and_noted():
    result = plan(parsed(tag("Sql", ["10.0.0.1/24"])), {})
    assert result.new_spans == [NewSpans("Sql", (A_,))]
    assert result.notes  # the repair is reported


def test_withdrawn_tags_are_the_published_ones_missing_from_the_file():
    fingerprints = {
        "Sql": (7, True, b"a" * 16, 2),
        "Storage": (8, True, b"b" * 16, 3),
        "Gone": (9, False, EMPTY_HASH, 0),  # withdrawn before: not withdrawn again
    }
    before = Versions(None, day_key(P), fingerprints)
    assert withdrawn_tags(parsed(tag("Sql", [A_])), before) == ["Storage"]
    assert withdrawn_tags(parsed(tag("Sql", [A_]), unchanged=("Storage",)), before) == []
