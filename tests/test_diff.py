import ipaddress
import random

import pytest

from watcher import diff
from watcher.diff import TagState, collapse, diff_tag, net_change


def state(number, *prefixes):
    return TagState(number, frozenset(prefixes))


def test_reaggregation_is_no_net_change():
    change = diff_tag("T", state(1, "10.0.0.0/24", "10.0.1.0/24"), state(2, "10.0.0.0/23"))
    assert change.status == "changed"
    assert change.added == ("10.0.0.0/23",)
    assert change.removed == ("10.0.0.0/24", "10.0.1.0/24")
    assert change.net_added == change.net_removed == ()
    assert change.reaggregation_only


def test_real_ipv6_narrowing_from_storage_eastus2():
    # Storage.EastUS2 on 2025-10-28: /48 replaced by its lower /49.
    change = diff_tag("Storage.EastUS2", state(44, "2603:1030:40f::/48"), state(45, "2603:1030:40f::/49"))
    assert change.net_removed == ("2603:1030:40f:8000::/49",)
    assert change.net_added == ()
    assert change.net_removed_addresses == (0, 2**79)


def test_families_are_kept_apart_and_results_are_minimal():
    added, removed = net_change(["10.0.0.0/24", "2001:db8::/32"], ["10.0.0.0/23", "2001:db8::/33"])
    assert added == ("10.0.1.0/24",)
    assert removed == ("2001:db8:8000::/33",)


@pytest.mark.parametrize("before, after, expected", [
    (None, state(1, "10.0.0.0/24"), "appeared"),
    (state(1, "10.0.0.0/24"), None, "withdrawn"),
    (state(1, "10.0.0.0/24"), state(2, "10.0.0.0/24"), "unchanged"),
    (state(1, "10.0.0.0/24"), state(2, "10.0.0.0/25"), "changed"),
])
def test_status(before, after, expected):
    assert diff_tag("T", before, after).status == expected


def test_change_number_anomalies():
    assert diff_tag("T", state(9, "10.0.0.0/24"), state(3, "10.0.1.0/24")).anomalies == (diff.NUMBER_WENT_DOWN,)
    assert diff_tag("T", state(9, "10.0.0.0/24"), state(9, "10.0.1.0/24")).anomalies == (diff.NUMBER_SAME_CONTENT_CHANGED,)
    assert diff_tag("T", state(9, "10.0.0.0/24"), state(12, "10.0.1.0/24")).anomalies == (diff.NUMBER_SKIPPED,)
    assert diff_tag("T", state(9, "10.0.0.0/24"), state(10, "10.0.0.0/24")).anomalies == (diff.NUMBER_CHANGED_CONTENT_SAME,)
    assert diff_tag("T", state(9, "10.0.0.0/24"), state(10, "10.0.1.0/24")).anomalies == ()
    assert diff.publication_anomalies(5, 5) == (diff.GLOBAL_NUMBER_REPEATED,)
    assert diff.publication_anomalies(5, 4) == (diff.GLOBAL_NUMBER_WENT_DOWN,)
    assert diff.publication_anomalies(None, 4) == ()


def _space(prefixes):
    return {ip for p in prefixes for ip in ipaddress.ip_network(p)}


def test_net_change_matches_brute_force_on_random_sets():
    rng = random.Random(7)
    pool = [f"10.0.{a}.{b}/{n}" for a in range(4) for n in (28, 29, 30) for b in range(0, 256, 2 ** (32 - n))]
    for _ in range(50):
        before = rng.sample(pool, 12)
        after = rng.sample(pool, 12)
        added, removed = net_change(before, after)
        assert _space(added) == _space(after) - _space(before)
        assert _space(removed) == _space(before) - _space(after)


def test_collapse_keeps_object_counts_low():
    assert collapse(["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "2001:db8::/33", "2001:db8:8000::/33"]) == [
        "10.0.0.0/23", "2001:db8::/32",
    ]


def _random_prefix(rng):
    """A canonical prefix from a few crowded blocks, so that random ones nest and touch."""
    if rng.random() < 0.5:
        base = rng.choice([0x0A000000, 0x14000000, 0x00000000, 0xFFFF0000])
        length = rng.choice([0, 4, 8, 12, 15, 16, 17, 20, 23, 24, 25, 28, 31, 32])
        value = (base | rng.getrandbits(18)) & ~((1 << (32 - length)) - 1) & 0xFFFFFFFF
        return str(ipaddress.IPv4Network((value, length)))
    base = rng.choice([0x2603_1030 << 96, 0x2603_0000 << 96, 0, 0x0000_FFFF << 96, 0x2A01_0111_F100 << 80])
    length = rng.choice([0, 8, 16, 20, 31, 32, 33, 47, 48, 49, 56, 63, 64, 65, 96, 128])
    value = (base | rng.getrandbits(rng.choice([8, 20, 40, 70]))) & ~((1 << (128 - length)) - 1) & ((1 << 128) - 1)
    return str(ipaddress.IPv6Network((value, length)))


def test_looking_only_near_the_changes_gives_what_comparing_everything_gives(monkeypatch):
    """The local path (a few changes in a big tag) against the full interval merge and brute force."""
    rng = random.Random(13)
    for _ in range(300):
        before = {_random_prefix(rng) for _ in range(rng.randint(20, 120))}
        after = set(before)
        for _ in range(rng.randint(1, 3)):
            after.discard(rng.choice(sorted(after)))
            after.add(_random_prefix(rng))
        local = net_change(before, after, before_sorted=sorted(before), after_sorted=sorted(after))
        monkeypatch.setattr(diff, "LOCAL_DIFF_RATIO", 10**9)  # every change: the full merge
        full = net_change(before, after)
        monkeypatch.undo()
        assert local == full, (sorted(before - after), sorted(after - before))


def _crowded_prefix(rng):
    """A prefix inside one busy block (an IPv4 /16, an IPv6 /48, or one with zero groups), any length below it."""
    kind = rng.randrange(3)
    if kind == 0:
        length = rng.randint(16, 32)
        value = (0x1426_0000 | rng.getrandbits(16)) & ~((1 << (32 - length)) - 1) & 0xFFFFFFFF
        return str(ipaddress.IPv4Network((value, length)))
    base = 0x2603_1030_040F << 80 if kind == 1 else 0x2603_1030_0000 << 80
    length = rng.choice([32, 40, 47, 48, 49, 56, 60, 61, 62, 63, 64, 65, 66, 80, 127])
    value = (base | rng.getrandbits(rng.choice([4, 16, 18, 40, 80]))) & ~((1 << (128 - length)) - 1)
    return str(ipaddress.IPv6Network((value & ((1 << 128) - 1), length)))


def test_the_narrowed_look_ups_in_a_busy_block_give_what_comparing_everything_gives(monkeypatch):
    """Many small prefixes in one /16 or /48: the look-up narrows by the group after the leading ones."""
    rng = random.Random(29)
    for _ in range(300):
        before = {_crowded_prefix(rng) for _ in range(rng.randint(30, 150))}
        after = set(before)
        for _ in range(rng.randint(1, 4)):
            after.discard(rng.choice(sorted(after)))
            after.add(_crowded_prefix(rng))
        local = net_change(before, after, before_sorted=sorted(before), after_sorted=sorted(after))
        monkeypatch.setattr(diff, "LOCAL_DIFF_RATIO", 10**9)  # every change: the full merge
        full = net_change(before, after)
        monkeypatch.undo()
        assert local == full, (sorted(before - after), sorted(after - before))


def test_a_batch_of_diffs_is_each_tag_diffed_alone():
    rng = random.Random(31)
    items = []
    for index in range(40):
        before = frozenset(_crowded_prefix(rng) for _ in range(rng.randint(0, 60)))
        after = set(before)
        for _ in range(rng.randint(0, 5)):
            if after:
                after.discard(rng.choice(sorted(after)))
            after.add(_crowded_prefix(rng))
        items.append((f"T{index}", TagState(index, before) if before else None,
                      TagState(index + rng.randint(0, 2), frozenset(after))))
    assert diff.diff_tags(items) == [diff_tag(*item) for item in items]


def test_local_and_full_diffs_agree_on_every_changed_tag_of_the_real_weeks(public_files, monkeypatch):
    import gzip
    import json

    def tags(path):
        document = json.loads(gzip.decompress(path.read_bytes()))
        return {v["name"]: frozenset(v["properties"]["addressPrefixes"]) for v in document["values"]}

    older, newer = tags(public_files[0]), tags(public_files[-1])
    changed = [n for n in newer if n in older and older[n] != newer[n]]
    assert "AzureCloud" in changed and len(changed) > 100
    for name in changed:
        local = net_change(older[name], newer[name], before_sorted=sorted(older[name]),
                           after_sorted=sorted(newer[name]))
        monkeypatch.setattr(diff, "LOCAL_DIFF_RATIO", 10**9)  # every change: the full merge
        assert local == net_change(older[name], newer[name]), name
        monkeypatch.undo()


def test_intervals_become_the_cidrs_ipaddress_would_give():
    rng = random.Random(3)
    for _ in range(2000):
        family, width = rng.choice([(4, 32), (6, 128)])
        start = rng.getrandbits(rng.choice([8, 24, width]))
        end = min(start + rng.getrandbits(rng.choice([1, 8, 20, width // 2])), (1 << width) - 1)
        cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        expected = [str(n) for n in ipaddress.summarize_address_range(cls(start), cls(end))]
        assert diff.intervals_to_cidrs(family, [(start, end)]) == expected
    assert diff.intervals_to_cidrs(4, [(0, 2**32 - 1)]) == ["0.0.0.0/0"]
    assert diff.intervals_to_cidrs(6, [(0, 2**128 - 1)]) == ["::/0"]
