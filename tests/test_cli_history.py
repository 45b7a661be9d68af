"""Reading history through the CLI: dates resolved and said so, metadata-only changes, all-time look-ups,
missed publications in publications, status and /metrics; on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from tests.factory import file_name, tag_entry
from watcher import db, health
from watcher.cli import main
from watcher.settings import Settings


def write_week(folder, date: str, number: int, storage: list[str], features: list[str]) -> None:
    values = [tag_entry("Storage.WestUS", storage, number, "westus", networkFeatures=features),
              tag_entry("AzureFrontDoor.Frontend", ["10.9.0.0/24"], 1)]
    data = {"changeNumber": number, "cloud": "Public", "values": values}
    (folder / file_name(date)).write_text(json.dumps(data))


@pytest.fixture
def cli(db_url, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    # 2024-01-01: 10.0.0.0/24 with API,NSG; 01-08: only the features change; 01-22 (3 numbers later): the
    # prefix moves away, so 10.0.0.1 was last in Storage.WestUS on 01-08.
    write_week(folder, "20240101", 10, ["10.0.0.0/24"], ["API", "NSG"])
    write_week(folder, "20240108", 11, ["10.0.0.0/24"], ["API"])
    write_week(folder, "20240122", 14, ["10.0.1.0/24"], ["API"])
    runner = CliRunner()
    env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_CONFIG": None, "WATCHER_CLOUDS": "public",
           "WATCHER_NOTIFY_URLS": None}

    def invoke(*args: str, expect: int = 0):
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == expect, result.output + result.stderr
        return result

    invoke("import", str(folder))
    return invoke


def test_a_date_without_publication_resolves_to_the_one_before_and_says_so(cli):
    shown = cli("show", "Storage.WestUS", "--at", "2024-01-10", "--json")
    data = json.loads(shown.stdout)
    assert data["date"] == "2024-01-08" and data["resolved_from"] == "2024-01-10"
    assert "no public publication on 2024-01-10" in shown.stderr and "2024-01-08" in shown.stderr
    exact = json.loads(cli("show", "Storage.WestUS", "--at", "2024-01-08", "--json").stdout)
    assert exact["resolved_from"] is None
    refused = cli("show", "Storage.WestUS", "--at", "2024-01-10", "--exact", expect=1)
    assert "no public publication on 2024-01-10 (--exact)" in refused.stderr and refused.stdout == ""
    diff = cli("diff", "Storage.WestUS", "--from", "20240105", "--to", "20240130", "--json")
    [change] = json.loads(diff.stdout)
    assert change["from"]["date"] == "2024-01-01" and change["from"]["resolved_from"] == "2024-01-05"
    assert change["to"]["date"] == "2024-01-22" and change["to"]["resolved_from"] == "2024-01-30"
    assert diff.stderr.count("note: ") == 2
    cli("diff", "Storage.WestUS", "--from", "20240105", "--exact", expect=1)
    history = cli("history", "Storage.WestUS", "--since", "2024-01-09", "--json")
    entries = json.loads(history.stdout)
    assert [e["date"] for e in entries] == ["2024-01-08", "2024-01-22"]
    assert {e["resolved_from"] for e in entries} == {"2024-01-09"} and "note: " in history.stderr


def test_metadata_only_changes_show_in_diff_and_history(cli):
    text = cli("diff", "--all", "--from", "20240101", "--to", "20240108").stdout
    assert "Storage.WestUS: unchanged" in text
    assert "metadata changed: networkFeatures [API, NSG] -> [API]" in text
    [change] = json.loads(cli("diff", "--all", "--from", "20240101", "--to", "20240108", "--json").stdout)
    assert change["metadata"] == [{"property": "networkFeatures", "before": ["API", "NSG"], "after": ["API"]}]
    history = cli("history", "Storage.WestUS").stdout.splitlines()
    assert history[1].startswith("2024-01-08") and "+0 -0  metadata changed: networkFeatures [API, NSG] -> [API]" \
        in history[1]
    assert "metadata" not in history[0] and "metadata" not in history[2]


def test_lookup_all_time_finds_an_address_withdrawn_with_its_last_week(cli):
    assert json.loads(cli("lookup", "10.0.0.1", "--json").stdout) == []
    holders = json.loads(cli("lookup", "10.0.0.1", "--all-time", "--json").stdout)
    assert holders == [{"tag": "Storage.WestUS", "prefix": "10.0.0.0/24", "first": "2024-01-01",
                        "last": "2024-01-08", "current": False}]
    assert "Storage.WestUS  10.0.0.0/24  2024-01-01 .. 2024-01-08" in cli("lookup", "10.0.0.1", "--all-time").stdout
    current = json.loads(cli("lookup", "10.9.0.1", "--all-time", "--json").stdout)
    assert current[0]["current"] and current[0]["last"] == "2024-01-22"


def test_missed_publications_in_publications_status_and_metrics(cli, db_url):
    pubs = json.loads(cli("publications", "--json").stdout)
    assert [p["missed_before"] for p in pubs] == [0, 0, 2]
    assert "(2 publication(s) not seen between 2024-01-08 and 2024-01-22)" in cli("publications").stdout
    status = json.loads(cli("status", "--json").stdout)
    assert status["clouds"][0]["missed_publications"] == [{"count": 2, "after": "2024-01-08", "before": "2024-01-22"}]
    assert "missed: 2 publication(s) not seen between 2024-01-08 and 2024-01-22" in cli("status").stdout
    engine = db.open_database(db_url)
    try:
        with engine.connect() as conn:
            text = health.metrics_text(conn, Settings(), dt.datetime(2024, 1, 23, tzinfo=dt.timezone.utc))
    finally:
        engine.dispose()
    assert 'watcher_missed_publications{cloud="public"} 2' in text
