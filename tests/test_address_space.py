"""SpaceTracker: each version's sizes counted from its difference with the one before equal a recount from
scratch, for nested, overlapping and disjoint prefixes of both families coming and going."""
from __future__ import annotations

import random

from watcher import address_space
from watcher.web import plots


def random_prefix(rng: random.Random) -> str:
    if rng.random() < 0.6:  # IPv4 inside 10.0.0.0/12: a small space, so blocks nest and repeat often
        length = rng.randint(12, 30)
        first = (10 << 24) + rng.randrange(1 << 20) * (1 << 4)
        first -= first % (1 << (32 - length))
        return f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}/{length}"
    length = rng.randint(44, 126)
    first = (0xfd00 << 112) + (rng.randrange(1 << 40) << 72)
    first -= first % (1 << (128 - length))
    groups = [f"{first >> (112 - 16 * i) & 0xffff:x}" for i in range(8)]
    return ":".join(groups) + f"/{length}"


def test_the_tracked_sizes_equal_a_recount_at_every_version() -> None:
    rng = random.Random(7)
    current: set[str] = set()
    runs: list[list[str]] = []
    for _ in range(300):
        for prefix in rng.sample(sorted(current), min(len(current), rng.randint(0, 12))):
            current.discard(prefix)
        current |= {random_prefix(rng) for _ in range(rng.randint(0, 15))}
        if rng.random() < 0.03:
            current = set()  # withdrawn, and back later
        runs.append(sorted(current))
    tracked = address_space.sizes_of_versions(runs)
    assert tracked == [address_space.family_sizes(prefixes) for prefixes in runs]
    assert tracked == [plots.family_sizes(prefixes) for prefixes in runs]
    assert any(sizes[2] < sum(1 << (32 - int(p.split("/")[1])) for p in run if ":" not in p)
               for sizes, run in zip(tracked, runs))  # overlaps occurred, and were counted once


def test_a_block_inside_another_adds_no_space_until_the_outer_one_goes() -> None:
    tracker = address_space.SpaceTracker()
    assert tracker.apply(["10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/26"], []) == (3, 0, 256, 0)
    assert tracker.apply([], ["10.0.0.0/24"]) == (2, 0, 192, 0)
    assert tracker.apply(["10.0.0.0/23"], []) == (3, 0, 512, 0)
    assert tracker.apply(["fd00::/64", "fd00::/65"], ["10.0.0.0/25"]) == (2, 2, 512, 1)


def _sizes_one_prefix_at_a_time(prefixes: list[str]) -> tuple[int, int, int, int]:
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for prefix in prefixes:
        family, first, end = address_space.prefix_span(prefix)
        spans[family].append((first, end))
    return address_space._sizes(len(spans[4]), len(spans[6]), address_space._merged_size(spans[4]),
                                address_space._merged_size(spans[6]))


def test_family_sizes_counted_a_list_at_a_time_equal_a_span_per_prefix(public_files) -> None:
    import gzip
    import json

    document = json.loads(gzip.decompress(public_files[-1].read_bytes()))
    for entry in document["values"]:
        prefixes = entry["properties"]["addressPrefixes"]
        assert address_space.family_sizes(prefixes) == _sizes_one_prefix_at_a_time(prefixes), entry["name"]
    awkward = [[], ["10.0.0.0/8", "10.1.0.0/16"], ["10.0.0.5/24"], ["10.0.0.0"], ["::/0"], ["0.0.0.0/0", "::/0"],
               ["2001:db8::/48", "2001:db8::/56", "2001:db8:1::/64"], ["10.0.0.0/24", "10.0.0.0/24"],
               ["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24"], ["2001:db8::1/128"]]
    rng = random.Random(7)
    awkward += [[f"10.{rng.randrange(4)}.{rng.randrange(256)}.0/{rng.randrange(16, 25)}" for _ in range(200)]]
    for prefixes in awkward:
        assert address_space.family_sizes(prefixes) == _sizes_one_prefix_at_a_time(prefixes), prefixes
        assert address_space.family_sizes(iter(prefixes)) == _sizes_one_prefix_at_a_time(prefixes)
