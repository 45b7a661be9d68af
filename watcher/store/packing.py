"""Stored prefix sets (``contents``): full copies, or deltas against the tag's previous content.

A big tag (AzureCloud: ~20,000 prefixes) changes by about 1% a week, so a full
compressed copy per version repeats 99% of the week before: 241 versions of
AzureCloud took 18 MB of a 5-year history. A content of at least
``DELTA_FROM`` bytes whose tag had a content before is stored instead as zstd
with that previous content's text as a raw-content dictionary (~1-3 KB instead
of ~75 KB), with the base's hash (``base_hash``) and its chain depth (``depth``:
1 on a full copy, one more per delta). At ``MAX_DEPTH`` the next content is a
full copy again, so a read decompresses at most ``MAX_DEPTH + 1`` texts.

Stored contents are never rewritten or deleted (nothing deletes contents; the
migration's downgrade turns deltas into full copies first), so a delta stays
decodable whatever order files are imported in: its base was stored before it.
The content hash stays the hash of the canonical text, whatever the storage.

Every read of ``contents.prefixes`` goes through ``load_texts`` (or
``text_of_stored`` for one row already at hand), which fetches the chains of
all the asked contents in one recursive query per batch.
"""
from __future__ import annotations

import threading
from typing import Iterable, NamedTuple, Sequence

import zstandard
from sqlalchemy import Connection

from .sql import _decompressed, _split, compress, fetch_in

#: Contents shorter than this (encoded bytes) are always full copies: most tags hold a few
#: prefixes, and a delta of a short text saves little (measured on a 5-year history).
DELTA_FROM = 2048
#: The longest chain of deltas: a read of the newest AzureCloud decompresses at most 9 texts.
MAX_DEPTH = 8

_codecs = threading.local()

#: Each asked content and its bases, down to the full copy: one query whatever the depth.
_CHAINS = (
    "WITH RECURSIVE chain(hash, prefixes, base_hash) AS ("
    "SELECT hash, prefixes, base_hash FROM contents WHERE hash IN ({}) "
    "UNION ALL SELECT c.hash, c.prefixes, c.base_hash FROM contents c JOIN chain ON c.hash = chain.base_hash"
    ") SELECT hash, prefixes, base_hash FROM chain"
)


class StoredText(NamedTuple):
    """A stored content's canonical text and its chain depth (0: a full copy)."""

    text: bytes
    depth: int


class MissingBase(LookupError):
    """A delta whose base content is not stored: the database is damaged (dbcheck reports it)."""


def _compressor() -> zstandard.ZstdCompressor:
    found = getattr(_codecs, "plain", None)
    if found is None:
        found = _codecs.plain = zstandard.ZstdCompressor(level=1)
    return found


def _dictionary(base_text: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base_text, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def delta_against(encoded: bytes, base_text: bytes) -> bytes:
    """``encoded`` compressed with ``base_text`` as its dictionary."""
    return zstandard.ZstdCompressor(level=1, dict_data=_dictionary(base_text)).compress(encoded)


def undelta(packed: bytes, base_text: bytes) -> bytes:
    return zstandard.ZstdDecompressor(dict_data=_dictionary(base_text)).decompress(bytes(packed))


def pack_content(encoded: bytes, base_hash: bytes | None, base: StoredText | None) -> tuple[bytes, bytes | None,
                                                                                              int | None]:
    """(prefixes, base_hash, depth) to store for the text ``encoded``: a delta against ``base`` (the tag's
    previous content, stored under ``base_hash``) when that pays, a full copy otherwise."""
    if (base_hash is None or base is None or len(encoded) < DELTA_FROM or len(base.text) < DELTA_FROM
            or base.depth >= MAX_DEPTH):
        return compress(encoded), None, None
    delta = delta_against(encoded, base.text)
    full = compress(encoded)
    if len(delta) >= len(full):  # e.g. a tag whose prefixes were all replaced
        return full, None, None
    return delta, base_hash, base.depth + 1


def load_texts(conn: Connection, hashes: Iterable[bytes]) -> dict[bytes, StoredText]:
    """The canonical text of each stored content asked for (and of the bases read on the way)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    return decode_rows(fetch_in(conn, _CHAINS, wanted, binary=True))


def decode_rows(rows: Iterable[Sequence]) -> dict[bytes, StoredText]:
    """Texts of rows (hash, prefixes, base_hash) holding every base of every delta among them."""
    stored = {bytes(digest): (packed, None if base is None else bytes(base)) for digest, packed, base in rows}
    texts: dict[bytes, StoredText] = {}

    def text_of(digest: bytes) -> StoredText:
        found = texts.get(digest)
        if found is None:
            if digest not in stored:
                raise MissingBase(f"content {digest.hex()[:12]}… is not stored")
            packed, base = stored[digest]
            if base is None:
                found = StoredText(_decompressed(packed), 0)
            else:
                under = text_of(base)
                found = StoredText(undelta(packed, under.text), under.depth + 1)
            texts[digest] = found
        return found

    for digest in stored:
        text_of(digest)
    return texts


def text_of_stored(conn: Connection, packed: bytes, base_hash: bytes | None) -> bytes:
    """The text of one row's ``prefixes`` (with its ``base_hash``), reading its bases if it is a delta."""
    if base_hash is None:
        return _decompressed(packed)
    base = bytes(base_hash)
    found = load_texts(conn, [base]).get(base)
    if found is None:
        raise MissingBase(f"content {base.hex()[:12]}… is not stored")
    return undelta(packed, found.text)


def split_text(text: bytes) -> tuple[str, ...]:
    return _split(text)
