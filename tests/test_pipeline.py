"""``watcher poll`` end to end: a real HTTP server on 127.0.0.1 stands in for Microsoft and
serves the real service-tag files; the CLI runs against SQLite and PostgreSQL.

Most cases poll the China cloud (327 real tags) to keep imports quick; the
weekly public sequence uses the real public files.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from tests.httpstub import (
    ForwardProxy,
    Origin,
    confirmation_page,
    details_page,
    drip,
    free_port,
    gzip_bomb,
    html_reply,
    real_file,
    redirect,
    reply,
    truncated,
)
from watcher import db, pipeline
from watcher.cli import main
from watcher.settings import Settings

PUBLIC_OLDER = "ServiceTags_Public_20251013.json"
PUBLIC_NEWEST = "ServiceTags_Public_20251028.json"
CHINA_OLD = "ServiceTags_China_20260713.json"
CHINA_NEW = "ServiceTags_China_20260720.json"
USGOV_NEW = "ServiceTags_AzureGovernment_20260720.json"
DATA_TABLES = ("publications", "tags", "tag_versions", "prefix_spans")
SECRET = "s3cr3t"


# ---------------------------------------------------------------- helpers


def write_config(tmp_path: Path, **fetch: Any) -> str:
    """A TOML config with fast retries and a private quarantine folder; ``fetch`` overrides [fetch]."""
    values: dict[str, Any] = {
        "retries": 2, "backoff_seconds": 0.05, "timeout_seconds": 5.0, "deadline_seconds": 20.0,
        "quarantine_dir": str(tmp_path / "quarantine"),
    }
    values.update(fetch)
    lines = ["[fetch]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path = tmp_path / "watcher.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(db_url: str, config: str, *args: str) -> Result:
    # A clean environment: no WATCHER_* of whoever runs the tests.
    env = {"WATCHER_CONFIG": None, "WATCHER_SOURCE_URL": None, "WATCHER_CLOUDS": None, "WATCHER_PROXY": None,
           "WATCHER_DATABASE_URL": db_url}
    return CliRunner().invoke(main, ["--config", config, *args], env=env, catch_exceptions=False)


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in DATA_TABLES}


def poll_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM polls ORDER BY id"))]


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def seed(engine: sa.Engine, name: str = CHINA_OLD) -> None:
    """A publication to start from, imported the way `watcher import` does."""
    pipeline.import_publication(engine, Settings(), real_file(name), name)


def small_version(name: str, keep: int) -> bytes:
    """The real file with only its first ``keep`` tags: implausibly small."""
    full = orjson.loads(real_file(name))
    return orjson.dumps({**full, "values": full["values"][:keep]})


# ---------------------------------------------------------------- the weekly sequence


def test_first_poll_imports_a_repeat_skips_the_download_and_a_new_week_is_imported(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    for name in (PUBLIC_OLDER, PUBLIC_NEWEST):
        origin.route(f"/files/{name}", reply(real_file(name)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{PUBLIC_OLDER}")])))
    url = origin.url("/details")

    first = run(db_url, config, "poll", "--url", url)
    assert first.exit_code == 0, first.output
    assert "public: new: public 2025-10-13 (changeNumber 373): imported 3039 tags" in first.stdout
    after_first = counts(engine)
    assert after_first["publications"] == 1

    second = run(db_url, config, "poll", "--url", url)
    assert second.exit_code == 0, second.output
    assert "no new file" in second.stdout and "not downloaded" in second.stdout
    assert origin.hits(f"/files/{PUBLIC_OLDER}") == 1  # the listing was read again, the file was not
    assert origin.hits("/details") == 2
    assert counts(engine) == after_first

    origin.route("/details", html_reply(details_page(
        [origin.url(f"/files/{PUBLIC_OLDER}"), origin.url(f"/files/{PUBLIC_NEWEST}")]
    )))
    third = run(db_url, config, "poll", "--url", url, "--json")
    assert third.exit_code == 0, third.output
    [outcome] = orjson.loads(third.stdout)
    assert outcome["outcome"] == "new" and outcome["file_date"] == "2025-10-28"
    assert outcome["import"]["change_number"] == 375
    assert counts(engine)["publications"] == 2

    rows = poll_rows(engine)
    assert [r["outcome"] for r in rows] == ["new", "skipped-known-url", "new"]
    assert [r["url"] for r in rows] == [origin.url(f"/files/{n}") for n in (PUBLIC_OLDER, PUBLIC_OLDER, PUBLIC_NEWEST)]
    assert rows[0]["publication_id"] == rows[1]["publication_id"] != rows[2]["publication_id"]
    assert all(r["error"] is None for r in rows)
    assert rows[0]["sha256"] and rows[1]["sha256"] is None  # nothing downloaded, nothing hashed
    with engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT source FROM publications ORDER BY file_date")).scalars().all()
    assert sources == [origin.url(f"/files/{PUBLIC_OLDER}"), origin.url(f"/files/{PUBLIC_NEWEST}")]


def test_confirmation_page_with_hrefs(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/confirmation", html_reply(confirmation_page([f"/files/{CHINA_OLD}", f"/files/{CHINA_NEW}"])))
    result = run(db_url, write_config(tmp_path), "poll", "--cloud", "china", "--url", origin.url("/confirmation"))
    assert result.exit_code == 0, result.output
    assert "china: new: china 2026-07-20 (changeNumber 405): imported 327 tags" in result.stdout
    assert origin.hits(f"/files/{CHINA_OLD}") == 0


def test_bare_link_to_the_file_is_downloaded_once_and_then_known_by_its_bytes(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path
) -> None:
    origin.route(f"/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    config = write_config(tmp_path)
    url = origin.url(f"/{CHINA_NEW}")
    first = run(db_url, config, "poll", "--cloud", "china", "--url", url)
    assert first.exit_code == 0, first.output
    assert "china 2026-07-20" in first.stdout  # the date from the file's name
    assert origin.hits(f"/{CHINA_NEW}") == 1
    before = counts(engine)
    # The source is the file itself: it may change under its name, so it is read again and compared.
    second = run(db_url, config, "poll", "--cloud", "china", "--url", url)
    assert second.exit_code == 0, second.output
    assert "already imported" in second.stdout
    assert counts(engine) == before
    assert [r["outcome"] for r in poll_rows(engine)] == ["new", "already-imported"]


def test_the_same_bytes_under_a_new_date_are_a_publication_of_their_own(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path
) -> None:
    """A week that changed nothing: Microsoft republishes byte-identical files under a new date."""
    later = "ServiceTags_China_20260727.json"
    origin.route(f"/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route(f"/{later}", reply(real_file(CHINA_NEW)))
    config = write_config(tmp_path)
    first = run(db_url, config, "poll", "--cloud", "china", "--url", origin.url(f"/{CHINA_NEW}"))
    assert first.exit_code == 0, first.output
    before = counts(engine)
    second = run(db_url, config, "poll", "--cloud", "china", "--url", origin.url(f"/{later}"), "--json")
    assert second.exit_code == 0, second.output
    [outcome] = orjson.loads(second.stdout)
    assert outcome["outcome"] == "new" and outcome["file_date"] == "2026-07-27", outcome
    after = counts(engine)
    assert after["publications"] == before["publications"] + 1 == 2
    assert after["tag_versions"] == before["tag_versions"]  # nothing changed: no history written
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT file_date, sha256 FROM publications ORDER BY file_date")).all()
    assert [str(d) for d, _ in stored] == ["2026-07-20", "2026-07-27"] and stored[0][1] == stored[1][1]
    # The same bytes and the same date again: already imported, nothing new.
    third = run(db_url, config, "poll", "--cloud", "china", "--url", origin.url(f"/{later}"))
    assert third.exit_code == 0, third.output
    assert "already imported" in third.stdout and counts(engine) == after
    assert [r["outcome"] for r in poll_rows(engine)] == ["new", "new", "already-imported"]


def test_mirror_file_without_a_dated_name_gets_today_and_says_so(engine: sa.Engine, origin: Origin) -> None:
    origin.route("/mirror/latest.json", reply(real_file(CHINA_NEW)))
    settings = Settings(clouds=("china",))
    noon = dt.datetime(2026, 7, 22, 12, 0, tzinfo=dt.timezone.utc)
    [outcome] = pipeline.poll(engine, settings, url=origin.url("/mirror/latest.json"), now=lambda: noon)
    assert outcome.outcome == "new" and outcome.ok
    assert outcome.file_date == dt.date(2026, 7, 22)
    assert outcome.publication is not None and outcome.publication.file_date == dt.date(2026, 7, 22)
    assert any("carries no date; used today's date (UTC), 2026-07-22" in note for note in outcome.notes)
    assert outcome.started_at == noon and outcome.poll_id is not None
    # The next day the same undated bytes are known by their bytes, not imported under a new "today".
    [again] = pipeline.poll(engine, settings, url=origin.url("/mirror/latest.json"),
                            now=lambda: noon + dt.timedelta(days=1))
    assert again.outcome == "already-imported" and again.publication.file_date == dt.date(2026, 7, 22)


def test_one_clouds_error_does_not_stop_the_others(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{CHINA_NEW}")])))  # no usgov file
    result = run(db_url, write_config(tmp_path), "poll", "--cloud", "usgov", "--cloud", "china",
                 "--url", origin.url("/details"))
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"Error: usgov: no ServiceTags_AzureGovernment_<date>.json link found on {origin.url('/details')}; "
        "the download page format may have changed"
    ]
    assert "china: new: china 2026-07-20" in result.stdout
    assert [(r["cloud"], r["outcome"]) for r in poll_rows(engine)] == [("usgov", "error"), ("china", "new")]


def test_configured_clouds_are_polled_by_default(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route(f"/files/{USGOV_NEW}", reply(real_file(USGOV_NEW)))
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{n}") for n in (CHINA_NEW, USGOV_NEW)])))
    config = write_config(tmp_path)
    Path(config).write_text('clouds = ["usgov", "china"]\n' + Path(config).read_text())
    result = run(db_url, config, "poll", "--url", origin.url("/details"))
    assert result.exit_code == 0, result.output
    assert [(r["cloud"], r["outcome"]) for r in poll_rows(engine)] == [("usgov", "new"), ("china", "new")]


# ---------------------------------------------------------------- transient failures that recover


def test_500_then_success_is_retried(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/{CHINA_NEW}", reply(b"oops", 500, "text/plain"), reply(real_file(CHINA_NEW)))
    result = run(db_url, write_config(tmp_path), "poll", "--cloud", "china", "--url", origin.url(f"/{CHINA_NEW}"))
    assert result.exit_code == 0, result.output
    assert origin.hits(f"/{CHINA_NEW}") == 2
    assert counts(engine)["publications"] == 1


def test_429_waits_for_retry_after(engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path) -> None:
    origin.route(f"/{CHINA_NEW}", reply(b"slow down", 429, "text/plain", {"Retry-After": "1"}), reply(real_file(CHINA_NEW)))
    started = time.monotonic()
    result = run(db_url, write_config(tmp_path), "poll", "--cloud", "china", "--url", origin.url(f"/{CHINA_NEW}"))
    assert result.exit_code == 0, result.output
    gap = origin.request_times[1] - origin.request_times[0]
    assert gap >= 1.0, gap  # Retry-After, not the 0.05 s backoff
    assert time.monotonic() - started < 10


def test_poll_through_a_forwarding_proxy(engine: sa.Engine, db_url: str, origin: Origin, proxy: ForwardProxy, tmp_path: Path) -> None:
    # mirror.test does not resolve: only the proxy can reach it.
    mirror = f"http://mirror.test:{origin.port}"
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    origin.route("/details", html_reply(confirmation_page([f"{mirror}/files/{CHINA_NEW}"])))
    result = run(db_url, write_config(tmp_path, proxy=proxy.url), "poll", "--cloud", "china", "--url", f"{mirror}/details")
    assert result.exit_code == 0, result.output
    assert proxy.seen == [f"{mirror}/details", f"{mirror}/files/{CHINA_NEW}"]
    assert counts(engine)["publications"] == 1


# ---------------------------------------------------------------- faults: a clear error, exit 1, nothing changed

FILE = f"/files/{CHINA_NEW}"


def _page_listing_the_file(origin: Origin) -> str:
    origin.route("/details", html_reply(details_page([origin.url(FILE)])))
    return origin.url("/details")


def _404(origin: Origin) -> str:
    return origin.url("/gone")


def _no_link(origin: Origin) -> str:
    origin.route("/details", html_reply(confirmation_page([origin.url(f"/files/{PUBLIC_NEWEST}")])))
    return origin.url("/details")


def _refused(origin: Origin) -> str:
    return f"http://127.0.0.1:{free_port()}/details"


def _serving(responder: Callable) -> Callable[[Origin], str]:
    def setup(origin: Origin) -> str:
        origin.route(FILE, responder)
        return _page_listing_the_file(origin)

    return setup


def _redirect_away(target: str) -> Callable[[Origin], str]:
    return _serving(redirect(target))


def _hostile_china(name: str | None = None, prefix: str | None = None) -> bytes:
    """The real China file with one hostile tag name or prefix, as a compromised mirror would serve it."""
    doc = orjson.loads(real_file(CHINA_NEW))
    entry = doc["values"][5]
    if name is not None:
        entry["name"] = name
    if prefix is not None:
        entry["properties"]["addressPrefixes"].append(prefix)
    return orjson.dumps(doc)


FAULTS = {
    "page-404": (_404, {}, r"HTTP 404 Not Found from http://127\.0\.0\.1:\d+/gone"),
    "page-without-link": (_no_link, {}, r"no ServiceTags_China_<date>\.json link found on .*format may have changed"),
    "connection-refused": (_refused, {}, r"could not fetch http://127\.0\.0\.1:\d+/details: ConnectError.*gave up after 3 attempts"),
    "slow-drip": (_serving(drip(0.05, 4)), {"deadline_seconds": 1.0},
                  r"gave up downloading .*bytes received\): the 1 s deadline for this poll has passed"),
    "truncated": (_serving(truncated(real_file(CHINA_NEW)[:5000], len(real_file(CHINA_NEW)))), {},
                  r"was truncated.*gave up after 3 attempts"),
    "html-not-json": (_serving(html_reply("<!DOCTYPE html><html><body>Please sign in</body></html>")), {},
                      r"got an HTML page where the China service-tag JSON was expected"),
    "wrong-cloud": (_serving(reply(real_file(USGOV_NEW))), {}, r"for cloud 'AzureGovernment', expected 'China'"),
    "oversized": (_serving(reply(real_file(CHINA_NEW))), {"max_bytes": 100_000},
                  r"exceeds the size cap of 100000 decoded bytes"),
    "gzip-bomb": (_serving(reply(gzip_bomb(), headers={"Content-Encoding": "gzip"})), {"max_bytes": 5_000_000},
                  r"exceeds the size cap of 5000000 decoded bytes"),
    "hostile-tag-name": (_serving(reply(_hostile_china(name="Inject\ntouch PWNED_TAG;#"))), {},
                         r"tag name 'Inject\\ntouch PWNED_TAG;#' refused: character '\\n'"),
    "scope-id-prefix": (_serving(reply(_hostile_china(prefix="fe80::%x\ntouch PWNED_PREFIX;#/64"))), {},
                        r"invalid prefix 'fe80::%x\\ntouch PWNED_PREFIX;#/64' \(only plain IPv4 or IPv6 notation"),
    "deeply-nested": (_serving(reply(b'{"changeNumber": 1, "cloud": "China", "values": [' + b"[" * 5000
                                     + b"]" * 5000 + b"]}")), {}, r"JSON nested 5002 levels deep \(at most 512"),
    "redirect-other-host": (_redirect_away(f"https://evil.example.net/{CHINA_NEW}"), {},
                            r"refusing redirect .* to https://evil\.example\.net/.*not on the allow-list"),
    "redirect-plain-http": (_redirect_away(f"http://download.microsoft.com/download/{CHINA_NEW}"), {},
                            r"refusing redirect .* to http://download\.microsoft\.com/.*only HTTPS"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_a_clear_error_and_changes_nothing(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path, fault: str
) -> None:
    setup, fetch_overrides, message = FAULTS[fault]
    seed(engine)
    before = counts(engine)
    url = setup(origin)
    result = run(db_url, write_config(tmp_path, **fetch_overrides), "poll", "--cloud", "china", "--url", url)
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert line.startswith("Error: china: ")
    assert re.search(message, line), line
    assert counts(engine) == before
    [row] = poll_rows(engine)
    assert (row["cloud"], row["outcome"], row["publication_id"]) == ("china", "error", None)
    assert re.search(message, row["error"]), row["error"]
    assert row["finished_at"] >= row["started_at"]


def test_implausibly_small_file_is_quarantined_and_force_imports_it(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path
) -> None:
    seed(engine)  # 327 tags
    before = counts(engine)
    small = small_version(CHINA_NEW, 30)
    origin.route(FILE, reply(small))
    url = _page_listing_the_file(origin)
    config = write_config(tmp_path)

    refused = run(db_url, config, "poll", "--cloud", "china", "--url", url)
    assert refused.exit_code == 1
    [line] = error_lines(refused)
    assert "only 30 service tags; the previous publication had 327" in line
    assert "poll with --force to import it" in line
    kept = list((tmp_path / "quarantine").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("ServiceTags_China_20260720.")
    assert kept[0].read_bytes() == small
    assert str(kept[0]) in line
    assert counts(engine) == before

    forced = run(db_url, config, "poll", "--cloud", "china", "--url", url, "--force")
    assert forced.exit_code == 0, forced.output
    assert "china: new: china 2026-07-20" in forced.stdout
    assert "imported despite the plausibility check (--force)" in forced.stdout
    after = counts(engine)
    assert after["publications"] == before["publications"] + 1
    assert [r["outcome"] for r in poll_rows(engine)] == ["quarantined", "new"]


# ---------------------------------------------------------------- secrets


def test_no_secret_reaches_the_database_output_or_logs(
    engine: sa.Engine, db_url: str, origin: Origin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    origin.route(f"/files/{CHINA_NEW}", reply(real_file(CHINA_NEW)))
    # Relative links: the file URL inherits the page's credentials.
    origin.route("/details", html_reply(confirmation_page([f"/files/{CHINA_NEW}?sig={SECRET}"])))
    base = f"http://user:{SECRET}@127.0.0.1:{origin.port}"
    config = write_config(tmp_path)
    outputs = []
    for path in ("/details", "/gone"):  # a success, then a 404 error
        result = run(db_url, config, "-v", "poll", "--cloud", "china", "--url", f"{base}{path}?token={SECRET}")
        outputs.append(result.output)
    assert [r["outcome"] for r in poll_rows(engine)] == ["new", "error"]
    assert origin.requests[0][1]["Authorization"].startswith("Basic ")  # the credentials were used
    with engine.connect() as conn:
        stored = [
            repr(row) for table in ("polls", "publications")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
        ]
    assert any(f"http://***@127.0.0.1:{origin.port}/files/{CHINA_NEW}?sig=***" in row for row in stored)
    assert any(f"http://***@127.0.0.1:{origin.port}/gone?token=***" in text for text in outputs)
    for text in [*stored, *outputs, caplog.text]:
        assert SECRET not in text


# ---------------------------------------------------------------- the migration and the help


def test_polls_migration_upgrades_and_downgrades(db_url: str) -> None:
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine, "0002")
        assert "polls" not in sa.inspect(engine).get_table_names()
        db.upgrade(engine, "0003")  # this revision, not head: later revisions come on top
        assert db.current_revision(engine) == "0003"
        inspector = sa.inspect(engine)
        assert {c["name"] for c in inspector.get_columns("polls")} == {
            "id", "cloud", "started_at", "finished_at", "url", "outcome", "error", "publication_id", "sha256",
        }
        assert [fk["referred_table"] for fk in inspector.get_foreign_keys("polls")] == ["publications"]
        db.downgrade(engine, "0002")
        assert "polls" not in sa.inspect(engine).get_table_names()
        assert "publications" in sa.inspect(engine).get_table_names()
        db.upgrade(engine)
        assert "polls" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command, words", [
    ("poll", ["--cloud", "--url", "--force", "--json", "Exits 0 when every poll worked"]),
    ("status", ["--json", "stale"]),
])
def test_help(command: str, words: list[str]) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    for word in words:
        assert word in result.output


# ---------------------------------------------------------------- watcher import: a local file is untrusted too


def _local(tmp_path: Path, name: str, data: bytes, gz: bool = False) -> str:
    import gzip as gzip_module

    path = tmp_path / "in" / (name + (".gz" if gz else ""))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(gzip_module.compress(data) if gz else data)
    return str(path)


def _refused(db_url: str, engine: sa.Engine, tmp_path: Path, name: str, data: bytes, *words: str,
             gz: bool = False, config: str | None = None) -> None:
    from tests.conftest import row_counts

    before = row_counts(engine)
    result = run(db_url, config or write_config(tmp_path), "import", _local(tmp_path, name, data, gz))
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    for word in words:
        assert word in line, line
    assert "Traceback" not in result.output
    assert row_counts(engine) == before


def test_import_refuses_a_file_with_no_tags_and_force_imports_it_held_and_recorded(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    seed(engine)  # 327 tags
    empty = orjson.dumps({**orjson.loads(real_file(CHINA_NEW)), "values": []})
    _refused(db_url, engine, tmp_path, CHINA_NEW, empty, "lists no service tags", "import with --force")
    _refused(db_url, engine, tmp_path, CHINA_NEW, small_version(CHINA_NEW, 30),
             "only 30 service tags; the previous publication had 327")
    forced = run(db_url, write_config(tmp_path), "import", "--force", "--json", _local(tmp_path, CHINA_NEW, empty))
    assert forced.exit_code == 0, forced.output
    [imported] = orjson.loads(forced.stdout)
    assert imported["outcome"] == "imported"
    assert any("imported with --force despite" in n and "lists no service tags" in n for n in imported["notes"])


def test_import_holds_the_tickets_of_a_forced_file(engine: sa.Engine, tmp_path: Path) -> None:
    from tests.ticket_helpers import approve_baselines, make_settings
    from watcher import tickets
    from watcher.settings import RegistryWatch

    settings = make_settings(RegistryWatch("cnreg", ("chinaeast2",), cloud="china"))
    pipeline.import_file(engine, settings, Path(_local(tmp_path, CHINA_OLD, real_file(CHINA_OLD))))
    approve_baselines(engine)
    small = small_version(CHINA_NEW, 30)
    result = pipeline.import_file(engine, settings, Path(_local(tmp_path, CHINA_NEW, small)), force=True)
    assert any("imported with --force despite" in n and "only 30 service tags" in n for n in result.notes)
    with engine.connect() as conn:
        made = [t for t in tickets.list_tickets(conn) if t.publication_id == result.publication.id]
    assert made and all(t.state == "hold" for t in made)
    assert all(any("imported with --force despite" in r for r in t.context["hold"]["reasons"]) for t in made)


def test_import_of_a_gzip_bomb_stops_at_the_size_cap(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    bomb = b'{"changeNumber": 1, "cloud": "China", "values": [' + b" " * (3 * 1024 * 1024) + b"]}"
    _refused(db_url, engine, tmp_path, CHINA_NEW, bomb, "exceeds the size cap of 1048576 decoded bytes",
             gz=True, config=write_config(tmp_path, max_bytes=1024 * 1024))


def test_import_refuses_a_file_whose_cloud_is_not_its_names(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    usgov = real_file(USGOV_NEW)
    _refused(db_url, engine, tmp_path, "ServiceTags_Public_20260720.json", usgov,
             "the file says it is the usgov cloud's, its name says public's", "nothing was imported")
    _refused(db_url, engine, tmp_path, "ServiceTags_Mars_20260720.json", usgov, "names no known cloud ('Mars')")


def test_import_of_deeply_nested_json_is_a_clear_error(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    from tests.factory import nested_file

    _refused(db_url, engine, tmp_path, "ServiceTags_Public_20250101.json", nested_file(100_000),
             "JSON nested 100004 levels deep (at most 512 are accepted)")


@pytest.mark.parametrize("case", ["newline and command", "5 MB", "markup", "empty"])
def test_import_of_a_hostile_tag_name_is_refused_and_changes_nothing(
    engine: sa.Engine, db_url: str, tmp_path: Path, case: str
) -> None:
    from tests.factory import HOSTILE_NAMES, tag_entry

    seed(engine)
    doc = orjson.loads(real_file(CHINA_NEW))
    doc["values"].append(tag_entry(HOSTILE_NAMES[case], ["20.0.0.0/24"]))
    _refused(db_url, engine, tmp_path, CHINA_NEW, orjson.dumps(doc), "tag name", "refused")


@pytest.mark.parametrize("case", ["scope id and newline", "scope id", "leading space", "NUL"])
def test_import_of_a_hostile_prefix_is_refused_and_changes_nothing(
    engine: sa.Engine, db_url: str, tmp_path: Path, case: str
) -> None:
    from tests.factory import HOSTILE_PREFIXES

    seed(engine)
    doc = orjson.loads(real_file(CHINA_NEW))
    doc["values"][0]["properties"]["addressPrefixes"].append(HOSTILE_PREFIXES[case])
    _refused(db_url, engine, tmp_path, CHINA_NEW, orjson.dumps(doc), f"tag {doc['values'][0]['name']!r}: invalid prefix")


@pytest.mark.parametrize("schema", ["old", "future"])
def test_files_of_the_old_and_a_future_schema_import(engine: sa.Engine, db_url: str, tmp_path: Path, schema: str) -> None:
    from tests.factory import build_file, file_name

    config = write_config(tmp_path)
    first = _local(tmp_path, file_name("20200101"), build_file({"Storage.EastUS": ["20.0.0.0/24"]}, schema=schema))
    second = _local(tmp_path, file_name("20200108"),
                    build_file({"Storage.EastUS": (2, ["20.0.0.0/24", "20.0.1.0/24"])}, 2, schema=schema))
    result = run(db_url, config, "import", first, second)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT region_id, network_features, prefix_count FROM tag_versions "
                                    "ORDER BY valid_from")).all()
    # Absent metadata is stored as the store keeps it today (see ServiceTag.metadata), not refused.
    assert [r[2] for r in rows] == [1, 2]
    if schema == "old":
        assert [(r[0], r[1]) for r in rows] == [(0, ""), (0, "")]


def test_missing_required_field_names_file_tag_and_field_and_changes_nothing(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    seed(engine)
    doc = orjson.loads(real_file(CHINA_NEW))
    name = doc["values"][3]["name"]
    del doc["values"][3]["properties"]["changeNumber"]
    _refused(db_url, engine, tmp_path, CHINA_NEW, orjson.dumps(doc),
             CHINA_NEW, f"tag {name!r}: missing or invalid required field 'properties.changeNumber'")
