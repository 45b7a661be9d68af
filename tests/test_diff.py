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
