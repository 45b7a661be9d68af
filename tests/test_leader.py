"""One leader among replicas: the advisory lock, the lock file, a transaction-pooling proxy refused
(a real pgbouncer), and two daemons on one PostgreSQL database doing each run once."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL
from tests.daemon_helpers import (
    DaemonProcess,
    JsonReceiver,
    base_env,
    rows,
    seed_old_china,
    serve_new_china_file,
    table_count,
    watcher_command,
    write_config,
)
from tests.httpstub import Origin, free_port
from watcher import db, leader
from watcher.errors import LeadershipError


@pytest.fixture
def receiver():
    server = JsonReceiver()
    yield server
    server.close()


# ---------------------------------------------------------------- the locks


def terminate_and_wait(conn: sa.Connection, pid: int) -> None:
    """Kill a backend and wait until it is gone: pg_terminate_backend only signals it, and its
    advisory locks are released when the process has exited."""
    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + 10
    while True:
        alive = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar()
        conn.commit()  # pg_stat_activity is read once per transaction: each look needs a new one
        if not alive:
            return
        assert time.monotonic() < deadline, f"backend {pid} did not exit"
        time.sleep(0.02)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_postgres_leader_at_a_time_and_a_takeover_when_it_dies(engine: sa.Engine) -> None:
    name = f"watcher-test-{uuid.uuid4().hex}"  # the database is shared by tests running in parallel
    first, second = leader.PostgresLeadership(engine, name), leader.PostgresLeadership(engine, name)
    first.check_session_semantics()  # directly on PostgreSQL: sessions hold
    try:
        assert first.try_lead() is True
        assert second.try_lead() is False
        assert first.try_lead() is True  # still ours
        # The leader's session dies (a crash, a network cut): PostgreSQL drops its lock with it.
        pid = first._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        first._connection.commit()
        with engine.connect() as conn:
            terminate_and_wait(conn, pid)
        assert second.try_lead() is True
        assert first.try_lead() is False  # reconnects, finds the lock taken
        second.release()
        assert first.try_lead() is True
    finally:
        first.release()
        second.release()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_leader_whose_connection_died_reconnects_and_leads_in_the_same_request(engine: sa.Engine) -> None:
    """A server restart or a network cut between two ticks must not cost the run the next tick asks for."""
    name = f"watcher-test-{uuid.uuid4().hex}"  # the database is shared by tests running in parallel
    first = leader.PostgresLeadership(engine, name)
    try:
        assert first.try_lead() is True
        pid = first._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        first._connection.commit()
        with engine.connect() as conn:
            terminate_and_wait(conn, pid)
        assert first.try_lead() is True  # reconnected and took the lock again, in this very call
        again = first._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        first._connection.commit()
        assert again != pid
        other = leader.PostgresLeadership(engine, name)
        assert other.try_lead() is False  # and it is held
        other.release()
    finally:
        first.release()


def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "watcher.db"
    first = leader.FileLeadership(database)
    first.acquire()
    try:
        assert first.try_lead()
        with pytest.raises(LeadershipError, match="another watcher daemon already runs on this SQLite database"):
            leader.FileLeadership(database).acquire()
    finally:
        first.release()
    again = leader.FileLeadership(database)
    again.acquire()  # released: the next one may start
    again.release()


@pytest.mark.parametrize("link", ["hard link", "symlink", "another spelling of the path"])
def test_the_sqlite_lock_follows_the_files_identity_not_its_path(tmp_path: Path, link: str) -> None:
    database = tmp_path / "a" / "watcher.db"
    database.parent.mkdir()
    database.write_bytes(b"")
    elsewhere = tmp_path / "b" / "other-name.db"
    elsewhere.parent.mkdir()
    if link == "hard link":
        os.link(database, elsewhere)
    elif link == "symlink":
        elsewhere.symlink_to(database)
    else:
        elsewhere = tmp_path / "b" / ".." / "a" / "watcher.db"
    first = leader.FileLeadership(database)
    first.acquire()
    try:
        identity = os.stat(database)
        with pytest.raises(LeadershipError, match=f"device {identity.st_dev} inode {identity.st_ino}") as info:
            leader.FileLeadership(elsewhere).acquire()
        if link == "another spelling of the path":  # the pid note is found beside the same path
            assert f"names pid {os.getpid()}" in str(info.value)
    finally:
        first.release()
    again = leader.FileLeadership(elsewhere)
    again.acquire()  # released: a daemon by the other path may start now
    again.release()


def test_watcher_run_refuses_a_second_daemon_on_sqlite(tmp_path: Path, origin: Origin) -> None:
    db_url = f"sqlite:///{tmp_path / 'watcher.db'}"
    env = base_env(db_url, WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml", registries=False)),
                   WATCHER_SOURCE_URL=serve_new_china_file(origin), WATCHER_SCHEDULE="0 3 * * *")
    first = DaemonProcess(env)
    try:
        first.wait_for(lambda: first.events("catch-up"), "the first daemon to start")
        second = subprocess.run(watcher_command("run"), env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "another watcher daemon already runs on this SQLite database" in second.stderr
        code, _ = first.terminate()
    finally:
        first.kill()
    assert code == 0


# ---------------------------------------------------------------- pgbouncer in transaction mode


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[dict[str, str]]:
    """A real pgbouncer in front of the local PostgreSQL: database ``tx`` pools transactions, ``session`` sessions."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        pytest.fail("pgbouncer is required for this test: apt-get install -y pgbouncer (.ci/run does)")
    target = urlsplit(POSTGRES_URL.replace("+psycopg", ""))
    folder = Path(tempfile.mkdtemp(prefix="watcher-pgbouncer-"))
    folder.chmod(0o755)
    port = free_port()
    dbname = target.path.lstrip("/") or "test"
    # A scratch schema: if the check ever let a daemon through, its tables would land there, not in public.
    schema = f"pgb_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    backend = (f"host={target.hostname} port={target.port or 5432} dbname={dbname} "
               f"connect_query='SET search_path TO {schema}'")
    (folder / "users.txt").write_text(f'"{target.username or "postgres"}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"tx = {backend} pool_mode=transaction\n"
        f"session = {backend} pool_mode=session\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        "pool_mode = transaction\ndefault_pool_size = 5\nmax_client_conn = 50\n"
    )
    shutil.chown(folder, user="postgres")
    for item in folder.iterdir():
        shutil.chown(item, user="postgres")
    # pgbouncer refuses to run as root.
    process = subprocess.Popen(["runuser", "-u", "postgres", "--", binary, str(folder / "pgbouncer.ini")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                engine = sa.create_engine(f"postgresql+psycopg://{target.username or 'postgres'}@127.0.0.1:{port}/session")
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                engine.dispose()
                break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                    pytest.fail(f"pgbouncer did not start: {log[-2000:]}")
                time.sleep(0.1)
        user = target.username or "postgres"
        yield {"tx": f"postgresql://{user}@127.0.0.1:{port}/tx", "session": f"postgresql://{user}@127.0.0.1:{port}/session"}
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_watcher_run_behind_transaction_pooling_refuses_to_start(pgbouncer: dict[str, str], tmp_path: Path) -> None:
    """Refused before anything is written: no migration runs through the proxy."""
    env = base_env(pgbouncer["tx"], WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml", registries=False)),
                   WATCHER_SCHEDULE="*/2 * * * * *")
    result = subprocess.run(watcher_command("run"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "does not keep session state between transactions" in result.stderr
    assert "pgbouncer" in result.stderr and "session pooling" in result.stderr
    assert "Traceback" not in result.stderr
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            schemas = conn.execute(sa.text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE 'pgb\\_%' ")).scalar()
    finally:
        engine.dispose()
    assert schemas == 0


def test_session_pooling_passes_the_check(pgbouncer: dict[str, str]) -> None:
    engine = db.create_db_engine(pgbouncer["session"])
    try:
        leader.PostgresLeadership(engine).check_session_semantics()
        with pytest.raises(LeadershipError):
            leader.PostgresLeadership(db.create_db_engine(pgbouncer["tx"])).check_session_semantics()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- two replicas


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_daemons_on_postgres_do_each_run_once_and_the_other_takes_over(
    engine: sa.Engine, db_url: str, origin: Origin, receiver: JsonReceiver, tmp_path: Path
) -> None:
    seed_old_china(engine)
    env = base_env(db_url, WATCHER_CONFIG=str(write_config(tmp_path / "watcher.toml")),
                   WATCHER_SOURCE_URL=serve_new_china_file(origin), WATCHER_NOTIFY_URLS=receiver.url(),
                   WATCHER_SCHEDULE="* * * * * *")
    first, second = DaemonProcess(env), DaemonProcess(env)
    try:
        def runs() -> list[dict]:
            return rows(engine, "SELECT * FROM daemon_runs WHERE finished_at IS NOT NULL ORDER BY started_at")

        first.wait_for(lambda: len(runs()) >= 4, "four runs")
        done = runs()
        leaders = {r["runner"] for r in done}
        assert len(leaders) == 1  # the same replica leads while it lives
        for earlier, later in zip(done, done[1:]):
            assert later["started_at"] >= earlier["finished_at"]  # never two runs at once
        leader_pid = int(done[0]["runner"].rpartition(":")[2])
        assert leader_pid in (first.pid, second.pid)
        leading = first if leader_pid == first.pid else second
        standby = second if leading is first else first
        code, _ = leading.terminate()
        assert code == 0
        standby.wait_for(lambda: any(r["runner"].endswith(f":{standby.pid}") for r in runs()),
                         "the other replica to take over")
        code, _ = standby.terminate()
        assert code == 0
    finally:
        first.kill()
        second.kill()
    assert table_count(engine, "polls") == table_count(engine, "daemon_runs")  # each run polled once
    assert table_count(engine, "daemon_runs", "WHERE finished_at IS NULL") == 0
    assert table_count(engine, "publications") == 2
    assert table_count(engine, "tickets") == 1
    assert len(receiver.bodies) == 1
    assert [r["state"] for r in rows(engine, "SELECT state FROM outbox")] == ["sent"]
    assert [r["outcome"] for r in rows(engine, "SELECT outcome FROM polls ORDER BY id")].count("new") == 1
