"""One leader among daemon replicas, so that each scheduled run happens once.

PostgreSQL: a session-level advisory lock on a connection the daemon keeps
open. Whoever holds it does the runs; the others try again at each tick, and
take over when the holder's connection dies (PostgreSQL releases the lock with
the session). A transaction-pooling proxy (pgbouncer ``pool_mode =
transaction``) hands each transaction to any server connection, so a session
lock would not protect anything: that is detected at start and refused.

SQLite: one daemon per database file, enforced with an exclusive ``flock`` on
the database file itself, so the lock follows the file's identity (device and
inode), not the path: a second daemon reaching the same file by a hard link, a
symlink or another mount refuses to start. The holder's pid is written to
``<database>.lock`` for the message. (Several processes on one SQLite file
cannot be replicas: there is no server to fail over to.)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from . import db
from .errors import LeadershipError, StoreError, database_detail

log = logging.getLogger(__name__)

LOCK_NAME = "watcher-daemon-leader"


class Leadership(Protocol):
    def try_lead(self) -> bool:
        """True when this process may do the run now (and keeps leading until release)."""

    @property
    def description(self) -> str: ...

    def release(self) -> None: ...


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _per_schema(engine: Engine, name: str) -> str:
    """A lock name for this watcher's schema: advisory locks are per database, and two
    watchers in two schemas of one database are two deployments, each with its own leader."""
    try:
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar()
    except SQLAlchemyError as exc:
        raise LeadershipError(f"cannot reach the database for leader election: {exc.__class__.__name__}") from None
    return f"{name}:{schema}"


class PostgresLeadership:
    """Leader election with ``pg_try_advisory_lock`` on a dedicated connection."""

    def __init__(self, engine: Engine, name: str = LOCK_NAME):
        self._engine = engine
        self._key = _advisory_key(name)
        self._connection: Connection | None = None
        self._leading = False

    @property
    def description(self) -> str:
        state = "leader" if self._leading else "standby"
        return f"{state} (PostgreSQL advisory lock {self._key}, pid {os.getpid()})"

    def check_session_semantics(self) -> None:
        """Refuse to run where session locks do not hold (a transaction-pooling proxy).

        Directly on PostgreSQL (or through session pooling) a client connection
        is one server session for its whole life. Behind pgbouncer's
        ``pool_mode = transaction`` the server session is lent per transaction:
        once connection A is idle between transactions, other clients may be
        handed A's session. So: note A's backend pid, then open transactions
        on other connections while A idles; if one of them lands on A's
        backend, or A comes back on another one, or A's advisory lock is not
        seen in its next transaction, sessions are not kept.
        """
        probe = _advisory_key(f"{LOCK_NAME}-probe-{os.getpid()}")
        engine = db.transactional(self._engine)  # the probe holds transactions open: reads alone run in autocommit
        try:
            with engine.connect() as first:
                with first.begin():
                    pid = first.execute(text("SELECT pg_backend_pid()")).scalar()
                    first.execute(text("SELECT pg_advisory_lock(:k)"), {"k": probe})
                others: list[Connection] = []
                try:
                    borrowed = set()
                    for _ in range(3):
                        other = engine.connect()
                        others.append(other)
                        other.begin()  # held open: the proxy cannot lend this session elsewhere meanwhile
                        borrowed.add(other.execute(text("SELECT pg_backend_pid()")).scalar())
                    with first.begin():
                        again = first.execute(text("SELECT pg_backend_pid()")).scalar()
                        held = first.execute(
                            # A bigint advisory key shows as classid (high 32 bits) and objid (low 32 bits).
                            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND pid = pg_backend_pid() AND classid::text::bigint = :high "
                                 "AND objid::text::bigint = :low AND objsubid = 1"),
                            {"high": (probe >> 32) & 0xFFFFFFFF, "low": probe & 0xFFFFFFFF},
                        ).scalar()
                finally:
                    for other in others:
                        other.rollback()
                        other.close()
                with first.begin():
                    first.execute(text("SELECT pg_advisory_unlock_all()"))
        except SQLAlchemyError as exc:
            detail = database_detail(exc)
            raise LeadershipError(f"cannot check the database session for leader election: {detail}") from None
        if pid in borrowed or again != pid or not held:
            raise LeadershipError(
                "the database connection does not keep session state between transactions (a transaction-pooling "
                "proxy such as pgbouncer with pool_mode = transaction?): advisory locks would not stop two replicas "
                "from running at once. Connect the daemon to PostgreSQL directly or through session pooling."
            )

    def try_lead(self) -> bool:
        # A connection that died since the last request (a server restart, a network cut) is replaced at
        # once and the lock tried again, so the run this request is for is not lost; a fresh connection
        # that fails means the database is down, and is not tried twice.
        while True:
            reused = self._connection is not None
            try:
                return self._try_lead_once()
            except SQLAlchemyError as exc:
                log.warning("leader election: database unavailable (%s)", exc.__class__.__name__)
                self._drop()
                if not reused:
                    return False

    def _try_lead_once(self) -> bool:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self._connection = self._engine.connect()
            self._leading = False
        if self._leading:
            # Still ours? A dropped connection loses the lock with the session.
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        self._leading = bool(
            self._connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
        )
        self._connection.commit()
        return self._leading

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except SQLAlchemyError:
                pass
        self._connection = None
        self._leading = False

    def release(self) -> None:
        if self._connection is not None and self._leading:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._connection.commit()
            except SQLAlchemyError:
                pass
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._leading = False


class FileLeadership:
    """The only daemon on a SQLite file: an exclusive ``flock`` on the database file's identity.

    ``flock`` locks belong to the open file (device and inode), whatever path
    opened it. They are independent of the POSIX record locks SQLite takes on
    the same file (Linux, local file systems), so they neither block nor
    release SQLite's own locking; the descriptor stays open until ``release``.
    """

    def __init__(self, database_path: Path):
        self.database = database_path
        self.path = database_path.with_name(database_path.name + ".lock")  # who holds it, for messages
        self._fd: int | None = None

    @property
    def description(self) -> str:
        return f"leader (lock on {self.database}, pid {os.getpid()})"

    def acquire(self) -> None:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.database, os.O_RDONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LeadershipError(f"cannot open {self.database} to lock it: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            identity = os.fstat(fd)
            os.close(fd)
            raise LeadershipError(
                f"another watcher daemon already runs on this SQLite database ({self.database}, device "
                f"{identity.st_dev} inode {identity.st_ino}, by whatever path it was opened{self._holder()}); "
                "run one daemon per SQLite file, or use PostgreSQL for replicas"
            ) from None
        self._fd = fd
        try:
            self.path.write_text(str(os.getpid()))
        except OSError:
            pass  # only informational

    def _holder(self) -> str:
        try:
            holder = self.path.read_text().strip()
        except OSError:
            return ""
        return f"; {self.path} names pid {holder}" if holder.isdigit() else ""

    def try_lead(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def leadership_for(engine: Engine) -> Leadership:
    """The leader election that fits the database, checked and ready (raises LeadershipError)."""
    if engine.dialect.name == "postgresql":
        leadership = PostgresLeadership(engine, _per_schema(engine, LOCK_NAME))
        leadership.check_session_semantics()
        return leadership
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        raise LeadershipError("the daemon needs a database file or PostgreSQL, not an in-memory database")
    file_leadership = FileLeadership(Path(database).resolve())
    file_leadership.acquire()
    return file_leadership


@contextlib.contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Serialise schema upgrades of replicas starting together on PostgreSQL (a no-op on SQLite).

    The lock is ``db.migration_lock``, which every migration takes (re-entrant,
    so ``db.ensure_schema`` inside this block does not wait for itself).
    """
    try:
        with db.migration_lock(engine):
            yield
    except StoreError as exc:
        if "schema migration lock" in str(exc):
            raise LeadershipError(str(exc)) from None
        raise
