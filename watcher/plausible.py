"""Plausibility of a publication's content: what no real Microsoft file holds.

Pure functions, no I/O. A file that passes the parser's gate (well-formed
names and prefixes) may still say something no real publication says: allow
the whole Internet (``0.0.0.0/0``, ``::/0``), allow a block wider than any
Microsoft publishes, allow private, loopback, link-local, multicast or
documentation space, or withdraw a large share of a cloud's tags at once. Any
of these puts the publication's tickets on hold, with the reason, so a
reviewer decides before a firewall opens.

Checked against the real files (Public 2025, US Gov and China 2026): the
widest prefixes are /14 (IPv4) and /39 (IPv6), none is a bogon, and no week
withdrew a tag; the defaults (/8, /16, 25%) leave a wide margin.

Before any of that, ``check_plausible`` looks at a downloaded file as a whole:
JSON of the expected cloud (else FetchError: we fetched the wrong thing) that
lists tags, not far fewer than the previous publication did (else
ImplausibleFileError: the fetcher keeps it aside in quarantine).
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Iterable

import msgspec
import orjson

from .errors import ConfigError, FetchError, ImplausibleFileError
from .parse import MAX_NESTING, UTF8_BOM, nesting_depth
from .settings import CLOUD_FILE_NAMES


#: Address blocks no Azure service publishes (RFC 6890 special-purpose registries), with why.
BOGONS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network' (RFC 1122)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared carrier-grade NAT space (RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped addresses"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique local, private (RFC 4193)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)


def _span(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    return network.version, int(network.network_address), int(network.broadcast_address)


_BOGON_SPANS = tuple((_span(ipaddress.ip_network(text)), text, why) for text, why in BOGONS)


@dataclass(frozen=True)
class Limits:
    """What counts as implausible (``[tickets]`` settings)."""

    min_prefix_length_v4: int = 8
    min_prefix_length_v6: int = 16
    max_withdrawn_share: float = 0.25
    #: bogon blocks an operator has exempted, as (family, first, last) spans
    exempt: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def from_settings(cls, tickets: Any) -> "Limits":
        """The limits of a ``TicketSettings``; an exemption that is not a network is a ConfigError."""
        exempt = []
        for text in tickets.bogon_exemptions:
            try:
                exempt.append(_span(ipaddress.ip_network(text)))
            except ValueError as exc:
                raise ConfigError(f"tickets.bogon_exemptions: {text!r} is not a network ({exc})") from None
        return cls(tickets.min_prefix_length_v4, tickets.min_prefix_length_v6, tickets.max_withdrawn_share,
                   tuple(exempt))


def prefix_problem(prefix: str, limits: Limits = Limits()) -> str | None:
    """Why one prefix is implausible, or None. ``prefix`` is canonical (the parser's gate passed it)."""
    try:
        network = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return f"{prefix!r} is not a network"
    if network.prefixlen == 0:
        return f"{network} is a default route: it allows the whole {'IPv4' if network.version == 4 else 'IPv6'} Internet"
    minimum = limits.min_prefix_length_v4 if network.version == 4 else limits.min_prefix_length_v6
    if network.prefixlen < minimum:
        return (f"{network} is wider than /{minimum} ({network.num_addresses:,} addresses); "
                "Microsoft publishes nothing that wide")
    family, first, last = _span(network)
    if any(family == f and start <= first and last <= end for f, start, end in limits.exempt):
        return None
    for (bogon_family, start, end), text, why in _BOGON_SPANS:
        if family == bogon_family and first <= end and last >= start:
            return f"{network} overlaps {text}, {why}"
    return None


def prefix_problems(prefixes: Iterable[str], limits: Limits = Limits()) -> list[str]:
    """Why each implausible prefix of ``prefixes`` is so, in order."""
    return [problem for p in prefixes if (problem := prefix_problem(p, limits)) is not None]


def withdrawn_share_problem(withdrawn: int, previous_tags: int | None, limits: Limits = Limits()) -> str | None:
    """Why withdrawing ``withdrawn`` of ``previous_tags`` tags at once is implausible, or None."""
    if not previous_tags or withdrawn <= 0:
        return None
    share = withdrawn / previous_tags
    if share <= limits.max_withdrawn_share:
        return None
    return (f"it withdraws {withdrawn} of the cloud's {previous_tags} tags ({share:.0%}; more than "
            f"{limits.max_withdrawn_share:.0%}, at most {math.floor(limits.max_withdrawn_share * previous_tags)}, "
            "is implausible)")


# --------------------------------------------------------------------------- a downloaded file


def check_plausible(body: bytes, cloud: str, previous_tag_count: int | None, min_ratio: float) -> int:
    """Check a downloaded body before import; returns its number of service tags.

    HTML or non-JSON, or another cloud's file -> FetchError (we downloaded the
    wrong thing). Right cloud but missing/too few tags -> ImplausibleFileError
    (keep it aside with ``quarantine``).
    """
    expected = CLOUD_FILE_NAMES.get(cloud.lower())
    if expected is None:
        raise FetchError(f"unknown cloud {cloud!r}")
    text = body.removeprefix(UTF8_BOM)
    count = _count_tags_fast(text, expected)
    if count is not None:
        return _check_tag_count(count, expected, previous_tag_count, min_ratio)
    if text.lstrip()[:1] == b"<":
        raise FetchError(
            f"got an HTML page where the {expected} service-tag JSON was expected "
            "(a changed download link, a login page or a proxy's error page?)"
        )
    depth = nesting_depth(text)  # the same limit as the parser's, for downloads and local files alike
    if depth > MAX_NESTING:
        raise FetchError(f"the downloaded {expected} file has JSON nested {depth} levels deep "
                         f"(at most {MAX_NESTING} are accepted)")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FetchError(f"the downloaded {expected} file is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImplausibleFileError(f"the downloaded {expected} file is JSON but not an object")
    actual = data.get("cloud")
    if not isinstance(actual, str) or actual.lower() != expected.lower():
        raise FetchError(f"the downloaded file is for cloud {actual!r}, expected {expected!r}")
    values = data.get("values")
    if not isinstance(values, list):
        raise ImplausibleFileError(f"the downloaded {expected} file has no 'values' list of service tags")
    return _check_tag_count(len(values), expected, previous_tag_count, min_ratio)


def check_decoded_plausible(file_cloud: str, count: int, body: bytes, cloud: str, previous_tag_count: int | None,
                            min_ratio: float) -> int:
    """``check_plausible`` for a body whose top level is decoded already: ``file_cloud`` as the file spells it,
    ``count`` its entries. The same checks, without scanning the body again (the careful path when unusual)."""
    expected = CLOUD_FILE_NAMES.get(cloud.lower())
    if expected is not None and file_cloud.lower() == expected.lower():
        return _check_tag_count(count, expected, previous_tag_count, min_ratio)
    return check_plausible(body, cloud, previous_tag_count, min_ratio)


class _Outline(msgspec.Struct):
    """What the plausibility check needs of a file: its cloud and how many entries it lists (not decoded)."""

    cloud: str
    values: list[msgspec.Raw]


_decode_outline = msgspec.json.Decoder(_Outline).decode


def _count_tags_fast(text: bytes, expected: str) -> int | None:
    """The entry count of a well-formed file of the expected cloud, without decoding the entries; None otherwise.

    Skipping the entries costs a few milliseconds where decoding them all would
    cost tens; anything unusual goes to the careful path, which names the problem.
    """
    try:
        outline = _decode_outline(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if outline.cloud.lower() != expected.lower():
        return None
    return len(outline.values)


def _check_tag_count(count: int, expected: str, previous_tag_count: int | None, min_ratio: float) -> int:
    if count == 0:
        raise ImplausibleFileError(f"the downloaded {expected} file lists no service tags")
    if previous_tag_count and count < min_ratio * previous_tag_count:
        raise ImplausibleFileError(
            f"the downloaded {expected} file has only {count} service tags; the previous publication had "
            f"{previous_tag_count} (at least {min_ratio:.0%} of that, "
            f"{math.ceil(min_ratio * previous_tag_count)}, is expected)"
        )
    return count
