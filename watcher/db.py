"""Database engine and schema migrations (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

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
        engine = create_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
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


def migrations_dir() -> str:
    """The migration scripts shipped inside the package (``watcher/migrations``, as Alembic ships its own)."""
    return str(resources.files("watcher.migrations"))


def writer(engine: Engine) -> Engine:
    """The engine for a transaction that writes: ``with writer(engine).begin() as conn``.

    On SQLite it begins IMMEDIATE (takes the write lock first); elsewhere it is the engine.
    """
    return engine.execution_options(watcher_writes=True)


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


def _migrate(step: Callable[[Config, str], None], engine: Engine, revision: str, doing: str) -> None:
    """Run one Alembic command; its failures become one clear StoreError."""
    try:
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
