"""Driver-level database access for the few statements that move thousands of rows.

SQLAlchemy's Row objects and parameter dictionaries cost more than the
database's own work when an import reads or writes thousands of rows, so these
helpers go to the driver's cursor directly (COPY on PostgreSQL, multi-row
INSERTs on SQLite). The prefix sets ("contents") are packed here too: plain
text when short, zstd-compressed otherwise.
"""
from __future__ import annotations

import re
import threading
import zlib
from itertools import chain
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import zstandard
from sqlalchemy import Connection

from ..parse import encode_prefixes

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = 500) -> Iterable[Sequence[T]]:
    """Slices small enough for every driver's limit on bound parameters."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def driver_sql(conn: Connection, sql: str) -> str:
    """``:name`` parameters as the driver takes them (sqlite3 as they are, psycopg as ``%(name)s``)."""
    return re.sub(r":(\w+)", r"%(\1)s", sql) if conn.dialect.name == "postgresql" else sql


def fetch_all(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple]:
    """Plain tuples straight from the driver, for the few reads of thousands of rows per import.

    ``sql`` uses ``:name`` parameters (no lists); SQLAlchemy's Row objects cost
    more than the query itself here.
    """
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(driver_sql(conn, sql), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def execute_many(conn: Connection, sql: str, params: Sequence[dict[str, Any]]) -> None:
    """``sql`` (``:name`` parameters) once per dictionary, through the driver (see ``fetch_all``)."""
    if not params:
        return
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(driver_sql(conn, sql), params)
    finally:
        cursor.close()


def fetch_in(conn: Connection, sql: str, values: Sequence[Any], params: dict[str, Any] | None = None) -> list[tuple]:
    """Rows of ``sql`` whose ``IN ({})`` takes ``values``, in batches, through the driver."""
    rows: list[tuple] = []
    for batch in chunks(values, 900):
        names = {f"v{i}": value for i, value in enumerate(batch)}
        rows += fetch_all(conn, sql.format(", ".join(f":{name}" for name in names)), {**(params or {}), **names})
    return rows


def bulk_insert(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple],
                same: Mapping[str, int | None] | None = None) -> None:
    """Insert many rows with the driver's fastest path: COPY on PostgreSQL, executemany on SQLite.

    A first import writes ~3,000 tags, versions and contents and ~93,000
    spans; building SQLAlchemy parameter dictionaries for them costs more than
    the database's work. ``same`` gives columns whose value (an integer or
    NULL) every row shares.
    """
    if not rows:
        return
    same = dict(same or {})
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        constant = tuple(same.values())
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join([*columns, *same])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + constant if constant else row)
        return
    # Many rows per statement: SQLite's per-statement work (reset, bind, step)
    # costs about as much as inserting the row, so this halves a first import's
    # span writes. 900 parameters stay under every SQLite's limit (999 before 3.32).
    # Shared values are written into the statement, not bound once per row.
    per_statement = max(1, 900 // len(columns))
    literals = ["NULL" if value is None else str(int(value)) for value in same.values()]
    one_row = f"({', '.join(['?'] * len(columns) + literals)})"
    insert_into = f"INSERT INTO {table} ({', '.join([*columns, *same])}) VALUES "
    whole = len(rows) - len(rows) % per_statement
    cursor = raw.cursor()
    try:
        if whole:
            cursor.executemany(
                insert_into + ", ".join([one_row] * per_statement),
                (list(chain.from_iterable(rows[start:start + per_statement])) for start in range(0, whole, per_statement)),
            )
        if whole < len(rows):
            cursor.executemany(insert_into + one_row, rows[whole:])
    finally:
        cursor.close()


# ---------------------------------------------------------------- packed prefix sets


#: Contents shorter than this are stored as plain text: compressing them saves
#: a few bytes, and most tags hold a handful of prefixes.
COMPRESS_FROM = 512
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_codecs = threading.local()  # zstd contexts are reusable, but not across threads


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_codecs, "zstd", None)
    if pair is None:
        # Level 1: AzureCloud's 13,000 prefixes change every week; it compresses in
        # half a millisecond (zlib: 1.3 ms) to 37 KB (zlib: 48 KB).
        pair = _codecs.zstd = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return pair


def unpack(packed: bytes) -> tuple[str, ...]:
    """The prefixes of a stored ``contents.prefixes`` value (plain, zstd, or zlib from older databases)."""
    data = bytes(packed)
    if data[:4] == ZSTD_MAGIC:
        data = _zstd()[1].decompress(data)
    elif data[:1] == b"x":  # a zlib stream (databases written before zstd); no prefix text starts with "x"
        data = zlib.decompress(data)
    text_ = data.decode()
    return tuple(text_.split("\n")) if text_ else ()


def pack(prefixes: Sequence[str]) -> bytes:
    return compress(encode_prefixes(prefixes))


def compress(encoded: bytes) -> bytes:
    return encoded if len(encoded) < COMPRESS_FROM else _zstd()[0].compress(encoded)
