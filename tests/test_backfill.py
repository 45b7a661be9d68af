"""Backfill: many files of several clouds in any order, per-file failures, reruns, and no alert storm."""
from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import sqlalchemy as sa

from tests.factory import build_file, file_name
from tests.ticket_helpers import import_made, make_settings, week
from watcher import backfill, status, store
from watcher.settings import Settings
from watcher.models import OutboxMessage, Ticket

DESTINATION = "json://user:secret@127.0.0.1:9/hook"  # queued only: nothing is sent in these tests


def weeks(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=7 * i) for i in range(count)]


def write(folder: Path, day: dt.date, tags: dict, number: int, cloud: str = "public", gz: bool = False) -> Path:
    data = build_file(tags, change_number=number, cloud=cloud)
    path = folder / (file_name(day.strftime("%Y%m%d"), cloud) + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def run(engine, settings, paths) -> backfill.BackfillReport:
    job = backfill.Backfill(engine, settings)
    return job.run(backfill.find_files(paths))


def test_mixed_clouds_any_order_import_oldest_first_and_a_rerun_skips_by_date_and_hash(engine, tmp_path):
    days = weeks(dt.date(2024, 1, 1), 6)
    for i, day in enumerate(reversed(days)):  # written newest first, half gzipped
        n = len(days) - i
        write(tmp_path, day, {"A": [f"10.0.{n}.0/24"]}, n, "public", gz=n % 2 == 0)
        write(tmp_path, day, {"B": [f"10.1.{n}.0/24"]}, 100 + n, "china", gz=n % 2 == 1)
    files = backfill.find_files([tmp_path])
    assert [f.file_date for f in files] == sorted(f.file_date for f in files)
    report = run(engine, make_settings(), [tmp_path])
    assert report.count("imported") == 12 and not report.failed
    imported = [o.result.publication for o in report.outcomes]
    for cloud in ("public", "china"):  # oldest first per cloud: each one's predecessor was already stored
        ids = [p.id for p in imported if p.cloud == cloud]
        assert ids == sorted(ids) and [p.file_date for p in imported if p.cloud == cloud] == days
    with engine.connect() as conn:
        assert [p.missed_before for p in store.publications(conn, "public")] == [0] * 6
    again = run(engine, make_settings(), [tmp_path])
    assert again.count("imported") == 0 and again.count("already imported") == 12
    assert all(o.skipped for o in again.outcomes)


def test_a_failing_file_is_reported_the_others_go_on_and_a_rerun_imports_the_rest(engine, tmp_path):
    days = weeks(dt.date(2024, 1, 1), 4)
    for n, day in enumerate(days, 1):
        write(tmp_path, day, {"A": [f"10.0.{n}.0/24"]}, n)
    broken = tmp_path / file_name("20240110")
    broken.write_text('{"changeNumber": 9, "cloud": "Public", "values": [{"name": "X"}]}')
    report = run(engine, make_settings(), [tmp_path])
    assert [o.file for o in report.failed] == [str(broken)] and report.count("imported") == 4
    assert str(broken) in report.summary() and "1 failed" in report.summary()
    failed = report.failed[0].to_json()
    assert failed["outcome"] == "failed" and failed["date"] == "2024-01-10" and "'X'" in failed["error"]
    broken.write_bytes(build_file({"A": ["10.0.9.0/24"]}, change_number=2))  # fixed; numbers now 1,2,2,3,4
    rerun = run(engine, make_settings(), [tmp_path])
    assert rerun.count("imported") == 1 and rerun.count("already imported") == 4 and not rerun.failed
    with engine.connect() as conn:
        assert [p.file_date for p in store.publications(conn, "public")] == sorted([*days, dt.date(2024, 1, 10)])


def new_rows(engine, since: tuple[int, int]) -> tuple[list, list]:
    """Tickets and outbox rows with ids above ``since`` (the highest ids before a run)."""
    with engine.connect() as conn:
        tickets = conn.execute(sa.select(Ticket.__table__).where(Ticket.id > since[0])).all()
        outbox = conn.execute(sa.select(OutboxMessage.__table__).where(OutboxMessage.id > since[1])).all()
    return tickets, outbox


def high_water(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.id), 0))).scalar()
                     for t in (Ticket, OutboxMessage))


def test_no_alert_storm_one_ticket_for_the_newest_publication_of_the_run(engine, tmp_path):
    settings = make_settings(urls=(DESTINATION,))
    import_made(engine, settings, "20240101", week(), change_number=1)
    mark = high_water(engine)
    days = weeks(dt.date(2024, 1, 8), 30)
    for n, day in enumerate(days, 2):  # every week changes a watched tag
        write(tmp_path, day, week(storage_eastus2=[f"10.1.{n}.0/24"]), n)
    report = run(engine, settings, [tmp_path])
    assert report.count("imported") == 30
    tickets, outbox = new_rows(engine, mark)
    with engine.connect() as conn:
        newest = store.resolve_publication(conn, "public", "latest")
    assert [t.publication_id for t in tickets] == [newest.id]  # one ticket, for the newest week only
    # One message for the new ticket, and at most one saying the live ticket before the run was superseded.
    assert [o.ticket_id for o in outbox].count(tickets[0].id) == 1 and len(outbox) <= 2
    # The run again: everything is stored, nothing new to say.
    mark = high_water(engine)
    run(engine, settings, [tmp_path])
    assert new_rows(engine, mark) == ([], [])


def test_history_older_than_the_newest_stored_makes_no_tickets_and_an_empty_database_one(engine, tmp_path):
    settings = make_settings(urls=(DESTINATION,))
    old = tmp_path / "old"
    old.mkdir()
    for n, day in enumerate(weeks(dt.date(2023, 1, 2), 10), 1):
        write(old, day, week(storage_eastus2=[f"10.1.{n}.0/24"]), n)
    run(engine, settings, [old])  # an empty database: at most what one first import makes, for the newest week
    tickets, outbox = new_rows(engine, (0, 0))
    with engine.connect() as conn:
        newest = store.resolve_publication(conn, "public", "latest")
    assert len(tickets) <= 1 and {t.publication_id for t in tickets} <= {newest.id} and len(outbox) <= 1
    import_made(engine, settings, "20240101", week(), change_number=50)
    mark = high_water(engine)
    older = tmp_path / "older"
    older.mkdir()
    for n, day in enumerate(weeks(dt.date(2023, 6, 5), 5), 20):
        write(older, day, week(storage_eastus2=[f"10.2.{n}.0/24"]), n)
    report = run(engine, settings, [older])
    assert report.count("imported") == 5 and new_rows(engine, mark) == ([], [])


def test_same_bytes_under_two_dates_are_two_publications_even_out_of_order(engine, tmp_path):
    a, b = build_file({"Storage.WestUS": ["10.0.0.0/24"]}, change_number=1), \
        build_file({"Storage.WestUS": ["10.0.0.0/24", "10.0.1.0/24"]}, change_number=2)
    store.import_bytes(engine, a, file_name("20201109"))
    store.import_bytes(engine, b, file_name("20201123"))  # out of order: the 16th comes last
    same = store.import_bytes(engine, b, file_name("20201116"))
    assert same.outcome == "imported" and same.publication.file_date == dt.date(2020, 11, 16)
    again = store.import_bytes(engine, b, "copy/" + file_name("20201116"))
    assert again.outcome == "already imported" and again.publication.id == same.publication.id
    with engine.connect() as conn:
        pubs = store.publications(conn, "public")
        at_16 = store.snapshot(conn, "public", "Storage.WestUS", store.resolve_publication(conn, "public", "20201116"))
        diff = store.diff_publications(conn, "public", pubs[1], pubs[2])
    assert [p.file_date.day for p in pubs] == [9, 16, 23] and pubs[1].sha256 == pubs[2].sha256
    assert at_16.prefixes == ("10.0.0.0/24", "10.0.1.0/24") and diff == []
    with engine.connect() as conn:  # fresh by the newest date, whatever order the files came in
        state = status.cloud_status(conn, "public", dt.datetime(2020, 11, 24, tzinfo=dt.timezone.utc), Settings())
    assert state.newest.file_date == dt.date(2020, 11, 23) and state.age_days == 1 and not state.stale


def test_missed_publications_are_counted_and_recounted_when_a_gap_is_filled(engine):
    store.import_bytes(engine, build_file({"A": ["10.0.0.0/24"]}, change_number=10), file_name("20240101"))
    jump = store.import_bytes(engine, build_file({"A": ["10.0.1.0/24"]}, change_number=14), file_name("20240115"))
    assert jump.publication.missed_before == 3
    assert "3 publication(s) not seen between 2024-01-01 and 2024-01-15" in jump.notes
    assert jump.publication.to_json()["missed_before"] == 3
    store.import_bytes(engine, build_file({"A": ["10.0.2.0/24"]}, change_number=12), file_name("20240108"))
    reset = store.import_bytes(engine, build_file({"A": ["10.0.3.0/24"]}, change_number=2), file_name("20240122"))
    with engine.connect() as conn:
        assert [p.missed_before for p in store.publications(conn, "public")] == [0, 1, 1, 0]
    assert reset.anomalies and reset.publication.missed_before == 0  # a reset stays an anomaly


def _span_index_seen(conn) -> bool:
    return bool(conn.execute(sa.text(
        "SELECT count(*) FROM sqlite_master WHERE name = 'ix_prefix_spans_tag_id'" if conn.dialect.name == "sqlite"
        else "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_prefix_spans_tag_id' "
             "AND schemaname = current_schema()")).scalar())


def test_a_run_writes_a_batch_of_files_without_the_spans_index_that_no_other_connection_misses(
        engine, tmp_path, monkeypatch):
    seen = []  # per import: (the index in the import's own transaction, the index as another connection sees it)
    imported = store.import_bytes

    def watching(*args, within=None, **kwargs):
        with engine.connect() as other:
            seen.append((_span_index_seen(within) if within is not None else True, _span_index_seen(other)))
        return imported(*args, within=within, **kwargs)

    monkeypatch.setattr(store, "import_bytes", watching)
    told = []
    for n, day in enumerate(weeks(dt.date(2024, 1, 1), 4), 1):
        write(tmp_path, day, {"A": [f"10.0.{n}.0/24", "10.9.0.0/16"], "B": [f"10.1.{n}.0/24"]}, n)
    report = backfill.Backfill(engine, make_settings()).run(backfill.find_files([tmp_path]), on_file=told.append)
    assert report.count("imported") == 4 and len(told) == 4
    if engine.dialect.name == "sqlite":  # one batch: from its second file on, without the index, seen by it alone
        assert seen == [(True, True), (False, True), (False, True), (False, True)]
    else:  # PostgreSQL: a transaction per file, the index kept
        assert seen == [(True, True)] * 4
    with engine.connect() as conn:
        assert _span_index_seen(conn)
        by_tag = conn.execute(sa.text("SELECT count(*) FROM prefix_spans WHERE tag_id = "
                                      "(SELECT id FROM tags WHERE name = 'A')")).scalar()
    assert by_tag == 5  # the /16 and four /24s, each its own span


def test_a_run_stopped_mid_batch_keeps_the_committed_batches_and_the_index_and_a_rerun_imports_the_rest(
        engine, tmp_path, monkeypatch):
    monkeypatch.setattr(backfill, "BATCH_SECONDS", 0.0)  # each file its own batch ...
    for n, day in enumerate(weeks(dt.date(2024, 1, 1), 5), 1):
        write(tmp_path, day, {"A": [f"10.0.{n}.0/24"]}, n)
    imported = store.import_bytes
    calls = []

    def stopping(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C during the fourth file
        return imported(*args, **kwargs)

    monkeypatch.setattr(store, "import_bytes", stopping)
    told = []
    job = backfill.Backfill(engine, make_settings())
    try:
        job.run(backfill.find_files([tmp_path]), on_file=told.append)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not stopped")
    with engine.connect() as conn:
        assert len(store.publications(conn, "public")) == 3 == len(told)  # what was told imported is stored
        assert _span_index_seen(conn)
    monkeypatch.setattr(store, "import_bytes", imported)
    monkeypatch.setattr(backfill, "BATCH_SECONDS", 60.0)  # ... then one batch for the rest
    again = backfill.Backfill(engine, make_settings()).run(backfill.find_files([tmp_path]))
    assert again.count("imported") == 2 and again.count("already imported") == 3
    with engine.connect() as conn:
        assert len(store.publications(conn, "public")) == 5 and _span_index_seen(conn)


def test_a_failing_file_in_a_batch_rolls_back_alone(engine, tmp_path):
    days = weeks(dt.date(2024, 1, 1), 3)
    for n, day in enumerate(days, 1):
        write(tmp_path, day, {"A": [f"10.0.{n}.0/24"]}, n)
    (tmp_path / file_name("20240109")).write_bytes(build_file({"A": ["10.0.9.0/24", "not-a-prefix"]}, change_number=9))
    report = run(engine, make_settings(), [tmp_path])
    assert report.count("imported") == 3 and [o.file_date for o in report.failed] == [dt.date(2024, 1, 9)]
    with engine.connect() as conn:
        stored = store.publications(conn, "public")
        assert [p.file_date for p in stored] == days and _span_index_seen(conn)
        assert store.snapshot(conn, "public", "A", stored[-1]).prefixes == ("10.0.3.0/24",)
