import time

import psycopg
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


def _in_transaction(conn: sa.Connection) -> bool:
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        return raw.in_transaction
    return raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


def test_reads_take_no_transaction_on_postgres_and_writes_take_one(db_url):
    engine = db.create_db_engine(db_url)
    try:
        for _ in range(2):  # the second time on the connection the writer gave back to the pool
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).all()
                # PostgreSQL: the read ran on its own (no BEGIN, nothing to roll back); SQLite begins a deferred one.
                assert _in_transaction(conn) == (engine.dialect.name == "sqlite")
            with db.writer(engine).begin() as conn:
                conn.execute(sa.text("SELECT 1")).all()
                assert _in_transaction(conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_pooled_connection_the_server_ended_is_replaced_before_it_is_lent(db_url):
    engine = db.create_db_engine(db_url)
    killer = db.create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with killer.connect() as other:
            assert other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        deadline = time.monotonic() + 5
        while not db._closed_by_server(engine.pool._pool.queue[0].dbapi_connection) and time.monotonic() < deadline:
            time.sleep(0.01)  # the server's notice and end of file reach the socket
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()
        killer.dispose()


def test_reads_together_give_the_rows_each_read_gives_alone(engine):
    from watcher.models import TicketEvent

    table = TicketEvent.__table__
    events = sa.select(table).where(table.c.ticket_id == sa.bindparam("ticket_id")).order_by(table.c.id)
    numbers = sa.select(sa.literal_column("1").label("one"), sa.bindparam("word", type_=sa.String).label("word"))
    with engine.connect() as conn:
        first, second = db.read_together(conn, [(events, {"ticket_id": 1}), (numbers, {"word": "x'y"})])
        assert first == [] and [(r.one, r.word) for r in second] == [(1, "x'y")]
        # Again, with the statements compiled already; alone, as before.
        assert [r.word for r in db.read_together(conn, [(numbers, {"word": "z"}), (events, {"ticket_id": 2})])[0]] \
            == ["z"]
        assert [r.word for r in db.read_together(conn, [(numbers, {"word": "w"})])[0]] == ["w"]


def test_reads_together_send_the_values_a_statement_fixes_itself(engine):
    # A limit (or any literal SQLAlchemy sends as a parameter) is not among the caller's parameters.
    one = sa.select(sa.literal_column("7").label("n")).limit(1)
    word = sa.select(sa.bindparam("word", type_=sa.String).label("word")).limit(1)
    with engine.connect() as conn:
        first, second = db.read_together(conn, [(one, {}), (word, {"word": "limited"})])
    assert [r.n for r in first] == [7] and [r.word for r in second] == ["limited"]
