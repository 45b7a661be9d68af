"""The one database error translator (errors.translate_db_errors), down to what a user sees.

The last tests break a real database under a running ``watcher history``: on
SQLite the table it reads is overwritten with garbage, on PostgreSQL its
server process is terminated while the query waits. Either way the user gets
one ``Error:`` line and exit status 1, not a traceback.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import file_bytes, plain_name
from watcher import store
from watcher.cli import main
from watcher.errors import ConfigError, StoreError, translate_db_errors

TAG = "Storage.EastUS2"


def test_a_database_error_becomes_a_store_error_naming_what_was_done(engine):
    with pytest.raises(StoreError) as caught:
        with translate_db_errors("reading the moon table"), engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM moon"))
    message = str(caught.value)
    assert message.startswith("database error while reading the moon table: ")
    assert "moon" in message.removeprefix("database error while reading the moon table: ")  # the driver's words
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)  # kept for the debug log


def test_driver_errors_from_a_raw_cursor_are_translated_too(engine):
    with pytest.raises(StoreError, match="^database error while counting: "):
        with translate_db_errors("counting"), engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute("SELECT count(*) FROM moon")


def test_the_watchers_own_errors_and_bugs_pass_through():
    with pytest.raises(ConfigError, match="^bad$"):
        with translate_db_errors("anything"):
            raise ConfigError("bad")
    with pytest.raises(KeyError):
        with translate_db_errors("anything"):
            raise KeyError("a bug stays a bug")


def test_store_reads_name_what_they_were_reading(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE prefix_spans"))
    publication = store.PublicationInfo(1, "public", dt.date(2025, 8, 4), 1, "0" * 64, "x",
                                        dt.datetime(2025, 8, 5), 0, 0)
    with engine.connect() as conn:
        with pytest.raises(StoreError, match="^database error while looking up 10.0.0.1 in the public publication"):
            store.lookup(conn, "public", "10.0.0.1", publication)


# ---------------------------------------------------------------- a database that dies under `watcher history`


@pytest.fixture
def history_db(db_url, engine, public_files, tmp_path):
    """A database with two publications, and a CLI runner on it that must not raise."""
    for path in public_files[:2]:
        store.import_bytes(engine, file_bytes(path), plain_name(path))
    engine.dispose()
    config = tmp_path / "watcher.toml"
    config.write_text("")

    def history():
        return CliRunner().invoke(main, ["--db", db_url, "--config", str(config), "history", TAG],
                                  catch_exceptions=False)

    healthy = history()
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stdout.count("changeNumber") >= 1  # it works before the database is broken
    return db_url, engine, history


def assert_one_error_line(result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: database error while reading the history of {TAG}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for words in expected:
        assert words in result.stderr, result.stderr


def _overwrite_table_with_garbage(database: Path, table: str) -> None:
    """Corrupt the root page of ``table`` in a SQLite file, leaving the schema and the other tables readable."""
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, nothing in the WAL
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (table,)).fetchone()
    conn.close()
    with open(database, "r+b") as raw:
        raw.seek((root - 1) * page_size)
        raw.write(b"\xff" * page_size)


def _terminate_when_blocked(admin: sa.Engine, holder_pid: int, killed: list[int], deadline: float) -> None:
    """Terminate the server process that waits for ``holder_pid``'s lock, as soon as one does."""
    while time.monotonic() < deadline and not killed:
        with admin.connect() as conn:
            waiting = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
                {"holder": holder_pid},
            ).scalars().all()
            for pid in waiting:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                killed.append(pid)
        time.sleep(0.05)


def test_history_on_a_database_that_dies_mid_query_prints_one_error_line(history_db):
    db_url, engine, history = history_db
    if engine.dialect.name == "sqlite":
        database = Path(sa.engine.make_url(db_url).database)
        _overwrite_table_with_garbage(database, "tag_versions")
        result = history()
        assert_one_error_line(result, "malformed")
        return
    # PostgreSQL: another session holds tag_versions, so the history query waits on it; the
    # waiting server process is terminated, as an administrator or a failover would.
    admin = sa.create_engine(db_url)
    killed: list[int] = []
    try:
        with admin.connect() as holder:
            holder.execute(sa.text("LOCK TABLE tag_versions IN ACCESS EXCLUSIVE MODE"))
            holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            killer = threading.Thread(target=_terminate_when_blocked,
                                      args=(admin, holder_pid, killed, time.monotonic() + 30), daemon=True)
            killer.start()
            result = history()
            killer.join()
            holder.rollback()
    finally:
        admin.dispose()
    assert len(killed) == 1
    assert_one_error_line(result, "terminating connection")
