"""The feeds library: bodies from the approved state (pure), consumers and fetch records, health, the migration,
the settings and the exporter, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.ticket_helpers import import_made, make_settings, utc, week
from watcher import db, feed_consumers, feeds, health, models, review, state
from watcher.errors import ConfigError, ConflictError, NotFoundError
from watcher.settings import FeedSettings, settings_from_mapping
from watcher.web.feeds import split_path


def approved(engine, *, changed: bool = True) -> None:
    """A baseline approved on 2025-01-02 and (``changed``) a change approved on 2025-01-10, removals 2025-01-15."""
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    if changed:
        import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                       "10.1.9.0/24")), 2)
        review.transition(engine, 2, "approve", "bob", now=lambda: utc(2025, 1, 10))


def test_feed_names_and_paths():
    assert feeds.feed_name("public", "myreg") == "myreg"
    assert feeds.feed_name("usgov", "myreg") == "myreg-usgov"
    assert feeds.feed_name("public", "(extra tags)") == "extra-tags"
    assert split_path(["myreg.txt"]) == ("myreg", "myreg.txt")
    assert split_path(["myreg.checkpoint.json.md5"]) == ("myreg", "myreg.checkpoint.json.md5")
    assert split_path(["myreg", "Storage.EastUS2.txt"]) == ("myreg", "myreg/Storage.EastUS2.txt")
    assert split_path(["myreg.exe"]) is None and split_path([".txt"]) is None
    assert split_path(["a", "b", "c.txt"]) is None


def test_bodies_follow_the_phases_per_watch_family_and_tag(engine):
    approved(engine)
    with engine.connect() as conn:
        current = state.current(conn, "public", "myreg")
        previous = feeds.previous_state(conn, current)
    first = feeds.build(current, previous, utc(2025, 1, 11))
    final = feeds.build(current, previous, utc(2025, 1, 15))
    assert not first.complete and final.complete
    assert first.files["myreg.txt"].body == b"10.1.0.0/22\n10.1.9.0/24\n10.3.0.0/24\n"
    assert final.files["myreg.txt"].body == b"10.1.0.0/23\n10.1.2.0/24\n10.1.9.0/24\n10.3.0.0/24\n"
    assert first.files["myreg/Storage.EastUS2.txt"].body == b"10.1.0.0/22\n10.1.9.0/24\n"
    assert final.files["myreg/Storage.EastUS2.txt"].body == b"10.1.0.0/23\n10.1.2.0/24\n10.1.9.0/24\n"
    assert final.files["myreg/v6.txt"].entries == 0 and final.files["myreg/v6.txt"].body == b""
    assert first.last_modified == utc(2025, 1, 10) and final.last_modified == utc(2025, 1, 15)
    # Strong ETags: the body's hash, the same in every build; a changed body changes it.
    again = feeds.build(current, previous, utc(2025, 1, 20))
    assert again.files["myreg.txt"].etag == final.files["myreg.txt"].etag != first.files["myreg.txt"].etag
    assert final.files["myreg.txt"].etag == '"' + hashlib.sha256(final.files["myreg.txt"].body).hexdigest()[:32] + '"'
    for path, file in final.files.items():
        if not path.endswith(".md5"):
            assert final.files[path + ".md5"].body == hashlib.md5(file.body).hexdigest().encode() + b"\n"
    assert json.loads(final.files["myreg.json"].body) == current.to_json(utc(2025, 1, 15))
    headed = feeds.with_header(first, first.files["myreg.txt"])
    assert headed.body.startswith(b"# watcher feed myreg: approved state of myreg (public), ticket 2\n")
    assert b"first phase: old and new lists until 2025-01-15" in headed.body
    assert headed.body.endswith(first.files["myreg.txt"].body) and headed.etag != first.files["myreg.txt"].etag
    assert feeds.with_header(first, first.files["myreg.json"]) is first.files["myreg.json"]


def test_find_refuses_unknown_and_unapproved_watches(engine):
    settings = make_settings()
    with engine.connect() as conn:
        with pytest.raises(NotFoundError, match="no feed 'nope'"):
            feeds.find(conn, settings, "nope", utc(2025, 1, 3))
        with pytest.raises(NotFoundError, match="has no approved state yet"):
            feeds.find(conn, settings, "myreg", utc(2025, 1, 3))
    approved(engine, changed=False)
    with engine.connect() as conn:
        assert feeds.find(conn, settings, "myreg", utc(2025, 1, 3)).ticket_id == 1
        with pytest.raises(NotFoundError, match="no approved state"):  # not yet approved at that time
            feeds.find(conn, settings, "myreg", utc(2025, 1, 1))


def test_consumers_tokens_fetches_status_and_auto_applied(engine):
    approved(engine)
    settings = replace(make_settings(), feeds=FeedSettings(auto_applied=True, stale_after_hours=1))
    fw1, token1 = feed_consumers.add(engine, "fw-1", ["myreg"], ["myreg"], utc(2025, 1, 14))
    fw2, token2 = feed_consumers.add(engine, "fw-2", [], ["myreg"], utc(2025, 1, 14))
    with pytest.raises(ConflictError, match="exists already"):
        feed_consumers.add(engine, "fw-1", [], ["myreg"], utc(2025, 1, 14))
    with pytest.raises(ConfigError, match="unknown feed 'x'"):
        feed_consumers.add(engine, "fw-3", ["x"], ["myreg"], utc(2025, 1, 14))
    with engine.connect() as conn:
        assert feed_consumers.authenticate(conn, token1) == fw1
        assert feed_consumers.authenticate(conn, token1 + "x") is None
        assert [c.name for c in feed_consumers.consumers(conn)] == ["fw-1", "fw-2"]
        final = feeds.find(conn, settings, "myreg", utc(2025, 1, 16))
        first = feeds.find(conn, settings, "myreg", utc(2025, 1, 11))
    etag = final.files["myreg.txt"].etag
    assert feed_consumers.record_fetch(engine, fw1, first, "myreg.txt", first.files["myreg.txt"].etag, 200,
                                       utc(2025, 1, 11))
    assert feed_consumers.record_fetch(engine, fw1, final, "myreg.txt", etag, 200, utc(2025, 1, 16))
    assert not feed_consumers.record_fetch(engine, fw1, final, "myreg.txt", etag, 304, utc(2025, 1, 16, 1))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count, last_status FROM feed_fetches WHERE version = :v"),
                            {"v": etag}).all()
        assert [tuple(r) for r in rows] == [(2, 304)]  # rows grow with versions, not with polls
        report = {s.consumer.name: s for s in feed_consumers.status(
            conn, {"myreg": final}, dt.timedelta(hours=1), utc(2025, 1, 16, 1, 30))}
    assert report["fw-1"].current and not report["fw-1"].stale
    assert report["fw-1"].last_fetch_at == utc(2025, 1, 16, 1) and report["fw-1"].last_version == etag
    assert not report["fw-2"].current and report["fw-2"].stale and report["fw-2"].last_fetch_at is None
    # Health: fw-2 never fetched (added two days before): unhealthy, one reason per silent consumer.
    with engine.connect() as conn:
        reasons = health.evaluate(conn, settings, utc(2025, 1, 16, 1, 30)).reasons
        metrics = health.metrics_text(conn, settings, utc(2025, 1, 16, 1, 30))
    assert [r for r in reasons if "feed consumer" in r] == ["feed consumer fw-2 has not fetched ever (added "
                                                            "2025-01-14 00:00 UTC)"]
    last = int(utc(2025, 1, 16, 1).timestamp())
    assert f'watcher_feed_consumer_last_fetch_timestamp_seconds{{consumer="fw-1"}} {last}' in metrics
    assert 'watcher_feed_consumer_last_fetch_timestamp_seconds{consumer="fw-2"} 0' in metrics
    # Auto-applied: only once every consumer of the watch has the final list.
    assert not feed_consumers.mark_applied_when_everyone_has_it(engine, final, utc(2025, 1, 16, 2))
    feed_consumers.record_fetch(engine, fw2, first, "myreg.txt", first.files["myreg.txt"].etag, 200, utc(2025, 1, 12))
    assert not feed_consumers.mark_applied_when_everyone_has_it(engine, final, utc(2025, 1, 16, 2))
    feed_consumers.record_fetch(engine, fw2, final, "myreg/v4.txt", final.files["myreg/v4.txt"].etag, 200,
                                utc(2025, 1, 16, 2))
    assert feed_consumers.mark_applied_when_everyone_has_it(engine, final, utc(2025, 1, 16, 2))
    with engine.connect() as conn:
        pulls = feed_consumers.pulled_by(conn, 2)
        trail = conn.execute(sa.text("SELECT actor, action FROM ticket_events WHERE ticket_id = 2 ORDER BY id")).all()
    assert [(p.consumer, p.complete) for p in pulls] == [("fw-1", True), ("fw-2", True)]
    assert feed_consumers.pulled_line(pulls).startswith("pulled by fw-1 at 2025-01-16 00:00 UTC, fw-2 at")
    assert tuple(trail[-1]) == (feed_consumers.AUTO_ACTOR, "applied")
    feed_consumers.count_denial(engine, utc(2025, 1, 16))
    feed_consumers.count_denial(engine, utc(2025, 1, 16, 5))
    feed_consumers.remove(engine, "fw-2")
    with pytest.raises(NotFoundError):
        feed_consumers.remove(engine, "fw-2")
    with engine.connect() as conn:
        assert feed_consumers.denials(conn) == 2
        assert feed_consumers.authenticate(conn, token2) is None
        assert conn.execute(sa.text("SELECT count(*) FROM feed_fetches")).scalar() == 2  # fw-2's went with it


def test_export_writes_atomically_drops_gone_tags_and_keeps_last_modified(engine, tmp_path):
    approved(engine)
    settings = make_settings()
    folder = tmp_path / "out"
    with engine.connect() as conn:
        changed = feeds.export(conn, settings, folder, utc(2025, 1, 16))
        served = feeds.find(conn, settings, "myreg", utc(2025, 1, 16))
    assert sorted(changed) == sorted(served.files)
    for path, file in served.files.items():
        assert (folder / path).read_bytes() == file.body
        assert (folder / path).stat().st_mtime == utc(2025, 1, 15).timestamp()
    assert f'"/feeds/myreg.txt" \'{served.files["myreg.txt"].etag}\';' in (folder / feeds.MAP_FILE).read_text()
    (folder / "myreg" / "Gone.Tag.txt").write_text("10.0.0.0/8\n")
    with engine.connect() as conn:
        assert feeds.export(conn, settings, folder, utc(2025, 1, 17)) == ["myreg/Gone.Tag.txt"]
    assert not (folder / "myreg" / "Gone.Tag.txt").exists() and not list(folder.rglob(".tmp-*"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with engine.connect() as conn, pytest.raises(Exception, match="cannot export the feeds"):
        feeds.export(conn, settings, blocker / "sub", utc(2025, 1, 17))


def test_exporter_follows_an_approval_and_a_removal_date_within_a_second(engine, tmp_path):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    clock_file = tmp_path / "now"
    clock_file.write_text(utc(2025, 1, 9).isoformat())
    settings = replace(settings, feeds=FeedSettings(export_dir=str(tmp_path / "out"), clock_file=str(clock_file)))
    exporter = feeds.Exporter(settings, engine, lambda: utc(2000, 1, 1))
    target = tmp_path / "out" / "myreg.txt"
    exporter.start()
    try:
        assert target.read_bytes() == b"10.1.0.0/22\n10.3.0.0/24\n"
        import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                       "10.1.9.0/24")), 2)
        clock_file.write_text(utc(2025, 1, 11).isoformat())
        started = time.monotonic()
        review.transition(engine, 2, "approve", "bob", now=lambda: utc(2025, 1, 10))
        while target.read_bytes() != b"10.1.0.0/22\n10.1.9.0/24\n10.3.0.0/24\n":
            assert time.monotonic() - started < 1.0, "the approval did not reach the export folder within 1 s"
            time.sleep(0.01)
        clock_file.write_text(utc(2025, 1, 15, 0, 0, 1).isoformat())  # the removal date passes
        started = time.monotonic()
        while target.read_bytes() != b"10.1.0.0/23\n10.1.2.0/24\n10.1.9.0/24\n10.3.0.0/24\n":
            assert time.monotonic() - started < 1.0, "the removal date did not reach the export folder within 1 s"
            time.sleep(0.01)
        # The .md5 follows its file (written after it, so a poller that sees a new MD5 finds the new file).
        md5 = tmp_path / "out" / "myreg.txt.md5"
        while md5.read_text() != hashlib.md5(target.read_bytes()).hexdigest() + "\n":
            assert time.monotonic() - started < 1.0, "the .md5 did not follow its file within 1 s"
            time.sleep(0.01)
    finally:
        exporter.stop()


def test_feeds_settings_are_typed_and_checked():
    settings = settings_from_mapping({"feeds": {"public": True, "auto_applied": True, "stale_after_hours": 2,
                                                "export_dir": "/srv/feeds", "cache_seconds": 60}})
    assert settings.feeds == FeedSettings(public=True, auto_applied=True, stale_after_hours=2.0,
                                          export_dir="/srv/feeds", cache_seconds=60)
    with pytest.raises(ConfigError, match="feeds.public must be true or false"):
        settings_from_mapping({"feeds": {"public": "yes"}})
    with pytest.raises(ConfigError, match="feeds.stale_after_hours must be more than 0"):
        settings_from_mapping({"feeds": {"stale_after_hours": 0}})
    with pytest.raises(ConfigError, match="unknown keys: token"):
        settings_from_mapping({"feeds": {"token": "x"}})


def test_migration_0009_upgrades_and_downgrades_with_consumers_and_fetches(engine):
    approved(engine, changed=False)
    consumer, _ = feed_consumers.add(engine, "fw-1", [], ["myreg"], utc(2025, 1, 3))
    with engine.connect() as conn:
        feed = feeds.find(conn, make_settings(), "myreg", utc(2025, 1, 3))
    feed_consumers.record_fetch(engine, consumer, feed, "myreg.txt", feed.files["myreg.txt"].etag, 200, utc(2025, 1, 3))
    feed_consumers.count_denial(engine, utc(2025, 1, 3))
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
    db.downgrade(engine, "0008")
    with engine.connect() as conn:
        assert not {"feed_consumers", "feed_fetches", "feed_denials"} & set(sa.inspect(conn).get_table_names())
        assert conn.execute(sa.text("SELECT count(*) FROM approved_states")).scalar() == 1  # the state stays
    db.upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
        assert feed_consumers.consumers(conn) == []
