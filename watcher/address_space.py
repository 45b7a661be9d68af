"""Prefix counts and address space per family, kept up to date as prefixes come and go.

``family_sizes`` counts one set from scratch: IPv4 prefixes, IPv6 prefixes,
IPv4 addresses, IPv6 /64 networks, overlaps counted once. A tag's history is a
long run of sets that differ by a few prefixes each (AzureCloud: ~13,000
prefixes, a few dozen changed a week), so ``SpaceTracker`` applies each
version's additions and removals instead of recounting the whole set.

CIDR blocks either nest or are disjoint, so the space covered is the sum of the
*outermost* prefixes (those inside no other present prefix). The tracker keeps,
per family, every present prefix and the outermost ones, each sorted by start:
adding a prefix inside an outermost one changes nothing; adding one that is not
swallows the outermost ones inside it; removing an outermost one uncovers the
outermost of the prefixes that were inside it.
"""
from __future__ import annotations

import bisect
import operator
import socket
import sys
from array import array
from itertools import repeat
from typing import Iterable, Sequence

Sizes = tuple[int, int, int, int]


def prefix_span(prefix: str) -> tuple[int, int, int]:
    """(family 4 or 6, first address, one past the last) of a prefix, without ``ipaddress`` (whose objects
    cost ~30 us each)."""
    address, _, length = prefix.partition("/")
    if ":" in address:
        first, bits = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big"), 128
    else:
        first, bits = int.from_bytes(socket.inet_aton(address), "big"), 32
    size = 1 << (bits - int(length or bits))
    first -= first % size  # a stray host bit must not widen the span
    return (4 if bits == 32 else 6), first, first + size


def _merged_size(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, -1
    for first, end in sorted(spans):
        if end > reach:
            total += end - max(first, reach)
            reach = end
    return total


def _sizes(v4_count: int, v6_count: int, v4_space: int, v6_space: int) -> Sizes:
    return v4_count, v6_count, v4_space, (v6_space >> 64) or (1 if v6_space else 0)


def family_sizes(prefixes: Iterable[str]) -> Sizes:
    """IPv4 prefixes, IPv6 prefixes, IPv4 addresses, IPv6 /64 networks (overlaps counted once)."""
    prefixes = prefixes if isinstance(prefixes, (list, tuple)) else list(prefixes)
    v6 = [p for p in prefixes if ":" in p]
    v4 = [p for p in prefixes if ":" not in p] if v6 else prefixes
    return _sizes(len(v4), len(v6), _family_space(v4, socket.AF_INET, 32), _family_space(v6, socket.AF_INET6, 128))


def _family_space(prefixes: Sequence[str], family: int, bits: int) -> int:
    """The addresses one family's prefixes cover, overlaps counted once.

    Counted a list at a time (the import counts every new prefix set: ~93,000 prefixes on a first import, 13,000
    for AzureCloud every week): the addresses packed by ``inet_pton`` and read as integers in one call, the
    arithmetic done by ``map`` over ``operator`` functions, and the usual case, no prefix inside another,
    checked in one pass; ~5x faster than a span per prefix (``prefix_span``), which stays the fallback for a
    prefix written without its length.
    """
    if not prefixes:
        return 0
    parts = "/".join(prefixes).split("/")
    if len(parts) != 2 * len(prefixes):  # a prefix without "/length" (or with two): one at a time
        return _merged_size([prefix_span(p)[1:] for p in prefixes])
    width = bits // 8
    packed = b"".join(map(socket.inet_pton, repeat(family), parts[0::2]))
    firsts = [int.from_bytes(packed[i:i + width], "big") for i in range(0, len(packed), width)] if bits == 128 \
        else _uint32s(packed)
    sizes = list(map(operator.lshift, repeat(1), map(operator.sub, repeat(bits), map(int, parts[1::2]))))
    starts = list(map(operator.sub, firsts, map(operator.mod, firsts, sizes)))  # a stray host bit must not widen it
    order = sorted(range(len(starts)), key=starts.__getitem__)
    if len(order) > 1:
        starts, sizes = operator.itemgetter(*order)(starts), operator.itemgetter(*order)(sizes)
    ends = list(map(operator.add, starts, sizes))
    if all(map(operator.le, ends, starts[1:])):  # no prefix meets the next one: nothing nests
        return sum(sizes)
    return _merged_size(list(zip(starts, ends)))


def _uint32s(packed: bytes) -> list[int]:
    numbers = array("I")
    assert numbers.itemsize == 4
    numbers.frombytes(packed)
    if sys.byteorder == "little":
        numbers.byteswap()  # inet_pton writes network order (big-endian)
    return numbers.tolist()


#: A database BIGINT's bound: a set covering 2**63 or more /64 networks (``::/1``, ``::/0``: held as
#: implausible, but stored) cannot keep its sizes in ``contents``.
STORABLE_BELOW = 1 << 63


def storable_sizes(sizes: Sizes) -> tuple[int | None, int | None, int | None, int | None]:
    """``sizes`` as ``contents`` keeps them, or all None when they do not fit (counted again when read)."""
    return sizes if max(sizes) < STORABLE_BELOW else (None, None, None, None)


def stored_sizes(prefixes: Iterable[str]) -> tuple[int | None, int | None, int | None, int | None]:
    """What ``contents`` keeps of a prefix set's sizes: all None when they do not fit, or when a prefix cannot be
    read (a set an older version stored past today's gate): the reader counts those, skipping what fails the gate,
    and the import or the upgrade goes on."""
    try:
        return storable_sizes(family_sizes(prefixes))
    except (OSError, ValueError):
        return None, None, None, None


class _Family:
    """One family's present prefixes and outermost prefixes, as sorted (first, -end) keys: at one start the
    larger block sorts first."""

    def __init__(self) -> None:
        self.present: list[tuple[int, int]] = []
        self.outer: list[tuple[int, int]] = []
        self.covered = 0

    @staticmethod
    def _inside(keys: list[tuple[int, int]], first: int, end: int) -> tuple[int, int]:
        """The index range of ``keys`` whose blocks start within [first, end) (CIDR: they lie inside it)."""
        return bisect.bisect_left(keys, (first,)), bisect.bisect_left(keys, (end,))

    def add_many(self, spans: list[tuple[int, int]]) -> None:
        """Add many blocks to an empty family at once: one sort and one sweep instead of an insert each."""
        self.present = sorted({(first, -end) for first, end in spans})
        reach = -1
        for first, negative_end in self.present:
            if first >= reach:
                self.outer.append((first, negative_end))
                reach = -negative_end
                self.covered += reach - first

    def add(self, first: int, end: int) -> None:
        key = (first, -end)
        at = bisect.bisect_left(self.present, key)
        if at < len(self.present) and self.present[at] == key:
            return
        self.present.insert(at, key)
        # An outermost block starting at or before this one covers it if it reaches its end.
        holder = bisect.bisect_right(self.outer, key) - 1
        if holder >= 0 and -self.outer[holder][1] >= end and self.outer[holder][0] <= first:
            return
        low, high = self._inside(self.outer, first, end)
        self.covered -= sum(-e - f for f, e in self.outer[low:high])
        self.outer[low:high] = [key]
        self.covered += end - first

    def remove(self, first: int, end: int) -> None:
        key = (first, -end)
        at = bisect.bisect_left(self.present, key)
        if at == len(self.present) or self.present[at] != key:
            return
        del self.present[at]
        spot = bisect.bisect_left(self.outer, key)
        if spot == len(self.outer) or self.outer[spot] != key:
            return  # inside another present block: the covered space stays
        self.covered -= end - first
        low, high = self._inside(self.present, first, end)
        uncovered, reach = [], -1
        for f, negative_end in self.present[low:high]:
            if f >= reach:
                uncovered.append((f, negative_end))
                reach = -negative_end
                self.covered += -negative_end - f
        self.outer[spot:spot + 1] = uncovered


class SpaceTracker:
    """The sizes of a set of prefixes that changes by additions and removals."""

    def __init__(self) -> None:
        self.families = {4: _Family(), 6: _Family()}

    def apply(self, added: Iterable[str], removed: Iterable[str]) -> Sizes:
        """Remove ``removed``, add ``added``; the sizes after."""
        for prefix in removed:
            family, first, end = prefix_span(prefix)
            self.families[family].remove(first, end)
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for prefix in added:
            family, first, end = prefix_span(prefix)
            spans[family].append((first, end))
        for family, blocks in spans.items():
            keeper = self.families[family]
            if not keeper.present and len(blocks) > 1:
                keeper.add_many(blocks)  # the tag's first version (or its return after a withdrawal)
            else:
                for first, end in blocks:
                    keeper.add(first, end)
        return self.sizes()

    def sizes(self) -> Sizes:
        v4, v6 = self.families[4], self.families[6]
        return _sizes(len(v4.present), len(v6.present), v4.covered, v6.covered)


def sizes_of_versions(prefix_sets: Sequence[Sequence[str]]) -> list[Sizes]:
    """The sizes of each set of a run, each counted from the difference with the one before."""
    tracker, previous, result = SpaceTracker(), frozenset[str](), []
    for prefixes in prefix_sets:
        current = frozenset(prefixes)
        result.append(tracker.apply(current - previous, previous - current))
        previous = current
    return result
