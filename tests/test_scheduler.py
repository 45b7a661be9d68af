"""The schedule, and ``watcher run`` as a real process against the local stand-in for Microsoft:
imports, tickets and notifies; catches up after downtime from the database; stops on SIGTERM; loses
nothing to ``kill -9`` in the middle of an import."""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.daemon_helpers import (
    DaemonProcess,
    JsonReceiver,
    base_env,
    rows,
    seed_old_china,
    serve_new_china_file,
    table_count,
    today_name,
    write_config,
)
from tests.httpstub import Origin, drip, html_reply
from watcher import db, health, leader, polls
from watcher.errors import ConfigError, StoreError
from watcher.scheduler import Daemon, default_schedule, make_trigger, schedule_period
from watcher.settings import DaemonSettings, FetchSettings, Settings

UTC = dt.timezone.utc


@pytest.fixture
def receiver():
    server = JsonReceiver()
    yield server
    server.close()


# ---------------------------------------------------------------- the schedule


def test_five_and_six_field_schedules_fire_when_cron_says() -> None:
    start = dt.datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC)  # a Saturday
    trigger = make_trigger("15 4 * * *")
    assert trigger.get_next_fire_time(None, start) == dt.datetime(2026, 11, 29, 4, 15, tzinfo=UTC)
    assert schedule_period(trigger, start) == dt.timedelta(days=1)
    seconds = make_trigger("*/2 * * * * *")
    assert seconds.get_next_fire_time(None, start) == start.replace(second=30)
    assert schedule_period(seconds, start) == dt.timedelta(seconds=2)
    # Weekdays as in cron: 0 is Sunday (APScheduler 3 alone would read 0 as Monday).
    sunday = make_trigger("0 6 * * 0").get_next_fire_time(None, start)
    assert sunday == dt.datetime(2026, 11, 29, 6, 0, tzinfo=UTC) and sunday.weekday() == 6
    assert make_trigger("0 6 * * 1-5").get_next_fire_time(None, start).weekday() == 0
    assert schedule_period(make_trigger("0 6 * * 7"), start) == dt.timedelta(weeks=1)


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "* * * * * * *", "0 6 * * 8", "nonsense x y z w"])
def test_invalid_schedules_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        make_trigger(bad or " ")


def test_default_schedule_is_daily_at_a_minute_picked_per_host() -> None:
    first, second = default_schedule("host-a"), default_schedule("host-b")
    assert default_schedule("host-a") == first  # stable for a host
    assert len({default_schedule(f"host-{n}") for n in range(20)}) > 10  # spread over the day
    for expression in (first, second, default_schedule()):
        minute, hour, *rest = expression.split()
        assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and rest == ["*", "*", "*"]
        assert schedule_period(make_trigger(expression), dt.datetime(2026, 1, 1, tzinfo=UTC)) == dt.timedelta(days=1)


# ---------------------------------------------------------------- the daemon end to end


def test_daemon_imports_tickets_notifies_once_and_stops_on_sigterm(
    engine: sa.Engine, db_url: str, origin: Origin, receiver: JsonReceiver, tmp_path: Path
) -> None:
    seed_old_china(engine)
    page = serve_new_china_file(origin)
    config = write_config(tmp_path / "watcher.toml")
    env = base_env(db_url, WATCHER_CONFIG=str(config), WATCHER_SOURCE_URL=page, WATCHER_NOTIFY_URLS=receiver.url())
    daemon = DaemonProcess(env, "--schedule", "*/2 * * * * *")
    try:
        daemon.wait_for(lambda: receiver.bodies, "the ticket's notification")
        # Two more runs: they find nothing new, and nothing is sent again.
        daemon.wait_for(lambda: len(daemon.finished_runs()) >= 3, "three runs")
        code, seconds = daemon.terminate()
    finally:
        daemon.kill()
    assert code == 0 and seconds < 10
    assert table_count(engine, "publications") == 2
    [ticket] = rows(engine, "SELECT * FROM tickets")
    assert ticket["cloud"] == "china" and ticket["watch"] == "contoso"
    assert [r["state"] for r in rows(engine, "SELECT state FROM outbox")] == ["sent"]
    assert len(receiver.bodies) == 1 and f"ticket {ticket['id']}" in receiver.bodies[0]["title"]
    outcomes = [r["outcome"] for r in rows(engine, "SELECT outcome FROM polls ORDER BY id")]
    assert outcomes[0] == "new" and set(outcomes[1:]) == {"skipped-known-url"} and len(outcomes) >= 3
    runs = rows(engine, "SELECT * FROM daemon_runs ORDER BY id")
    assert len(runs) == len(outcomes) and all(r["ok"] for r in runs)
    assert runs[0]["reason"] == "catch-up" and "schedule" in {r["reason"] for r in runs[1:]}
    assert origin.hits(f"/files/{today_name()}") == 1
    assert "t0kenSecret" not in daemon.log_text()
    assert any(e["message"] == "daemon stopped" for e in daemon.events("stop"))


def _poll_row(engine: sa.Engine, finished: dt.datetime) -> None:
    polls.record_poll(engine, cloud="china", started_at=finished, finished_at=finished,
                      url="https://example.test/ServiceTags_China_20260713.json", outcome="skipped-known-url")


def test_a_restart_catches_up_only_when_a_fire_time_passed_since_the_last_success(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path
) -> None:
    seed_old_china(engine)
    page = serve_new_china_file(origin)
    now = dt.datetime.now(UTC)
    # Daily, three hours from now: the next tick is far away, and none fell in the last two hours.
    env = base_env(db_url, WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml", registries=False)),
                   WATCHER_SOURCE_URL=page, WATCHER_SCHEDULE=f"0 {(now + dt.timedelta(hours=3)).hour} * * *")

    _poll_row(engine, now - dt.timedelta(hours=2))  # recent: no catch-up
    recent = DaemonProcess(env)
    try:
        [decision] = recent.wait_for(lambda: recent.events("catch-up"), "the catch-up decision")
        assert decision["outcome"] == "not-due"
        code, _ = recent.terminate()
    finally:
        recent.kill()
    assert code == 0
    assert table_count(engine, "polls") == 1 and table_count(engine, "daemon_runs") == 0
    assert origin.hits("/details") == 0

    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM polls"))
    _poll_row(engine, now - dt.timedelta(days=1, minutes=5))  # yesterday's run was missed since: poll at once
    late = DaemonProcess(env)
    try:
        [decision] = late.wait_for(lambda: late.events("catch-up"), "the catch-up decision")
        assert decision["outcome"] == "due"
        late.wait_for(late.finished_runs, "the catch-up run")
        code, _ = late.terminate()
    finally:
        late.kill()
    assert code == 0
    assert [r["outcome"] for r in rows(engine, "SELECT outcome FROM polls ORDER BY id")] == ["skipped-known-url", "new"]
    assert [r["reason"] for r in rows(engine, "SELECT reason FROM daemon_runs")] == ["catch-up"]
    assert table_count(engine, "publications") == 2


def test_sigterm_during_a_download_exits_0_within_10_seconds_and_writes_nothing(
    tmp_path: Path, origin: Origin
) -> None:
    db_url = f"sqlite:///{tmp_path / 'watcher.db'}"
    name = today_name()
    origin.route(f"/files/{name}", drip(0.05, 60))  # a body that never ends
    origin.route("/details", reply_page(origin, name))
    env = base_env(db_url, WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml", registries=False)),
                   WATCHER_SOURCE_URL=origin.url("/details"))
    daemon = DaemonProcess(env, "--schedule", "0 3 * * *")
    try:
        daemon.wait_for(lambda: origin.hits(f"/files/{name}"), "the download to start")
        code, seconds = daemon.terminate()
    finally:
        daemon.kill()
    assert code == 0 and seconds < 10, daemon.log_text()
    assert any("still in progress" in e["message"] for e in daemon.events("stop"))
    engine = db.open_database(db_url)
    try:
        assert table_count(engine, "publications") == 0
        [run] = rows(engine, "SELECT * FROM daemon_runs")
        assert run["finished_at"] is None  # cut short: neither a success nor a failure
    finally:
        engine.dispose()


def reply_page(origin: Origin, name: str):
    from tests.httpstub import details_page, html_reply

    return html_reply(details_page([origin.url(f"/files/{name}")]))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_kill_9_in_the_middle_of_an_import_loses_nothing(
    engine: sa.Engine, db_url: str, origin: Origin, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """The import is held inside its transaction (the tickets table is locked), the daemon is killed -9,
    and a restarted daemon imports the publication once, with its ticket and one message."""
    seed_old_china(engine)
    page = serve_new_china_file(origin)
    app = f"watcher-kill-{uuid.uuid4().hex[:8]}"
    env = base_env(f"{db_url}&application_name={app}",
                   WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml")), WATCHER_SOURCE_URL=page,
                   WATCHER_NOTIFY_URLS=receiver.url(), WATCHER_SCHEDULE="*/2 * * * * *")
    blocker = db.transactional(engine).connect()  # reads alone run in autocommit: the lock needs a transaction
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE"))
    daemon = DaemonProcess(env)
    try:
        def import_waits() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND wait_event_type = 'Lock'"
                ), {"app": app}).scalar())

        daemon.wait_for(import_waits, "the import to wait on the tickets table")
        daemon.kill()  # SIGKILL, mid-transaction
    finally:
        daemon.kill()
        blocker.rollback()
        blocker.close()
    assert table_count(engine, "publications") == 1 and table_count(engine, "tickets") == 0
    assert table_count(engine, "polls") == 0 and not receiver.bodies

    again = DaemonProcess(env)
    try:
        again.wait_for(lambda: receiver.bodies, "the ticket's notification after the restart")
        again.wait_for(lambda: len(again.finished_runs()) >= 2, "a second run")
        code, _ = again.terminate()
    finally:
        again.kill()
    assert code == 0
    assert table_count(engine, "publications") == 2 and table_count(engine, "tickets") == 1
    assert len(receiver.bodies) == 1
    runs = rows(engine, "SELECT finished_at, ok FROM daemon_runs ORDER BY id")
    assert runs[0]["finished_at"] is None and all(r["ok"] for r in runs[1:])
    with engine.connect() as conn:  # every tag version points at a stored publication
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tag_versions v LEFT JOIN publications p ON p.id = v.publication_id WHERE p.id IS NULL"
        )).scalar() == 0


# ---------------------------------------------------------------- one run, in process


class _AlwaysLeads:
    """For tests of one run: the real advisory lock is shared by every test on the PostgreSQL server."""

    description = "leader (test)"

    def try_lead(self) -> bool:
        return True

    def release(self) -> None:
        pass


def daemon_for(engine: sa.Engine, page: str, leadership: leader.Leadership | None = None,
               collaborators: dict[str, Any] | None = None, **daemon: float) -> Daemon:
    settings = Settings(clouds=("china",), fetch=FetchSettings(source_url=page, retries=0),
                        daemon=DaemonSettings(schedule="0 3 * * *", **daemon))
    return Daemon(settings, engine, leadership or leader.leadership_for(engine), **(collaborators or {}))


def test_a_failing_run_is_retried_with_backoff_within_its_deadline(engine: sa.Engine, origin: Origin) -> None:
    page = serve_new_china_file(origin, before=[html_reply("<html>busy</html>", 503)] * 2)
    daemon = daemon_for(engine, page, run_deadline_seconds=30.0, retry_backoff_seconds=0.05)
    try:
        report = daemon.run_once("schedule")
    finally:
        daemon.leadership.release()
    assert report is not None and report.ok, report
    assert [o.outcome for o in report.outcomes] == ["error", "error", "new"]
    [run] = rows(engine, "SELECT ok, error, reason FROM daemon_runs")
    assert run == {"ok": True, "error": "", "reason": "schedule"}


def test_a_run_that_keeps_failing_stops_at_its_deadline_and_is_recorded_failed(engine: sa.Engine, origin: Origin) -> None:
    page = serve_new_china_file(origin, before=[html_reply("<html>down</html>", 500)] * 50)
    daemon = daemon_for(engine, page, run_deadline_seconds=0.6, retry_backoff_seconds=0.1)
    try:
        report = daemon.run_once("schedule")
    finally:
        daemon.leadership.release()
    assert report is not None and not report.ok
    assert 2 <= len(report.outcomes) < 10 and {o.outcome for o in report.outcomes} == {"error"}
    [run] = rows(engine, "SELECT ok, error FROM daemon_runs")
    assert run["ok"] is not None and not run["ok"] and run["error"].startswith("china: ") and "500" in run["error"]


def test_a_run_that_dies_of_an_unexpected_error_is_recorded_failed_and_counts_against_health(
    engine: sa.Engine, origin: Origin
) -> None:
    def broken_delivery(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for *: 'float' and 'str'")  # e.g. a bad setting

    page = serve_new_china_file(origin)
    daemon = daemon_for(engine, page, _AlwaysLeads(), {"deliver": broken_delivery}, run_deadline_seconds=5.0)
    try:
        reports = [daemon.run_once("schedule") for _ in range(3)]
    finally:
        daemon.leadership.release()
    assert all(r is not None and not r.ok for r in reports)
    assert reports[0].errors == ["internal error: TypeError: unsupported operand type(s) for *: 'float' and 'str'"]
    runs = rows(engine, "SELECT finished_at, ok, error FROM daemon_runs ORDER BY id")
    assert len(runs) == 3
    assert all(r["finished_at"] is not None and r["ok"] is not None and not r["ok"] for r in runs)
    assert all(r["error"].startswith("internal error: TypeError: unsupported operand") for r in runs)
    with engine.connect() as conn:
        assert health.consecutive_failures(conn) == 3
        assert not health.evaluate(conn, daemon.settings, dt.datetime.now(UTC)).healthy


def test_a_database_error_in_the_health_check_does_not_escape_the_run(engine: sa.Engine, origin: Origin) -> None:
    checked: list[dt.datetime] = []

    def database_gone(engine: sa.Engine, settings: Settings, now: dt.datetime) -> health.Health:
        checked.append(now)
        raise StoreError("database error while checking health: server closed the connection unexpectedly")

    page = serve_new_china_file(origin)
    daemon = daemon_for(engine, page, _AlwaysLeads(), {"evaluate_health": database_gone}, run_deadline_seconds=5.0)
    try:
        report = daemon.run_once("schedule")
    finally:
        daemon.leadership.release()
    assert report is not None and report.ok, report  # the run itself succeeded and is recorded so
    assert len(checked) == 1  # the health check was reached, and failed
    [run] = rows(engine, "SELECT finished_at, ok FROM daemon_runs")
    assert run["finished_at"] is not None and run["ok"]


def test_an_error_in_the_first_run_does_not_end_the_worker(engine: sa.Engine) -> None:
    settings = Settings(clouds=("china",), daemon=DaemonSettings(schedule="0 3 * * *"))
    daemon = Daemon(settings, engine, _AlwaysLeads())
    calls: list[str] = []

    def run_once(reason: str, **kwargs) -> None:
        calls.append(reason)
        if len(calls) == 1:
            raise RuntimeError("a bug in the start-up catch-up")

    daemon.run_once = run_once  # type: ignore[method-assign]
    worker = threading.Thread(target=daemon._work, daemon=True)
    worker.start()
    try:
        daemon.request_run("schedule")
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        daemon.stopping.set()
        worker.join(5)
    assert calls == ["catch-up", "schedule"]
    assert not worker.is_alive()


def test_catch_up_follows_the_schedule_s_fire_times_not_a_fixed_period(engine: sa.Engine) -> None:
    """Weekdays at 03:00: a Friday run is not "overdue" over the weekend; a missed Monday run is."""
    friday = dt.datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    now = [friday + dt.timedelta(hours=1)]
    settings = Settings(clouds=("china",), daemon=DaemonSettings(schedule="0 3 * * 1-5"))
    daemon = Daemon(settings, engine, _AlwaysLeads(), clock=lambda: now[0])
    run = health.record_run_start(engine, friday + dt.timedelta(seconds=1), "schedule")
    health.record_run_finish(engine, run, friday + dt.timedelta(minutes=1), True, "")
    _poll_row(engine, friday + dt.timedelta(minutes=1))

    for later in (dt.timedelta(days=1, hours=14), dt.timedelta(days=2, hours=23, minutes=59)):  # Sat 17:00, Sun
        now[0] = friday + later
        assert not daemon.catch_up_due(), now[0]
        assert not daemon.catch_up_due(at_start=True), now[0]
    now[0] = dt.datetime(2026, 11, 30, 3, 0, 10, tzinfo=UTC)  # Monday's run is 10 s late: the slack
    assert not daemon.catch_up_due()
    now[0] = dt.datetime(2026, 11, 30, 3, 5, tzinfo=UTC)  # Monday's run was missed (a sleep, downtime)
    assert daemon.catch_up_due() and daemon.catch_up_due(at_start=True)

    # A run that started at Monday's fire time covers it; the next one due is Tuesday's.
    health.record_run_start(engine, dt.datetime(2026, 11, 30, 3, 0, tzinfo=UTC), "schedule")
    now[0] = dt.datetime(2026, 12, 1, 2, 59, tzinfo=UTC)
    assert not daemon.catch_up_due()
    now[0] = dt.datetime(2026, 12, 1, 3, 1, tzinfo=UTC)
    assert daemon.catch_up_due()
