"""``status.cloud_status`` and ``watcher status``: last attempt, last success, newest publication, staleness."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import orjson
import sqlalchemy as sa
from click.testing import CliRunner

from tests.httpstub import Origin, details_page, html_reply, real_file, reply
from watcher import pipeline, polls
from watcher.cli import main
from watcher.settings import DaemonSettings, Settings
from watcher.status import cloud_status

CHINA_NEW = "ServiceTags_China_20260720.json"
UTC = dt.timezone.utc


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 7, day, hour, 0, tzinfo=UTC)


def test_a_cloud_never_polled_is_stale_with_nothing_to_show(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        report = cloud_status(conn, "china", at(21), Settings())
    assert (report.last_attempt, report.last_success, report.newest, report.age_days) == (None, None, None, None)
    assert report.stale
    assert report.to_json()["stale"] is True and report.to_json()["newest_publication"] is None


def test_last_attempt_last_success_newest_publication_and_staleness(engine: sa.Engine, origin: Origin) -> None:
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{CHINA_NEW}")])))
    settings = Settings(clouds=("china",))
    [ok] = pipeline.poll(engine, settings, url=origin.url("/details"), now=lambda: at(21, 6))
    [failed] = pipeline.poll(engine, settings, url=origin.url("/gone"), now=lambda: at(22, 6))
    assert (ok.outcome, failed.outcome) == ("new", "error")

    with engine.connect() as conn:
        fresh = cloud_status(conn, "china", at(28), settings)       # 8 days after 2026-07-20: not yet stale
        stale = cloud_status(conn, "china", at(29), settings)       # 9 days
        strict = cloud_status(conn, "china", at(24), replace(settings, daemon=DaemonSettings(stale_after_days=3)))
        other = cloud_status(conn, "usgov", at(28), settings)

    assert fresh.last_attempt is not None and fresh.last_attempt.outcome == "error"
    assert fresh.last_attempt.started_at == at(22, 6)
    assert "HTTP 404 Not Found" in (fresh.last_attempt.error or "")
    assert fresh.last_success is not None and fresh.last_success.outcome == "new"
    assert fresh.last_success.finished_at == at(21, 6)
    assert fresh.newest is not None
    assert (fresh.newest.file_date, fresh.newest.change_number) == (dt.date(2026, 7, 20), 405)
    assert (fresh.age_days, fresh.stale) == (8, False)
    assert (stale.age_days, stale.stale) == (9, True)
    assert (strict.age_days, strict.stale) == (4, True)
    assert other.last_attempt is None and other.stale  # another cloud's polls do not count

    data = fresh.to_json()
    assert data["last_attempt"]["outcome"] == "error" and data["last_attempt"]["started_at"] == "2026-07-22T06:00:00+00:00"
    assert data["last_success"]["publication_id"] == ok.publication.id
    assert data["newest_publication"]["date"] == "2026-07-20"
    assert data["newest_publication"]["change_number"] == 405
    assert data["newest_publication"]["imported_at"].endswith("+00:00")
    assert data["stale"] is False and data["stale_after_days"] == 8
    orjson.dumps(data)  # plain JSON types only


def test_a_newer_publication_makes_the_cloud_fresh_again(engine: sa.Engine) -> None:
    pipeline.import_publication(engine, Settings(), real_file("ServiceTags_China_20260713.json"), "ServiceTags_China_20260713.json")
    with engine.connect() as conn:
        assert cloud_status(conn, "china", at(25), Settings()).stale
    pipeline.import_publication(engine, Settings(), real_file(CHINA_NEW), CHINA_NEW)
    with engine.connect() as conn:
        report = cloud_status(conn, "china", at(25), Settings())
    assert not report.stale and report.newest.file_date == dt.date(2026, 7, 20)
    assert report.last_attempt is None  # imports by hand are publications, not polls


def test_naive_now_is_taken_as_utc(engine: sa.Engine) -> None:
    polls.record_poll(engine, cloud="public", started_at=at(20), finished_at=at(20), url="x", outcome="error", error="boom")
    with engine.connect() as conn:
        report = cloud_status(conn, "public", dt.datetime(2026, 7, 21), Settings())
    assert report.now == dt.datetime(2026, 7, 21, tzinfo=UTC)
    assert report.last_attempt.finished_at == at(20) and report.last_success is None


def test_watcher_status_cli(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{CHINA_NEW}")])))
    env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_CONFIG": None, "WATCHER_CLOUDS": "china public",
           "WATCHER_SOURCE_URL": None}
    runner = CliRunner()
    polled = runner.invoke(main, ["poll", "--cloud", "china", "--url", origin.url("/details")], env=env)
    assert polled.exit_code == 0, polled.output

    # The file is of 2026-07-20 and the clock is real (later): stale with the default 8 days.
    result = runner.invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    china, public = orjson.loads(result.stdout)["clouds"]
    assert (china["cloud"], public["cloud"]) == ("china", "public")
    assert china["last_attempt"]["outcome"] == "new" and china["last_success"]["outcome"] == "new"
    assert china["last_attempt"]["url"] == origin.url(f"/files/{CHINA_NEW}")
    assert china["newest_publication"]["date"] == "2026-07-20"
    assert china["newest_publication"]["change_number"] == 405
    assert china["stale"] is True
    assert public["last_attempt"] is None and public["newest_publication"] is None and public["stale"] is True

    config = tmp_path / "lenient.toml"
    config.write_text("[daemon]\nstale_after_days = 3650\n")  # the most allowed: ten years
    lenient = runner.invoke(main, ["--config", str(config), "status", "--json"], env=env)
    assert orjson.loads(lenient.stdout)["clouds"][0]["stale"] is False

    text = runner.invoke(main, ["status"], env=env)
    assert text.exit_code == 0
    assert "china: STALE" in text.output
    assert "newest publication: 2026-07-20 (changeNumber 405)" in text.output
    assert "last attempt: " in text.output and " new" in text.output
    assert "public: STALE" in text.output and "none imported yet" in text.output
