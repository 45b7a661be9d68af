"""History cannot be poisoned: what an older, laxer version stored is reported by ``watcher db check``,
skipped by readers, and never stops a later import (SQLite and PostgreSQL)."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import row_counts
from tests.factory import build_file, file_name
from tests.ticket_helpers import approve_baselines, make_settings
from watcher import dbcheck, pipeline, prefixes, store, tickets
from watcher.cli import main
from watcher.errors import ParseError
from watcher.store import series as store_series

POISON = "fe80::%x/64"


def _week(*storage: str) -> dict:
    return {"Storage.EastUS2": list(storage), "AzureContainerRegistry.EastUS2": ["20.3.0.0/24"],
            "AzureFrontDoor.Frontend": ["20.9.0.0/24"]}


def _import(engine, settings, date: str, tags: dict, number: int) -> store.ImportResult:
    return pipeline.import_publication(engine, settings, build_file(tags, change_number=number), file_name(date))


def _as_an_older_version(engine, monkeypatch, settings) -> None:
    """Store a scope-id prefix the way a version without today's prefix gate did."""
    with monkeypatch.context() as patched:
        patched.setattr(prefixes, "check_prefix_text", lambda *args: None)
        _import(engine, settings, "20250108", _week("20.1.0.0/24", POISON), 2)


def test_a_poisoned_prefix_is_reported_skipped_and_never_stops_later_imports(engine, db_url, monkeypatch):
    settings = make_settings()
    _import(engine, settings, "20250101", _week("20.1.0.0/24"), 1)
    approve_baselines(engine)
    assert dbcheck.check_database(engine).ok
    _as_an_older_version(engine, monkeypatch, settings)

    report = dbcheck.check_database(engine)
    assert not report.ok
    failed = {r.name: r for r in report.results if not r.ok}
    assert set(failed) == {"stored prefixes pass the gate", "indexed prefixes pass the gate"}
    assert POISON in failed["stored prefixes pass the gate"].violations[0]
    assert "Storage.EastUS2" in failed["stored prefixes pass the gate"].violations[0]

    # Readers skip it and say so, instead of crashing on it.
    with engine.connect() as conn:
        first, second = store.publications(conn, "public")
        (change,) = store.diff_publications(conn, "public", first, second, ["Storage.EastUS2"])
    assert change.added == () and "1 stored prefix fails today's checks and was skipped" in "".join(change.anomalies)
    with engine.connect() as conn:  # the tag page's series counts the poisoned set without it
        series = store_series.tag_series(conn, "public", "Storage.EastUS2")
    assert list(series.sizes.values())[-1][:3] == (1, 0, 256)

    # A later week that removes it imports, and its ticket is made (the diff no longer crashes).
    result = _import(engine, settings, "20250115", _week("20.1.0.0/24", "20.1.1.0/24"), 3)
    assert result.outcome == "imported"
    with engine.connect() as conn:
        made = tickets.list_tickets(conn)
    ticket = max(made, key=lambda t: t.id)  # against the approved baseline; the poisoned week's is superseded
    assert ticket.context["tags"][0]["added"] == ["20.1.1.0/24"]
    assert all("%x" not in json.dumps(t.context) for t in made)

    # Republishing it is refused by today's gate, and changes nothing.
    before = row_counts(engine)
    with pytest.raises(ParseError, match=r"tag 'Storage.EastUS2': invalid prefix 'fe80::%x/64'"):
        _import(engine, settings, "20250122", _week("20.1.0.0/24", POISON), 4)
    assert row_counts(engine) == before

    # `watcher db check` exits 1 and names it; --json says the same.
    runner = CliRunner()
    out = runner.invoke(main, ["--db", db_url, "db", "check"])
    assert out.exit_code == 1 and "FAILED  stored prefixes pass the gate" in out.output and POISON in out.output
    data = json.loads(runner.invoke(main, ["--db", db_url, "db", "check", "--json"]).stdout)
    assert data["ok"] is False


def test_a_tag_name_an_older_version_stored_is_reported_and_later_imports_go_on(engine, db_url):
    settings = make_settings()
    _import(engine, settings, "20250101", _week("20.1.0.0/24"), 1)
    with engine.begin() as conn:  # what a version without the name gate could store
        conn.execute(sa.text("INSERT INTO tags (cloud, name) VALUES ('public', :n)"), {"n": "Inject\ntouch PWNED;#"})
    (names,) = [r for r in dbcheck.check_database(engine).results if r.name == "tag names pass the gate"]
    assert not names.ok and r"'Inject\ntouch PWNED;#'" in names.violations[0]
    assert _import(engine, settings, "20250108", _week("20.1.0.0/24", "20.1.1.0/24"), 2).outcome == "imported"
    out = CliRunner().invoke(main, ["--db", db_url, "db", "check"])
    assert out.exit_code == 1 and "touch PWNED" in out.output and "\ntouch PWNED" not in out.output


def test_db_check_passes_a_database_of_real_files(engine, db_url, public_files):
    from tests.conftest import file_bytes, plain_name

    for path in public_files[-2:]:
        store.import_bytes(engine, file_bytes(path), plain_name(path))
    report = dbcheck.check_database(engine)
    assert report.ok, report.to_json()
    assert {r.name: r.checked > 0 for r in report.results} == {r.name: True for r in report.results}
    out = CliRunner().invoke(main, ["--db", db_url, "db", "check"])
    assert out.exit_code == 0 and out.output.count("ok  ") == 6


def test_a_version_whose_stored_changes_disagree_with_its_spans_is_reported(engine, db_url):
    settings = make_settings()
    _import(engine, settings, "20250101", _week("20.1.0.0/24"), 1)
    _import(engine, settings, "20250108", _week("20.1.0.0/24", "20.1.1.0/24"), 2)
    assert dbcheck.check_database(engine).ok
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tag_versions SET added_count = added_count + 5 WHERE added_count = 1 "
                             "AND valid_from = (SELECT max(valid_from) FROM tag_versions)"))
    (changes,) = [r for r in dbcheck.check_database(engine).results
                  if r.name == "version additions and removals match the prefix spans"]
    assert not changes.ok and changes.violations[0].endswith("stores +6 -0, its spans say +1 -0")
