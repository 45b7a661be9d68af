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
``text_of_stored`` for one row already at hand): the rows asked for, then the
chains of the bases not at hand in one recursive query. Decoded big texts are
kept in a small content-addressed cache (``texts_cache``).
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from contextvars import ContextVar
from typing import Iterable, Iterator, Mapping, NamedTuple

import zstandard
from sqlalchemy import Connection

from .sql import _decompressed, _split, compress, fetch_in

#: Contents shorter than this (encoded bytes) are always full copies: most tags hold a few
#: prefixes, and a delta of a short text saves little (measured on a 5-year history).
DELTA_FROM = 2048
#: The longest chain of deltas: a read of the newest AzureCloud decompresses at most 9 texts.
MAX_DEPTH = 8
#: zstd level of a delta (see ``delta_against``)
DELTA_LEVEL = 2

#: Each asked content and its bases, down to the full copy: one query whatever the depth.
_CHAINS = (
    "WITH RECURSIVE chain(hash, prefixes, base_hash, depth) AS ("
    "SELECT hash, prefixes, base_hash, depth FROM contents WHERE hash IN ({}) UNION ALL "
    "SELECT c.hash, c.prefixes, c.base_hash, c.depth FROM contents c JOIN chain ON c.hash = chain.base_hash"
    ") SELECT hash, prefixes, base_hash, depth FROM chain"
)


class StoredText(NamedTuple):
    """A stored content's canonical text and its chain depth (0: a full copy)."""

    text: bytes
    depth: int


class MissingBase(LookupError):
    """A delta whose base content is not stored: the database is damaged (dbcheck reports it)."""


def _dictionary(base_text: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base_text, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def delta_against(encoded: bytes, base_text: bytes) -> bytes:
    """``encoded`` compressed with ``base_text`` as its dictionary.

    Level 2, not the full copies' level 1: level 1 finds few matches in a dictionary as long
    as the text. AzureCloud's week (500 KB of text): 79 KB at level 1, 0.5 KB at level 2 in 0.7 ms,
    0.2 KB at level 3 in 1.3 ms (a full copy at level 1: 104 KB in 1.2 ms).
    """
    return zstandard.ZstdCompressor(level=DELTA_LEVEL, dict_data=_dictionary(base_text)).compress(encoded)


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
    # A full copy compresses to ~1/5 of the text and a week's delta to ~1/100: only a delta near the
    # full copy's size (e.g. a tag whose prefixes were all replaced) is worth compressing twice for.
    if len(delta) * 8 > len(encoded) and len(delta) >= len(full := compress(encoded)):
        return full, None, None
    return delta, base_hash, base.depth + 1


class _TextCache:
    """Texts of big contents by hash, most recently used last, up to ``limit`` bytes in all.

    A hash names one text in every database (it is the text's hash), so the cache needs no
    invalidation: a weekly import finds the week before's contents, its delta bases, here
    instead of decoding their chains again.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._texts: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bytes | None:
        with self._lock:
            found = self._texts.get(digest)
            if found is not None:
                self._texts.move_to_end(digest)
            return found

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()
            self._size = 0

    def put(self, digest: bytes, text: bytes) -> None:
        if len(text) < DELTA_FROM or len(text) > self._limit // 4:
            return
        with self._lock:
            if digest in self._texts:
                self._texts.move_to_end(digest)
                return
            self._texts[digest] = text
            self._size += len(text)
            while self._size > self._limit:
                _, dropped = self._texts.popitem(last=False)
                self._size -= len(dropped)


#: ~2.2 MB is the text of a whole Public publication; this holds the big tags of several clouds.
texts_cache = _TextCache(8 * 1024 * 1024)


def load_texts(conn: Connection, hashes: Iterable[bytes], *, cached: bool = True) -> dict[bytes, StoredText]:
    """The canonical text and depth of each stored content asked for.

    ``cached=False`` decodes every stored byte (``db check``: a cached text would hide a damaged row).
    One query for the rows asked; a delta whose base text is neither cached nor among them
    needs one more, for the chains of all such bases at once.
    """
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = {bytes(digest): (packed, None if base is None else bytes(base), depth or 0) for digest, packed, base, depth
            in fetch_in(conn, "SELECT hash, prefixes, base_hash, depth FROM contents WHERE hash IN ({})", wanted,
                        binary=True)}
    found: dict[bytes, StoredText] = {}
    needed: set[bytes] = set()
    cache = texts_cache if cached else _TextCache(0)
    for digest, (packed, base, depth) in rows.items():
        text = cache.get(digest)
        if text is not None:
            found[digest] = StoredText(text, depth)
        elif base is None:
            found[digest] = StoredText(_decompressed(packed), 0)
            cache.put(digest, found[digest].text)
        elif base not in rows and cache.get(base) is None:
            needed.add(base)
    if needed:
        rows.update((bytes(digest), (packed, None if base is None else bytes(base), depth or 0))
                    for digest, packed, base, depth in fetch_in(conn, _CHAINS, sorted(needed), binary=True))

    def text_of(digest: bytes) -> StoredText:
        done = found.get(digest)
        if done is None:
            if digest not in rows:
                text = cache.get(digest)
                if text is None:
                    raise MissingBase(f"content {digest.hex()[:12]}… is not stored")
                return StoredText(text, -1)  # a base read from the cache: its depth is not needed
            packed, base, depth = rows[digest]
            done = StoredText(_decompressed(packed) if base is None else undelta(packed, text_of(base).text), depth)
            found[digest] = done
            cache.put(digest, done.text)
        return done

    return {digest: text_of(digest) for digest in wanted if digest in rows}


def forget_texts() -> None:
    """Empty the cache of texts: a daemon at rest between weekly runs keeps no megabytes for next week."""
    texts_cache.clear()


def remember_texts(texts: Iterable[tuple[bytes, bytes]]) -> None:
    """Texts just stored (hash, text): next week's import finds its delta bases here."""
    for digest, text in texts:
        texts_cache.put(digest, text)


def text_of_stored(conn: Connection, digest: bytes, packed: bytes, base_hash: bytes | None) -> bytes:
    """The text of the content ``digest``, whose row (``prefixes``, ``base_hash``) is at hand: from the cache,
    or decoded, reading its bases if it is a delta."""
    digest = bytes(digest)
    text = texts_cache.get(digest)
    if text is None:
        if base_hash is None:
            text = _decompressed(packed)
        else:
            base = bytes(base_hash)
            found = load_texts(conn, [base]).get(base)
            if found is None:
                raise MissingBase(f"content {base.hex()[:12]}… is not stored")
            text = undelta(packed, found.text)
        texts_cache.put(digest, text)
    return text


def split_text(text: bytes) -> tuple[str, ...]:
    return _split(text)


class _PrefixLists:
    """Decoded prefix sets (sorted tuples) by content hash, least recently used dropped first beyond ``limit``
    prefixes in all."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lists: OrderedDict[bytes, tuple[str, ...]] = OrderedDict()
        self._size = 0

    def get(self, digest: bytes) -> tuple[str, ...] | None:
        found = self._lists.get(digest)
        if found is not None:
            self._lists.move_to_end(digest)
        return found

    def put(self, digest: bytes, prefixes: tuple[str, ...]) -> None:
        if digest in self._lists or len(prefixes) > self._limit // 4:
            return
        self._lists[digest] = prefixes
        self._size += len(prefixes) + 1
        while self._size > self._limit:
            _, dropped = self._lists.popitem(last=False)
            self._size -= len(dropped) + 1


#: The prefix lists a job keeps between its imports (``prefix_lists_kept``); None: none are kept.
_kept_lists: ContextVar[_PrefixLists | None] = ContextVar("kept_prefix_lists", default=None)
#: A busy Public week changes ~40,000 (tag, prefix) entries; this keeps the last week of three clouds (~20 MB).
KEPT_PREFIXES = 250_000


@contextlib.contextmanager
def prefix_lists_kept(limit: int = KEPT_PREFIXES) -> Iterator[None]:
    """Within: each import keeps the prefix sets it stored, as tuples of strings, for the next import of the job.

    A backfill's next week starts from the contents this week stored: without
    this it would decode and split their texts again, and hash every string
    again to compare them (the kept strings have their hashes cached). A weekly
    import has no next week to serve, so outside a job nothing is kept (a
    daemon's memory at rest stays as it was).
    """
    token = _kept_lists.set(_PrefixLists(limit))
    try:
        yield
    finally:
        _kept_lists.reset(token)


def decoded_contents(stored: Mapping[bytes, StoredText]) -> dict[bytes, tuple[str, ...]]:
    """The prefixes of each stored text, sorted as stored (kept by the job, if it kept them)."""
    kept = _kept_lists.get()
    if kept is None:
        return {digest: split_text(found.text) for digest, found in stored.items()}
    lists: dict[bytes, tuple[str, ...]] = {}
    for digest, found in stored.items():
        hit = kept.get(digest)
        lists[digest] = hit if hit is not None else split_text(found.text)
    return lists


def remember_prefix_lists(contents: Iterable[tuple[bytes, tuple[str, ...]]]) -> None:
    """Prefix sets just stored (hash, sorted prefixes), for the job's next import, if in a job."""
    kept = _kept_lists.get()
    if kept is None:
        return
    for digest, prefixes in contents:
        kept.put(digest, prefixes)
