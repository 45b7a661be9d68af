"""``--json`` prints the values' own ``to_json()``: one publication reads the same in every command.

A real HTTP server stands in for Microsoft (``poll``); every case runs on SQLite and PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from click.testing import CliRunner

from tests.httpstub import Origin, details_page, html_reply, real_file, reply
from watcher import overview, pipeline, store
from watcher.cli import main, views
from watcher.settings import Settings

CHINA_OLD = "ServiceTags_China_20260713.json"
CHINA_NEW = "ServiceTags_China_20260720.json"
PUBLICATION_KEYS = {"id", "cloud", "date", "change_number", "sha256", "source", "imported_at", "tags", "prefixes",
                    "missed_before", "parse_warnings"}


def _cli(db_url: str):
    env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_CONFIG": None, "WATCHER_CLOUDS": "china",
           "WATCHER_SOURCE_URL": None, "WATCHER_PROXY": None, "WATCHER_NOTIFY_URLS": None}
    runner = CliRunner()

    def json_of(*args: str) -> Any:
        result = runner.invoke(main, [*args, "--json"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return json_of


def test_one_publication_reads_the_same_in_publications_import_diff_poll_and_status(
    db_url: str, origin: Origin, tmp_path: Path
) -> None:
    json_of = _cli(db_url)
    old_file = tmp_path / CHINA_OLD
    old_file.write_bytes(real_file(CHINA_OLD))
    [imported] = json_of("import", str(old_file))
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{CHINA_NEW}")])))
    [polled] = json_of("poll", "--cloud", "china", "--url", origin.url("/details"))

    old, new = json_of("publications", "--cloud", "china")
    assert set(old) == set(new) == PUBLICATION_KEYS
    assert (old["date"], new["date"]) == ("2026-07-13", "2026-07-20")
    assert new["source"] == origin.url(f"/files/{CHINA_NEW}") and new["imported_at"].endswith("+00:00")

    # import --json and poll --json's import carry the publication's keys, with the same values.
    assert {k: imported[k] for k in PUBLICATION_KEYS} == old and imported["outcome"] == "imported"
    assert polled["outcome"] == "new" and polled["publication"] == new
    assert {k: polled["import"][k] for k in PUBLICATION_KEYS} == new

    # A second poll skips the known URL and names the same publication, the same way.
    [again] = json_of("poll", "--cloud", "china", "--url", origin.url("/details"))
    assert again["outcome"] == "skipped-known-url" and again["publication"] == new and again["import"] is None

    [china] = json_of("status")["clouds"]
    assert china["newest_publication"] == new
    assert china["last_success"]["publication_id"] == new["id"]  # the skipped poll, pointing at it

    changes = json_of("diff", "--cloud", "china", "--all")
    assert changes, "the two China files differ"
    for change in changes:
        assert change["from"]["date"] == old["date"] and change["from"]["file_change_number"] == old["change_number"]
        assert change["to"]["date"] == new["date"] and change["to"]["file_change_number"] == new["change_number"]
    changed = {c["tag"]: c for c in changes}
    assert {c["tag"] for c in polled["import"]["changes"]} == set(changed)
    for c in polled["import"]["changes"]:
        assert (c["change_number_before"], c["change_number_after"]) == (
            changed[c["tag"]]["from"]["change_number"], changed[c["tag"]]["to"]["change_number"])

    tag = changes[0]["tag"]
    history = json_of("history", tag, "--cloud", "china")
    assert history[-1]["date"] == new["date"] and history[-1]["tag"] == tag
    if changes[0]["status"] != "withdrawn":
        shown = json_of("show", tag, "--cloud", "china")
        assert (shown["date"], shown["cloud"], shown["change_number"]) == (
            new["date"], "china", changes[0]["to"]["change_number"])


def test_to_json_gives_plain_json_types(engine: sa.Engine) -> None:
    """orjson refuses anything but plain JSON data (no dates, tuples of objects, bytes, dataclasses)."""
    settings = Settings(clouds=("china",))
    first = pipeline.import_publication(engine, settings, real_file(CHINA_OLD), CHINA_OLD)
    second = pipeline.import_publication(engine, settings, real_file(CHINA_NEW), CHINA_NEW)
    with engine.connect() as conn:
        pubs = store.publications(conn, "china")
        changes = store.diff_publications(conn, "china", pubs[0], pubs[1], None)
        name, entries = store.history(conn, "china", changes[0].tag)
        snap = store.snapshot(conn, "china", "AzureCloud", pubs[1])
        hits = store.lookup(conn, "china", snap.prefixes[0].split("/")[0], pubs[1])
        report = overview.status_report(conn, settings, dt.datetime.now(dt.timezone.utc))
    values = [first.to_json(), second.to_json(), report.to_json(), *(p.to_json() for p in pubs),
              *(c.to_json(pubs[0], pubs[1]) for c in changes), *(e.to_json(name) for e in entries),
              snap.to_json(), snap.version.to_json(), *(h.to_json() for h in hits)]
    for value in values:
        assert orjson.loads(orjson.dumps(value)) == value
    assert report.to_json()["clouds"][0]["newest_publication"] == pubs[1].to_json()
    assert {k: second.to_json()[k] for k in pubs[1].to_json()} == pubs[1].to_json()
    version = snap.version.to_json()
    assert version["tag"] == "AzureCloud" and version["prefixes"] == len(snap.prefixes)
    assert version["valid_from"] == snap.to_json()["since"] and "AzureCloud" in {h.tag for h in hits}


def test_show_writes_what_to_json_gives_from_the_stored_text(db_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    """``show`` writes the prefixes from the stored text: the same JSON as ``to_json()``, the same lines, for every
    tag; a text that would need escaping takes ``json.dumps`` instead."""
    old_file = tmp_path / CHINA_OLD
    old_file.write_bytes(real_file(CHINA_OLD))
    _cli(db_url)("import", str(old_file))
    with engine.connect() as conn:
        [pub] = store.publications(conn, "china")
        snaps = [store.snapshot(conn, "china", name, pub) for name in store.present_tag_names(conn, "china", pub)]
    assert len(snaps) > 50 and any(len(s.text) > 2048 for s in snaps)  # compressed, cached texts among them
    for snap in snaps:
        for resolved_from in (None, pub.file_date + dt.timedelta(days=3)):
            assert views.snapshot_json(snap, resolved_from) == json.dumps(snap.to_json(resolved_from), indent=2)
        lines = "\n".join(views.snapshot_lines(snap)).split("\n")
        assert lines[1:] == list(snap.prefixes) and snap.prefix_count == len(snap.prefixes)
        assert lines[0].endswith(f", {len(snap.prefixes)} prefixes")
    odd = dataclasses.replace(snaps[0], text=b'10.0.0.0/8\n"quoted"\\')
    assert odd.prefixes == ("10.0.0.0/8", '"quoted"\\')
    assert json.loads(views.snapshot_json(odd))["prefixes"] == list(odd.prefixes)
    empty = dataclasses.replace(snaps[0], text=b"")
    assert views.snapshot_json(empty) == json.dumps(empty.to_json(), indent=2) and empty.prefix_count == 0
    assert views.snapshot_lines(empty) == views.snapshot_lines(empty)[:1]

    env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_CONFIG": None, "WATCHER_CLOUDS": "china"}
    biggest = max(snaps, key=lambda s: len(s.prefixes))
    shown = CliRunner().invoke(main, ["show", biggest.tag, "--cloud", "china"], env=env, catch_exceptions=False)
    assert shown.exit_code == 0 and shown.stdout.splitlines()[1:] == list(biggest.prefixes)
    shown = CliRunner().invoke(main, ["show", biggest.tag, "--cloud", "china", "--json"], env=env,
                               catch_exceptions=False)
    assert shown.exit_code == 0 and json.loads(shown.stdout) == biggest.to_json()
