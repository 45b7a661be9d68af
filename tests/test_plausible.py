"""What no real publication says: default routes, blocks wider than Microsoft publishes, bogons, mass withdrawal."""
from __future__ import annotations

import pytest

from tests.conftest import file_bytes, plain_name
from tests.httpstub import real_file
from watcher import plausible
from watcher.errors import ConfigError, FetchError, ImplausibleFileError
from watcher.parse import parse_bytes
from watcher.settings import TicketSettings


@pytest.mark.parametrize("prefix, words", [
    ("0.0.0.0/0", "default route"), ("::/0", "default route"),
    ("20.0.0.0/7", "wider than /8"), ("2603::/15", "wider than /16"),
    ("10.1.0.0/24", "private"), ("172.20.0.0/16", "private"), ("192.168.1.0/24", "private"),
    ("127.0.0.1/32", "loopback"), ("::1/128", "loopback"), ("169.254.169.254/32", "link-local"),
    ("fe80::/64", "link-local"), ("224.0.0.0/8", "multicast"), ("ff02::1/128", "multicast"),
    ("192.0.2.0/24", "documentation"), ("198.51.100.7/32", "documentation"), ("203.0.113.0/25", "documentation"),
    ("2001:db8:1::/48", "documentation"), ("fd00:1::/48", "unique local"), ("100.64.0.0/10", "carrier-grade"),
    ("240.0.0.0/8", "reserved"), ("::ffff:0:0/96", "IPv4-mapped"),
])
def test_implausible_prefixes_are_named_with_the_reason(prefix, words):
    problem = plausible.prefix_problem(prefix)
    assert problem is not None and words in problem


@pytest.mark.parametrize("prefix", ["20.33.0.0/16", "13.64.0.0/14", "2603:1030::/39", "40.90.4.1/32", "8.0.0.0/8"])
def test_prefixes_like_microsofts_pass(prefix):
    assert plausible.prefix_problem(prefix) is None


def test_every_prefix_of_every_real_file_is_plausible(servicetags_dir):
    seen = set()
    for path in sorted(servicetags_dir.glob("*/*.json.gz")):
        for tag in parse_bytes(file_bytes(path), plain_name(path)).tags:
            seen.update(tag.raw_prefixes)
    assert len(seen) > 50_000
    assert plausible.prefix_problems(sorted(seen)) == []


def test_limits_come_from_the_settings_and_exemptions_are_networks():
    limits = plausible.Limits.from_settings(TicketSettings(min_prefix_length_v4=16, bogon_exemptions=("10.0.0.0/8",)))
    assert "wider than /16" in plausible.prefix_problem("20.0.0.0/15", limits)
    assert plausible.prefix_problem("10.1.0.0/24", limits) is None
    assert "private" in plausible.prefix_problem("192.168.0.0/24", limits)  # only what is exempted
    assert "default route" in plausible.prefix_problem("0.0.0.0/0", limits)  # never exempt
    with pytest.raises(ConfigError, match="bogon_exemptions: 'ten' is not a network"):
        plausible.Limits.from_settings(TicketSettings(bogon_exemptions=("ten",)))


@pytest.mark.parametrize("withdrawn, previous, held", [(0, 3000, False), (3, 3000, False), (750, 3000, False),
                                                       (751, 3000, True), (2967, 2967, True), (5, None, False)])
def test_withdrawing_more_than_the_share_is_implausible(withdrawn, previous, held):
    problem = plausible.withdrawn_share_problem(withdrawn, previous)
    assert (problem is not None) == held
    if held:
        assert f"withdraws {withdrawn} of the cloud's {previous} tags" in problem


# --------------------------------------------------------------------------- a downloaded file as a whole


def test_check_plausible_counts_tags_and_accepts_a_bom() -> None:
    body = real_file("ServiceTags_Public_20251028.json")
    assert plausible.check_plausible(body, "public", 3002, 0.8) == 3039
    assert plausible.check_plausible(b"\xef\xbb\xbf" + body, "public", None, 0.8) == 3039


def test_check_plausible_rejects_html_where_json_should_be() -> None:
    with pytest.raises(FetchError, match="HTML page where the Public service-tag JSON was expected"):
        plausible.check_plausible(b"\n  <!DOCTYPE html><html><body>Sign in</body></html>", "public", None, 0.8)


def test_check_plausible_rejects_invalid_json() -> None:
    with pytest.raises(FetchError, match="not valid JSON"):
        plausible.check_plausible(b'{"cloud": "Public", "values": [', "public", None, 0.8)


def test_check_plausible_rejects_a_file_without_values() -> None:
    with pytest.raises(ImplausibleFileError, match="no 'values' list"):
        plausible.check_plausible(b'{"cloud": "Public", "changeNumber": 1}', "public", None, 0.8)
