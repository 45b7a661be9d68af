"""Database engine and schema migrations (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import select
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.sql import Executable
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError, SQLAlchemyError

from .errors import StoreError, database_detail

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and route them to psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


#: Query parameters of a database URL that carry secrets (libpq accepts the password there too).
SECRET_QUERY_KEYS = ("password", "sslpassword")


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret strings in a database URL: its password, in the userinfo or the query."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return ()
    found = [str(parsed.password)] if parsed.password else []
    for key in SECRET_QUERY_KEYS:
        value = parsed.query.get(key)
        found += [value] if isinstance(value, str) else list(value or ())
    return tuple(found)


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return "<invalid database URL>"
    masked = {key: "***" for key in SECRET_QUERY_KEYS if key in parsed.query}
    if masked:
        parsed = parsed.update_query_dict(masked)
    return parsed.render_as_string(hide_password=True)


def create_db_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database URL: {safe_url(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of {safe_url(url)}: {exc.strerror}") from None
        engine = create_engine(url, connect_args={"timeout": SQLITE_LOCK_WAIT})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # Reads run in autocommit: each statement is a READ COMMITTED transaction of its own, as it would be inside
        # a READ COMMITTED transaction of reads (every statement takes a fresh snapshot there too), without a BEGIN
        # and a ROLLBACK round trip per checkout. Work that writes takes a transaction (``writer``).
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        _check_postgres_connections(engine)
        return engine
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's begin() decide when transactions start (the pysqlite
        # default would defer and then fail to upgrade a read lock to a write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Reads take no lock in WAL mode and must not queue behind an import;
        # a writing transaction (see ``writer``) takes the write lock up front,
        # so a second writer waits on the busy timeout instead of failing
        # half-way when it tries to upgrade a read.
        mode = "IMMEDIATE" if connection.get_execution_options().get("watcher_writes") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


#: A pooled PostgreSQL connection idle for longer than this is pinged (a round trip) before it is lent again.
PING_AFTER_IDLE_SECONDS = 30.0


def _check_postgres_connections(engine: Engine) -> None:
    """Lend no pooled connection the server has closed, without a round trip per checkout (``pool_pre_ping``).

    A server that ends a session (a restart, ``pg_terminate_backend``, ``idle_session_timeout``) sends its reason
    and closes the socket, so an idle connection with anything to read is not lent: it is replaced, as a failed
    ping would be. That costs a ``select`` call. A connection idle for longer than ``PING_AFTER_IDLE_SECONDS``
    (which a silent network cut may have left half open) is pinged as well.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        record.info["watcher_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.get("watcher_idle_since")
        if idle_since is None:  # connected just now
            return
        if _closed_by_server(dbapi_connection):
            raise DisconnectionError("the server closed this pooled connection")
        if time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except engine.dialect.loaded_dbapi.Error as exc:
                raise DisconnectionError(f"a pooled connection idle for a while failed its ping: {exc}") from exc


def _closed_by_server(dbapi_connection) -> bool:
    """True when an idle connection is closed or has something to read: between requests the server sends nothing
    but the notice that it ends the session (and its end of file)."""
    if dbapi_connection.closed or getattr(dbapi_connection, "broken", False):
        return True
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


#: statement -> (the statement, its PostgreSQL text, the values it fixes): compiled once per statement
_DRIVER_SQL: dict[int, tuple[Executable, str, dict[str, Any]]] = {}


def pipelined(conn: Connection | Engine) -> bool:
    """True when ``read_together`` answers several reads in one round trip (PostgreSQL through psycopg)."""
    return conn.dialect.driver == "psycopg"


def read_together(conn: Connection, reads: Sequence[tuple[Executable, Mapping[str, Any]]]) -> list[list[Any]]:
    """The rows of several independent reads (statement, parameters); on PostgreSQL sent together and answered in
    one round trip (psycopg's pipeline mode), elsewhere run one after the other. Rows have attributes by column
    name, as SQLAlchemy's do; columns come as the driver loads them (the statements' types need no conversion)."""
    if not pipelined(conn) or len(reads) < 2:
        return [conn.execute(statement, dict(params)).all() for statement, params in reads]
    from psycopg.rows import namedtuple_row

    raw = conn.connection.driver_connection
    cursors = []
    with raw.pipeline():
        for statement, params in reads:
            cursor = raw.cursor(row_factory=namedtuple_row, binary=True)
            sql, fixed = _driver_sql(conn, statement)
            cursor.execute(sql, {**fixed, **params})
            cursors.append(cursor)
    try:
        return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


def read_rows(conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None) -> list[Any]:
    """The rows of one read, as ``read_together`` gives them: on PostgreSQL straight from psycopg in binary (no text
    encoding of large values such as packed lists, no SQLAlchemy result), elsewhere through SQLAlchemy."""
    if not pipelined(conn):
        return conn.execute(statement, dict(params or {})).all()
    from psycopg.rows import namedtuple_row

    sql, fixed = _driver_sql(conn, statement)
    with conn.connection.driver_connection.cursor(row_factory=namedtuple_row, binary=True) as cursor:
        return cursor.execute(sql, {**fixed, **dict(params or {})}).fetchall()


def _driver_sql(conn: Connection, statement: Executable) -> tuple[str, dict[str, Any]]:
    """The statement's PostgreSQL text, and the values of the parameters it fixes itself (a ``limit(1)`` is sent
    as one)."""
    found = _DRIVER_SQL.get(id(statement))
    if found is None or found[0] is not statement:
        compiled = statement.compile(dialect=conn.dialect)
        found = (statement, str(compiled), {k: v for k, v in compiled.params.items() if v is not None})
        _DRIVER_SQL[id(statement)] = found
    return found[1], found[2]


def migrations_dir() -> str:
    """The migration scripts shipped inside the package (``watcher/migrations``, as Alembic ships its own)."""
    return str(resources.files("watcher.migrations"))


def transactional(engine: Engine) -> Engine:
    """The engine for work that needs a database transaction: ``begin()`` then begins one (READ COMMITTED) on
    PostgreSQL, where other connections run each statement on its own (see ``create_db_engine``)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="READ COMMITTED")
    return engine


#: Seconds a SQLite connection waits for another connection's write lock before 'database is locked'.
SQLITE_LOCK_WAIT = 30


@contextlib.contextmanager
def lock_wait_limited(conn: Connection, seconds: float | None) -> Iterator[None]:
    """Within: a transaction begun on ``conn`` (not yet begun) waits at most ``seconds`` for SQLite's write lock
    (None: as usual). Set on the driver's connection and put back after, since the pool keeps it. PostgreSQL
    takes no database-wide write lock: nothing to limit there."""
    if seconds is None or conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    raw.execute(f"PRAGMA busy_timeout = {int(min(max(seconds, 0.0), SQLITE_LOCK_WAIT) * 1000)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_LOCK_WAIT * 1000}")


def writer(engine: Engine) -> Engine:
    """The engine for a transaction that writes: ``with writer(engine).begin() as conn``.

    On SQLite it begins IMMEDIATE (takes the write lock first); on PostgreSQL it begins a READ COMMITTED
    transaction (``transactional``).
    """
    return transactional(engine).execution_options(watcher_writes=True)


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", migrations_dir())
    if engine is not None:
        # Migrations write: on SQLite they take the write lock first, so two
        # processes opening a new database one after the other queue up, and
        # the second finds the schema done instead of failing half-way.
        config.attributes["engine"] = writer(engine)
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(command.upgrade, engine, revision, "migrate to")


def downgrade(engine: Engine, revision: str) -> None:
    _migrate(command.downgrade, engine, revision, "migrate down to")


MIGRATION_LOCK_NAME = "watcher-schema-migration"
_locks_held = threading.local()


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (signed 64 bits) for a lock name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """An exclusive ``flock`` on ``<database>-migrate.lock`` beside a SQLite file, for the time of a migration.

    Alembic commits each revision on its own, so two first commands on a fresh
    file could both start from revision 0 (``table ... already exists``). Not
    the database file itself: the daemon holds that one (``leader``).
    """
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = Path(database).with_name(Path(database).name + "-migrate.lock")
    held: set[str] = _locks_held.__dict__.setdefault("files", set())
    if str(path) in held:  # re-entrant, as on PostgreSQL: a second flock of our own would wait forever
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot take the schema migration lock {path}: {exc.strerror}") from None
    held.add(str(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        held.discard(str(path))
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise schema migrations of one PostgreSQL schema, or one SQLite file, across processes.

    Two commands run at once on a fresh database would otherwise both find no
    schema and both create it; the second failed on a type the first had made
    (``duplicate key ... pg_type_typname_nsp_index``). With the lock the second
    waits, then finds the schema done. Re-entrant within a thread (the daemon
    takes it around ``ensure_schema``, which takes it again): a second session
    asking for a lock its own process holds would wait forever. SQLite needs
    none of PostgreSQL's kind: a file lock beside the database does the same there.
    """
    if engine.dialect.name == "sqlite":
        with _sqlite_migration_lock(engine):
            yield
        return
    if engine.dialect.name != "postgresql":
        yield
        return
    held: set[int] = _locks_held.__dict__.setdefault("keys", set())
    try:
        with engine.connect() as probe:
            schema = probe.execute(text("SELECT current_schema()")).scalar()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot take the schema migration lock: {database_detail(exc)}") from None
    key = advisory_key(f"{MIGRATION_LOCK_NAME}:{schema}")
    if key in held:
        yield
        return
    try:
        conn = engine.connect()
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot take the schema migration lock: {database_detail(exc)}") from None
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
        except SQLAlchemyError:
            pass  # closing the session releases it anyway
        conn.close()


def _migrate(step: Callable[[Config, str], None], engine: Engine, revision: str, doing: str) -> None:
    """Run one Alembic command under the migration lock; its failures become one clear StoreError."""
    try:
        with migration_lock(engine):
            step(alembic_config(engine), revision)
    except CommandError as exc:
        raise StoreError(f"cannot {doing} revision {revision!r}: {exc}") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot {doing} revision {revision!r} on {safe_url(str(engine.url))}: "
                         f"{exc.__class__.__name__}: {database_detail(exc)}") from None


def ensure_schema(engine: Engine) -> None:
    """Bring the schema of ``engine``'s database to the latest revision, if it is not there."""
    try:
        if current_revision(engine) != head_revision():
            with migration_lock(engine):
                # Another process may have migrated while this one waited for the lock.
                if current_revision(engine) != head_revision():
                    log.info("upgrading database schema to %s", head_revision())
                    upgrade(engine)
    except OperationalError as exc:
        raise StoreError(f"cannot open database {safe_url(str(engine.url))}: {exc.orig}") from None


def open_database(url: str, *, migrate: bool = True) -> Engine:
    """An engine on ``url`` whose schema is at the latest revision."""
    engine = create_db_engine(url)
    if migrate:
        try:
            ensure_schema(engine)
        except StoreError:
            engine.dispose()
            raise
    return engine
