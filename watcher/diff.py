"""Diff stage: pure functions from two states of a tag to what changed.

Two views of a change, because firewall reviewers need both:

* exact — the prefix strings added and removed (what rules to add and delete);
* net address space — after collapsing each side, the addresses newly allowed
  and no longer allowed (IPv4 and IPv6 apart). Microsoft often re-aggregates:
  replacing a /24 by the /23 that contains it removes a rule but no address,
  and that must read as "no net change", not as a removal.

changeNumbers are recorded, never trusted: anomalies are reported as short
strings next to the content comparison that decides the status.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Literal, Protocol, Sequence

from .parse import passes_prefix_gate, plain_prefix_text

Status = Literal["appeared", "withdrawn", "changed", "unchanged"]
Interval = tuple[int, int]  # inclusive first and last address

# Anomaly vocabulary (stable strings: they appear in JSON output and tickets).
NUMBER_WENT_DOWN = "changeNumber went down"
NUMBER_SAME_CONTENT_CHANGED = "content changed but changeNumber did not"
NUMBER_SKIPPED = "changeNumber skipped"
NUMBER_CHANGED_CONTENT_SAME = "changeNumber changed but content did not"
GLOBAL_NUMBER_REPEATED = "file changeNumber repeated"
GLOBAL_NUMBER_WENT_DOWN = "file changeNumber went down"


@dataclass(frozen=True)
class TagState:
    """A tag as published at one point in time."""

    change_number: int | None
    prefixes: frozenset[str]
    #: the same prefixes as a sorted tuple, when the caller has it (the store does)
    ordered: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    #: (region, regionId, platform, systemService, networkFeatures), None each when absent; None when unknown
    metadata: tuple[Any, ...] | None = field(default=None, compare=False)
    #: the prefixes are known to hold only the characters of plain notation (the store checked its text)
    plain: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def of_sorted(cls, change_number: int | None, ordered: tuple[str, ...],
                  metadata: tuple[Any, ...] | None = None) -> "TagState":
        return cls(change_number, frozenset(ordered), ordered, metadata)

    def sorted_prefixes(self) -> tuple[str, ...]:
        return self.ordered if self.ordered is not None else tuple(sorted(self.prefixes))

    def forget_order(self) -> None:
        """Drop ``ordered`` (a cache: ``sorted_prefixes`` sorts again if asked).

        For a holder of many states that no longer needs the order: a diff of
        every tag across months keeps ~126,000 prefixes in sets *and* tuples, and
        the garbage collector walks every reference of both once they are kept.
        """
        object.__setattr__(self, "ordered", None)  # frozen for the compared fields; this one is a cache


#: The metadata properties in the order the store keeps them (``TagState.metadata``).
METADATA_PROPERTIES = ("region", "regionId", "platform", "systemService", "networkFeatures")


@dataclass(frozen=True)
class MetadataChange:
    """One metadata property of a tag that differs between two publications (None: absent)."""

    property: str
    before: Any
    after: Any

    def describe(self) -> str:
        return f"{self.property} {_metadata_text(self.property, self.before)} -> {_metadata_text(self.property, self.after)}"

    def to_json(self) -> dict[str, Any]:
        return {"property": self.property, "before": _metadata_json(self.property, self.before),
                "after": _metadata_json(self.property, self.after)}


def _metadata_json(name: str, value: Any) -> Any:
    # networkFeatures is kept as one comma-separated string; it was a list in the file.
    if name == "networkFeatures" and value is not None:
        return [v for v in str(value).split(",") if v]
    return value


def _metadata_text(name: str, value: Any) -> str:
    if value is None:
        return "(absent)"
    if name == "networkFeatures":
        return "[" + ", ".join(_metadata_json(name, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def metadata_changes(before: Sequence[Any] | None, after: Sequence[Any] | None) -> tuple[MetadataChange, ...]:
    """The properties that differ; nothing when either side is unknown (not published, or not read)."""
    if before is None or after is None:
        return ()
    return tuple(MetadataChange(name, b, a) for name, b, a in zip(METADATA_PROPERTIES, before, after) if b != a)


def describe_metadata(changes: Sequence[MetadataChange]) -> str:
    """"metadata changed: networkFeatures [API, NSG] -> [API]"."""
    return "metadata changed: " + "; ".join(c.describe() for c in changes)


class ComparedPublication(Protocol):
    """What a diff's JSON needs of the publications it compares (the store's ``PublicationInfo``)."""

    @property
    def file_date(self) -> Any: ...

    @property
    def change_number(self) -> int: ...


@dataclass(frozen=True)
class TagDiff:
    tag: str
    status: Status
    added: tuple[str, ...]
    removed: tuple[str, ...]
    net_added: tuple[str, ...]
    net_removed: tuple[str, ...]
    anomalies: tuple[str, ...]
    before: TagState | None
    after: TagState | None
    #: metadata properties that changed (a tag can change only those)
    metadata: tuple[MetadataChange, ...] = ()

    @property
    def reaggregation_only(self) -> bool:
        """Prefixes changed but the address space did not."""
        return bool(self.added or self.removed) and not (self.net_added or self.net_removed)

    @property
    def net_added_addresses(self) -> tuple[int, int]:
        return address_counts(self.net_added)

    @property
    def net_removed_addresses(self) -> tuple[int, int]:
        return address_counts(self.net_removed)

    def to_json(self, old: ComparedPublication, new: ComparedPublication,
                resolved_from: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
        """The documented shape of ``watcher diff --json``; ``old`` and ``new`` are the publications compared.

        In ``from`` and ``to``, ``change_number`` is the tag's and ``file_change_number`` the file's;
        ``resolved_from`` the date asked for when it had no publication (and ``old``/``new`` is the one before).
        """
        return {
            "tag": self.tag,
            "status": self.status,
            "added": list(self.added),
            "removed": list(self.removed),
            "net_added": sorted(self.net_added),
            "net_removed": sorted(self.net_removed),
            "anomalies": list(self.anomalies),
            "metadata": [m.to_json() for m in self.metadata],
            "from": {"date": old.file_date.isoformat(),
                     "change_number": self.before.change_number if self.before else None,
                     "file_change_number": old.change_number,
                     "resolved_from": resolved_from[0].isoformat() if resolved_from[0] else None},
            "to": {"date": new.file_date.isoformat(),
                   "change_number": self.after.change_number if self.after else None,
                   "file_change_number": new.change_number,
                   "resolved_from": resolved_from[1].isoformat() if resolved_from[1] else None},
        }


_MASKS = {4: [(1 << (32 - n)) - 1 for n in range(33)], 6: [(1 << (128 - n)) - 1 for n in range(129)]}

#: prefix -> (family, first address, last address); callers may share one across many diffs
ParseCache = dict[str, tuple[int, int, int]]


def _parse(prefix: str) -> tuple[int, int, int]:
    """(family 4 or 6, first address, last address) of a canonical prefix."""
    addr, _, bits = prefix.partition("/")
    if ":" in addr:
        start = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
        return 6, start, start + _MASKS[6][int(bits)]
    start = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    return 4, start, start + _MASKS[4][int(bits)]


def merged_intervals(prefixes: Iterable[str], cache: ParseCache | None = None) -> dict[int, list[Interval]]:
    """Per address family, the sorted, merged address intervals the prefixes cover."""
    cache = {} if cache is None else cache
    by_family: dict[int, list[Interval]] = {4: [], 6: []}
    for prefix in prefixes:
        parsed = cache.get(prefix)
        if parsed is None:
            parsed = cache[prefix] = _parse(prefix)
        by_family[parsed[0]].append((parsed[1], parsed[2]))
    return {family: _merge(spans) for family, spans in by_family.items()}


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def subtract(minuend: list[Interval], subtrahend: list[Interval]) -> list[Interval]:
    """Parts of the merged intervals ``minuend`` not covered by the merged ``subtrahend``."""
    result: list[Interval] = []
    j = 0
    for start, end in minuend:
        while j < len(subtrahend) and subtrahend[j][1] < start:
            j += 1
        k = j
        cursor = start
        while k < len(subtrahend) and subtrahend[k][0] <= end:
            s_start, s_end = subtrahend[k]
            if s_start > cursor:
                result.append((cursor, s_start - 1))
            cursor = max(cursor, s_end + 1)
            k += 1
        if cursor <= end:
            result.append((cursor, end))
    return result


def intervals_to_cidrs(family: int, intervals: list[Interval]) -> list[str]:
    """The fewest CIDRs covering each interval exactly (what ``ipaddress.summarize_address_range`` gives)."""
    width = 32 if family == 4 else 128
    cidrs: list[str] = []
    for start, end in intervals:
        while start <= end:
            # The largest block aligned at ``start`` that does not pass ``end``.
            size_bits = (start & -start).bit_length() - 1 if start else width
            span_bits = (end - start + 1).bit_length() - 1
            bits = min(size_bits, span_bits)
            cidrs.append(_cidr_text(family, start, width - bits))
            start += 1 << bits
    return cidrs


def _cidr_text(family: int, network: int, length: int) -> str:
    if family == 4:
        return f"{socket.inet_ntop(socket.AF_INET, network.to_bytes(4, 'big'))}/{length}"
    if network >> 48:  # inet_ntop and ipaddress write the same text unless the top 80 bits are zero
        return f"{socket.inet_ntop(socket.AF_INET6, network.to_bytes(16, 'big'))}/{length}"
    return str(ipaddress.IPv6Network((network, length)))


def net_change(
    before: Iterable[str], after: Iterable[str], cache: ParseCache | None = None,
    *, before_sorted: Sequence[str] | None = None, after_sorted: Sequence[str] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(address space newly covered, address space no longer covered) as minimal CIDR lists.

    ``before_sorted``/``after_sorted`` (the same prefixes, sorted) let a small
    change to a big tag look only at the prefixes near what changed.
    """
    cache = {} if cache is None else cache
    old_set = before if isinstance(before, (set, frozenset)) else frozenset(before)
    new_set = after if isinstance(after, (set, frozenset)) else frozenset(after)
    return _net_change(old_set, new_set, new_set - old_set, old_set - new_set, cache, before_sorted, after_sorted)


def _net_change(
    old_set: Collection[str], new_set: Collection[str], added: Collection[str], removed: Collection[str],
    cache: ParseCache, before_sorted: Sequence[str] | None, after_sorted: Sequence[str] | None,
    probes: ProbeCache | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``net_change`` given the exact change (``added``, ``removed``), computed once by the caller."""
    if not added and not removed:
        return (), ()
    if (len(added) + len(removed)) * LOCAL_DIFF_RATIO < len(old_set) + len(new_set):
        old_sorted = before_sorted if before_sorted is not None else sorted(old_set)
        new_sorted = after_sorted if after_sorted is not None else sorted(new_set)
        gained = uncovered(added, old_set, old_sorted, cache, probes)
        lost = uncovered(removed, new_set, new_sorted, cache, probes)
    else:
        old, new = merged_intervals(old_set, cache), merged_intervals(new_set, cache)
        gained = {family: subtract(new[family], old[family]) for family in (4, 6)}
        lost = {family: subtract(old[family], new[family]) for family in (4, 6)}
    return (
        tuple(intervals_to_cidrs(4, gained[4]) + intervals_to_cidrs(6, gained[6])),
        tuple(intervals_to_cidrs(4, lost[4]) + intervals_to_cidrs(6, lost[6])),
    )


_LENGTH_TEXT = [str(n) for n in range(129)]

#: Below one changed prefix in this many, a diff looks only near the changes.
LOCAL_DIFF_RATIO = 8

#: What a look-up near one prefix needs, whichever tag it changed in: (family, first address, last
#: address, the texts of its supernets shorter than its leading groups, the text range of ``other``
#: that starts with the leading groups (None: all of it), and narrower ranges within that one (None: none;
#: an int: the leading groups' bits, the ranges not written yet)
Probe = tuple[int, int, int, tuple[str, ...], tuple[str, str] | None, tuple[tuple[str, str], ...] | int | None]


class ProbeCache:
    """The probes of the prefixes a batch of diffs looks near, each written once.

    AzureCloud repeats every regional tag's changes, and neighbouring prefixes
    share most of their supernets.
    """

    __slots__ = ("probes", "supernets")

    def __init__(self) -> None:
        self.probes: dict[str, Probe] = {}
        #: leading groups' text -> the texts of the supernets shorter than them
        self.supernets: dict[str, tuple[str, ...]] = {}


def uncovered(
    prefixes: Iterable[str], other: Collection[str], other_sorted: Sequence[str], cache: ParseCache,
    probes: ProbeCache | None = None,
) -> dict[int, list[Interval]]:
    """Per family, the merged address intervals of ``prefixes`` that no prefix of ``other`` covers.

    Two CIDR blocks either nest or do not meet, so only ``other``'s supernets
    and subnets of a prefix matter. Its supernets up to the depth of its
    leading groups are looked up by name (one C-speed ``isdisjoint`` over texts
    written once per prefix); every other overlapping prefix shares those
    leading groups, so its canonical text starts with theirs and lies in one
    contiguous range of ``other_sorted``. Canonical text makes this exact:
    IPv4 writes every octet; IPv6 never compresses a non-zero group.
    """
    result: dict[int, list[Interval]] = {4: [], 6: []}
    probes = ProbeCache() if probes is None else probes
    known = probes.probes
    for prefix in prefixes:
        probe = known.get(prefix)
        if probe is None:
            probe = known[prefix] = _probe(prefix, cache, probes.supernets)
        family, start, end, supernets, lead, narrower = probe
        if not other.isdisjoint(supernets):
            continue
        if lead is None:  # no leading group to narrow by (rare: very short or zero-led prefixes)
            candidates: Sequence[str] = other_sorted
        else:
            low = bisect_left(other_sorted, lead[0])
            high = bisect_left(other_sorted, lead[1], low)
            if high == low:
                result[family].append((start, end))
                continue
            if narrower is not None and high - low > SCAN_UP_TO and not isinstance(narrower, tuple):
                narrower = _narrower(prefix, family, start, narrower, lead[0])
                known[prefix] = (family, start, end, supernets, lead, narrower)
            if narrower is None or high - low <= SCAN_UP_TO or high - low <= 2 * len(narrower):  # type: ignore[arg-type]
                candidates = other_sorted[low:high]  # scanning beats two look-ups per narrower range
            else:
                candidates = []
                for low_text, high_text in narrower:
                    first = bisect_left(other_sorted, low_text, low, high)
                    last = bisect_left(other_sorted, high_text, first, high)
                    if last > first:
                        candidates = [*candidates, *other_sorted[first:last]]
        inside: list[Interval] = []
        for candidate in candidates:
            c_family, c_start, c_end = cache.get(candidate) or cache.setdefault(candidate, _parse(candidate))
            if c_family != family or c_end < start or c_start > end:
                continue
            if c_start <= start and end <= c_end:  # a supernet deeper than the leading groups
                break
            inside.append((c_start, c_end))
        else:
            if inside:
                result[family].extend(subtract([(start, end)], _merge(inside)))
            else:
                result[family].append((start, end))
    return {family: _merge(intervals) for family, intervals in result.items()}


def _probe(prefix: str, cache: ParseCache, supernets_of: dict[str, tuple[str, ...]]) -> Probe:
    family, start, end = cache.get(prefix) or cache.setdefault(prefix, _parse(prefix))
    length = int(prefix[prefix.rindex("/") + 1:])
    if family == 4 and length >= 24:  # most changes: the leading groups are the text up to the last "."
        lead = prefix[:prefix.rindex(".") + 1]
        return family, start, end, _supernet_texts(4, start, lead, supernets_of), (lead, lead[:-1] + "/"), None
    depth, lead = _leading_groups(prefix, family, length)
    supernets = _supernet_texts(family, start, lead, supernets_of)
    if not lead:
        return family, start, end, supernets, None, None
    # The narrower ranges are written when a look-up first meets a big range (most never do): ``depth`` till then.
    return family, start, end, supernets, (lead, lead[:-1] + chr(ord(lead[-1]) + 1)), depth


def _narrower(prefix: str, family: int, start: int, depth: int, lead: str) -> tuple[tuple[str, str], ...] | None:
    texts = _next_group_texts(family, start, int(prefix[prefix.rindex("/") + 1:]), depth, lead)
    return tuple((t, t[:-1] + chr(ord(t[-1]) + 1)) for t in texts) if texts else None


#: A look-up scans a leading groups' range of up to this many prefixes rather than narrow it.
SCAN_UP_TO = 8

#: Above this many values of the group after the leading ones, a look-up scans the leading groups' whole range.
NEXT_GROUP_VALUES = 32
def _next_group_texts(family: int, start: int, length: int, depth: int, lead: str) -> list[str] | None:
    """Text prefixes that every prefix overlapping this one and deeper than ``depth`` starts with, or None.

    A busy block (an IPv6 /48 with hundreds of subnets) would otherwise be
    scanned whole for each of its small prefixes. The group after the leading
    ones takes one of a few values within the prefix, and in a supernet deeper
    than ``depth`` that value cut short; a prefix of ``other`` writes its value
    right after the leading groups: IPv4 as the octet and ".", IPv6 as the hex
    group and ":", or, for a zero group, as "0:" or as the "::" that folds it.
    None when there are too many values.
    """
    bits, groups = (8, 4) if family == 4 else (16, 8)
    width = bits * groups
    if depth >= width - bits:  # the next group would be IPv4's last octet: a /24's range is small anyway
        return None
    free = max(0, depth + bits - length)
    if free and 1 << free > NEXT_GROUP_VALUES:
        return None
    full = (1 << bits) - 1
    first = (start >> (width - depth - bits)) & full
    values = set(range(first, first + (1 << free)))
    values.update(first & (full ^ full >> kept) for kept in range(min(length - depth, bits)))  # the cut ones
    if family == 4:  # an octet before the last is always followed by "."
        return [f"{lead}{value}." for value in values]
    texts = [f"{lead}{value:x}:" for value in values if value]
    if 0 in values:
        texts += [f"{lead}:", f"{lead}0:"]
    return texts


def _leading_groups(prefix: str, family: int, length: int) -> tuple[int, str]:
    """(bits, text) of the leading groups within the prefix length that every overlapping prefix writes alike.

    IPv4: up to three whole octets. IPv6: up to four whole groups, each non-zero
    (a zero group may be written "0" or folded into "::").
    """
    if family == 4:
        octets = min(length // 8, 3)
        if not octets:
            return 0, ""
        parts = prefix.split(".", octets)
        return 8 * octets, ".".join(parts[:octets]) + "."
    groups = []
    for part in prefix.split(":", 4)[:min(length // 16, 4)]:
        if not part or part == "0" or "/" in part:
            break
        groups.append(part)
    return (16 * len(groups), ":".join(groups) + ":") if groups else (0, "")


_OCTET_TEXT = [str(n) for n in range(256)]
#: the bits of an octet that a length keeping ``n`` of them leaves
_OCTET_KEEP = [0xFF00 >> n & 0xFF for n in range(8)]
_IPV4_TAILS = (".0.0.0/", ".0.0/", ".0/", "/")


def _supernet_texts(family: int, start: int, lead: str, supernets_of: dict[str, tuple[str, ...]]
                    ) -> tuple[str, ...]:
    """The canonical texts of the supernets of ``start`` shorter than its leading groups (``lead``, their text).

    Written once per leading groups' text (``supernets_of``) from those of the
    groups before the last, so neighbouring prefixes share them. A lead's text
    tells the family (IPv4 ends in ".", IPv6 in ":").
    """
    if not lead:
        return ()
    found = supernets_of.get(lead)
    if found is None:
        shorter = lead[:lead.rfind("." if family == 4 else ":", 0, len(lead) - 1) + 1]
        index = shorter.count("." if family == 4 else ":")  # the group the last band's lengths cut
        bits, width = (8, 32) if family == 4 else (16, 128)
        group = start >> (width - bits * (index + 1)) & ((1 << bits) - 1)
        tails = _ipv4_band_tails(index, group) if family == 4 else _ipv6_band_tails(index, group)
        found = supernets_of[lead] = (
            _supernet_texts(family, start, shorter, supernets_of) + tuple([shorter + tail for tail in tails])
        )
    return found


@functools.lru_cache(maxsize=None)  # at most 3 × 256 (index, octet) pairs
def _ipv4_band_tails(index: int, octet: int) -> tuple[str, ...]:
    """What follows the octets before ``index`` in the texts of the supernets whose length cuts that octet."""
    return tuple(f"{_OCTET_TEXT[octet & _OCTET_KEEP[kept]]}{_IPV4_TAILS[index]}{8 * index + kept}"
                 for kept in range(8))


@functools.lru_cache(maxsize=8192)
def _ipv6_band_tails(index: int, group: int) -> tuple[str, ...]:
    """What follows the groups before ``index`` in the texts of the supernets whose length cuts that group.

    Those groups are non-zero (leading groups), so a supernet's text is them, the
    group its length cuts (unless that is zero) and "::": the only run of zeros is
    the trailing one, of two groups or more (``index`` is at most 3).
    """
    tails = []
    for kept in range(16):
        cut = group & (0xFFFF0000 >> kept) & 0xFFFF
        length = 16 * index + kept
        tails.append(f"{cut:x}::/{length}" if cut else f":/{length}" if index else f"::/{length}")
    return tuple(tails)


def collapse(prefixes: Iterable[str]) -> list[str]:
    """The fewest CIDRs covering exactly the same addresses (IPv4 first)."""
    merged = merged_intervals(prefixes)
    return intervals_to_cidrs(4, merged[4]) + intervals_to_cidrs(6, merged[6])


def address_counts(prefixes: Iterable[str]) -> tuple[int, int]:
    """(IPv4 addresses, IPv6 addresses) covered by prefixes that do not overlap."""
    counts = {4: 0, 6: 0}
    for prefix in prefixes:
        family, start, end = _parse(prefix)
        counts[family] += end - start + 1
    return counts[4], counts[6]


def change_number_anomalies(before: int | None, after: int | None, content_changed: bool) -> tuple[str, ...]:
    if before is None or after is None:
        return ()
    if after < before:
        return (NUMBER_WENT_DOWN,)
    if after == before:
        return (NUMBER_SAME_CONTENT_CHANGED,) if content_changed else ()
    anomalies = []
    if not content_changed:
        anomalies.append(NUMBER_CHANGED_CONTENT_SAME)
    if after > before + 1:
        anomalies.append(NUMBER_SKIPPED)
    return tuple(anomalies)


def publication_anomalies(before: int | None, after: int) -> tuple[str, ...]:
    if before is None:
        return ()
    if after == before:
        return (GLOBAL_NUMBER_REPEATED,)
    if after < before:
        return (GLOBAL_NUMBER_WENT_DOWN,)
    return ()


def _gated(state: TagState | None, skipped: list[str]) -> TagState | None:
    """``state`` without the prefixes today's gate refuses (an older version may have stored some); noted in ``skipped``.

    One C-speed pass over the text decides for nearly every state; only a state
    with a suspicious character is looked at prefix by prefix.
    """
    if state is None or state.plain or plain_prefix_text(state.sorted_prefixes()):
        return state
    kept = tuple(p for p in state.sorted_prefixes() if passes_prefix_gate(p))
    skipped.extend(state.prefixes.difference(kept))
    return TagState.of_sorted(state.change_number, kept)


def passing_gate(state: TagState) -> TagState:
    """``state`` without the prefixes today's gate refuses: what a ticket may carry into an approved state."""
    gated = _gated(state, [])
    assert gated is not None
    return gated


def diff_tag(tag: str, before: TagState | None, after: TagState | None, cache: ParseCache | None = None) -> TagDiff:
    """Compare one tag's state in two publications (``None``: not published).

    ``cache`` lets a diff of many tags parse each prefix once: AzureCloud
    repeats every regional tag's prefixes (``diff_tags`` shares more).
    """
    return diff_tags([(tag, before, after)], cache)[0]


def _diff_tag(tag: str, before: TagState | None, after: TagState | None, added: frozenset[str],
              removed: frozenset[str], cache: ParseCache, skipped: Sequence[str] = (),
              probes: ProbeCache | None = None) -> TagDiff:
    if before is None:
        status: Status = "appeared"
    elif after is None:
        status = "withdrawn"
    else:
        status = "changed" if added or removed else "unchanged"
    net_added, net_removed = _net_change(
        before.prefixes if before else frozenset(), after.prefixes if after else frozenset(), added, removed, cache,
        before.sorted_prefixes() if before else (), after.sorted_prefixes() if after else (), probes,
    ) if (added or removed) else ((), ())
    anomalies = change_number_anomalies(
        before.change_number if before else None,
        after.change_number if after else None,
        bool(added or removed),
    )
    if skipped:  # counted, not quoted: the text is what failed the checks, and tickets carry anomalies
        count = len(set(skipped))
        what = "1 stored prefix fails today's checks and was" if count == 1 else \
            f"{count} stored prefixes fail today's checks and were"
        anomalies += (f"{what} skipped (see `watcher db check`)",)
    return TagDiff(
        tag=tag,
        status=status,
        added=tuple(sorted(added)),
        removed=tuple(sorted(removed)),
        net_added=net_added,
        net_removed=net_removed,
        anomalies=anomalies,
        before=before,
        after=after,
        metadata=metadata_changes(before.metadata if before else None, after.metadata if after else None),
    )


def diff_tags(
    items: Iterable[tuple[str, TagState | None, TagState | None]], cache: ParseCache | None = None
) -> list[TagDiff]:
    """``diff_tag`` of each (tag, before, after) of the same two publications, in order, sharing the work.

    Each prefix is parsed once for the whole batch, and each tag's exact
    change is computed once for both views.
    """
    cache = {} if cache is None else cache
    work = []
    for tag, before, after in items:
        if before is None and after is None:
            raise ValueError(f"{tag}: nothing to compare")
        skipped: list[str] = []
        before, after = _gated(before, skipped), _gated(after, skipped)
        old = before.prefixes if before else frozenset()
        new = after.prefixes if after else frozenset()
        work.append((tag, before, after, new - old, old - new, skipped))
    probes = ProbeCache()
    return [_diff_tag(tag, before, after, added, removed, cache, skipped, probes)
            for tag, before, after, added, removed, skipped in work]
