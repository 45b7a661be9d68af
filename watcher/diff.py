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

import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable, Literal

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
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    cidrs: list[str] = []
    for start, end in intervals:
        cidrs.extend(str(n) for n in ipaddress.summarize_address_range(cls(start), cls(end)))
    return cidrs


def net_change(
    before: Iterable[str], after: Iterable[str], cache: ParseCache | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(address space newly covered, address space no longer covered) as minimal CIDR lists."""
    cache = {} if cache is None else cache
    old, new = merged_intervals(before, cache), merged_intervals(after, cache)
    added: list[str] = []
    removed: list[str] = []
    for family in (4, 6):
        added += intervals_to_cidrs(family, subtract(new[family], old[family]))
        removed += intervals_to_cidrs(family, subtract(old[family], new[family]))
    return tuple(added), tuple(removed)


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


def diff_tag(tag: str, before: TagState | None, after: TagState | None, cache: ParseCache | None = None) -> TagDiff:
    """Compare one tag's state in two publications (``None``: not published).

    ``cache`` lets a diff of many tags parse each prefix once: AzureCloud
    repeats every regional tag's prefixes.
    """
    old = before.prefixes if before else frozenset()
    new = after.prefixes if after else frozenset()
    added, removed = new - old, old - new
    if before is None and after is None:
        raise ValueError(f"{tag}: nothing to compare")
    if before is None:
        status: Status = "appeared"
    elif after is None:
        status = "withdrawn"
    else:
        status = "changed" if added or removed else "unchanged"
    net_added, net_removed = net_change(old, new, cache) if (added or removed) else ((), ())
    anomalies = change_number_anomalies(
        before.change_number if before else None,
        after.change_number if after else None,
        bool(added or removed),
    )
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
    )
