"""Driver-level database access for the few statements that move thousands of rows.

SQLAlchemy's Row objects and parameter dictionaries cost more than the
database's own work when an import reads or writes thousands of rows, so these
helpers go to the driver's cursor directly (COPY on PostgreSQL, multi-row
INSERTs on SQLite). The prefix sets ("contents") are packed here too: plain
text when short, zstd-compressed otherwise.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
import zlib
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, TypeVar

import zstandard
from sqlalchemy import BigInteger, Boolean, Connection, Integer, LargeBinary, String

from ..parse import encode_prefixes
from ..prefixes import decode_prefixes

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = 500) -> Iterable[Sequence[T]]:
    """Slices small enough for every driver's limit on bound parameters."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def driver_sql(conn: Connection, sql: str) -> str:
    """``:name`` parameters as the driver takes them (sqlite3 as they are, psycopg as ``%(name)s``)."""
    return _psycopg_sql(sql) if conn.dialect.name == "postgresql" else sql


@functools.lru_cache(maxsize=256)
def _psycopg_sql(sql: str) -> str:
    # Cached: the rewrite costs a quarter of a millisecond, as much as a snapshot's own work.
    return re.sub(r":(\w+)", r"%(\1)s", sql)


def fetch_all(conn: Connection, sql: str, params: dict[str, Any], *, binary: bool = False) -> list[tuple]:
    """Plain tuples straight from the driver, for the few reads of thousands of rows per import.

    ``sql`` uses ``:name`` parameters (no lists); SQLAlchemy's Row objects cost
    more than the query itself here. ``binary``: PostgreSQL sends the values in
    binary form (a ``bytea`` as its bytes, not as hex text twice their size).
    """
    return _fetch_driver(conn, driver_sql(conn, sql), params, binary=binary)


def _fetch_driver(conn: Connection, query: str, params: dict[str, Any], *, binary: bool) -> list[tuple]:
    """``query`` (the driver's own parameter style) through the driver's cursor."""
    raw = conn.connection.driver_connection
    cursor = raw.cursor(binary=True) if binary and conn.dialect.name == "postgresql" else raw.cursor()
    try:
        cursor.execute(query, params)
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


def update_rows(conn: Connection, each: str, rows: Sequence[dict[str, Any]], postgres: str,
                per_row: Sequence[str]) -> None:
    """``each`` (``:name`` parameters) once per dictionary in ``rows``; on PostgreSQL ``postgres`` instead, once,
    with the per-row parameters ``per_row`` as arrays (for ``unnest``) and the others from the first row: one
    round trip and one plan for a busy week's hundreds of updates, not one statement each."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        execute_many(conn, each, rows)
        return
    params = dict(rows[0])
    for name in per_row:
        params[name] = [row[name] for row in rows]
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(driver_sql(conn, postgres), params)
    finally:
        cursor.close()


def fetch_in(conn: Connection, sql: str, values: Sequence[Any], params: dict[str, Any] | None = None,
             *, binary: bool = False) -> list[tuple]:
    """Rows of ``sql`` whose ``IN ({})`` takes ``values``, through the driver.

    On PostgreSQL in one query, with the values as one array parameter (``= ANY``):
    a first import's 3,000 hashes are one round trip, not four of 900 parameters.
    Elsewhere in batches, under SQLite's limit on bound parameters. ``binary``:
    as for ``fetch_all`` (contents come as their bytes, not as hex text).
    """
    if not values:
        return []
    if conn.dialect.name == "postgresql":
        assert "IN ({})" in sql, sql
        # %(...)b: the array goes in binary form; as text, psycopg escapes each bytea with a regex.
        query = driver_sql(conn, sql.replace("IN ({})", "= ANY(%(in_values)b)"))
        return _fetch_driver(conn, query, {**(params or {}), "in_values": list(values)}, binary=binary)
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
        names = [*columns, *same]
        types = _copy_types(table, tuple(names))
        columns_sql = f"{table} ({', '.join(names)})"
        with raw.cursor() as cursor:
            if types and types[:len(columns)] == ["text", "int4"] and all(t == "int4" for t in types[2:]):
                # The ~93,000 spans of a first import: one buffer in text format, not row by row.
                data = _text_int_rows(rows, constant)
                if data is not None:
                    with cursor.copy(f"COPY {columns_sql} FROM STDIN") as copy:
                        copy.write(data)
                    return
            # Binary COPY when every column's type is known: the server reads the values as
            # they are instead of parsing text (~10% of a first import's 93,000 spans).
            binary = " (FORMAT BINARY)" if types else ""
            with cursor.copy(f"COPY {columns_sql} FROM STDIN{binary}") as copy:
                if types:
                    copy.set_types(types)
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


def _text_int_rows(rows: Sequence[tuple], constant: tuple[int | None, ...]) -> bytes | None:
    """Rows of (text, integer) followed by ``constant`` integers (None: NULL) in COPY's text format; None
    if a text needs escaping (a backslash, tab, newline or carriage return: never a prefix).

    Built at C speed by slices and joins, each row from its text and a tail shared by all
    rows of the same integer: ~30 ms for a first import's 93,000 spans, where psycopg's
    ``write_row`` takes ~100 ms (and a binary buffer built alike ~40 ms, for a COPY
    that reads text as fast).
    """
    texts = list(map(itemgetter(0), rows))
    if _needs_copy_escape("".join(texts)):
        return None
    numbers = list(map(itemgetter(1), rows))
    after = "".join("\t\\N" if value is None else f"\t{int(value)}" for value in constant) + "\n"
    tails = {number: f"\t{int(number)}{after}" for number in set(numbers)}
    pieces: list[str] = [after] * (2 * len(rows))
    pieces[0::2] = texts
    pieces[1::2] = map(tails.__getitem__, numbers)
    return "".join(pieces).encode()


def _needs_copy_escape(text: str) -> bool:
    """Whether ``text`` has a character COPY's text format escapes (a backslash, tab, newline or carriage return)."""
    return "\\" in text or "\t" in text or "\n" in text or "\r" in text


def insert_spans(conn: Connection, runs: Sequence[tuple[int, Collection[str]]], first_day: int,
                 until_day: int | None) -> None:
    """New prefix spans from ``first_day`` to ``until_day`` (None: open), ``runs`` giving a tag id and its
    prefixes, written in key order (prefix, tag id): on PostgreSQL one COPY buffer, elsewhere ``bulk_insert``."""
    if not runs:
        return
    if conn.dialect.name == "postgresql":
        data = _span_copy_text(runs, (first_day, until_day))
        if data is not None:
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy("COPY prefix_spans (prefix, tag_id, first_day, until_day) FROM STDIN") as copy:
                    copy.write(data)
            return
    rows = list(chain.from_iterable(zip(prefixes, repeat(tag_id)) for tag_id, prefixes in runs))
    # In key order: the B-tree grows at its right edge instead of splitting pages all over.
    rows.sort(key=itemgetter(0))
    bulk_insert(conn, "prefix_spans", ("prefix", "tag_id"), rows, same={"first_day": first_day, "until_day": until_day})


#: Bytes of span rows gathered before they are handed to the COPY (psycopg sends what it is given at once).
STREAM_BLOCK = 256 * 1024


@contextlib.contextmanager
def streamed_spans(conn: Connection, first_day: int,
                   until_day: int | None) -> Iterator[Callable[[int, Collection[str]], None]]:
    """A function taking a tag id and its new prefixes, whose spans (``first_day`` to ``until_day``) go to
    PostgreSQL by one COPY while the caller goes on: the server parses and stores each block on its own
    core as it arrives. Nothing else may use ``conn`` meanwhile. Rows go in the order given (a key
    dropped for the load sorts them when it is added again); an exception inside ends the COPY in error.
    """
    after = "".join("\t\\N" if value is None else f"\t{int(value)}" for value in (first_day, until_day)) + "\n"
    pieces: list[str] = []
    gathered = 0
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy("COPY prefix_spans (prefix, tag_id, first_day, until_day) FROM STDIN") as copy:

            def add(tag_id: int, prefixes: Collection[str]) -> None:
                nonlocal gathered
                if not prefixes:
                    return
                if _needs_copy_escape("".join(prefixes)):
                    prefixes = [_copy_escaped(prefix) for prefix in prefixes]
                tail = f"\t{int(tag_id)}{after}"
                rows = tail.join(prefixes)
                pieces.extend((rows, tail))
                gathered += len(rows)
                if gathered >= STREAM_BLOCK:
                    copy.write("".join(pieces).encode())
                    pieces.clear()
                    gathered = 0

            yield add
            if pieces:
                copy.write("".join(pieces).encode())


def _copy_escaped(text: str) -> str:
    """``text`` as a value in COPY's text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _span_copy_text(runs: Sequence[tuple[int, Collection[str]]], constant: tuple[int | None, ...]) -> bytes | None:
    """The spans of ``runs`` in COPY's text format, sorted by (prefix, tag id); None if a prefix needs escaping.

    Each tag's lines are one join of its prefixes with the tail they share (C speed), and the lines are sorted
    as strings: a tab sorts before every character of a prefix, and the tag ids are right-aligned with spaces
    (which PostgreSQL's integer input skips), so the text order is the key's. That costs ~20 ms for a first
    import's 91,000 spans, where tuples sorted by prefix and then written out took ~45 ms; PostgreSQL finds
    the rows in key order when it builds the key (``importer._rebuilt_after``), which then needs no real sort
    (unsorted: ~20 ms more server time).
    """
    if _needs_copy_escape("".join(map("".join, map(itemgetter(1), runs)))):
        return None
    width = max(len(str(int(tag_id))) for tag_id, _ in runs)
    after = "".join("\t\\N" if value is None else f"\t{int(value)}" for value in constant) + "\n"
    pieces = []
    for tag_id, prefixes in runs:
        if prefixes:
            tail = f"\t{int(tag_id):>{width}}{after}"
            pieces += (tail.join(prefixes), tail)
    lines = "".join(pieces).split("\n")
    lines.pop()  # the text ends with a newline
    lines.sort()
    lines.append("")
    return "\n".join(lines).encode()


#: First match wins: BigInteger is an Integer to SQLAlchemy, and must be sent as int8.
_BINARY_COPY_TYPES = {BigInteger: "int8", Integer: "int4", String: "text", LargeBinary: "bytea", Boolean: "bool"}


@functools.lru_cache(maxsize=64)
def _copy_types(table: str, columns: tuple[str, ...]) -> list[str] | None:
    """PostgreSQL type names of the columns for a binary COPY, from the models; None if one is not simple."""
    from ..models import Base  # the models, not the store, know the column types

    found = Base.metadata.tables.get(table)
    if found is None:
        return None
    types = []
    for name in columns:
        kind = type(found.c[name].type)
        pg_type = next((pg for base, pg in _BINARY_COPY_TYPES.items() if issubclass(kind, base)), None)
        if pg_type is None:
            return None
        types.append(pg_type)
    return types


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Keep Python's cyclic garbage collector out of an import or a diff of many tags.

    Either allocates tens of thousands of short-lived strings and tuples
    that reference counting frees; each allocation burst would otherwise start
    a full collection that walks every object of the process (tens of ms in a
    daemon holding SQLAlchemy, Jinja and apprise), for no cycles to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    """The prefixes of a full copy in ``contents.prefixes`` (plain, zstd, or zlib from older databases).

    A delta (``contents.base_hash`` set) needs its bases: read it with ``packing.load_texts``.
    """
    return _split(_decompressed(packed))


def is_plain_text(text_: bytes) -> bool:
    """Whether a content's text holds only the characters of plain prefix notation."""
    return not text_.translate(None, _PLAIN_TEXT_BYTES)


#: The bytes of plain prefix notation (``prefixes.plain_prefix_text``) and the separator.
_PLAIN_TEXT_BYTES = b"0123456789abcdefABCDEF.:/\n"


def _decompressed(packed: bytes) -> bytes:
    data = bytes(packed)
    if data[:4] == ZSTD_MAGIC:
        return _zstd()[1].decompress(data)
    if data[:1] == b"x":  # a zlib stream (databases written before zstd); no prefix text starts with "x"
        return zlib.decompress(data)
    return data


def _split(data: bytes) -> tuple[str, ...]:
    return decode_prefixes(data)


def decompress(packed: bytes) -> bytes:
    """A value stored by ``compress`` (plain when short, zstd otherwise) as it was given."""
    data = bytes(packed)
    return _zstd()[1].decompress(data) if data[:4] == ZSTD_MAGIC else data


def pack(prefixes: Sequence[str]) -> bytes:
    return compress(encode_prefixes(prefixes))


def compress(encoded: bytes) -> bytes:
    return encoded if len(encoded) < COMPRESS_FROM else _zstd()[0].compress(encoded)
