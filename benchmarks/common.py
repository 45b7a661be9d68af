"""Shared pieces: the real files, timing, summaries and fresh databases per backend."""
from __future__ import annotations

import contextlib
import gc
import gzip
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "servicetags"
DEFAULT_POSTGRES_URL = os.environ.get("WATCHER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLOUD_DIRS = {"public": "public", "usgov": "usgov", "china": "china"}
T = TypeVar("T")


def use_repo_migrations() -> str:
    """Make ``watcher.migrations`` this checkout's ``migrations/`` and return its path.

    The package may be installed in editable mode from another checkout, whose
    finder maps ``watcher.migrations`` there; the benchmark must create the
    schema that goes with the code it measures.
    """
    local = REPO / "migrations"
    current = sys.modules.get("watcher.migrations")
    if current is not None and Path(list(current.__path__)[0]).resolve() == local.resolve():
        return str(local)
    if not (local / "env.py").is_file():
        return str(Path(list(importlib.import_module("watcher.migrations").__path__)[0]))
    for name in [m for m in sys.modules if m == "watcher.migrations" or m.startswith("watcher.migrations.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "watcher.migrations", local / "__init__.py", submodule_search_locations=[str(local)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["watcher.migrations"] = module
    spec.loader.exec_module(module)
    return str(local)


# ---------------------------------------------------------------- real files


@dataclass(frozen=True)
class RealFile:
    name: str          # as the watcher sees it: ServiceTags_Public_20250804.json
    date: str          # YYYYMMDD
    data: bytes        # decompressed JSON bytes


def read_files(directory: Path, limit: int | None = None) -> list[RealFile]:
    paths = sorted(directory.glob("ServiceTags_*.json.gz"))
    if not paths:
        raise SystemExit(f"no ServiceTags_*.json.gz files in {directory}")
    if limit is not None:
        paths = paths[:limit]
    files = []
    for path in paths:
        name = path.name.removesuffix(".gz")
        files.append(RealFile(name=name, date=name.rsplit("_", 1)[1][:8], data=gzip.decompress(path.read_bytes())))
    return files


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call takes (after a full collection, so garbage from before is not billed to it)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def sandwich(baseline: Callable[[], Any], subject: Callable[[], Any]) -> tuple[float, float, Any]:
    """Time baseline, subject, baseline: (subject seconds, mean baseline seconds, subject's result)."""
    before, _ = timed(baseline)
    seconds, result = timed(subject)
    after, _ = timed(baseline)
    return seconds, (before + after) / 2, result


@dataclass
class Summary:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        values = list(values)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


@dataclass
class Figure:
    """One row of the table."""

    id: str
    title: str
    backend: str
    unit: str                       # "ratio", "bytes", "seconds"
    value: Summary | None = None
    target: float | None = None     # upper bound (inclusive for ratios, exclusive for sizes)
    strict: bool = False            # True: value < target; False: value <= target
    status: str = ""                # PASS, FAIL, INFO, PENDING
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status:
            return
        if self.value is None:
            self.status = "PENDING"
        elif self.target is None:
            self.status = "INFO"
        else:
            ok = self.value.median < self.target if self.strict else self.value.median <= self.target
            self.status = "PASS" if ok else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "backend": self.backend, "unit": self.unit,
            "value": self.value.as_dict() if self.value else None,
            "target": self.target, "target_op": ("<" if self.strict else "<=") if self.target is not None else None,
            "status": self.status, "note": self.note, **({"extra": self.extra} if self.extra else {}),
        }


def pending(id: str, title: str, note: str) -> Figure:
    return Figure(id=id, title=title, backend="-", unit="-", status="PENDING", note=note)


# ---------------------------------------------------------------- databases


class Database:
    """A fresh, empty database: its URL, an engine on it, and its size on disk."""

    backend: str
    url: str

    def __init__(self) -> None:
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            from watcher import db

            self._engine = db.open_database(self.url)
        return self._engine

    def size(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class SQLiteDatabase(Database):
    backend = "sqlite"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.path = directory / f"bench-{uuid.uuid4().hex[:8]}.db"
        self.url = f"sqlite:///{self.path}"

    def size(self) -> int:
        """The main file's size after ``PRAGMA wal_checkpoint(TRUNCATE)`` (plus any WAL left)."""
        # On the DBAPI connection: the watcher's engine wraps every transaction in BEGIN IMMEDIATE,
        # and a checkpoint cannot run inside a transaction.
        raw = self.engine.raw_connection()
        try:
            busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            raw.close()
        if busy:
            raise RuntimeError(f"{self.path}: the WAL checkpoint could not complete")
        wal = Path(f"{self.path}-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


class PostgresDatabase(Database):
    backend = "postgresql"

    def __init__(self, admin: sa.Engine, admin_url: str) -> None:
        super().__init__()
        self.admin = admin
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        separator = "&" if "?" in admin_url else "?"
        self.url = f"{admin_url}{separator}options=-csearch_path%3D{self.schema}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))

    def size(self) -> int:
        """Sum of ``pg_total_relation_size`` (heap, indexes, TOAST, FSM/VM) over the schema's tables."""
        with self.admin.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind = 'r'"
            ), {"schema": self.schema}).scalar_one())

    def drop(self) -> None:
        self.close()
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))


class Backends:
    """Creates fresh databases on the backends asked for, and cleans every one up."""

    def __init__(self, names: Sequence[str], workdir: Path, postgres_url: str) -> None:
        self.names = list(names)
        self.workdir = workdir
        self.postgres_url = postgres_url
        self._admin: sa.Engine | None = None

    def admin(self) -> sa.Engine:
        if self._admin is None:
            self._admin = sa.create_engine(self.postgres_url, poolclass=sa.pool.NullPool)
            try:
                with self._admin.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            except sa.exc.OperationalError as exc:
                raise SystemExit(f"PostgreSQL is not reachable at {self.postgres_url}: {exc.orig}") from None
        return self._admin

    def server_version(self, backend: str) -> str:
        if backend == "sqlite":
            import sqlite3

            return sqlite3.sqlite_version
        with self.admin().connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one())

    @contextlib.contextmanager
    def fresh(self, backend: str) -> Iterator[Database]:
        if backend == "sqlite":
            database: Database = SQLiteDatabase(self.workdir)
            try:
                yield database
            finally:
                database.close()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{database.path}{suffix}").unlink(missing_ok=True)
        elif backend == "postgresql":
            database = PostgresDatabase(self.admin(), self.postgres_url)
            try:
                yield database
            finally:
                database.drop()
        else:
            raise ValueError(f"unknown backend {backend!r}")

    def alternate(self, repeat: int, run: Callable[[Database], T], describe: Callable[[T], str],
                  log: Callable[[str], None]) -> dict[str, list[T]]:
        """``repeat`` runs per backend, each on a fresh database, alternating backends within a
        repetition so that a machine's drift (other load, warm caches) falls on all of them alike."""
        runs: dict[str, list[T]] = {b: [] for b in self.names}
        for rep in range(repeat):
            for backend in self.names:
                with self.fresh(backend) as database:
                    result = run(database)
                runs[backend].append(result)
                log(f"  repetition {rep + 1}/{repeat} on {backend}: {describe(result)}")
        return runs

    def close(self) -> None:
        if self._admin is not None:
            self._admin.dispose()


@contextlib.contextmanager
def workdir(parent: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="watcher-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
