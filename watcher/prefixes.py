"""Prefixes: the gate every published prefix passes, and canonicalisation against a tag's previous list.

Pure. Split from ``parse``: a file's tags are decoded there; their prefixes,
the expensive part (~93,000 a file), are checked and normalised here, in ways
that keep a weekly import proportional to what changed.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import filterfalse
from typing import AbstractSet, Collection, Iterable, Sequence

import xxhash

from .errors import ParseError

#: The characters of a prefix in plain notation: no scope id (``%``), whitespace or control character.
_NOT_PREFIX_CHAR = re.compile(r"[^0-9A-Fa-f.:/]")
_PREFIX_BYTES = b"0123456789abcdefABCDEF.:/"


def _all_plain(texts: Sequence[str]) -> bool:
    """True when ``texts`` hold only prefix characters: deleting those leaves nothing (C speed, ~10x a regex)."""
    joined = "".join(texts)
    return joined.isascii() and not joined.encode("ascii").translate(None, _PREFIX_BYTES)


def _shown(text: str, limit: int = 60) -> str:
    """``text`` for an error message: quoted, control characters escaped, cut to ``limit`` characters."""
    return repr(text[:limit]) + (f" (cut; {len(text)} characters)" if len(text) > limit else "")


def check_prefix_text(tag_name: str, raw: Sequence[str], source: str) -> None:
    """Refuse a tag whose prefixes hold anything but plain notation (scope ids, whitespace, control characters).

    One regex pass over all of them at C speed; the parsers decide the rest. It
    runs on every published string, including those the previous version had,
    so a prefix stored by an older, laxer version is refused when republished.
    """
    if _all_plain(raw):
        return
    offender = next(p for p in raw if _NOT_PREFIX_CHAR.search(p))
    raise ParseError(
        f"{source}: tag {_shown(tag_name)}: invalid prefix {_shown(offender)} "
        "(only plain IPv4 or IPv6 notation: no scope id, whitespace or control characters)"
    )


def plain_prefix_text(prefixes: Sequence[str]) -> bool:
    """True when every string of ``prefixes`` has only the characters of plain notation (one C-speed pass)."""
    return _all_plain(prefixes)


def passes_prefix_gate(text: str) -> bool:
    """True when ``text`` is a prefix today's gate stores: plain notation, canonical (what a reader may parse)."""
    if _NOT_PREFIX_CHAR.search(text) is not None:
        return False
    try:
        return normalize_prefix(text) == text
    except ValueError:
        return False


def passing_prefix_gate(texts: Sequence[str]) -> list[str]:
    """The strings of ``texts`` that pass ``passes_prefix_gate``, in order, checked a list at a time: one pass at
    C speed for the characters, one parse per string, and ``passes_prefix_gate`` only for the few that are not
    canonical as written (nearly every stored prefix is)."""
    if not _all_plain(texts):
        return [t for t in texts if passes_prefix_gate(t)]
    _, other = _canonical_prefixes(texts)
    failed = {t for t in other if not passes_prefix_gate(t)}
    return [t for t in texts if t not in failed] if failed else list(texts)


def encode_prefixes(prefixes: Iterable[str]) -> bytes:
    """A prefix set as stored and fingerprinted: newline-separated UTF-8."""
    return "\n".join(prefixes).encode()


def decode_prefixes(encoded: bytes) -> tuple[str, ...]:
    """The prefixes of an ``encode_prefixes`` text (~0.36 ms for AzureCloud's 13,000: the cost of the strings)."""
    text = encoded.decode()
    return tuple(text.split("\n")) if text else ()


def content_hash(prefixes: Iterable[str], encoded: bytes | None = None) -> bytes:
    """The fingerprint of a canonical (sorted, normalised) prefix set (``encoded``: its encoding, if at hand)."""
    return xxhash.xxh3_128_digest(encode_prefixes(prefixes) if encoded is None else encoded)


_HOST_MASKS_V4 = {str(n): (1 << (32 - n)) - 1 for n in range(33)}
_HOST_MASKS_V6 = {str(n): (1 << (128 - n)) - 1 for n in range(129)}


def _strict_ipv4_parser() -> bool:
    """Whether this platform's ``inet_pton`` reads only the dotted quad ``inet_ntop`` writes.

    glibc, musl and the BSDs refuse leading zeros, missing or extra parts and
    octets above 255, so an IPv4 address it reads is canonical as written and
    need not be written back to be compared (a third of the check's cost).
    """
    for text in ("01.2.3.4", "1.2.3.04", "00.0.0.0", "1.2.3", "1.2.3.4.5", "1.2.3.256", "0x1.2.3.4"):
        try:
            socket.inet_pton(socket.AF_INET, text)
        except OSError:
            continue
        return False
    return True


_STRICT_IPV4 = _strict_ipv4_parser()


def _canonical_prefixes(texts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split prefix strings into those already canonical and the rest, at C speed per string.

    A string is canonical when socket's C parser reads it, writes it back
    unchanged, its host bits are zero and its length is written plainly; an
    IPv6 address whose top 80 bits are zero goes to the rest, because
    ``inet_ntop`` and ``ipaddress`` write some of those differently. Nearly all
    published prefixes are canonical; ``normalize_prefix`` decides the rest.
    """
    pton, ntop, from_bytes = socket.inet_pton, socket.inet_ntop, int.from_bytes
    v4, v6, masks_v4, masks_v6 = socket.AF_INET, socket.AF_INET6, _HOST_MASKS_V4, _HOST_MASKS_V6
    strict_v4 = _STRICT_IPV4
    canonical: list[str] = []
    other: list[str] = []
    for text in texts:
        addr, _, bits = text.partition("/")
        try:
            if ":" in addr:
                packed = pton(v6, addr)
                if from_bytes(packed, "big") & masks_v6[bits] or not packed[:10].strip(b"\0") \
                        or ntop(v6, packed) != addr:
                    other.append(text)
                    continue
            else:
                packed = pton(v4, addr)
                if from_bytes(packed, "big") & masks_v4[bits] or not strict_v4 and ntop(v4, packed) != addr:
                    other.append(text)
                    continue
        except (OSError, KeyError, ValueError):  # ValueError: an embedded NUL
            other.append(text)
            continue
        canonical.append(text)
    return canonical, other


def normalize_prefix(text: str) -> str:
    """Return the canonical form of a CIDR prefix (host bits cleared); ValueError if invalid.

    ``ipaddress`` decides, unless the text is canonical already (see ``_canonical_prefixes``).
    """
    if _canonical_prefixes((text,))[0]:
        return text
    return str(ipaddress.ip_network(text, strict=False))


@dataclass
class PrefixCache:
    """What a file's prefix strings were found to be, shared by its tags (AzureCloud repeats them all)."""

    canonical: set[str] = field(default_factory=set)
    repaired: dict[str, str] = field(default_factory=dict)  # text -> canonical form


@dataclass(frozen=True)
class PrefixChange:
    """A tag's canonical prefixes in a new file, and how they differ from its previous ones."""

    prefixes: tuple[str, ...]       # sorted, distinct, canonical
    added: set[str]
    removed: set[str]
    notes: tuple[str, ...]          # what was repaired: host bits, duplicates


def normalize_against(
    tag_name: str, raw: Sequence[str], source: str, old: Sequence[str] = (), cache: PrefixCache | None = None
) -> PrefixChange:
    """Canonicalise a tag's published prefixes against its previous canonical list ``old`` (sorted).

    Strings found in ``old`` are canonical by construction and skip the
    parser, and the result is built from ``old`` plus what changed, so a weekly
    change costs what it adds, not the size of the tag (AzureCloud has 13,000
    prefixes and changes every week). ``cache`` may be shared across the
    tags of one file. Raises ParseError on an invalid prefix.
    """
    check_prefix_text(tag_name, raw, source)
    published = set(raw)
    notes: list[str] = []
    if len(published) != len(raw):
        seen: set[str] = set()
        for text in raw:
            if text in seen:
                notes.append(f"{tag_name}: duplicate prefix {text} ignored")
            seen.add(text)
    old_set = set(old)
    unknown = published - old_set if old_set else published
    cache = PrefixCache() if cache is None else cache
    unseen = unknown.difference(cache.canonical)
    if cache.repaired:
        unseen.difference_update(cache.repaired)
    good, other = _canonical_prefixes(unseen)
    cache.canonical.update(good)
    for text in other:
        try:
            canonical = normalize_prefix(text)
        except ValueError as exc:
            raise ParseError(f"{source}: tag {_shown(tag_name)}: invalid prefix {_shown(text)} ({exc})") from None
        if canonical == text:  # canonical, but outside the fast path (e.g. ::/0)
            cache.canonical.add(text)
        else:
            cache.repaired[text] = canonical
    repaired = unknown.intersection(cache.repaired) if cache.repaired else set()
    fresh = unknown - repaired if repaired else set(unknown)
    for text in sorted(repaired):
        canonical = cache.repaired[text]
        notes.append(f"{tag_name}: prefix {text} normalised to {canonical}")
        if canonical in published or canonical in fresh:
            notes.append(f"{tag_name}: duplicate prefix {canonical} ignored")
        fresh.add(canonical)
    removed = old_set - published
    if fresh and removed:
        removed -= fresh  # published with host bits set, but the same network
    added = fresh - old_set if old_set else fresh
    if not added and not removed:
        prefixes = tuple(old)
    elif not old:
        prefixes = tuple(sorted(added))
    else:
        kept = _without(old, removed) if removed else list(old)
        # Two sorted runs: timsort merges them in linear time.
        prefixes = tuple(sorted(kept + sorted(added)))
    return PrefixChange(prefixes, added, removed, tuple(sorted(set(notes))))


def _without(ordered: Sequence[str], members: AbstractSet[str]) -> list[str]:
    """``ordered`` (sorted) without ``members`` (all in it): a few bisections and slices, not a pass in Python."""
    if len(members) * 8 > len(ordered):
        return list(filterfalse(members.__contains__, ordered))  # C speed: no Python frame per prefix
    kept: list[str] = []
    start = 0
    for position in sorted(bisect_left(ordered, member) for member in members):
        kept += ordered[start:position]
        start = position + 1
    kept += ordered[start:]
    return kept


def normalize_prefixes(
    tag_name: str, raw: Sequence[str], source: str, known: Collection[str] = (), cache: PrefixCache | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Sorted, de-duplicated canonical prefixes of one tag, and notes on what was repaired.

    ``known`` is the tag's previous canonical prefix list, sorted (see ``normalize_against``).
    """
    change = normalize_against(tag_name, raw, source, tuple(sorted(known)), cache)
    return change.prefixes, change.notes
