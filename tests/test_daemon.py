"""The daemon's wiring: a first run on a folder of files imports them all, oldest first, so the README's next step
(``watcher diff --all``) has two publications to compare; the HTTP app is served by ``watcher run`` too."""
from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import SHARED
from tests.daemon_helpers import DaemonProcess, base_env, rows, watcher_command
from tests.httpstub import free_port
from tests.test_web import listening_addresses
from watcher import fetch
from watcher.daemon import importing_whole_folder
from watcher.settings import FetchSettings, Settings

CHINA = SHARED / "china"


def folder_settings(tmp_path: Path, source: Path = CHINA) -> Settings:
    return Settings(clouds=("china",), fetch=FetchSettings(source_url=source.as_uri(),
                                                           quarantine_dir=str(tmp_path / "quarantine")))


def test_folder_files_are_the_dated_files_oldest_first_one_per_date(tmp_path: Path) -> None:
    for name in ("ServiceTags_China_20260720.json", "ServiceTags_China_20260713.json.gz",
                 "ServiceTags_China_20260713.json", "notes.txt", "ServiceTags_Public_20260701.json"):
        (tmp_path / name).write_text("{}")
    files = fetch.folder_files(tmp_path.as_uri(), "china")
    assert [f.file_name for f in files] == ["ServiceTags_China_20260713.json", "ServiceTags_China_20260720.json"]
    assert fetch.folder_files("https://mirror.example/tags/", "china") == []
    assert fetch.folder_files(str(tmp_path / "ServiceTags_China_20260720.json"), "china") == []


def test_the_first_poll_of_a_folder_imports_every_file_oldest_first_and_the_next_only_what_is_new(
    engine: sa.Engine, tmp_path: Path
) -> None:
    poll = importing_whole_folder()
    first = poll(engine, folder_settings(tmp_path), ["china"])
    assert [o.outcome for o in first] == ["new"]  # one outcome per cloud, as a poll gives: the newest file's
    stored = rows(engine, "SELECT id, file_date FROM publications ORDER BY id")
    assert [str(r["file_date"]) for r in stored] == ["2026-07-13", "2026-07-20"]  # oldest imported first
    again = poll(engine, folder_settings(tmp_path), ["china"])
    assert [o.outcome for o in again] == ["skipped-known-url"]
    assert len(rows(engine, "SELECT id FROM publications")) == 2


def test_a_failing_file_stops_the_folder_import_where_it_is(engine: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "tags"
    folder.mkdir()
    (folder / "ServiceTags_China_20260706.json").write_text("not json")
    (folder / "ServiceTags_China_20260720.json.gz").write_bytes((CHINA / "ServiceTags_China_20260720.json.gz")
                                                                .read_bytes())
    outcomes = importing_whole_folder()(engine, folder_settings(tmp_path, folder), ["china"])
    assert [o.outcome for o in outcomes] == ["error"] and "20260706" in outcomes[0].url
    assert rows(engine, "SELECT id FROM publications") == []


def test_watcher_run_on_the_folder_then_diff_all_works_and_serves_healthz(db_url: str, tmp_path: Path) -> None:
    """The README's two steps, on the China folder: ``watcher run``, then ``watcher diff --all``."""
    port = free_port()
    env = base_env(db_url, WATCHER_SOURCE_URL=CHINA.as_uri(), WATCHER_CLOUDS="china", WATCHER_HTTP_PORT=str(port))
    daemon = DaemonProcess(env, cwd=tmp_path)
    try:
        daemon.wait_for(daemon.finished_runs, "the first run")
        assert listening_addresses(port) == {"127.0.0.1"}  # loopback unless [web] http_host says otherwise
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        # The shipped files are older than a week: unhealthy, as the README says it will be.
        assert answer.status_code == 503 and "no new publication" in " ".join(answer.json()["reasons"])
        assert {"leader", "schedule", "next_run"} <= set(answer.json())
        code, _ = daemon.terminate()
    finally:
        daemon.kill()
    assert code == 0
    assert not any(line.get("logger", "").startswith("alembic") for line in daemon.lines)  # no INFO chatter
    diff = subprocess.run(watcher_command("diff", "--all", "--cloud", "china"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert diff.returncode == 0, diff.stderr
    assert "2026-07-13" in diff.stdout and "2026-07-20" in diff.stdout


def test_watcher_run_with_its_http_port_in_use_stops_at_once_with_one_error_line(db_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(db_url, WATCHER_SOURCE_URL=CHINA.as_uri(), WATCHER_CLOUDS="china", WATCHER_HTTP_PORT=str(port))
        result = subprocess.run(watcher_command("run"), env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"Error: cannot serve HTTP on 127.0.0.1:{port}: Address already in use"
    assert rows(sa.create_engine(env["WATCHER_DATABASE_URL"]), "SELECT id FROM daemon_runs") == []
