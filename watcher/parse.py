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
import logging
import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Collection, Mapping, Sequence

import msgspec
import orjson
import xxhash

from .errors import ParseError
# Re-exported: the store and the diff take prefix handling from here, as before the split.
from .prefixes import (  # noqa: F401
    PrefixCache, PrefixChange, _shown, check_prefix_text, content_hash, encode_prefixes, normalize_against,
    normalize_prefix, normalize_prefixes, passes_prefix_gate, plain_prefix_text,
)
from .settings import CLOUD_FILE_NAMES, FILE_CLOUD_NAMES

log = logging.getLogger(__name__)

#: Some tools write one before the JSON; real files have none, and it is skipped wherever a file is read.
UTF8_BOM = b"\xef\xbb\xbf"
FILE_NAME_RE = re.compile(r"ServiceTags_(?P<cloud>[A-Za-z]+)_(?P<date>\d{8})\.json(?:\.gz)?$")

#: The gate every tag name passes, on every path: the characters real names use
#: (``AzureCloud.eastus2``, ``Storage.EastUS2``; ``-`` and ``_`` for safety margin),
#: so a name can never carry a newline, a quote or markup into a script or a ticket.
MAX_TAG_NAME_LENGTH = 200
TAG_NAME_PATTERN = r"\A[A-Za-z0-9._-]{1,%d}\Z" % MAX_TAG_NAME_LENGTH
_TAG_NAME = re.compile(TAG_NAME_PATTERN)
_NOT_TAG_NAME_CHAR = re.compile(r"[^A-Za-z0-9._-]")
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


_NAME_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-\n"


def check_tag_names(names: Sequence[str], source: str) -> None:
    """The tag-name gate for many names at once, at C speed (a name is looked at only on failure)."""
    if not names:
        return
    joined = "\n".join(names)
    # Only the separators may be newlines, and no name may be empty or too long.
    if joined and joined.isascii() and not joined.encode("ascii").translate(None, _NAME_BYTES) \
            and joined.count("\n") == len(names) - 1 and "\n\n" not in joined \
            and joined[0] != "\n" and joined[-1] != "\n" and max(map(len, names)) <= MAX_TAG_NAME_LENGTH:
        return
    for name in names:
        check_tag_name(name, source)


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
    #: each entry's ``entry_fingerprint``, when computed ahead (``fingerprinted``)
    fingerprints: Sequence[bytes] | None = None
    #: entries decoded ahead, by index (``decoded_ahead``): ``parse_document`` takes them instead of decoding
    decoded: Mapping[int, Any] | None = None


def fingerprinted(document: Document) -> Document:
    """``document`` with its entries' fingerprints computed (e.g. on a thread, while another file is imported)."""
    if document.fingerprints is not None:
        return document
    digest = xxhash.xxh3_128_digest
    return replace(document, fingerprints=[digest(raw) for raw in document.entries])


def decoded_ahead(document: Document, expected_known: Collection[bytes]) -> Document:
    """``fingerprinted(document)`` with the entries whose fingerprints are not in ``expected_known`` decoded.

    A guess at what ``parse_document`` will decode (the fingerprints the store
    will know by then), made where it costs the import nothing: an entry the
    guess missed is decoded by ``parse_document``, one it decoded for nothing
    is dropped, and one that does not decode cleanly is left to
    ``parse_document`` to refuse or to warn about.
    """
    document = fingerprinted(document)
    assert document.fingerprints is not None
    decoded: dict[int, Any] = {}
    for index, fingerprint in enumerate(document.fingerprints):
        if fingerprint not in expected_known:
            try:
                decoded[index] = _decode_entry(document.entries[index])
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                continue
    return replace(document, decoded=decoded)


def _decode(data: bytes, source: str) -> Document:
    data = data.removeprefix(UTF8_BOM)
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
    fingerprints = document.fingerprints
    if fingerprints is None:
        fingerprints = [digest(raw) for raw in document.entries]
    ahead = document.decoded or {}
    found = [known.get(fingerprint) for fingerprint in fingerprints] if known else [None] * len(fingerprints)
    unchanged = [name for name in found if name is not None]
    for index in [i for i, name in enumerate(found) if name is None]:
        raw, fingerprint = document.entries[index], fingerprints[index]
        try:
            entry = ahead.get(index) or _decode_entry(raw)
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
