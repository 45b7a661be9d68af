"""Health: failed runs and stale publications make the watcher unhealthy; one alert when it turns, one when it
recovers (in-process and through the daemon against a stand-in that fails); status --check; /metrics."""
from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.daemon_helpers import (
    DaemonProcess,
    JsonReceiver,
    base_env,
    rows,
    serve_new_china_file,
    table_count,
    write_config,
)
from tests.httpstub import Origin, free_port, html_reply, real_file
from watcher import health, pipeline, polls
from watcher.cli import main
from watcher.settings import DaemonSettings, NotifySettings, Settings

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def receiver():
    server = JsonReceiver()
    yield server
    server.close()


def settings_for(*urls: str) -> Settings:
    return Settings(clouds=("china",), notify=NotifySettings(urls=urls), daemon=DaemonSettings(stale_after_days=8))


def add_run(engine: sa.Engine, ok: bool, at: dt.datetime) -> None:
    run_id = health.record_run_start(engine, at, "schedule")
    health.record_run_finish(engine, run_id, at + dt.timedelta(seconds=5), ok, "" if ok else "china: HTTP 500")


def fresh_publication(engine: sa.Engine, day: dt.date) -> None:
    pipeline.import_publication(engine, Settings(clouds=("china",)), real_file("ServiceTags_China_20260720.json"),
                                f"ServiceTags_China_{day:%Y%m%d}.json", file_date=day)


def test_three_failed_runs_alert_once_and_a_success_recovers_once(engine: sa.Engine, receiver: JsonReceiver) -> None:
    settings = settings_for(receiver.url())
    fresh_publication(engine, NOW.date())
    sent: list[str | None] = []
    for minute, ok in enumerate([False, False, False, False, False, True, True, False]):
        at = NOW + dt.timedelta(minutes=minute)
        add_run(engine, ok, at)
        with engine.connect() as conn:
            state = health.evaluate(conn, settings, at)
        sent.append(health.queue_alerts(engine, settings, state, at))
        health.send_alerts(engine, settings, at)
    assert sent == [None, None, "unhealthy", None, None, "recovered", None, None]
    titles = receiver.titles()
    assert len(titles) == 2 and "UNHEALTHY" in titles[0] and "recovered" in titles[1]
    assert "the last 3 runs failed" in receiver.bodies[0]["message"]
    assert [r["state"] for r in rows(engine, "SELECT state FROM health_alerts ORDER BY id")] == ["sent", "sent"]


def test_stale_publication_is_unhealthy_but_no_publication_yet_is_not(engine: sa.Engine) -> None:
    settings = settings_for()
    with engine.connect() as conn:
        assert health.evaluate(conn, settings, NOW).healthy  # a new installation, nothing polled yet
    fresh_publication(engine, NOW.date() - dt.timedelta(days=9))
    with engine.connect() as conn:
        state = health.evaluate(conn, settings, NOW)
    assert not state.healthy and state.reasons == (
        f"china: no new publication for 9 days (newest {NOW.date() - dt.timedelta(days=9)}; Microsoft publishes weekly)",)
    # Nobody to tell: the flip is still remembered, so a destination added later gets no stale alert.
    assert health.queue_alerts(engine, settings, state, NOW) == "unhealthy"
    assert health.queue_alerts(engine, settings, state, NOW) is None
    assert rows(engine, "SELECT destination, state FROM health_alerts") == [{"destination": "", "state": "sent"}]


def test_a_failed_alert_is_retried_at_the_next_run(engine: sa.Engine, receiver: JsonReceiver) -> None:
    down = JsonReceiver()
    url = down.url()
    down.close()  # nothing listens there now
    settings = settings_for(url)
    for minute in range(3):
        add_run(engine, False, NOW + dt.timedelta(minutes=minute))
    with engine.connect() as conn:
        state = health.evaluate(conn, settings, NOW)
    health.queue_alerts(engine, settings, state, NOW)
    assert [ok for _, _, ok in health.send_alerts(engine, settings, NOW)] == [False]
    [alert] = rows(engine, "SELECT state, attempts FROM health_alerts")
    assert alert == {"state": "pending", "attempts": 1}


def test_status_check_exits_1_when_unhealthy(engine: sa.Engine, db_url: str) -> None:
    fresh_publication(engine, dt.datetime.now(UTC).date())
    env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_CLOUDS": "china", "WATCHER_CONFIG": None}
    ok = CliRunner().invoke(main, ["status", "--check"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "health: healthy" in ok.output and "last run: never" in ok.output
    now = dt.datetime.now(UTC)
    for n in range(3):
        add_run(engine, False, now - dt.timedelta(minutes=3 - n))
    bad = CliRunner().invoke(main, ["status", "--check"], env=env)
    assert bad.exit_code == 1
    assert "Error: unhealthy: the last 3 runs failed" in bad.stderr
    data = json.loads(CliRunner().invoke(main, ["status", "--json"], env=env).output)
    assert data["health"]["healthy"] is False and data["health"]["consecutive_failed_runs"] == 3
    assert data["daemon"]["leader"] == health.runner_name() and data["daemon"]["outbox_backlog"] == 0
    assert data["daemon"]["next_run"] and data["daemon"]["schedule_is_default"] is True


SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(\{(?P<labels>[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\})? (?P<value>[-0-9.e+]+)$')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text format 0.0.4: every line a HELP, a TYPE, or a sample of a declared metric."""
    declared: dict[str, str] = {}
    samples: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in declared
            declared[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, line
        assert match["name"] in declared, line
        samples.setdefault(match["name"], {})[match["labels"] or ""] = float(match["value"])
    assert text.endswith("\n")
    return samples


def test_metrics_text_counts_polls_failures_publications_tickets_and_notifications(engine: sa.Engine) -> None:
    fresh_publication(engine, dt.date(2026, 11, 23))
    for outcome in ("new", "error", "error", "skipped-known-url"):
        polls.record_poll(engine, cloud="china", started_at=NOW, finished_at=NOW, url="u", outcome=outcome)
    add_run(engine, True, NOW)
    add_run(engine, False, NOW + dt.timedelta(minutes=1))
    with engine.connect() as conn:
        samples = parse_metrics(health.metrics_text(conn, settings_for(), NOW))
    assert samples["watcher_polls_total"] == {'cloud="china",outcome="error"': 2, 'cloud="china",outcome="new"': 1,
                                              'cloud="china",outcome="skipped-known-url"': 1}
    assert samples["watcher_poll_failures_total"] == {'cloud="china"': 2}
    assert samples["watcher_runs_total"] == {'result="failed"': 1, 'result="ok"': 1}
    assert samples["watcher_consecutive_failed_runs"] == {"": 1}
    assert samples["watcher_last_success_timestamp_seconds"] == {'cloud="china"': NOW.timestamp()}
    assert samples["watcher_publications"] == {'cloud="china"': 1}
    assert samples["watcher_newest_publication_timestamp_seconds"] == {
        'cloud="china"': dt.datetime(2026, 11, 23, tzinfo=UTC).timestamp()}
    assert samples["watcher_notifications"] == {f'state="{s}"': 0 for s in ("pending", "sending", "sent", "failed")}
    assert samples["watcher_healthy"] == {"": 1}
    assert "watcher_tickets" not in samples  # declared, no tickets yet


def test_daemon_alerts_once_when_the_source_fails_and_once_when_it_recovers(
    engine: sa.Engine, db_url: str, origin: Origin, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """The stand-in answers 500 five times, then serves a new file; runs every second; /healthz and /metrics
    answer meanwhile. Nothing is stored before: staleness stays out of it."""
    failing = [html_reply("<html>oops</html>", 500)] * 5
    page = serve_new_china_file(origin, before=failing)
    port = free_port()
    env = base_env(db_url, WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml", registries=False)),
                   WATCHER_SOURCE_URL=page, WATCHER_NOTIFY_URLS=receiver.url(), WATCHER_SCHEDULE="* * * * * *",
                   WATCHER_HTTP_PORT=str(port))
    daemon = DaemonProcess(env)
    try:
        daemon.wait_for(lambda: len(receiver.bodies) >= 1, "the unhealthy alert")
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert unhealthy.value.code == 503
        assert "runs failed" in json.loads(unhealthy.value.read())["reasons"][0]
        daemon.wait_for(lambda: len(receiver.bodies) >= 2, "the recovered alert")
        daemon.wait_for(lambda: table_count(engine, "daemon_runs", "WHERE ok") >= 3, "more good runs")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200 and json.loads(answer.read())["healthy"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            samples = parse_metrics(answer.read().decode())
        code, _ = daemon.terminate()
    finally:
        daemon.kill()
    assert code == 0
    titles = receiver.titles()
    assert len(titles) == 2 and "UNHEALTHY" in titles[0] and "recovered" in titles[1], titles
    runs = rows(engine, "SELECT ok FROM daemon_runs WHERE finished_at IS NOT NULL ORDER BY id")
    assert [r["ok"] for r in runs[:5]] == [False] * 5 and all(r["ok"] for r in runs[5:])
    assert samples["watcher_poll_failures_total"] == {'cloud="china"': 5}
    assert samples["watcher_healthy"] == {"": 1}
    assert [r["kind"] for r in rows(engine, "SELECT kind FROM health_alerts ORDER BY id")] == ["unhealthy", "recovered"]
