"""Parse stage: bytes of a service-tag file -> validated, normalised records.

Pure: no I/O beyond reading a path the caller names. The expensive part of a
file is its ~93,000 prefixes, so only the top level is decoded at first and
each tag entry stays raw JSON bytes, fingerprinted; an entry whose bytes the
store already knows (last week's) was validated when it was first imported and
is neither decoded nor validated again, and a changed tag only parses the
prefixes it did not have. That keeps a weekly import proportional to what
changed, not to the size of the file.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import re
import socket
import zlib
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Collection, Iterable, Mapping, Sequence

import msgspec
import orjson
import xxhash

from .errors import ParseError
from .settings import CLOUD_FILE_NAMES, FILE_CLOUD_NAMES

log = logging.getLogger(__name__)

FILE_NAME_RE = re.compile(r"ServiceTags_(?P<cloud>[A-Za-z]+)_(?P<date>\d{8})\.json(?:\.gz)?$")

#: The gate every tag name passes, on every path: the characters real names use
#: (``AzureCloud.eastus2``, ``Storage.EastUS2``; ``-`` and ``_`` for safety margin),
#: so a name can never carry a newline, a quote or markup into a script or a ticket.
MAX_TAG_NAME_LENGTH = 200
TAG_NAME_PATTERN = r"\A[A-Za-z0-9._-]{1,%d}\Z" % MAX_TAG_NAME_LENGTH
_TAG_NAME = re.compile(TAG_NAME_PATTERN)
_NOT_TAG_NAME_CHAR = re.compile(r"[^A-Za-z0-9._-]")
#: The characters of a prefix in plain notation: no scope id (``%``), whitespace or control character.
_NOT_PREFIX_CHAR = re.compile(r"[^0-9A-Fa-f.:/]")
#: Bytes no real file holds (scope ids, JSON escapes); a file with them is validated whole, see ``Document``.
_SUSPICIOUS_BYTES = (b"%", b"\\")

#: Optional metadata: property -> (accepted types, what the warning says was expected).
_OPTIONAL_PROPERTIES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "region": (str, "a string"),
    "regionId": (int, "a whole number from 0 to 2147483647"),
    "platform": (str, "a string"),
    "systemService": (str, "a string"),
    "networkFeatures": (list, "a list of strings"),
}
_MAX_NUMBER = 2**31 - 1


@dataclass(frozen=True)
class ServiceTag:
    """One tag of one publication, structurally validated."""

    name: str
    change_number: int
    #: optional metadata: None when the file does not have it (files before 2020-08 have no
    #: ``regionId`` and no ``networkFeatures``) or has it with the wrong type (a warning)
    region: str | None
    region_id: int | None
    platform: str | None
    system_service: str | None
    network_features: tuple[str, ...] | None
    #: the prefixes exactly as published; ``normalize_prefixes`` gives the canonical set
    raw_prefixes: Sequence[str]
    #: fingerprint of the whole entry as published (name, id, properties)
    entry_hash: bytes

    @property
    def published_metadata(self) -> tuple[str | None, int | None, str | None, str | None, str | None]:
        """The metadata as published, None for absent: what the store should keep (NULL columns)."""
        features = None if self.network_features is None else ",".join(self.network_features)
        return (self.region, self.region_id, self.platform, self.system_service, features)

    @property
    def metadata(self) -> tuple[str, int, str, str, str]:
        """The metadata as the store keeps it today: absent as "" / 0 (its ``NO_METADATA``).

        Kept until the store stores absent as NULL (then it reads ``published_metadata``).
        """
        region, region_id, platform, service, features = self.published_metadata
        return (region or "", region_id or 0, platform or "", service or "", features or "")


@dataclass(frozen=True)
class ParsedFile:
    cloud: str                      # our name: public, usgov, china, germany
    change_number: int
    file_date: dt.date
    sha256: str
    #: tags to look at: all of them, or those whose entry differs from the known fingerprint
    tags: tuple[ServiceTag, ...]
    #: tags whose entry is byte-for-byte the one known (see ``known_entries``)
    unchanged: tuple[str, ...]
    #: optional metadata that was ignored because of its type, one line each (file, tag, property)
    warnings: tuple[str, ...] = ()

    @property
    def tag_count(self) -> int:
        return len(self.tags) + len(self.unchanged)

    @property
    def tag_names(self) -> list[str]:
        return [t.name for t in self.tags] + list(self.unchanged)


def _shown(text: str, limit: int = 60) -> str:
    """``text`` for an error message: quoted, control characters escaped, cut to ``limit`` characters."""
    return repr(text[:limit]) + (f" (cut; {len(text)} characters)" if len(text) > limit else "")


def check_tag_name(name: str, source: str) -> str:
    """``name`` if it passes the tag-name gate; else ParseError naming it (escaped, cut) and why."""
    if _TAG_NAME.match(name):
        return name
    if not name:
        why = "it is empty"
    elif len(name) > MAX_TAG_NAME_LENGTH:
        why = f"it is longer than {MAX_TAG_NAME_LENGTH} characters"
    else:
        why = f"character {_NOT_TAG_NAME_CHAR.search(name)[0]!r} is not one of letters, digits, '.', '-', '_'"
    raise ParseError(f"{source}: tag name {_shown(name)} refused: {why}")


def check_tag_names(names: Sequence[str], source: str) -> None:
    """The tag-name gate for many names at once: one regex pass over all of them, then a name only on failure."""
    if names and (_NOT_TAG_NAME_CHAR.search("".join(names)) is not None
                  or min(map(len, names)) == 0 or max(map(len, names)) > MAX_TAG_NAME_LENGTH):
        for name in names:
            check_tag_name(name, source)


def check_prefix_text(tag_name: str, raw: Sequence[str], source: str) -> None:
    """Refuse a tag whose prefixes hold anything but plain notation (scope ids, whitespace, control characters).

    One regex pass over all of them at C speed; the parsers decide the rest. It
    runs on every published string, including those the previous version had,
    so a prefix stored by an older, laxer version is refused when republished.
    """
    if _NOT_PREFIX_CHAR.search("".join(raw)) is None:
        return
    offender = next(p for p in raw if _NOT_PREFIX_CHAR.search(p))
    raise ParseError(
        f"{source}: tag {_shown(tag_name)}: invalid prefix {_shown(offender)} "
        "(only plain IPv4 or IPv6 notation: no scope id, whitespace or control characters)"
    )


def plain_prefix_text(prefixes: Sequence[str]) -> bool:
    """True when every string of ``prefixes`` has only the characters of plain notation (one C-speed pass)."""
    return _NOT_PREFIX_CHAR.search("".join(prefixes)) is None


def passes_prefix_gate(text: str) -> bool:
    """True when ``text`` is a prefix today's gate stores: plain notation, canonical (what a reader may parse)."""
    if _NOT_PREFIX_CHAR.search(text) is not None:
        return False
    try:
        return normalize_prefix(text) == text
    except ValueError:
        return False


def passes_tag_name_gate(name: str) -> bool:
    return _TAG_NAME.match(name) is not None


def entry_fingerprint(entry: Any) -> bytes:
    """A 128-bit fingerprint of one tag entry's JSON bytes exactly as published.

    It says "these exact bytes were seen before", nothing more: an entry whose
    bytes differ (other line endings, re-indented, keys reordered) is decoded
    and compared by content, and only its content decides whether the tag
    changed; the store then keeps the new fingerprint, so only the first file
    in a new layout pays for the comparison.
    """
    return xxhash.xxh3_128_digest(entry)


def encode_prefixes(prefixes: Iterable[str]) -> bytes:
    """A prefix set as stored and fingerprinted: newline-separated UTF-8."""
    return "\n".join(prefixes).encode()


def content_hash(prefixes: Iterable[str], encoded: bytes | None = None) -> bytes:
    """The fingerprint of a canonical (sorted, normalised) prefix set (``encoded``: its encoding, if at hand)."""
    return xxhash.xxh3_128_digest(encode_prefixes(prefixes) if encoded is None else encoded)


_HOST_MASKS_V4 = {str(n): (1 << (32 - n)) - 1 for n in range(33)}
_HOST_MASKS_V6 = {str(n): (1 << (128 - n)) - 1 for n in range(129)}


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
                if from_bytes(packed, "big") & masks_v4[bits] or ntop(v4, packed) != addr:
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


def _without(ordered: Sequence[str], members: Collection[str]) -> list[str]:
    """``ordered`` (sorted) without ``members`` (all in it): a few bisections and slices, not a pass in Python."""
    if len(members) * 8 > len(ordered):
        return [p for p in ordered if p not in members]
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


def date_from_file_name(name: str) -> dt.date | None:
    match = FILE_NAME_RE.search(name)
    if not match:
        return None
    try:
        return dt.datetime.strptime(match["date"], "%Y%m%d").date()
    except ValueError:
        return None


#: The largest decoded file ``read_file_bytes`` accepts (real files are ~5 MB); as ``FetchSettings.max_bytes``.
MAX_FILE_BYTES = 50 * 1024 * 1024


def read_file_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The JSON bytes of a ``.json`` or ``.json.gz`` file, at most ``max_bytes`` of them once inflated.

    Gzip is inflated a step at a time against the cap, so a gzip bomb stops at
    the cap instead of filling memory.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
            if data[:2] == b"\x1f\x8b":
                rest = stream.read()  # compressed: the cap applies to what it inflates to
                data = _inflate(data + rest, max_bytes, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise ParseError(f"{path}: cannot read: {exc}") from None
    if len(data) > max_bytes:
        raise ParseError(f"{path}: larger than {max_bytes} bytes (real files are about 5 MB); not read")
    return data


def _inflate(compressed: bytes, max_bytes: int, path: Path) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    size = 0
    pending = compressed
    while pending:
        chunk = inflater.decompress(pending, max_bytes + 1 - size)
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise ParseError(f"{path}: inflates to more than {max_bytes} bytes (a gzip bomb?); not read")
        pending = inflater.unconsumed_tail
        if inflater.eof:
            if inflater.unused_data:  # another gzip member follows
                pending, inflater = inflater.unused_data, zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            else:
                break
    if not inflater.eof:
        raise ParseError(f"{path}: cannot read: the gzip stream is truncated")
    return b"".join(parts)


#: changeNumbers and region ids are stored as 32-bit integers (both databases).
_Number = Annotated[int, msgspec.Meta(ge=0, le=_MAX_NUMBER)]
#: Real files nest 5 levels. The fast decoder gives up at about 1,000 levels (Python's recursion limit,
#: a RecursionError) and orjson at 1,024; a file it gives up on is refused with a clear error if it nests
#: deeper than this, which is checked on that slow path only (a depth scan costs more than the import).
MAX_NESTING = 512


class _TopLevel(msgspec.Struct):
    """The top level of a file; each tag entry stays undecoded JSON until it is needed."""

    changeNumber: _Number
    cloud: str
    values: list[msgspec.Raw]


@dataclass(frozen=True)
class Document:
    """A file whose top level is checked; ``entries`` are the tag entries' JSON bytes, still undecoded.

    Decoding ~93,000 prefix strings costs more than everything else an
    incremental import does, so an entry is decoded only when its fingerprint
    is not one the store already knows.
    """

    change_number: int
    cloud: str                      # as the file spells it
    entries: Sequence[Any]          # buffers of JSON bytes (msgspec.Raw)
    #: the file holds bytes no real file does (``%``, a JSON escape): every entry is then decoded and
    #: passes the gate, even one whose bytes match a stored version (an older version may have stored it)
    suspicious: bool = False


def _decode(data: bytes, source: str) -> Document:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        if not data.isascii():
            # JSON is UTF-8, and the entries kept as raw bytes are not checked until they are
            # decoded (some never are); real files are ASCII, so this costs nothing for them.
            data.decode("utf-8")
        top = msgspec.json.decode(data, type=_TopLevel)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as exc:
        _explain_invalid(data, source)  # raises the precise error, when the slow path finds one
        raise ParseError(f"{source}: not a service-tag file: {exc}") from None
    suspicious = any(marker in data for marker in _SUSPICIOUS_BYTES)
    return Document(top.changeNumber, top.cloud, top.values, suspicious)


def _explain_invalid(data: bytes, source: str) -> None:
    """Raise the ParseError that names what is wrong with a file the fast decoder refused."""
    check_nesting(data, source)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        hint = " (this looks like HTML, not a service-tag file)" if data.lstrip()[:1] == b"<" else ""
        raise ParseError(f"{source}: not valid JSON{hint}: {exc}") from None
    if not isinstance(document, dict):
        raise ParseError(f"{source}: the top level must be a JSON object")
    for key, kind in (("changeNumber", int), ("cloud", str), ("values", list)):
        if not isinstance(document.get(key), kind) or isinstance(document.get(key), bool):
            raise ParseError(f"{source}: missing or invalid top-level {key!r} (a required field)")


_NESTING_TOKENS = re.compile(rb'[\[\]{}"\\]')


def nesting_depth(data: bytes | memoryview) -> int:
    """How deep arrays and objects nest in JSON ``data`` (brackets inside strings do not count).

    Only called on the slow path (a file or entry the typed decoder refused), never per import.
    """
    depth = deepest = 0
    in_string = False
    skip = -1  # the position of a character a backslash escapes
    for match in _NESTING_TOKENS.finditer(bytes(data)):
        if match.start() == skip:
            continue
        token = match[0]
        if in_string:
            if token == b"\\":
                skip = match.end()
            elif token == b'"':
                in_string = False
            continue
        if token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_nesting(data: bytes | memoryview, source: str, limit: int = MAX_NESTING) -> None:
    """ParseError if ``data`` nests deeper than ``limit`` arrays and objects."""
    depth = nesting_depth(data)
    if depth > limit:
        raise ParseError(f"{source}: JSON nested {depth} levels deep (at most {limit} are accepted)")


class _Properties(msgspec.Struct):
    """Required: ``changeNumber`` and ``addressPrefixes``; the rest is optional metadata, absent as None.

    Unknown properties (Microsoft adds some now and then) are ignored. A
    wrong-typed optional property fails this fast decoder and sends the entry
    to ``_tag``, which ignores that property with a warning.
    """

    changeNumber: _Number
    addressPrefixes: list[str]
    region: str | None = None
    regionId: _Number | None = None
    platform: str | None = None
    systemService: str | None = None
    networkFeatures: list[str] | None = None


class _Entry(msgspec.Struct):
    """A tag entry as the files have it; msgspec checks every type while decoding (bool is not int)."""

    name: Annotated[str, msgspec.Meta(pattern=TAG_NAME_PATTERN)]
    properties: _Properties
    id: str | None = None


_decode_entry = msgspec.json.Decoder(_Entry).decode


def _slow_entry(raw: Any, index: int, source: str, problem: Exception, entry_hash: bytes) -> tuple[ServiceTag, list[str]]:
    """An entry the typed decoder refused: the error naming its tag and field, or the tag with warnings."""
    check_nesting(memoryview(raw), source)
    try:
        entry = orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"{source}: values[{index}] is not valid JSON: {exc}") from None
    tag, warnings = _tag(entry, index, source, entry_hash)
    if not warnings:
        # Typed right but out of range (a number that does not fit the database).
        raise ParseError(f"{source}: tag {_shown(tag.name)}: {problem}") from None
    return tag, warnings


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tag(entry: Any, index: int, source: str, entry_hash: bytes) -> tuple[ServiceTag, list[str]]:
    """Validate one decoded entry: required fields refuse the file, wrong-typed optional ones are warnings."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ParseError(f"{source}: values[{index}]: missing or invalid required field 'name'")
    name = check_tag_name(entry["name"], source)
    props = entry.get("properties")
    if not isinstance(props, dict):
        raise ParseError(f"{source}: tag {name!r}: missing or invalid required field 'properties'")
    change_number = props.get("changeNumber")
    if not _is_int(change_number) or not 0 <= change_number <= _MAX_NUMBER:
        raise ParseError(f"{source}: tag {name!r}: missing or invalid required field 'properties.changeNumber'"
                         f" (a whole number from 0 to {_MAX_NUMBER})")
    raw = props.get("addressPrefixes")
    if not isinstance(raw, list):
        raise ParseError(f"{source}: tag {name!r}: missing or invalid required field 'properties.addressPrefixes'")
    try:
        "".join(raw)  # proves every prefix is a string, at C speed
    except TypeError:
        offender = next(p for p in raw if not isinstance(p, str))
        raise ParseError(f"{source}: tag {name!r}: prefix {offender!r} is not a string") from None
    warnings: list[str] = []
    if "id" in entry and entry["id"] is not None and not isinstance(entry["id"], str):
        warnings.append(f"{source}: tag {name!r}: ignored 'id' {_shown(repr(entry['id']))}: expected a string")
    values: dict[str, Any] = {}
    for key, (kind, expected) in _OPTIONAL_PROPERTIES.items():
        value = props.get(key)
        valid = value is None or (isinstance(value, kind) and not isinstance(value, bool))
        if valid and key == "regionId" and value is not None:
            valid = 0 <= value <= _MAX_NUMBER
        if valid and key == "networkFeatures" and value is not None:
            valid = all(isinstance(f, str) for f in value)
            value = tuple(value) if valid else None
        if not valid:
            warnings.append(f"{source}: tag {name!r}: ignored property {key!r} {_shown(repr(value))}: "
                            f"expected {expected}")
            value = None
        values[key] = value
    tag = ServiceTag(
        name=name,
        change_number=change_number,
        region=values["region"],
        region_id=values["regionId"],
        platform=values["platform"],
        system_service=values["systemService"],
        network_features=values["networkFeatures"],
        raw_prefixes=raw,
        entry_hash=entry_hash,
    )
    return tag, warnings


def decode_document(data: bytes, source: str) -> Document:
    """Check a file's top level (BOM, LF or CRLF) and split it into undecoded tag entries."""
    return _decode(data, source)


def file_cloud(document: Document, source: str) -> str:
    """Our name for the cloud a decoded file belongs to."""
    value = document.cloud
    if value.lower() not in FILE_CLOUD_NAMES:
        raise ParseError(f"{source}: unknown cloud {_shown(value)} (known: {', '.join(CLOUD_FILE_NAMES.values())})")
    return FILE_CLOUD_NAMES[value.lower()]


def parse_document(
    document: Document,
    source: str,
    *,
    sha256: str,
    file_date: dt.date | None = None,
    known_entries: Mapping[bytes, str] | None = None,
) -> ParsedFile:
    """Validate a decoded file's structure and fingerprint each tag.

    ``source`` names the file in errors; the date comes from ``file_date`` or the
    name. ``known_entries`` maps the fingerprint of an entry validated before
    (a tag's previous version) to its tag name: an entry with those exact
    bytes is listed in ``unchanged`` and not decoded again (its name still
    passes the gate; a ``suspicious`` document has every entry decoded).
    Prefixes are checked by ``normalize_prefixes`` (``validate_prefixes`` for a
    whole file).
    """
    file_date = file_date or date_from_file_name(source)
    if file_date is None:
        raise ParseError(f"{source}: no publication date: name the file ServiceTags_<Cloud>_<YYYYMMDD>.json or give a date")
    cloud = file_cloud(document, source)
    known = {} if document.suspicious else (known_entries or {})
    tags: list[ServiceTag] = []
    warnings: list[str] = []
    digest = xxhash.xxh3_128_digest  # entry_fingerprint, without a call per entry
    fingerprints = [digest(raw) for raw in document.entries]
    found = [known.get(fingerprint) for fingerprint in fingerprints] if known else [None] * len(fingerprints)
    unchanged = [name for name in found if name is not None]
    for index in [i for i, name in enumerate(found) if name is None]:
        raw, fingerprint = document.entries[index], fingerprints[index]
        try:
            entry = _decode_entry(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            tag, problems = _slow_entry(raw, index, source, exc, fingerprint)
            tags.append(tag)
            warnings.extend(problems)
            continue
        props = entry.properties
        features = props.networkFeatures
        tags.append(ServiceTag(
            name=entry.name, change_number=props.changeNumber, region=props.region, region_id=props.regionId,
            platform=props.platform, system_service=props.systemService,
            network_features=None if features is None else tuple(features), raw_prefixes=props.addressPrefixes,
            entry_hash=fingerprint,
        ))
    # Names of unchanged entries come from the store; one pass proves they pass today's gate too.
    check_tag_names(unchanged, source)
    names = [t.name for t in tags] + unchanged
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ParseError(f"{source}: tag {duplicates[0]!r} appears more than once")
    if warnings:
        log.warning("%s: %d optional propert%s ignored (wrong type): %s", source, len(warnings),
                    "y" if len(warnings) == 1 else "ies", warnings[0])
    return ParsedFile(
        cloud=cloud,
        change_number=document.change_number,
        file_date=file_date,
        sha256=sha256,
        tags=tuple(tags),
        unchanged=tuple(unchanged),
        warnings=tuple(warnings),
    )


def parse_bytes(data: bytes, source: str, *, file_date: dt.date | None = None) -> ParsedFile:
    """Decode and validate the structure of one file (see ``parse_document``)."""
    document = decode_document(data, source)
    return parse_document(document, source, sha256=hashlib.sha256(data).hexdigest(), file_date=file_date)


def validate_prefixes(parsed: ParsedFile, source: str) -> dict[str, tuple[str, ...]]:
    """Normalise every tag of a file: tag name -> canonical prefixes. Raises ParseError."""
    return {t.name: normalize_prefixes(t.name, t.raw_prefixes, source)[0] for t in parsed.tags}
