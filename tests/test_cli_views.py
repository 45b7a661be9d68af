"""The CLI's text views are pure functions of the library's values: no database, no printing."""
from __future__ import annotations

import datetime as dt

import orjson

from watcher import pipeline, store
from watcher.cli import views
from watcher.diff import TagState, diff_tag

UTC = dt.timezone.utc
OLD = store.PublicationInfo(1, "public", dt.date(2025, 10, 13), 373, "a" * 64, "old.json",
                            dt.datetime(2025, 10, 14, 8, 0), 2, 5)
NEW = store.PublicationInfo(2, "public", dt.date(2025, 10, 28), 375, "b" * 64, "new.json",
                            dt.datetime(2025, 10, 29, 8, 0, tzinfo=UTC), 2, 6)


def test_a_reaggregation_reads_as_no_net_change_and_its_json_names_both_publications() -> None:
    change = diff_tag("Storage.X", TagState(44, frozenset({"10.0.0.0/24", "10.0.1.0/24"})),
                      TagState(45, frozenset({"10.0.0.0/23"})))
    lines = views.diff_lines(OLD, NEW, [change])
    assert lines[0] == "public: 2025-10-13 (changeNumber 373) -> 2025-10-28 (changeNumber 375): 1 tag(s)"
    assert lines[1] == "Storage.X: changed (changeNumber 44 -> 45), +1 -2 prefixes"
    assert "  net address space: no net change (re-aggregation)" in lines
    data = change.to_json(OLD, NEW)
    assert data["from"] == {"date": "2025-10-13", "change_number": 44, "file_change_number": 373, "resolved_from": None}
    assert data["to"] == {"date": "2025-10-28", "change_number": 45, "file_change_number": 375, "resolved_from": None}
    assert data["net_added"] == data["net_removed"] == [] and data["added"] == ["10.0.0.0/23"]


def test_a_publication_has_one_json_shape_in_utc() -> None:
    naive, aware = OLD.to_json(), NEW.to_json()
    assert set(naive) == set(aware) == {"id", "cloud", "date", "change_number", "sha256", "source", "imported_at",
                                        "tags", "prefixes", "missed_before", "parse_warnings"}
    assert naive["imported_at"] == "2025-10-14T08:00:00+00:00"  # SQLite's naive times are UTC
    assert orjson.loads(orjson.dumps(aware)) == aware


def test_poll_views_say_what_happened_and_the_json_carries_the_import() -> None:
    result = store.ImportResult("imported", NEW, changes=(
        store.TagChange("Storage.X", "changed", 1, 2, 44, 45, ()),
        store.TagChange("Storage.Y", "unchanged", 0, 0, 3, 3, ()),
    ))
    at = dt.datetime(2025, 10, 29, 8, 0, tzinfo=UTC)
    new = pipeline.PollOutcome("public", "new", "https://example.test/new.json", NEW.file_date, at, at,
                               sha256=NEW.sha256, result=result, publication=NEW)
    assert views.describe_poll(new) == (
        "public: new: public 2025-10-28 (changeNumber 375): imported 2 tags, 6 prefixes; 1 changed, "
        "0 appeared, 0 withdrawn; +1 -2 prefixes")
    data = new.to_json()
    assert data["publication"] == NEW.to_json() and data["import"]["changes"] == [
        {"tag": "Storage.X", "status": "changed", "added": 1, "removed": 2, "change_number_before": 44,
         "change_number_after": 45, "anomalies": []}]
    skipped = pipeline.PollOutcome("public", "skipped-known-url", "https://example.test/new.json", NEW.file_date,
                                   at, at, publication=NEW)
    assert "was imported before (2025-10-28); not downloaded" in views.describe_poll(skipped)
    assert skipped.to_json()["import"] is None and orjson.dumps(skipped.to_json())


def test_empty_lists_say_so() -> None:
    assert views.publication_lines("usgov", []) == ["no usgov publications imported yet"]
    assert views.lookup_lines("10.0.0.1", NEW, []) == ["10.0.0.1 is in no public tag of 2025-10-28"]
    assert views.ticket_list_lines([], "open") == ["no tickets in state open"]
    assert views.delivery_lines([]) == ["nothing due"]
    assert views.watch_lines([])[0].startswith("no registries configured")
