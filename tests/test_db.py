import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from watcher import db
from watcher.models import Base


def test_migrations_upgrade_match_the_models_and_downgrade(db_url):
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        # Step down one revision at a time, and back up: every revision's downgrade works.
        script = ScriptDirectory.from_config(db.alembic_config())
        revisions = [r.revision for r in script.walk_revisions()]
        for revision in revisions[1:] + ["base"]:
            db.downgrade(engine, revision)
            assert db.current_revision(engine) == (None if revision == "base" else revision)
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_open_database_brings_a_new_database_to_head(db_url):
    engine = db.open_database(db_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
        with engine.connect() as conn:
            assert {"publications", "tags", "tag_versions", "prefix_spans"} <= set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_sqlite_uses_wal_and_foreign_keys(tmp_path):
    engine = db.open_database(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_database_passwords_are_masked_in_userinfo_and_query():
    url = "postgresql://u:pw-in-userinfo@db.internal/w?password=pw-in-query&sslmode=require"
    shown = db.safe_url(url)
    assert "pw-in-userinfo" not in shown and "pw-in-query" not in shown and "sslmode=require" in shown
    assert set(db.url_secrets(url)) == {"pw-in-userinfo", "pw-in-query"}


def test_bad_revision_and_unwritable_folder_are_clear_errors(tmp_path):
    import pytest
    from watcher.errors import StoreError

    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with pytest.raises(StoreError, match="cannot migrate to revision 'zzz'"):
        db.upgrade(engine, "zzz")
    engine.dispose()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the folder of sqlite:///"):
        db.create_db_engine(f"sqlite:///{blocker / 'sub' / 'w.db'}")


def test_concurrent_first_commands_on_a_fresh_database_wait_for_one_migration(db_url, tmp_path):
    """Several processes open one empty database at once: one migrates, the others wait and find it done."""
    import subprocess
    import sys

    script = ("import sys; from watcher import db; e = db.open_database(sys.argv[1]); "
              "print(db.current_revision(e)); e.dispose()")
    processes = [subprocess.Popen([sys.executable, "-c", script, db_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()) for p in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [(code, out) for code, out, _ in results] == [(0, db.head_revision())] * 4, [e for _, _, e in results]


def test_the_migration_lock_is_reentrant_and_released(db_url):
    engine = db.create_db_engine(db_url)
    try:
        with db.migration_lock(engine):
            with db.migration_lock(engine):  # the daemon holds it around ensure_schema, which takes it again
                db.ensure_schema(engine)
        other = db.create_db_engine(db_url)
        try:
            with db.migration_lock(other):  # released: another process (engine) takes it at once
                assert db.current_revision(other) == db.head_revision()
        finally:
            other.dispose()
    finally:
        engine.dispose()


def test_a_pooled_postgresql_connection_is_pinged_after_resting_and_replaced_when_cut(postgres_admin_url, monkeypatch):
    """Only PostgreSQL pools network connections (SQLite opens a file): the ping is PostgreSQL's."""
    engine = db.create_db_engine(postgres_admin_url)
    admin = sa.create_engine(db.normalise_url(postgres_admin_url), poolclass=sa.pool.NullPool)

    def pid_then_cut() -> int:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        return pid

    try:
        # Rested longer than the bound (0 s here): pinged, found cut, replaced before the caller gets it.
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
        cut = pid_then_cut()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != cut
        # Back in the pool a moment ago: handed out as it is (no round trip); a cut one fails that one use.
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
        pid_then_cut()
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        with engine.connect() as conn:  # the pool dropped it: the next use connects again
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
        admin.dispose()
