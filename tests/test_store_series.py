"""store.series.tag_series reads a tag's history from its versions (their stored sizes, additions and removals):
its entries equal store.history's, its sizes a recount of every version's snapshot, and every version's stored
additions and removals what its prefix spans say, for a synthetic history imported out of order (spans split
and moved, the following versions recounted), on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import orjson
import pytest
import sqlalchemy as sa

from benchmarks.synthetic import Generator
from tests.conftest import file_bytes
from watcher import address_space, db, store
from watcher.store import series

START = dt.date(2021, 3, 1)


def test_the_series_from_spans_equals_history_and_a_recount_of_each_version(engine: sa.Engine, servicetags_dir) -> None:
    base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
    files = list(Generator(orjson.loads(file_bytes(base)), "china", START, seed=5).weeks(24))
    late = {files[5].name, files[11].name, files[12].name, files[20].name}
    for file in [f for f in files if f.name not in late] + [f for f in files if f.name in late]:
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
    with engine.connect() as conn:
        pubs = {p.file_date: p for p in store.publications(conn, "china")}
        busiest = conn.execute(sa.text(
            "SELECT t.name FROM tags t JOIN tag_versions v ON v.tag_id = t.id WHERE t.cloud = 'china' "
            "GROUP BY t.name ORDER BY count(*) DESC, t.name LIMIT 6")).scalars().all()
        assert "AzureCloud" in busiest
        lengths = []
        for name in busiest:
            found = series.tag_series(conn, "china", name.lower())  # found case-insensitively, then by its id
            real, entries = store.history(conn, "china", name)
            assert found.name == real == name
            assert found.entries == entries
            assert found.dates == sorted(pubs) and len(found.dates) == len(pubs)
            assert series.tag_series(conn, "china", name) == found  # named as stored: read with the dates
            lengths.append(len(entries))
            for entry in entries:
                snap = store.snapshot(conn, "china", name, pubs[entry.date]) if entry.present else None
                assert found.sizes[entry.date] == address_space.family_sizes(snap.prefixes if snap else ()), \
                    (name, entry.date)
        assert max(lengths) > 8 and sum(1 for n in lengths if n > 3) >= 3, lengths  # long histories compared
    # Every version's stored additions and removals (the import's, those after a late file recounted) are what
    # the spans starting and ending on its day count; the series read them, not the spans.
    assert stored_counts(engine) == counts_from_spans(engine)
    assert None not in {n for pair in stored_counts(engine).values() for n in pair}


def stored_counts(engine: sa.Engine) -> dict[tuple[int, int], tuple]:
    with engine.connect() as conn:
        return {(t, f): (a, r) for t, f, a, r in conn.execute(sa.text(
            "SELECT tag_id, valid_from, added_count, removed_count FROM tag_versions"))}


def counts_from_spans(engine: sa.Engine) -> dict[tuple[int, int], tuple]:
    with engine.connect() as conn:
        return {(t, f): (a, r) for t, f, a, r in conn.execute(sa.text(
            "SELECT v.tag_id, v.valid_from, "
            "(SELECT count(*) FROM prefix_spans s WHERE s.tag_id = v.tag_id AND s.first_day = v.valid_from), "
            "(SELECT count(*) FROM prefix_spans s WHERE s.tag_id = v.tag_id AND s.until_day = v.valid_from) "
            "FROM tag_versions v"))}


def test_migration_0017_counts_each_versions_changes_and_a_version_without_them_is_counted_from_spans(
        db_url, servicetags_dir) -> None:
    engine = db.open_database(db_url)
    try:
        base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
        files = list(Generator(orjson.loads(file_bytes(base)), "china", START, seed=7).weeks(10))
        for file in files[:4] + files[5:] + files[4:5]:  # one late: the versions after it recounted
            assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
        imported = stored_counts(engine)
        assert imported == counts_from_spans(engine) and sum(a + r for a, r in imported.values()) > 100
        with engine.connect() as conn:
            before = series.tag_series(conn, "china", "AzureCloud")
            _real, history = store.history(conn, "china", "AzureCloud")
        assert before.entries == history and len(history) > 5
        db.downgrade(engine, "0016")
        with engine.connect() as conn:
            assert {"added_count", "removed_count"}.isdisjoint(
                c["name"] for c in sa.inspect(conn).get_columns("tag_versions"))
        db.upgrade(engine)
        assert stored_counts(engine) == imported  # counted again from the spans by the migration
        with engine.begin() as conn:  # a version without its counts: the series counts the tag's spans
            conn.execute(sa.text("UPDATE tag_versions SET added_count = NULL, removed_count = NULL "
                                 "WHERE valid_from = (SELECT max(valid_from) FROM tag_versions)"))
        with engine.connect() as conn:
            assert series.tag_series(conn, "china", "AzureCloud") == before
    finally:
        engine.dispose()


SIZE_COLUMNS = ("v4_prefixes", "v6_prefixes", "v4_addresses", "v6_networks_64")


def stored_sizes(engine: sa.Engine) -> dict[bytes, tuple]:
    with engine.connect() as conn:
        return {bytes(h): tuple(rest) for h, *rest in conn.execute(sa.text(
            f"SELECT hash, {', '.join(SIZE_COLUMNS)} FROM contents"))}


def test_a_set_is_counted_by_the_first_view_that_shows_it_and_migration_0015_counts_them_again(
        db_url, servicetags_dir) -> None:
    from tests.test_store_deltas import WEEKS, import_week, weekly_sets
    from watcher import db
    from watcher.store.packing import load_texts, split_text

    engine = db.open_database(db_url)
    try:
        base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
        for file in Generator(orjson.loads(file_bytes(base)), "china", START, seed=5).weeks(4):
            assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
        sets = weekly_sets(4)  # a big tag stored as deltas against its previous set
        for number, day in enumerate(WEEKS[:4], start=1):
            import_week(engine, day, sets[number - 1], number)
        # The import counts nothing (it would cost it 0.5-6x json.loads); the first view counts and keeps.
        assert set(stored_sizes(engine).values()) == {(None, None, None, None)}
        with engine.connect() as conn:
            before = series.tag_series(conn, "china", "AzureCloud")
        kept = {h: sizes for h, sizes in stored_sizes(engine).items() if sizes[0] is not None}
        with engine.connect() as conn:
            texts = load_texts(conn, kept, cached=False)
            assert conn.execute(sa.text("SELECT count(*) FROM contents WHERE depth IS NOT NULL")).scalar() > 0
            assert series.tag_series(conn, "china", "AzureCloud") == before  # from the kept sizes now
        assert len(kept) >= 1 and kept == {h: address_space.family_sizes(split_text(t.text)) for h, t in texts.items()}

        db.downgrade(engine, "0014")
        with engine.connect() as conn:
            assert set(SIZE_COLUMNS).isdisjoint(c["name"] for c in sa.inspect(conn).get_columns("contents"))
        db.upgrade(engine)
        written = stored_sizes(engine)  # the upgrade counts every stored set
        with engine.connect() as conn:
            texts = load_texts(conn, written, cached=False)
            assert series.tag_series(conn, "china", "AzureCloud") == before
        assert set(texts) == set(written) and len(written) > 100
        assert written == {h: address_space.family_sizes(split_text(t.text)) for h, t in texts.items()}
        assert any(s[1] for s in written.values()) and any(s[3] > 1 for s in written.values())  # IPv6 among them
        with engine.begin() as conn:  # a set stored without its sizes (nor its versions) is counted when read
            for table in ("contents", "tag_versions"):
                conn.execute(sa.text(f"UPDATE {table} SET {', '.join(f'{c} = NULL' for c in SIZE_COLUMNS)}"))
        with engine.connect() as conn:
            assert series.tag_series(conn, "china", "AzureCloud") == before
        again = {h: sizes for h, sizes in stored_sizes(engine).items() if sizes[0] is not None}
        assert again and again.items() <= written.items()  # AzureCloud's sets kept again, as counted before
    finally:
        engine.dispose()


def test_a_set_too_big_for_its_sizes_columns_is_stored_without_them_and_counted_when_read(engine: sa.Engine) -> None:
    from tests.factory import build_file, file_name

    weeks = [("20250101", ["10.0.0.0/24", "2001:db8::/48"]), ("20250108", ["10.0.0.0/24", "::/0"]),
             ("20250115", ["10.0.0.0/24", "::/1", "8000::/1"])]
    for number, (day, prefixes) in enumerate(weeks, start=1):
        outcome = store.import_bytes(engine, build_file({"Wide": prefixes}, change_number=number), file_name(day))
        assert outcome.outcome == "imported"
    with engine.connect() as conn:
        found = series.tag_series(conn, "public", "Wide")
    with engine.connect() as conn:  # the sizes the view counted are kept, but for the two too big for them
        nulls = conn.execute(sa.text(
            "SELECT count(*) FROM contents WHERE v6_networks_64 IS NULL AND prefix_count > 0")).scalar()
    assert nulls == 2  # ::/0, and ::/1 with 8000::/1: 2**64 /64 networks each
    assert list(found.sizes.values()) == [(1, 1, 256, 1 << 16), (1, 1, 256, 1 << 64), (1, 2, 256, 1 << 64)]


def test_a_run_of_sets_counted_one_from_the_next_equals_a_count_of_each(engine: sa.Engine) -> None:
    """A first view counts many uncounted sets as a run (each from the one before): nested blocks uncovered and
    covered again, a change undone (the same set twice), a withdrawal and a return."""
    from tests.factory import build_file, file_name

    first = ["10.0.0.0/16", "10.0.1.0/24", "10.0.2.0/24", "2001:db8::/32", "2001:db8:1::/48"]
    weeks = [first, ["10.0.1.0/24", "10.0.2.0/24", "2001:db8:1::/48", "20.0.0.0/8"], first, None,
             ["10.0.1.0/24", "10.0.0.0/15", "2001:db8::/31"], ["10.0.1.0/24"]]
    days = [f"2025{month:02d}01" for month in range(1, len(weeks) + 1)]
    for number, (day, prefixes) in enumerate(zip(days, weeks), start=1):
        tags = {"Other": ["30.0.0.0/24"], **({"Run": prefixes} if prefixes is not None else {})}
        assert store.import_bytes(engine, build_file(tags, change_number=number), file_name(day)).outcome == "imported"
    with engine.connect() as conn:
        found = series.tag_series(conn, "public", "Run")
    expected = [address_space.family_sizes(p or ()) for p in weeks]
    assert list(found.sizes.values()) == expected
    assert expected[1] == (3, 1, 2 * 256 + (1 << 24), 1 << 16) and expected[4][2] == 1 << 17


def test_sets_are_counted_from_their_text_where_the_spans_disagree_with_them(engine: sa.Engine) -> None:
    from tests.factory import build_file, file_name

    weeks = [["10.0.0.0/24", "10.0.1.0/24"], ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"], ["10.0.2.0/24"]]
    for number, prefixes in enumerate(weeks, start=1):
        outcome = store.import_bytes(engine, build_file({"Run": prefixes}, change_number=number),
                                     file_name(f"202501{number:02d}"))
        assert outcome.outcome == "imported"
    with engine.begin() as conn:  # a span lost: the spans no longer say what the second version holds
        conn.execute(sa.text("DELETE FROM prefix_spans WHERE prefix = '10.0.2.0/24'"))
    with engine.connect() as conn:
        found = series.tag_series(conn, "public", "Run")
    assert list(found.sizes.values()) == [address_space.family_sizes(p) for p in weeks]


def test_sizes_counted_ahead_of_any_view_equal_those_a_view_counts_and_stop_at_the_deadline(
        engine: sa.Engine, servicetags_dir) -> None:
    """``count_uncounted`` (the web warm-up's): every set's sizes as a view counts them (each tag's view gives
    the same series afterwards), the tags with most uncounted sets first, nothing past its deadline."""
    from watcher.store.packing import load_texts, split_text

    base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
    for file in Generator(orjson.loads(file_bytes(base)), "china", START, seed=5).weeks(12):
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
    with engine.connect() as conn:
        tags = conn.execute(sa.text("SELECT count(DISTINCT tag_id) FROM tag_versions")).scalar()
    assert series.count_uncounted(engine, deadline=0.0, clock=lambda: 1.0) == series.SizesCounted(0, 0, tags)
    assert set(stored_sizes(engine).values()) == {(None, None, None, None)}

    ticks = iter(range(10**6))
    first = series.count_uncounted(engine, deadline=3, clock=lambda: next(ticks))  # three tags, then the deadline
    assert first.tags == 3 and first.left == tags - 3 and first.sets > 0
    with engine.connect() as conn:  # the first of them: the tag with most sets to count, all of them now
        busiest = conn.execute(sa.text(
            "SELECT v.tag_id FROM tag_versions v GROUP BY v.tag_id ORDER BY count(*) DESC, v.tag_id LIMIT 1")).scalar()
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tag_versions v JOIN contents c ON c.hash = v.content_hash "
            "WHERE v.tag_id = :t AND c.v4_prefixes IS NULL"), {"t": busiest}).scalar() == 0
    rest = series.count_uncounted(engine, deadline=float("inf"))
    assert rest.left == 0 and rest.tags >= tags - 3
    with engine.connect() as conn:  # every set a version shows (a delta's base alone is shown by none)
        shown = {bytes(h) for (h,) in conn.execute(sa.text("SELECT DISTINCT content_hash FROM tag_versions"))}
    counted = {h: sizes for h, sizes in stored_sizes(engine).items() if h in shown}
    assert len(counted) == len(shown) and all(sizes[0] is not None for sizes in counted.values())
    with engine.connect() as conn:
        texts = load_texts(conn, counted, cached=False)
    assert counted == {h: address_space.family_sizes(split_text(t.text)) for h, t in texts.items()}
    assert series.count_uncounted(engine, deadline=float("inf")) == series.SizesCounted(0, 0, 0)


def test_counting_ahead_behind_another_writer_keeps_nothing_past_its_deadline_and_says_so(
        engine: sa.Engine, db_url: str, servicetags_dir) -> None:
    """The warm-up's count waits for SQLite's write lock (an import under way in another process) only as long
    as its deadline leaves, and counts as kept only the sets it wrote; the next count keeps them."""
    base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
    for file in Generator(orjson.loads(file_bytes(base)), "china", START, seed=5).weeks(4):
        assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
    uncounted = sum(1 for sizes in stored_sizes(engine).values() if sizes[0] is None)
    if engine.dialect.name == "sqlite":
        import sqlite3

        held = sqlite3.connect(sa.engine.make_url(db_url).database, isolation_level=None)
        held.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            blocked = series.count_uncounted(engine, deadline=0.0, clock=lambda: -0.001)  # counts all, then waits 1 ms
        finally:
            held.execute("ROLLBACK")
            held.close()
        assert blocked.left == 0 and blocked.tags > 0 and blocked.sets == 0
        assert sum(1 for sizes in stored_sizes(engine).values() if sizes[0] is None) == uncounted
        with engine.connect() as conn:  # the connection's usual wait is back for the next writer
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_LOCK_WAIT * 1000
    kept = series.count_uncounted(engine, deadline=float("inf"))
    assert kept.left == 0 and kept.sets > 0
    assert sum(1 for sizes in stored_sizes(engine).values() if sizes[0] is None) < uncounted


def test_a_late_file_sets_what_the_next_publications_versions_add_and_remove(engine: sa.Engine) -> None:
    """A file imported after the one that follows it: the following publication's version of a tag is kept
    (its counts now against the late file's set), written again (the tag had no version there), or dropped
    (the late file already holds what it held); each as its spans say, the index by tag not needed."""
    from tests.factory import build_file, file_name

    a, b, c, x, y, p, q = (f"10.0.{i}.0/24" for i in range(7))
    weeks = {"20250101": {"Kept": [a], "Restored": [x], "Dropped": [p]},
             "20250115": {"Kept": [a, c], "Restored": [x], "Dropped": [p, q]},
             "20250108": {"Kept": [a, b], "Restored": [x, y], "Dropped": [p, q]}}  # imported last
    for number, (day, tags) in enumerate(weeks.items(), start=1):
        assert store.import_bytes(engine, build_file(tags, change_number=number), file_name(day)).outcome == "imported"
    assert stored_counts(engine) == counts_from_spans(engine)
    with engine.connect() as conn:
        found = {name: [(e.date.isoformat(), e.added, e.removed) for e in series.tag_series(conn, "public", name).entries]
                 for name in ("Kept", "Restored", "Dropped")}
    assert found == {"Kept": [("2025-01-01", 1, 0), ("2025-01-08", 1, 0), ("2025-01-15", 1, 1)],
                     "Restored": [("2025-01-01", 1, 0), ("2025-01-08", 1, 0), ("2025-01-15", 0, 1)],
                     "Dropped": [("2025-01-01", 1, 0), ("2025-01-08", 1, 0)]}


def test_an_unknown_tag_is_a_clear_error_and_a_name_in_another_case_is_found(engine: sa.Engine) -> None:
    from tests.factory import build_file, file_name
    from watcher.errors import NotFoundError

    assert store.import_bytes(engine, build_file({"Storage.EastUS2": ["10.0.0.0/24"]}, change_number=1),
                              file_name("20250101")).outcome == "imported"
    with engine.connect() as conn:
        with pytest.raises(NotFoundError, match="unknown public tag 'Storage.Nowhere'"):
            series.tag_series(conn, "public", "Storage.Nowhere")
        found = series.tag_series(conn, "public", "storage.eastus2")
        assert (found.name, found.dates, [e.prefix_count for e in found.entries]) == \
            ("Storage.EastUS2", [dt.date(2025, 1, 1)], [1])


def version_sizes(engine: sa.Engine) -> dict[tuple[int, int], tuple]:
    with engine.connect() as conn:
        return {(t, f): tuple(rest) for t, f, *rest in conn.execute(sa.text(
            f"SELECT tag_id, valid_from, {', '.join(SIZE_COLUMNS)} FROM tag_versions"))}


def sizes_of_contents(engine: sa.Engine) -> dict[tuple[int, int], tuple]:
    with engine.connect() as conn:
        return {(t, f): tuple(rest) for t, f, *rest in conn.execute(sa.text(
            f"SELECT v.tag_id, v.valid_from, {', '.join(f'c.{c}' for c in SIZE_COLUMNS)} "
            "FROM tag_versions v JOIN contents c ON c.hash = v.content_hash"))}


def test_versions_carry_their_sets_sizes_copied_by_migration_0018_the_first_view_or_the_warm_up(
        db_url, servicetags_dir) -> None:
    from watcher import dbcheck

    engine = db.open_database(db_url)
    try:
        base = sorted((servicetags_dir / "china").glob("*.json.gz"))[-1]
        files = list(Generator(orjson.loads(file_bytes(base)), "china", START, seed=11).weeks(8))
        for file in files[:6]:
            assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
        # The import copies nothing (it counts nothing); a view of a tag counts its sets and copies them onto its
        # versions (every version of the tag, and those of other tags that hold the same sets).
        assert set(version_sizes(engine).values()) == {(None, None, None, None)}
        with engine.connect() as conn:
            before = series.tag_series(conn, "china", "AzureCloud")
            tag_id = conn.execute(sa.text("SELECT id FROM tags WHERE cloud = 'china' AND name = 'AzureCloud'")
                                  ).scalar_one()
        copied = {k: v for k, v in version_sizes(engine).items() if v[0] is not None}
        assert {t for t, _ in copied} >= {tag_id} and len([k for k in copied if k[0] == tag_id]) == len(before.entries)
        assert copied == {k: v for k, v in sizes_of_contents(engine).items() if k in copied}
        assert [copied[tag_id, int(e.date.strftime("%Y%m%d"))] for e in before.entries] == list(before.sizes.values())

        # The warm-up copies the rest (counting the sets no view counted), tags with most versions first.
        done = series.count_uncounted(engine, float("inf"))
        assert done.left == 0 and done.tags > 10 and done.sets > 0
        assert None not in {v[0] for v in version_sizes(engine).values()}
        assert version_sizes(engine) == sizes_of_contents(engine)
        assert dbcheck.check_database(engine).ok

        # Versions whose sets are counted but which lack the sizes (a later week that returns to a set seen
        # before) get them from their sets, without a recount.
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE tag_versions SET {', '.join(f'{c} = NULL' for c in SIZE_COLUMNS)} "
                                 "WHERE tag_id = :t"), {"t": tag_id})

        def recount(*_args: object) -> None:
            raise AssertionError("counted again")

        with pytest.MonkeyPatch.context() as patch, engine.connect() as conn:
            patch.setattr(series, "_count", recount)
            patch.setattr(series, "_count_from_spans", recount)
            assert series.tag_series(conn, "china", "AzureCloud") == before
        assert version_sizes(engine) == sizes_of_contents(engine)
        for file in files[6:]:  # and new sets are counted by the view that shows them first
            assert store.import_bytes(engine, file.data, file.name).outcome == "imported"
        with engine.connect() as conn:
            after = series.tag_series(conn, "china", "AzureCloud")
        assert after.entries[:len(before.entries)] == before.entries and len(after.entries) > len(before.entries)
        assert {k: v for k, v in version_sizes(engine).items() if k[0] == tag_id} == \
            {k: v for k, v in sizes_of_contents(engine).items() if k[0] == tag_id}

        # Migration 0018 copies what was counted before it; `db check` finds a version whose sizes are not its set's.
        series.count_uncounted(engine, float("inf"))
        counted = sizes_of_contents(engine)
        db.downgrade(engine, "0017")
        with engine.connect() as conn:
            assert set(SIZE_COLUMNS).isdisjoint(c["name"] for c in sa.inspect(conn).get_columns("tag_versions"))
        db.upgrade(engine)
        assert version_sizes(engine) == counted and None not in {v[0] for v in counted.values()}
        with engine.connect() as conn:
            assert series.tag_series(conn, "china", "AzureCloud") == after
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE tag_versions SET v4_addresses = v4_addresses + 1 WHERE tag_id = :t "
                                 "AND valid_from = (SELECT min(valid_from) FROM tag_versions WHERE tag_id = :t)"),
                         {"t": tag_id})
        (failed,) = [r for r in dbcheck.check_database(engine).results if not r.ok]
        assert failed.name == "version prefix counts and sizes match their content"
        assert failed.violations[0].startswith(f"tag {tag_id} version of ") and "its content's" in failed.violations[0]
    finally:
        engine.dispose()
