"""watcher init and watcher config check: the example config, every part checked, secrets masked."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from click.testing import CliRunner

from watcher import config
from watcher.cli import main
from watcher.settings import load_settings

TOKEN = "hookT0kenQ81"
PASSWORD = "pgPa55wordZ"


def invoke(*args: str, env: dict | None = None):
    base = {"WATCHER_CONFIG": None, "WATCHER_DATABASE_URL": None, "WATCHER_NOTIFY_URLS": None,
            "WATCHER_SCHEDULE": None, "WATCHER_SOURCE_URL": None, "WATCHER_HTTP_PORT": None}
    return CliRunner().invoke(main, list(args), env={**base, **(env or {})})


def test_init_writes_the_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "watcher.toml"
    first = invoke("init", str(target))
    assert first.exit_code == 0, first.output
    assert target.read_text() == config.example_config()
    settings = load_settings(target, {})  # the example is valid as it stands
    assert settings.registries[0].name == "contoso" and settings.daemon.unhealthy_after_failures == 3
    assert "[daemon]" in target.read_text() and "schedule" in target.read_text()
    target.write_text("# mine\n")
    again = invoke("init", str(target))
    assert again.exit_code == 1 and "exists; use --force" in again.stderr
    assert target.read_text() == "# mine\n"
    assert invoke("init", str(target), "--force").exit_code == 0
    assert target.read_text() == config.example_config()


def test_config_check_passes_the_example_and_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    invoke("init", str(path))
    env = {"WATCHER_NOTIFY_URLS": f"json://user:{TOKEN}@127.0.0.1:9/hook",
           "WATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'w.db'}", "WATCHER_SCHEDULE": "*/30 * * * * *"}
    result = invoke("--config", str(path), "config", "check", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert TOKEN not in result.output
    for part in ("database", "cloud public", "schedule", "notify", "templates", "watches", "health endpoint"):
        assert f"  {part}:" in result.output, part
    assert "'*/30 * * * * *' (UTC)" in result.output and "every 0:00:30" in result.output
    data = json.loads(invoke("--config", str(path), "config", "check", "--json", env=env).output)
    assert data["ok"] is True and data["settings"]["notify"]["urls"][0].startswith("json://user:****@127.0.0.1:9/hook")
    assert not (tmp_path / "data").exists()  # checking creates no database


def test_config_check_reports_every_broken_part(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text('[daemon]\nschedule = "61 * * * *"\n[tickets]\n'
                    f'template_dir = "{tmp_path / "tpl"}"\n')
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "ticket.md.j2").write_text("{{ no_such_variable }}")
    env = {"WATCHER_NOTIFY_URLS": "notaservice://whatever",
           "WATCHER_DATABASE_URL": f"postgresql://watcher:{PASSWORD}@127.0.0.1:1/nowhere"}
    result = invoke("--config", str(path), "config", "check", env=env)
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    parts = {line.split()[1].rstrip(":") for line in failed}
    assert {"database", "schedule", "notify", "templates"} <= parts, failed
    assert PASSWORD not in result.output + result.stderr
    assert "postgresql+psycopg://watcher:***@127.0.0.1:1/nowhere" in result.output
    assert "configuration problem(s)" in result.stderr


def test_a_setting_of_the_wrong_type_or_range_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text("[daemon]\nhttp_port = 70000\n")
    result = invoke("--config", str(path), "config", "check")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: daemon.http_port must be from 1 to 65535, not 70000"


def test_the_example_documents_every_daemon_setting() -> None:
    text = config.example_config()
    for key in ("schedule", "http_port", "unhealthy_after_failures", "stale_after_days", "run_deadline_seconds",
                "retry_backoff_seconds"):
        assert f"# {key} = " in text, key
    tomllib.loads(text)


def _database_check(tmp_path: Path, database: Path):
    result = invoke("config", "check", "--json", env={"WATCHER_DATABASE_URL": f"sqlite:///{database}"})
    data = json.loads(result.stdout)
    (check,) = [c for c in data["checks"] if c["part"] == "database"]
    return result.exit_code, check


def test_config_check_opens_the_sqlite_file_and_fails_on_one_that_is_not_a_database(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    before = passwd.read_bytes()
    code, check = _database_check(tmp_path, passwd)
    assert code == 1 and check["ok"] is False and "is not a SQLite database" in check["detail"]
    assert passwd.read_bytes() == before and not list(tmp_path.glob("passwd-*"))  # nothing written beside it


def test_config_check_fails_on_another_programs_sqlite_database(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    code, check = _database_check(tmp_path, other)
    assert code == 1 and "not the watcher's" in check["detail"]


def test_config_check_passes_the_watchers_own_database(tmp_path: Path) -> None:
    from watcher import db

    path = tmp_path / "w.db"
    db.open_database(f"sqlite:///{path}").dispose()
    code, check = _database_check(tmp_path, path)
    assert check["ok"] is True and f"schema revision {db.head_revision()}" in check["detail"]
    folder = tmp_path / "folder.db"
    folder.mkdir()
    code, check = _database_check(tmp_path, folder)
    assert code == 1 and "is not a file" in check["detail"]
