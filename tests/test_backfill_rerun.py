"""A backfill stopped between its last import and its ticket hooks: the next run (or poll) makes the tickets it owes.

Each stopped run is compared with the same files imported by one uninterrupted
run into a twin database of the same backend: the rerun must make exactly the
tickets (kind, watch, publication, state, changes, hold reasons, what they
compare with) and notification rows the uninterrupted run made. The stop is
simulated the two ways the real code path allows: the import steps run without
the hooks (``make_hooks=None``, what a kill after the last import leaves), and
hooks that fail once with a real database error (the transaction of the hooks
rolls back).
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import _postgres_schema_url
from tests.factory import build_file, file_name
from tests.httpstub import Origin, reply
from tests.ticket_helpers import approve_baselines, import_made, make_settings, week
from watcher import backfill, db, hook_marks, pipeline, review, store, tickets
from watcher.cli import main
from watcher.errors import StoreError
from watcher.models import HookMark, OutboxMessage
from watcher.settings import Settings

DESTINATION = "json://user:secret@127.0.0.1:9/hook"  # queued only: nothing is sent in these tests
FIRST = dt.date(2024, 1, 1)


@pytest.fixture
def twin(db_url: str, tmp_path: Path) -> Iterator[sa.Engine]:
    """A second empty database on the same backend: where the uninterrupted run goes."""
    if db_url.startswith("sqlite"):
        engine = db.open_database(f"sqlite:///{tmp_path / 'twin.db'}")
        yield engine
        engine.dispose()
        return
    admin_url = db_url.split("?")[0]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = db.open_database(_postgres_schema_url(admin_url, schema))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def day(n: int) -> dt.date:
    """Week ``n``; week 1 is the publication stored (and approved) before every backfill here."""
    return FIRST + dt.timedelta(days=7 * (n - 1))


def write(folder: Path, n: int, tags: dict) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / file_name(day(n).strftime("%Y%m%d"))
    path.write_bytes(build_file(tags, change_number=n))
    return path


def storage_week(n: int) -> dict:
    """Storage.EastUS2 (watched) changes every week: 4 prefixes in week 1, then 10.1.0.0/24 and one of the week."""
    return week(storage_eastus2=["10.1.0.0/24", f"10.1.{10 + n}.0/24"])


def approved_start(engine: sa.Engine, settings: Settings) -> None:
    """Week 1 imported by a poll's import, its baseline ticket approved: change tickets follow."""
    import_made(engine, settings, day(1).strftime("%Y%m%d"), week(), change_number=1)
    assert len(approve_baselines(engine)) == 1


def run(engine: sa.Engine, settings: Settings, folder: Path, make_hooks=pipeline.derived_work,
        force: bool = False) -> backfill.BackfillReport:
    return backfill.Backfill(engine, settings, make_hooks, force=force).run(backfill.find_files([folder]))


def failing_once() -> backfill.HookMaker:
    """The real hooks, then one that fails with a real database error the first time: the hooks roll back."""
    calls = []

    def make(**kwargs: Any) -> list:
        def broken(conn: sa.Connection, result: store.ImportResult, settings: Settings) -> None:
            calls.append(result.publication.id)
            if len(calls) == 1:
                conn.execute(sa.text("SELECT no_such_column FROM publications"))

        return [*pipeline.derived_work(**kwargs), broken]

    return make


def stop_before_hooks(engine: sa.Engine, settings: Settings, folder: Path, how: str, force: bool = False) -> None:
    if how == "killed-after-imports":
        report = run(engine, settings, folder, make_hooks=None, force=force)
        assert report.hook_runs == [] and not report.failed
    else:
        with pytest.raises(StoreError, match="making the public tickets"):
            run(engine, settings, folder, make_hooks=failing_once(), force=force)


def made(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every ticket after week 1's baseline, as what a reviewer sees (no ids, uids or clocks)."""
    with engine.connect() as conn:
        found = [t for t in tickets.list_tickets(conn) if t.file_date > FIRST]
        outbox = conn.execute(sa.select(OutboxMessage.ticket_id, OutboxMessage.event)).all()
    return [{
        "kind": t.kind, "watch": t.watch, "date": t.file_date, "state": t.state, "title": t.title,
        "changes": t.changes, "previous": t.context["previous"]["date"] if t.context["previous"] else None,
        "held_for": list(t.context["hold"]["reasons"]), "totals": t.context["totals"],
        "messages": sorted(e for ticket_id, e in outbox if ticket_id == t.id),
    } for t in found]


def uninterrupted(twin: sa.Engine, settings: Settings, folder: Path, before=approved_start) -> list[dict[str, Any]]:
    before(twin, settings)
    run(twin, settings, folder)
    return made(twin)


STOPS = ["killed-after-imports", "hooks-fail-once"]


def stopped_archive(engine: sa.Engine, settings, tmp_path: Path, weeks: range, stop: str) -> Path:
    """An archive of ``weeks`` over an approved start, backfilled by a run stopped (``stop``) before its hooks."""
    folder = tmp_path / "archive"
    for n in weeks:
        write(folder, n, storage_week(n))
    approved_start(engine, settings)
    stop_before_hooks(engine, settings, folder, stop)
    return folder


@pytest.mark.parametrize("stop", STOPS)
def test_a_rerun_after_a_stop_before_the_hooks_makes_the_tickets_of_the_uninterrupted_run(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path, stop: str) -> None:
    settings = make_settings(urls=(DESTINATION,))
    folder = stopped_archive(engine, settings, tmp_path, range(2, 6), stop)
    assert made(engine) == []  # the stop lost the tickets: every file is stored, no ticket is
    with engine.connect() as conn:
        assert len(store.publications(conn, "public")) == 5
        assert hook_marks.marked_publication(conn, "public").file_date == day(1)

    rerun = run(engine, settings, folder)
    assert rerun.count("already imported") == 4 and rerun.count("imported") == 0
    expected = uninterrupted(twin, settings, folder)
    assert made(engine) == expected
    [ticket] = expected
    assert ticket["kind"] == "change" and ticket["watch"] == "myreg" and ticket["date"] == day(5)
    assert ticket["previous"] == day(1).isoformat() and ticket["messages"] == ["created"]
    assert ticket["changes"] == {"Storage.EastUS2": {
        "added": ["10.1.15.0/24"], "removed": ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]}}
    # The rerun says what it did: the tickets, on the newest file's line, made since week 1.
    [hook_run] = rerun.hook_runs
    assert hook_run.since.file_date == day(1) and hook_run.publication.file_date == day(5)
    lines = rerun.to_json()
    assert [line["tickets"] for line in lines[:-1]] == [None] * 3
    assert lines[-1]["outcome"] == "already imported" and lines[-1]["tickets"] == {
        "cloud": "public", "date": day(5).isoformat(), "since": day(1).isoformat(), "made": list(hook_run.tickets),
        "owed": True}
    assert len(hook_run.tickets) == 1
    # And once more: nothing is owed any longer.
    again = run(engine, settings, folder)
    assert again.hook_runs == [] and made(engine) == expected


def test_a_rerun_after_a_complete_run_makes_no_ticket_and_says_none(engine: sa.Engine, tmp_path: Path) -> None:
    settings = make_settings(urls=(DESTINATION,))
    folder = tmp_path / "archive"
    for n in range(2, 6):
        write(folder, n, storage_week(n))
    approved_start(engine, settings)
    first = run(engine, settings, folder)
    [hook_run] = first.hook_runs
    assert len(hook_run.tickets) == 1 and first.to_json()[-1]["tickets"]["made"] == list(hook_run.tickets)
    assert not hook_run.owed and "owed" not in hook_run.describe()
    after_first = made(engine)
    assert len(after_first) == 1 and after_first[0]["messages"] == ["created"]
    rerun = run(engine, settings, folder)
    assert rerun.hook_runs == [] and [line["tickets"] for line in rerun.to_json()] == [None] * 4
    assert made(engine) == after_first


@pytest.mark.parametrize("stop", STOPS)
def test_a_newer_file_arriving_before_the_rerun_makes_one_ticket_since_the_last_hooks(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path, stop: str) -> None:
    settings = make_settings(urls=(DESTINATION,))
    folder = stopped_archive(engine, settings, tmp_path, range(2, 5), stop)
    write(folder, 5, storage_week(5))  # a newer week arrives meanwhile
    rerun = run(engine, settings, folder)
    assert rerun.count("imported") == 1 and rerun.count("already imported") == 3
    expected = uninterrupted(twin, settings, folder)
    assert made(engine) == expected and len(expected) == 1
    assert expected[0]["date"] == day(5) and expected[0]["previous"] == day(1).isoformat()
    [hook_run] = rerun.hook_runs
    assert hook_run.since.file_date == day(1)  # not week 4, the newest stored before the rerun
    assert not hook_run.owed  # week 5 came in with the rerun


@pytest.mark.parametrize("stop", STOPS)
def test_a_file_forced_through_the_plausibility_check_holds_the_tickets_a_rerun_makes(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path, stop: str) -> None:
    """Week 5 has 3 of 5 tags and is imported with --force; the rerun, without --force, holds its ticket as well."""
    settings = make_settings(urls=(DESTINATION,))
    folder = tmp_path / "archive"
    for n in range(2, 5):
        write(folder, n, storage_week(n))
    write(folder, 5, week(storage_eastus2=["10.1.0.0/24", "10.1.15.0/24"],
                          withdraw=("AzureContainerRegistry.WestUS", "Storage.WestUS")))
    approved_start(engine, settings)
    stop_before_hooks(engine, settings, folder, stop, force=True)
    rerun = run(engine, settings, folder)
    assert not rerun.failed and rerun.count("already imported") == 4
    approved_start(twin, settings)
    run(twin, settings, folder, force=True)
    expected = made(twin)
    assert made(engine) == expected
    [ticket] = expected
    assert ticket["state"] == "hold" and ticket["date"] == day(5)
    assert any("imported with --force despite" in reason and "only 3 service tags" in reason
               for reason in ticket["held_for"])


def reviewed_week_2(step: str):
    """Week 1 approved; week 2 (a poll's import) changes Storage.EastUS2; its ticket is rejected or left live."""
    def before(engine: sa.Engine, settings: Settings) -> None:
        approved_start(engine, settings)
        import_made(engine, settings, day(2).strftime("%Y%m%d"), storage_week(2), change_number=2)
        with engine.connect() as conn:
            [live] = [t for t in tickets.list_tickets(conn) if t.file_date == day(2) and t.state in tickets.LIVE_STATES]
        if step == "reject":
            review.transition(engine, live.id, "reject", "reviewer", "not now")

    return before


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("step", ["reject", "leave-live"])
@pytest.mark.parametrize("acr_changes", [False, True], ids=["nothing-new", "acr-changes-in-week-3"])
def test_a_rejected_change_does_not_come_back_a_live_ticket_is_not_repeated_and_a_later_change_is_not_lost(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path, stop: str, step: str, acr_changes: bool) -> None:
    """Comparing with the newest publication before the rerun (week 4) would see no change and lose week 3's."""
    settings = make_settings(urls=(DESTINATION,))
    folder = tmp_path / "archive"
    later = week(storage_eastus2=["10.1.0.0/24", "10.1.12.0/24"],
                 acr_eastus2=["10.3.0.0/24", "10.3.9.0/24"] if acr_changes else ["10.3.0.0/24"])
    for n in range(3, 6):
        write(folder, n, later)  # week 3 is the last change; weeks 4 and 5 repeat it
    reviewed_week_2(step)(engine, settings)
    stop_before_hooks(engine, settings, folder, stop)
    run(engine, settings, folder)
    expected = uninterrupted(twin, settings, folder, before=reviewed_week_2(step))
    assert made(engine) == expected
    week_2 = [t for t in expected if t["date"] == day(2)]
    fresh = [t for t in expected if t["date"] > day(2)]
    live_state = "superseded" if acr_changes else "hold"  # held: it removes 75% of the tag's space
    assert [t["state"] for t in week_2] == ["rejected" if step == "reject" else live_state]
    if not acr_changes:
        assert fresh == []
    else:
        [ticket] = fresh
        assert ticket["date"] == day(5) and ticket["previous"] == day(1).isoformat()
        assert ticket["changes"]["AzureContainerRegistry.EastUS2"] == {"added": ["10.3.9.0/24"], "removed": []}
        assert set(ticket["changes"]) == {"AzureContainerRegistry.EastUS2", "Storage.EastUS2"}


def test_a_poll_makes_the_tickets_a_stopped_backfill_owes_once(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path, origin: Origin) -> None:
    settings = make_settings(urls=(DESTINATION,))
    folder = tmp_path / "archive"
    for n in range(2, 6):
        newest = write(folder, n, storage_week(n))
    approved_start(engine, settings)
    stop_before_hooks(engine, settings, folder, "killed-after-imports")
    origin.route(f"/files/{newest.name}", reply(newest.read_bytes()))
    url = origin.url(f"/files/{newest.name}")
    [polled] = pipeline.poll(engine, settings, ["public"], url=url)
    assert polled.outcome == "already-imported" and polled.ok
    assert polled.notes == ("public: 1 ticket made for the publication of 2024-01-29 (changes since 2024-01-01; "
                            "owed by an earlier run that stopped before its tickets)",)
    assert made(engine) == uninterrupted(twin, settings, folder)
    [again] = pipeline.poll(engine, settings, ["public"], url=url)
    assert again.outcome == "already-imported" and again.notes == ()
    assert made(engine) == made(twin)


def test_a_polled_new_week_after_a_stopped_backfill_compares_with_the_last_hooks(
        engine: sa.Engine, twin: sa.Engine, tmp_path: Path) -> None:
    """The poll's import of week 6 after a stop: its changed tags count from week 2 (the last hooks), so the
    ACR change of week 3 is not taken for the rejected change coming back unchanged."""
    settings = make_settings(urls=(DESTINATION,))
    folder = tmp_path / "archive"
    later = week(storage_eastus2=["10.1.0.0/24", "10.1.12.0/24"], acr_eastus2=["10.3.0.0/24", "10.3.9.0/24"])
    for n in range(3, 6):
        write(folder, n, later)
    reviewed_week_2("reject")(engine, settings)
    stop_before_hooks(engine, settings, folder, "killed-after-imports")
    import_made(engine, settings, day(6).strftime("%Y%m%d"), later, change_number=6)
    expected = uninterrupted(twin, settings, folder, before=reviewed_week_2("reject"))
    import_made(twin, settings, day(6).strftime("%Y%m%d"), later, change_number=6)
    mine, theirs = made(engine), made(twin)
    # Uninterrupted: week 5's ticket, then week 6 (the same lists) makes none. Stopped: week 6's ticket.
    assert [t["date"] for t in theirs] == [day(2), day(5)] and [t["date"] for t in mine] == [day(2), day(6)]
    for key in ("kind", "changes", "previous", "held_for", "totals", "messages"):
        assert mine[1][key] == theirs[1][key]
    assert expected == theirs


def test_the_migration_marks_each_clouds_newest_publication_and_nothing_is_owed(db_url: str, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    # The revision before the marks.
    before_marks = ScriptDirectory.from_config(db.alembic_config()).get_revision("0014").down_revision
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine)  # the store writes what the newest schema holds: imported there, then taken back
        folder = tmp_path / "archive"
        for n in range(1, 4):
            write(folder, n, storage_week(n))
        (folder / file_name("20240108", "china")).write_bytes(build_file(week(), change_number=7, cloud="china"))
        for path in sorted(folder.iterdir()):
            store.import_bytes(engine, path.read_bytes(), path.name)
        db.downgrade(engine, before_marks)  # what was stored before the marks existed
        assert "hook_marks" not in sa.inspect(engine).get_table_names()
        db.upgrade(engine)
        with engine.connect() as conn:
            marks = {cloud: hook_marks.marked_publication(conn, cloud).file_date for cloud in ("public", "china")}
            assert conn.execute(sa.select(sa.func.count()).select_from(HookMark)).scalar_one() == 2
        assert marks == {"public": day(3), "china": dt.date(2024, 1, 8)}
        rerun = run(engine, make_settings(urls=(DESTINATION,)), folder)
        assert rerun.hook_runs == [] and rerun.count("already imported") == 4
        with engine.connect() as conn:
            assert tickets.list_tickets(conn) == []
        db.downgrade(engine, before_marks)
        assert "hook_marks" not in sa.inspect(engine).get_table_names()
        db.upgrade(engine)
        with engine.connect() as conn:  # marked again on the way up
            assert hook_marks.marked_publication(conn, "public").file_date == day(3)
    finally:
        engine.dispose()


def test_watcher_import_json_after_a_stop_tells_the_tickets_the_rerun_made(
        db_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text('[[registries]]\nname = "myreg"\nregions = ["eastus2"]\ndata_endpoint = true\n'
                      '[tickets]\nbogon_exemptions = ["10.0.0.0/8"]\n')
    env = {"WATCHER_CONFIG": None, "WATCHER_SOURCE_URL": None, "WATCHER_CLOUDS": None, "WATCHER_PROXY": None,
           "WATCHER_NOTIFY_URLS": None, "WATCHER_DATABASE_URL": db_url}
    folder = tmp_path / "archive"
    for n in range(1, 4):
        write(folder, n, storage_week(n))
    settings = make_settings()
    stop_before_hooks(engine, settings, folder, "killed-after-imports")

    def cli(*args: str):
        result = CliRunner().invoke(main, ["--config", str(config), "import", *args, str(folder)], env=env,
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    lines = json.loads(cli("--json").stdout)
    assert [line["outcome"] for line in lines] == ["already imported"] * 3
    with engine.connect() as conn:
        [baseline] = tickets.list_tickets(conn)
    assert baseline.kind == "baseline" and baseline.file_date == day(3)
    assert [line["tickets"] for line in lines] == [None, None, {
        "cloud": "public", "date": day(3).isoformat(), "since": None, "made": [baseline.id], "owed": True}]
    write(folder, 4, storage_week(4))  # stopped once more, after importing week 4
    stop_before_hooks(engine, settings, folder, "killed-after-imports")
    text = cli().stdout
    assert text.count("already imported") == 4
    assert ("public: 1 ticket made for the publication of 2024-01-22 (changes since 2024-01-15; "
            "owed by an earlier run that stopped before its tickets)") in text
    text = cli().stdout
    assert "ticket" not in text and text.count("already imported") == 4  # nothing owed, nothing said
