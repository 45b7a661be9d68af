import datetime as dt
import random

import pytest
import sqlalchemy as sa

from tests.conftest import file_bytes, plain_name
from tests.factory import build_file, file_name
from watcher import diff, store
from watcher.errors import ConflictError, NotFoundError, ParseError, StoreError
from watcher.models import EntryManifest, PrefixSpan, Publication, Tag, TagVersion


def imp(engine, date, tags, number=1, **kw):
    return store.import_bytes(engine, build_file(tags, change_number=number, **kw), file_name(date))


def prefixes_at(engine, tag, ref, cloud="public"):
    with engine.connect() as conn:
        snap = store.snapshot(conn, cloud, tag, store.resolve_publication(conn, cloud, ref))
    return None if snap is None else set(snap.prefixes)


def row_counts(engine):
    with engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.count()).select_from(m.__table__)).scalar()
                     for m in (Publication, Tag, TagVersion, PrefixSpan))


def timeline(engine, cloud="public"):
    """Everything stored about a cloud's history, independent of ids and import order."""
    with engine.connect() as conn:
        names = dict(conn.execute(sa.select(Tag.id, Tag.name).where(Tag.cloud == cloud)).all())
        v, s = TagVersion.__table__, PrefixSpan.__table__
        versions = sorted(
            (names[r.tag_id], r.valid_from, r.valid_until, r.present, r.change_number, r.region, r.region_id,
             r.platform, r.system_service, r.network_features, r.prefix_count, bytes(r.content_hash))
            for r in conn.execute(sa.select(v)) if r.tag_id in names
        )
        spans = sorted((names[r.tag_id], r.prefix, r.first_day, r.until_day)
                       for r in conn.execute(sa.select(s)) if r.tag_id in names)
        pubs = [(p.file_date, p.change_number, p.sha256) for p in store.publications(conn, cloud)]
    return pubs, versions, spans


def assert_versions_are_linked(engine):
    """Each version holds until the next one of its tag starts; the last is current."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(TagVersion.tag_id, TagVersion.valid_from, TagVersion.valid_until)
                            .order_by(TagVersion.tag_id, TagVersion.valid_from)).all()
    assert rows
    for row, after in zip(rows, rows[1:] + [None]):
        expected = after.valid_from if after is not None and after.tag_id == row.tag_id else None
        assert row.valid_until == expected, (row, after)


def assert_manifest_is_the_newest_publication(engine, newest_file: bytes, cloud="public"):
    """The entry manifest holds the newest file's entries: their fingerprints, and the stored ids and counts."""
    from watcher import parse

    with engine.connect() as conn:
        newest = store.publications(conn, cloud)[-1]
        from_manifest = store.versions_before(conn, cloud, newest)
        from_versions = store.versions_at(conn, cloud, newest.day)
        row = conn.execute(sa.select(EntryManifest.publication_id).where(EntryManifest.cloud == cloud)).scalar()
    assert row == newest.id
    entries = parse.decode_document(newest_file, "newest").entries
    assert sorted(from_manifest.known_entries()) == sorted(parse.entry_fingerprint(e) for e in entries)
    assert sorted(from_manifest.present_names()) == sorted(from_versions.present_names())
    for name in from_versions.present_names():
        tag_id, _, _, count = from_versions.rows_of([name])[0]
        manifest_id, _, _, manifest_count = from_manifest.rows_of([name])[0]
        assert (manifest_id, manifest_count) == (tag_id, count), name
    # The publication's prefix count is the sum over its published tags, however it was added up.
    assert newest.prefix_count == sum(count for _, _, _, count in from_versions.rows_of(from_versions.present_names()))


def test_real_public_weeks_import_and_diff(engine, public_files):
    results = [store.import_bytes(engine, file_bytes(p), plain_name(p)) for p in public_files]
    assert [r.outcome for r in results] == ["imported"] * 9
    assert_versions_are_linked(engine)
    assert_manifest_is_the_newest_publication(engine, file_bytes(public_files[-1]))
    noop = results[2]  # 2025-08-18 changes nothing but the global changeNumber
    assert noop.publication.file_date == dt.date(2025, 8, 18) and noop.changed_tags == ()
    assert sum(c.status == "appeared" for c in results[5].changes) == 35  # 2025-09-08 adds 35 tags
    with engine.connect() as conn:
        old = store.resolve_publication(conn, "public", "previous")
        new = store.resolve_publication(conn, "public", "latest")
        (change,) = store.diff_publications(conn, "public", old, new, ["storage.eastus2"])
        assert change.added == ("135.130.158.0/23", "2603:1030:40f::/49")
        assert change.removed == ("2603:1030:40f::/48",)
        assert change.net_removed == ("2603:1030:40f:8000::/49",)
        everything = store.diff_publications(conn, "public", old, new)
        assert "Storage.EastUS2" in {c.tag for c in everything}
        assert all(c.status != "unchanged" or c.anomalies for c in everything)
        # Storage grows with change, not with weeks: far fewer spans than prefix rows across 9 files.
        spans = conn.execute(sa.select(sa.func.count()).select_from(PrefixSpan.__table__)).scalar()
        assert spans < 1.1 * results[-1].publication.prefix_count
        assert sum(r.publication.prefix_count for r in results) > 8 * spans


def test_every_cloud_imports_and_keeps_its_own_tags(engine, servicetags_dir):
    for path in sorted(servicetags_dir.glob("*/*.json.gz")):
        if "Public" not in path.name:
            store.import_bytes(engine, file_bytes(path), plain_name(path))
    with engine.connect() as conn:
        assert [p.file_date for p in store.publications(conn, "usgov")] == [dt.date(2026, 7, 13), dt.date(2026, 7, 20)]
        assert len(store.publications(conn, "china")) == 2
        assert store.publications(conn, "public") == []
        assert "AzureCloud" in store.present_tag_names(conn, "china")


def test_same_file_twice_changes_nothing_and_says_so(engine, public_files):
    data = file_bytes(public_files[0])
    store.import_bytes(engine, data, plain_name(public_files[0]))
    before = row_counts(engine)
    again = store.import_bytes(engine, data, "elsewhere/" + plain_name(public_files[0]))
    assert again.outcome == "already imported" and "SHA-256" in again.reason
    assert row_counts(engine) == before


def test_crlf_copy_of_a_stored_file_is_already_imported(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    before = row_counts(engine)
    again = imp(engine, "20250101", {"A": ["10.0.0.0/24"]}, crlf=True, bom=True)
    assert again.outcome == "already imported" and "same content" in again.reason
    assert row_counts(engine) == before


def test_a_week_in_other_line_endings_changes_nothing_and_its_entries_are_recognised_after(engine):
    from watcher import parse

    imp(engine, "20250101", {"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}, crlf=True)
    before = row_counts(engine)
    lf_week = build_file({"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}, change_number=2)
    result = store.import_bytes(engine, lf_week, file_name("20250108"))
    assert result.changed_tags == () and row_counts(engine)[1:] == before[1:]  # a publication, no versions
    # The versions now carry the LF entries' fingerprints: the next such week skips decoding them.
    document = parse.decode_document(lf_week, "x")
    with engine.connect() as conn:
        known = store.versions_at(conn, "public", store.publications(conn, "public")[-1].day).known_entries()
    parsed = parse.parse_document(document, file_name("20250115"), sha256="-", known_entries=known)
    assert parsed.tags == () and sorted(parsed.unchanged) == ["A", "B"]


def test_a_different_file_for_a_stored_date_is_a_conflict(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    before = row_counts(engine)
    with pytest.raises(ConflictError, match="a different public file for 2025-01-01 is already stored"):
        imp(engine, "20250101", {"A": ["10.0.9.0/24"]})
    assert row_counts(engine) == before


def test_change_number_reset_with_new_content_is_stored_and_flagged(engine):
    imp(engine, "20200101", {"A": (50, ["10.0.0.0/24"]), "B": (7, ["10.1.0.0/24"])}, number=90)
    result = imp(engine, "20200108", {"A": (2, ["10.0.1.0/24"]), "B": (1, ["10.1.0.0/24"])}, number=3)
    assert result.anomalies == (diff.GLOBAL_NUMBER_WENT_DOWN,)
    changes = {c.tag: c for c in result.changes}
    assert changes["A"].status == "changed" and changes["A"].anomalies == (diff.NUMBER_WENT_DOWN,)
    assert changes["B"].status == "unchanged" and changes["B"].anomalies == (diff.NUMBER_WENT_DOWN,)
    assert prefixes_at(engine, "A", "20200101") == {"10.0.0.0/24"}
    assert prefixes_at(engine, "A", "latest") == {"10.0.1.0/24"}
    with engine.connect() as conn:
        _, entries = store.history(conn, "public", "B")
    assert [e.change_number for e in entries] == [7, 1]  # numbers recorded, never lost


def test_same_number_with_new_content_is_a_new_version(engine):
    imp(engine, "20250101", {"A": (4, ["10.0.0.0/24"])})
    result = imp(engine, "20250108", {"A": (4, ["10.0.0.0/24", "10.0.5.0/24"])})
    (change,) = result.changes
    assert (change.status, change.added, change.anomalies) == ("changed", 1, (diff.NUMBER_SAME_CONTENT_CHANGED,))
    with engine.connect() as conn:
        _, entries = store.history(conn, "public", "A")
    assert [(e.added, e.removed) for e in entries] == [(1, 0), (1, 0)]


def test_no_op_week_adds_a_publication_and_nothing_else(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}, number=1)
    before = row_counts(engine)
    result = imp(engine, "20250108", {"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}, number=2)
    assert result.changes == ()
    after = row_counts(engine)
    assert after[0] == before[0] + 1 and after[1:] == before[1:]


def test_reordered_prefixes_are_not_a_change(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24", "10.0.1.0/24"]})
    before = row_counts(engine)
    result = imp(engine, "20250108", {"A": ["10.0.1.0/24", "10.0.0.0/24"]})
    assert result.changes == ()
    assert row_counts(engine)[2:] == before[2:]


def test_tags_appear_are_withdrawn_and_come_back(engine):
    imp(engine, "20250101", {"Storage.UKNorth": ["10.0.0.0/24"], "A": ["10.1.0.0/24"]})
    withdrawn = imp(engine, "20250108", {"A": ["10.1.0.0/24"], "Storage.NewRegion": ["10.2.0.0/24"]})
    statuses = {c.tag: c.status for c in withdrawn.changes}
    assert statuses == {"Storage.UKNorth": "withdrawn", "Storage.NewRegion": "appeared"}
    imp(engine, "20250115", {"A": ["10.1.0.0/24"], "Storage.NewRegion": ["10.2.0.0/24"], "Storage.UKNorth": ["10.0.0.0/24"]})
    assert prefixes_at(engine, "Storage.UKNorth", "20250108") is None
    assert prefixes_at(engine, "Storage.UKNorth", "latest") == {"10.0.0.0/24"}
    with engine.connect() as conn:
        pubs = store.publications(conn, "public")
        (gone,) = store.diff_publications(conn, "public", pubs[0], pubs[1], ["Storage.UKNorth"])
        assert (gone.status, gone.removed) == ("withdrawn", ("10.0.0.0/24",))
        _, entries = store.history(conn, "public", "Storage.UKNorth")
        assert [e.present for e in entries] == [True, False, True]
        assert store.present_tag_names(conn, "public", pubs[1]) == ["A", "Storage.NewRegion"]
    assert_manifest_is_the_newest_publication(engine, build_file(
        {"A": ["10.1.0.0/24"], "Storage.NewRegion": ["10.2.0.0/24"], "Storage.UKNorth": ["10.0.0.0/24"]}))
    assert_versions_are_linked(engine)


def test_without_a_usable_manifest_the_import_reads_the_versions_and_stores_the_same(engine, tmp_path):
    from watcher.db import open_database

    reference = open_database(f"sqlite:///{tmp_path / 'reference.db'}")
    _import_weeks(reference, sorted(WEEKS))
    for date in sorted(WEEKS):
        imp(engine, date, WEEKS[date], number=int(date[-2:]))
        with engine.begin() as conn:  # lost (an older database) or damaged, by turns
            if date.endswith(("08", "22")):
                conn.execute(sa.delete(EntryManifest.__table__))
            else:
                conn.execute(sa.update(EntryManifest.__table__).values(tag_ids=b"\x01"))
    assert timeline(engine) == timeline(reference)
    imp(engine, "20250205", WEEKS["20250101"], number=40)
    assert_versions_are_linked(engine)
    assert_manifest_is_the_newest_publication(engine, build_file(WEEKS["20250101"], change_number=40))
    reference.dispose()


def test_host_bits_are_normalised_and_reported(engine):
    result = imp(engine, "20250101", {"A": ["10.0.0.7/24", "10.0.0.0/24"]})
    assert "A: prefix 10.0.0.7/24 normalised to 10.0.0.0/24" in result.notes
    assert prefixes_at(engine, "A", "latest") == {"10.0.0.0/24"}


WEEKS = {
    "20250101": {"A": (1, ["10.0.0.0/24", "10.0.1.0/24"]), "B": (1, ["10.9.0.0/24"]), "Gone": (1, ["10.8.0.0/24"])},
    "20250108": {"A": (2, ["10.0.0.0/23"]), "B": (1, ["10.9.0.0/24"])},
    "20250115": {"A": (3, ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]), "B": (2, ["10.9.0.0/25"]),
                 "Gone": (2, ["10.8.0.0/24"]), "New": (1, ["10.7.0.0/24"])},
    "20250122": {"A": (3, ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]), "New": (2, ["10.7.0.0/24", "10.7.1.0/24"])},
    "20250129": {"A": (4, ["10.0.0.0/24"]), "B": (3, ["10.9.0.0/24"]), "New": (2, ["10.7.0.0/24", "10.7.1.0/24"])},
}


def _import_weeks(engine, order):
    for date in order:
        imp(engine, date, WEEKS[date], number=int(date[-2:]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_import_stores_the_same_history(db_url, seed, tmp_path):
    from watcher.db import open_database

    in_order = open_database(f"sqlite:///{tmp_path / 'reference.db'}")
    _import_weeks(in_order, sorted(WEEKS))
    shuffled_order = sorted(WEEKS)
    random.Random(seed).shuffle(shuffled_order)
    shuffled = open_database(db_url)
    _import_weeks(shuffled, shuffled_order)
    assert timeline(shuffled) == timeline(in_order)
    newest = max(WEEKS)
    assert_manifest_is_the_newest_publication(shuffled, build_file(WEEKS[newest], change_number=int(newest[-2:])))
    for date, tags in WEEKS.items():
        for name in ("A", "B", "Gone", "New"):
            expected = set(tags[name][1]) if name in tags else None
            assert prefixes_at(shuffled, name, date) == expected, (shuffled_order, date, name)
    in_order.dispose()
    shuffled.dispose()


def test_out_of_order_real_files_store_the_same_history(db_url, public_files, tmp_path):
    from watcher.db import open_database

    subset = [public_files[i] for i in (0, 1, 5, 6, 8)]
    reference = open_database(f"sqlite:///{tmp_path / 'reference.db'}")
    for path in subset:
        store.import_bytes(reference, file_bytes(path), plain_name(path))
    shuffled = open_database(db_url)
    for path in (subset[4], subset[1], subset[3], subset[0], subset[2]):
        store.import_bytes(shuffled, file_bytes(path), plain_name(path))
    assert timeline(shuffled) == timeline(reference)
    assert_manifest_is_the_newest_publication(shuffled, file_bytes(subset[4]))
    reference.dispose()
    shuffled.dispose()


def test_malformed_file_writes_nothing(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    before = row_counts(engine)
    with pytest.raises(ParseError, match=r"tag 'B': invalid prefix '10.0.0.0/99'"):
        imp(engine, "20250108", {"A": ["10.0.1.0/24"], "B": ["10.0.0.0/99"]})
    with pytest.raises(ParseError, match="not valid JSON"):
        store.import_bytes(engine, b'{"changeNumber": 1, "cloud": "Public", "values": [', file_name("20250108"))
    assert row_counts(engine) == before


def _big_file_tags(count=30):
    """Tags with more prefixes than a first import's bulk load takes (``importer.ANALYZE_AFTER_ROWS``)."""
    from watcher.store.importer import ANALYZE_AFTER_ROWS

    per_tag = ANALYZE_AFTER_ROWS // count + 100
    return {f"T{t:02d}": [f"10.{t}.{i // 256}.{i % 256}/32" for i in range(per_tag)] + ["2603:1030::/48"]
            for t in range(count)}


def test_a_big_first_import_that_fails_late_writes_nothing(engine):
    """A first import into PostgreSQL sends its tags and spans while it plans; a prefix refused in its last tag
    (the spans of the others sent already) leaves the database as it was, keys included."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from watcher.models import Base

    tags = _big_file_tags()
    tags["T29"] = tags["T29"] + ["10.0.0.0/99"]
    with pytest.raises(ParseError, match=r"tag 'T29': invalid prefix '10.0.0.0/99'"):
        imp(engine, "20250101", tags)
    assert row_counts(engine) == (0, 0, 0, 0)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    tags["T29"] = tags["T29"][:-1]
    imp(engine, "20250101", tags)
    assert prefixes_at(engine, "T07", "latest") == set(tags["T07"])


def test_a_big_first_import_stores_what_imports_one_by_one_store(engine, tmp_path):
    """The first import's streamed spans and early tags make the same history as a weekly import writes
    (here into SQLite, which takes no such path), and the next import ends and opens spans on them."""
    from watcher.db import open_database

    tags = _big_file_tags()
    week = {**tags, "T03": tags["T03"][:-2] + ["10.200.0.0/16"]}
    reference = open_database(f"sqlite:///{tmp_path / 'reference.db'}")
    for database in (engine, reference):
        imp(database, "20250101", tags)
        imp(database, "20250108", week, number=2)
    assert timeline(engine) == timeline(reference)
    assert prefixes_at(engine, "T03", "latest") == set(week["T03"])
    reference.dispose()


def test_failure_inside_the_transaction_rolls_back_everything(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    before = row_counts(engine)

    def crash(conn, result):
        assert result.outcome == "imported"
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        store.import_bytes(engine, build_file({"A": ["10.0.1.0/24"]}), file_name("20250108"), on_imported=crash)
    assert row_counts(engine) == before
    assert prefixes_at(engine, "A", "latest") == {"10.0.0.0/24"}


def test_lookup_finds_containing_prefixes_and_since_when(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/16"], "B": ["10.0.5.0/24"]})
    imp(engine, "20250108", {"A": ["10.0.0.0/16"], "B": ["10.0.5.0/24"], "C": ["10.0.5.128/25", "2001:db8::/32"]})
    with engine.connect() as conn:
        latest = store.resolve_publication(conn, "public", "latest")
        hits = store.lookup(conn, "public", "10.0.5.200", latest)
        assert [(h.tag, h.prefix, h.since.isoformat()) for h in hits] == [
            ("A", "10.0.0.0/16", "2025-01-01"), ("B", "10.0.5.0/24", "2025-01-01"), ("C", "10.0.5.128/25", "2025-01-08"),
        ]
        assert [h.tag for h in store.lookup(conn, "public", "2001:db8::1", latest)] == ["C"]
        first = store.resolve_publication(conn, "public", "20250101")
        assert [h.tag for h in store.lookup(conn, "public", "10.0.5.200", first)] == ["A", "B"]
        with pytest.raises(NotFoundError, match="is not an IP address"):
            store.lookup(conn, "public", "10.0.5", latest)


def test_publication_references(engine):
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    with engine.connect() as conn:
        with pytest.raises(NotFoundError, match="only one publication"):
            store.resolve_publication(conn, "public", "previous")
        assert store.resolve_publication(conn, "public", "2025-01-05").file_date == dt.date(2025, 1, 1)
        with pytest.raises(NotFoundError, match="not a publication"):
            store.resolve_publication(conn, "public", "last tuesday")
        with pytest.raises(NotFoundError, match="unknown public tag 'Nope'"):
            store.snapshot(conn, "public", "Nope", store.resolve_publication(conn, "public", "latest"))


def test_unreachable_database_is_a_clear_error():
    from watcher.db import open_database

    with pytest.raises(StoreError, match=r"cannot open database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        open_database("postgresql://u:secretpw@127.0.0.1:1/x")


def test_a_driver_error_in_the_bulk_path_is_a_store_error_and_changes_nothing(tmp_path):
    """The span inserts use the driver's cursor; a failure there (here: a trigger standing in for a full disk)."""
    from watcher.db import open_database

    engine = open_database(f"sqlite:///{tmp_path / 'w.db'}")
    imp(engine, "20250101", {"A": ["10.0.0.0/24"]})
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER full BEFORE INSERT ON prefix_spans BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    before = row_counts(engine)
    with pytest.raises(StoreError, match="database or disk is full"):
        imp(engine, "20250108", {"A": ["10.0.0.0/24", "10.0.1.0/24"]})
    assert row_counts(engine) == before
    engine.dispose()


def test_contents_read_back_whatever_way_they_were_stored():
    import zlib

    big = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(2000))
    small = ("10.0.0.0/24", "2603:1030::/32")
    assert store.pack(small) == "\n".join(small).encode()  # short: plain text
    assert store.pack(big)[:4] == b"\x28\xb5\x2f\xfd"  # long: zstd
    for prefixes in (big, small, ()):
        assert store.unpack(store.pack(prefixes)) == prefixes
        # Databases written before zstd hold zlib streams.
        assert store.unpack(zlib.compress("\n".join(prefixes).encode(), 1)) == prefixes


def test_the_manifest_holds_any_tag_name(engine, caplog):
    from watcher.errors import ParseError

    # Names with a newline, quotes or non-ASCII letters no longer pass the parser's gate ...
    with pytest.raises(ParseError, match="refused"):
        imp(engine, "20241225", {"Tag\nwith a newline, \"quotes\" and ünïcode": ["10.0.0.0/24"]})
    # ... so the manifest holds the oddest name the gate lets through.
    odd = "-._" + "Tag.with_every-allowed.character" + "x" * 160
    imp(engine, "20250101", {odd: ["10.0.0.0/24"], "B": ["10.1.0.0/24"]})
    imp(engine, "20250108", {odd: ["10.0.1.0/24"], "B": ["10.1.0.0/24"]})
    with caplog.at_level("WARNING", logger="watcher.store"):
        result = imp(engine, "20250115", {odd: ["10.0.2.0/24"], "B": ["10.1.0.0/24"]})
    assert [(c.tag, c.status) for c in result.changed_tags] == [(odd, "changed")]
    assert "manifest" not in caplog.text  # read, not refused
    assert prefixes_at(engine, odd, "latest") == {"10.0.2.0/24"}


@pytest.mark.parametrize("until_day", [None, 20250811])
@pytest.mark.parametrize("odd_text", [None, "a\\b\tc\nd"])
def test_bulk_span_rows_are_stored_as_given(engine, until_day, odd_text):
    """The spans' bulk write (one COPY buffer on PostgreSQL; row by row if a text needs escaping) stores each row."""
    from watcher.store.sql import bulk_insert

    rng = random.Random(5)
    rows = sorted({(f"{rng.randrange(256)}.{rng.randrange(256)}.0.0/{rng.randrange(8, 33)}", rng.randrange(1, 2**31))
                   for _ in range(2000)} | {("2603:1030:40f::/48", 7), ("::/0", 0)} | ({(odd_text, 3)} if odd_text else set()))
    with engine.begin() as conn:
        bulk_insert(conn, "prefix_spans", ("prefix", "tag_id"), rows, same={"first_day": 20250804, "until_day": until_day})
    with engine.connect() as conn:
        stored = sorted(tuple(r) for r in conn.execute(sa.select(
            PrefixSpan.prefix, PrefixSpan.tag_id, PrefixSpan.first_day, PrefixSpan.until_day)))
    assert stored == [(p, t, 20250804, until_day) for p, t in rows]


@pytest.mark.parametrize("until_day", [None, 20250811])
@pytest.mark.parametrize("odd_text", [None, "a\\b\tc\nd"])
def test_new_spans_are_stored_as_given_per_tag(engine, until_day, odd_text):
    """A tag's new spans (one COPY buffer sorted as text on PostgreSQL; row by row if a text needs escaping):
    every (prefix, tag) stored once, tags sharing prefixes, ids of any width, a tag with none."""
    from watcher.store.sql import insert_spans

    rng = random.Random(7)
    pool = [f"{rng.randrange(256)}.{rng.randrange(256)}.0.0/{rng.randrange(8, 33)}" for _ in range(300)]
    pool += ["2603:1030:40f::/48", "2603:1030:40f::/49", "::/0", "1.2.3.0/2", "1.2.3.0/24"]
    runs = [(tag_id, sorted(set(rng.sample(pool, rng.randrange(1, 60))))) for tag_id in (9, 10, 1, 123456, 0, 77)]
    runs += [(5, ()), (8, {"1.2.3.0/24", "1.2.3.0/2"})] + ([(3, [odd_text])] if odd_text else [])
    with engine.begin() as conn:
        insert_spans(conn, runs, 20250804, until_day)
    with engine.connect() as conn:
        stored = sorted(tuple(r) for r in conn.execute(sa.select(
            PrefixSpan.prefix, PrefixSpan.tag_id, PrefixSpan.first_day, PrefixSpan.until_day)))
    assert stored == sorted((p, t, 20250804, until_day) for t, prefixes in runs for p in prefixes)


def test_the_span_buffer_is_in_key_order():
    """The COPY buffer's lines sort as the key (prefix, tag id) does, so PostgreSQL builds the key from sorted rows."""
    from watcher.store.sql import _span_copy_text

    runs = [(12, ["10.0.0.0/8", "10.0.0.0/80"]), (9, ["10.0.0.0/8", "1.0.0.0/8"]), (100, ["10.0.0.0/8"])]
    lines = _span_copy_text(runs, (20250804, None)).decode().splitlines()
    assert [(p, int(t)) for p, t, _, _ in (line.split("\t") for line in lines)] == [
        ("1.0.0.0/8", 9), ("10.0.0.0/8", 9), ("10.0.0.0/8", 12), ("10.0.0.0/8", 100), ("10.0.0.0/80", 12)]
    assert _span_copy_text([(1, ["a\\b"])], (1, None)) is None


def test_a_first_import_leaves_keys_and_foreign_keys_as_the_migrations_made_them(engine, public_files):
    """On PostgreSQL the first import adds the spans' key and the versions' foreign keys after its bulk writes; on
    both databases it builds the spans' index by tag after them."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from watcher.models import Base

    store.import_bytes(engine, file_bytes(public_files[0]), plain_name(public_files[0]))
    with engine.connect() as conn:
        key = sa.inspect(conn).get_pk_constraint("prefix_spans")
        foreign = {(f["name"], f["referred_table"], f["options"].get("ondelete"))
                   for f in sa.inspect(conn).get_foreign_keys("tag_versions")}
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        by_tag = {i["name"]: i["column_names"] for i in sa.inspect(conn).get_indexes("prefix_spans")}
    assert by_tag == {"ix_prefix_spans_tag_id": ["tag_id", "first_day", "until_day"]}
    assert (key["name"], key["constrained_columns"]) == ("pk_prefix_spans", ["prefix", "tag_id", "first_day"])
    assert foreign == {("fk_tag_versions_tag_id_tags", "tags", "CASCADE"),
                       ("fk_tag_versions_content_hash_contents", "contents", None),
                       ("fk_tag_versions_publication_id_publications", "publications", "CASCADE")}
    # The key is there and enforced: the same span again is refused.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        row = conn.execute(sa.select(PrefixSpan.__table__).limit(1)).one()
        conn.execute(sa.insert(PrefixSpan.__table__), dict(row._mapping))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # a version of no tag
        row = conn.execute(sa.select(TagVersion.__table__).limit(1)).one()
        conn.execute(sa.insert(TagVersion.__table__), {**row._mapping, "tag_id": 10**9})


def test_versions_in_force_are_those_the_plain_predicate_finds(engine):
    """``in_force_rows`` (one seek per tag) reads the rows of ``valid_from <= day < valid_until``, on every day:
    before a tag's first version, on and between its changes, while withdrawn, and after the newest."""
    from watcher.store.versions import VERSION_COLUMNS, in_force_rows

    weeks = [("20250101", {"A": ["10.0.0.0/24"], "B": ["10.1.0.0/24"]}),
             ("20250108", {"A": ["10.0.0.0/24", "10.0.1.0/24"], "B": ["10.1.0.0/24"]}),
             ("20250115", {"A": ["10.0.1.0/24"], "C": ["10.2.0.0/24"]}),
             ("20250122", {"A": ["10.0.1.0/24"], "C": ["10.2.0.0/24"]}),
             ("20250129", {"A": ["10.0.2.0/24"], "B": ["10.1.0.0/24"], "C": ["10.2.0.0/24"]})]
    for number, (date, tags) in enumerate(weeks, start=1):
        imp(engine, date, tags, number=number)
    plain = sa.text(f"SELECT {VERSION_COLUMNS} FROM tag_versions WHERE tag_id IN :ids AND valid_from <= :day "
                    "AND (valid_until IS NULL OR valid_until > :day)").bindparams(sa.bindparam("ids", expanding=True))
    with engine.connect() as conn:
        ids = list(conn.execute(sa.select(Tag.id)).scalars())
        found_some = 0
        for day in (20241231, 20250101, 20250105, 20250108, 20250115, 20250120, 20250122, 20250129, 20260101):
            expected = sorted(tuple(r) for r in conn.execute(plain, {"ids": ids, "day": day}))
            assert sorted(tuple(r) for r in in_force_rows(conn, ids, day)) == expected, day
            assert sorted(tuple(r) for r in in_force_rows(conn, ids[:1], day)) == \
                [r for r in expected if r[0] == ids[0]], day
            found_some += len(expected)
        assert in_force_rows(conn, [], 20250101) == []
    assert found_some > 20  # the days above meet versions of every tag, withdrawn ones included
