"""Fixtures shared by every test module: the real files, and a fresh database on SQLite and PostgreSQL.

Every database test runs twice, once per backend. PostgreSQL is required: it is
reached at WATCHER_TEST_POSTGRES_URL (default the machine's local server), and
each test gets a schema of its own, dropped afterwards. A missing server or a
missing ../shared/servicetags fails the run instead of skipping tests.
"""
from __future__ import annotations

import functools
import gzip
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from tests.httpstub import ForwardProxy, Origin
from watcher import db

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "servicetags"
POSTGRES_URL = os.environ.get("WATCHER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def servicetags_dir() -> Path:
    if not (SHARED / "public").is_dir():
        pytest.fail(f"the real service-tag files are missing: expected them in {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def public_files(servicetags_dir: Path) -> list[Path]:
    files = sorted((servicetags_dir / "public").glob("ServiceTags_Public_*.json.gz"))
    assert len(files) == 9, files
    return files


@functools.lru_cache(maxsize=None)
def file_bytes(path: Path) -> bytes:
    """The JSON bytes of a gzipped real file (decompressed once per session)."""
    return gzip.decompress(Path(path).read_bytes())


def plain_name(path: Path) -> str:
    return Path(path).name.removesuffix(".gz")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the tests and is not reachable at {POSTGRES_URL}: {exc.orig}")
    finally:
        engine.dispose()
    return POSTGRES_URL


def _postgres_schema_url(admin_url: str, schema: str) -> str:
    separator = "&" if "?" in admin_url else "?"
    return f"{admin_url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A URL to an empty database: a SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watcher.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_schema_url(admin_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url):
    engine = db.open_database(db_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------- local HTTP stand-ins (tests/httpstub.py)


@pytest.fixture(autouse=True)
def no_proxy_from_the_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy variables of whoever runs the tests must not reroute 127.0.0.1 traffic."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def proxy(origin: Origin) -> Iterator[ForwardProxy]:
    server = ForwardProxy(origin)
    yield server
    server.close()


def row_counts(engine) -> dict[str, int]:
    """Rows in every table of the schema: compared before and after a refused operation (nothing changed)."""
    from watcher.models import Base

    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables}
