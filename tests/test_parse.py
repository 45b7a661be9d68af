import datetime as dt
import json
import gzip
import ipaddress
import random

import pytest

from tests.conftest import file_bytes, plain_name
from tests.factory import build_file, tag_entry
from watcher.errors import ParseError
from watcher.parse import (
    date_from_file_name,
    normalize_prefix,
    normalize_prefixes,
    parse_bytes,
    read_file_bytes,
    validate_prefixes,
)


def test_real_files_of_every_cloud_parse(servicetags_dir):
    seen = {}
    for path in sorted(servicetags_dir.glob("*/*.json.gz")):
        parsed = parse_bytes(file_bytes(path), plain_name(path))
        seen[parsed.cloud] = parsed
        assert parsed.file_date == date_from_file_name(path.name)
        assert parsed.tag_count == len(parsed.tags) > 200
    assert set(seen) == {"public", "usgov", "china"}
    assert seen["public"].tag_count == 3039  # the 2025-10-28 file


def test_fast_normaliser_agrees_with_ipaddress_on_every_real_prefix(public_files):
    parsed = parse_bytes(file_bytes(public_files[-1]), plain_name(public_files[-1]))
    prefixes = {p for t in parsed.tags for p in t.raw_prefixes}
    assert len(prefixes) > 50_000
    for prefix in prefixes:
        assert normalize_prefix(prefix) == str(ipaddress.ip_network(prefix, strict=False))


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1/24", "10.0.0.0/24"),
    ("2603:1030:40F:8000::/48", "2603:1030:40f::/48"),
    ("2603:1030:0:0:0:0:0:0/32", "2603:1030::/32"),
    ("::ffff:1.2.3.4/128", "::ffff:102:304/128"),
    ("1.2.3.4/32", "1.2.3.4/32"),
])
def test_normalise_prefix(text, expected):
    assert normalize_prefix(text) == expected


def test_fast_normaliser_agrees_with_ipaddress_on_random_ipv6():
    rng = random.Random(5)
    for _ in range(20_000):
        # Many addresses with zero top bits: inet_ntop writes some of those in dotted form.
        value = rng.getrandbits(rng.choice((16, 32, 48, 96, 128)))
        length = rng.randint(0, 128)
        text = f"{ipaddress.IPv6Address(value)}/{length}"
        assert normalize_prefix(text) == str(ipaddress.ip_network(text, strict=False)), text


@pytest.mark.parametrize("text", ["1.2.3.4/33", "300.1.1.1/24", "1.2.3/24", "fe80::/129", "nonsense", "1.2.3.4/-1", ""])
def test_invalid_prefixes_are_rejected(text):
    with pytest.raises(ValueError):
        normalize_prefix(text)


def test_host_bits_and_duplicates_are_repaired_and_reported():
    raw = ["10.0.0.1/24", "10.0.0.0/24", "10.0.0.0/24", "10.0.0.0/24", "::1/64"]
    prefixes, notes = normalize_prefixes("T", raw, "f.json")
    assert prefixes == ("10.0.0.0/24", "::/64")
    assert "T: prefix 10.0.0.1/24 normalised to 10.0.0.0/24" in notes
    assert "T: prefix ::1/64 normalised to ::/64" in notes
    assert sum("duplicate prefix 10.0.0.0/24" in n for n in notes) == 1  # reported once, stored once


def test_known_prefixes_skip_the_parser_but_new_ones_are_checked():
    prefixes, _ = normalize_prefixes("T", ["10.0.0.0/24", "10.0.1.0/24"], "f", known={"10.0.0.0/24"})
    assert prefixes == ("10.0.0.0/24", "10.0.1.0/24")
    with pytest.raises(ParseError, match=r"f: tag 'T': invalid prefix 'bad/1'"):
        normalize_prefixes("T", ["10.0.0.0/24", "bad/1"], "f", known={"10.0.0.0/24"})


def test_bom_crlf_and_gzip_give_the_same_content(tmp_path):
    plain = build_file({"A": ["10.0.0.0/24"]})
    variant = build_file({"A": ["10.0.0.0/24"]}, crlf=True, bom=True)
    assert plain != variant
    a = parse_bytes(plain, "ServiceTags_Public_20250101.json")
    b = parse_bytes(variant, "ServiceTags_Public_20250101.json")
    assert [(t.name, t.change_number, t.metadata, list(t.raw_prefixes)) for t in a.tags] == [
        (t.name, t.change_number, t.metadata, list(t.raw_prefixes)) for t in b.tags
    ]
    gz = tmp_path / "ServiceTags_Public_20250101.json.gz"
    gz.write_bytes(gzip.compress(variant))
    assert read_file_bytes(gz) == variant


def test_date_comes_from_the_name_or_the_caller():
    data = build_file({"A": ["10.0.0.0/24"]})
    assert parse_bytes(data, "x/ServiceTags_Public_20240229.json").file_date == dt.date(2024, 2, 29)
    assert parse_bytes(data, "mirror.json", file_date=dt.date(2024, 1, 1)).file_date == dt.date(2024, 1, 1)
    with pytest.raises(ParseError, match="mirror.json: no publication date"):
        parse_bytes(data, "mirror.json")


def _with(mutate):
    import json

    doc = {"changeNumber": 1, "cloud": "Public", "values": [tag_entry("Storage.EastUS", ["10.0.0.0/24"])]}
    mutate(doc)
    return json.dumps(doc).encode()


MALFORMED = {
    "not json": (b"{nope", "not valid JSON"),
    "html": (b"<!DOCTYPE html><html></html>", "looks like HTML"),
    "top level list": (b"[]", "top level must be a JSON object"),
    "no changeNumber": (_with(lambda d: d.pop("changeNumber")), "top-level 'changeNumber'"),
    "no values": (_with(lambda d: d.pop("values")), "top-level 'values'"),
    "unknown cloud": (_with(lambda d: d.update(cloud="Mars")), "unknown cloud 'Mars'"),
    "tag without name": (_with(lambda d: d["values"][0].pop("name")),
                         r"values\[0\]: missing or invalid required field 'name'"),
    "no properties": (_with(lambda d: d["values"][0].pop("properties")),
                      "tag 'Storage.EastUS': missing or invalid required field 'properties'"),
    "prefixes not a list": (
        _with(lambda d: d["values"][0]["properties"].update(addressPrefixes="10.0.0.0/24")),
        "tag 'Storage.EastUS': missing or invalid required field 'properties.addressPrefixes'",
    ),
    "no prefixes": (
        _with(lambda d: d["values"][0]["properties"].pop("addressPrefixes")),
        "tag 'Storage.EastUS': missing or invalid required field 'properties.addressPrefixes'",
    ),
    "number is a string": (
        _with(lambda d: d["values"][0]["properties"].update(changeNumber="7")),
        "tag 'Storage.EastUS': missing or invalid required field 'properties.changeNumber'",
    ),
    "no tag changeNumber": (
        _with(lambda d: d["values"][0]["properties"].pop("changeNumber")),
        "tag 'Storage.EastUS': missing or invalid required field 'properties.changeNumber'",
    ),
    "no cloud": (_with(lambda d: d.pop("cloud")), "top-level 'cloud'"),
    "prefix not a string": (
        _with(lambda d: d["values"][0]["properties"].update(addressPrefixes=[167772160])),
        "prefix 167772160 is not a string",
    ),
    "duplicate tag": (_with(lambda d: d["values"].append(d["values"][0])), "tag 'Storage.EastUS' appears more than once"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_get_one_clear_error_naming_file_and_part(case):
    data, message = MALFORMED[case]
    with pytest.raises(ParseError, match=message) as info:
        parse_bytes(data, "ServiceTags_Public_20250101.json")
    assert str(info.value).startswith("ServiceTags_Public_20250101.json: ")


def test_invalid_prefix_is_named_with_its_tag():
    data = build_file({"Storage.EastUS": ["10.0.0.0/24", "10.0.0.0/40"]})
    parsed = parse_bytes(data, "ServiceTags_Public_20250101.json")
    with pytest.raises(ParseError, match=r"tag 'Storage.EastUS': invalid prefix '10.0.0.0/40'"):
        validate_prefixes(parsed, "ServiceTags_Public_20250101.json")


def test_a_tags_prefixes_are_canonicalised_exactly_like_ipaddress_whatever_path_they_take():
    rng = random.Random(11)
    texts = ["::/0", "0.0.0.0/0", "::ffff:1.2.3.4/128", "10.0.0.1/24", "2603:1030:40F::/48", "2603:1030:0:0::/32",
             "10.0.0.0/8", "1.2.3.4/32", "::1/128", "64:ff9b::/96"]
    for _ in range(3000):
        if rng.random() < 0.5:
            value, width = rng.getrandbits(32), 32
            text = f"{ipaddress.IPv4Address(value)}/{rng.randint(0, width)}"
        else:
            value = rng.getrandbits(rng.choice((16, 48, 96, 128)))
            text = f"{ipaddress.IPv6Address(value)}/{rng.randint(0, 128)}"
        texts.append(text.upper() if rng.random() < 0.1 else text)
    expected = sorted({str(ipaddress.ip_network(t, strict=False)) for t in texts})
    prefixes, notes = normalize_prefixes("T", texts, "f")
    assert list(prefixes) == expected
    assert all(("normalised to" in n) or ("duplicate" in n) for n in notes)
    # Against a previous list, through the shared cache: the same answer.
    again, _ = normalize_prefixes("T", texts, "f", known=expected[: len(expected) // 2])
    assert list(again) == expected


@pytest.mark.parametrize("text", ["10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/08", "2603::/+48", "1.2.3.4/33", "::/129",
                                  "10.0.0.0\x00/8", "\uff11.2.3.4/32", "10.0.0.0/\u0668"])
def test_prefix_lengths_that_int_would_accept_are_not_taken_as_canonical(text):
    try:
        expected = str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        with pytest.raises(ParseError):
            normalize_prefixes("T", [text], "f")
    else:
        assert normalize_prefixes("T", [text], "f")[0] == (expected,)


def test_a_big_tag_loses_exactly_its_removed_prefixes():
    from watcher.prefixes import _without

    rng = random.Random(21)
    ordered = sorted({f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24" for _ in range(3000)})
    for count in (1, 2, 50, 400, 2999):
        members = set(rng.sample(ordered, count))
        assert _without(ordered, members) == [p for p in ordered if p not in members]
    assert _without(ordered, {ordered[0], ordered[-1]}) == ordered[1:-1]


def _props(**changes):
    import json

    props = {"changeNumber": 1, "region": "", "regionId": 0, "platform": "Azure", "systemService": "",
             "addressPrefixes": ["10.0.0.0/8"], **changes}
    return json.dumps(props).encode()


@pytest.mark.parametrize("data, message", [
    (b'{"changeNumber":1,"cloud":"Public","values":[{"name":"A\xff","id":"A","properties":' + _props() + b'}]}',
     "not valid JSON"),
    (b'{"changeNumber":1,"cloud":"Pub\xfflic","values":[]}', "not valid JSON"),
    # Invalid UTF-8 where the parser never looks is still an invalid file.
    (b'{"changeNumber":1,"cloud":"Public","values":[{"name":"A","id":"A","x":"\xff","properties":' + _props() + b'}]}',
     "not valid JSON"),
    (b'{"changeNumber":4294967296,"cloud":"Public","values":[]}', r"\$\.changeNumber"),
    (b'{"changeNumber":1,"cloud":"Public","values":[{"name":"A","id":"A","properties":'
     + _props(changeNumber=2**40) + b'}]}', r"tag 'A': .*changeNumber"),
])
def test_bytes_that_are_not_utf8_and_numbers_the_database_cannot_hold_are_clear_errors(data, message):
    with pytest.raises(ParseError, match=message):
        parse_bytes(data, "ServiceTags_Public_20250101.json")


# ---------------------------------------------------------------- issue 10: parse what is needed, tolerate the rest

SOURCE = "ServiceTags_Public_20250101.json"


def test_old_schema_without_region_id_and_network_features_parses_as_absent():
    parsed = parse_bytes(build_file({"Storage.EastUS": ["20.0.0.0/24"]}, schema="old"), SOURCE)
    (tag,) = parsed.tags
    assert (tag.region_id, tag.network_features) == (None, None)
    assert tag.region == "" and tag.platform == "Azure"  # present ones are kept as published
    assert tag.published_metadata == ("", None, "Azure", "Storage", None)
    assert parsed.warnings == ()


def test_future_schema_with_an_unknown_property_parses_like_the_current_one():
    current = parse_bytes(build_file({"Storage.EastUS": ["20.0.0.0/24"]}), SOURCE)
    future = parse_bytes(build_file({"Storage.EastUS": ["20.0.0.0/24"]}, schema="future"), SOURCE)
    assert future.tags[0].published_metadata == current.tags[0].published_metadata
    assert list(future.tags[0].raw_prefixes) == ["20.0.0.0/24"] and future.warnings == ()


def test_every_optional_field_may_be_absent():
    doc = {"changeNumber": 3, "cloud": "Public", "values": [
        {"name": "Storage.EastUS", "properties": {"changeNumber": 2, "addressPrefixes": ["20.0.0.0/24"]}},
    ]}
    (tag,) = parse_bytes(json.dumps(doc).encode(), SOURCE).tags
    assert (tag.name, tag.change_number, list(tag.raw_prefixes)) == ("Storage.EastUS", 2, ["20.0.0.0/24"])
    assert tag.published_metadata == (None, None, None, None, None)


@pytest.mark.parametrize("key, value", [
    ("regionId", "seven"), ("regionId", -1), ("regionId", 2**40), ("regionId", True), ("region", 5),
    ("platform", ["Azure"]), ("systemService", {"a": 1}), ("networkFeatures", "API"), ("networkFeatures", [1, 2]),
])
def test_wrong_typed_optional_metadata_is_a_warning_not_a_refusal(key, value):
    entry = tag_entry("Storage.EastUS", ["20.0.0.0/24"])
    entry["properties"][key] = value
    data = json.dumps({"changeNumber": 1, "cloud": "Public", "values": [entry]}).encode()
    parsed = parse_bytes(data, SOURCE)
    (tag,) = parsed.tags
    python_name = {"regionId": "region_id", "systemService": "system_service",
                   "networkFeatures": "network_features"}.get(key, key)
    assert getattr(tag, python_name) is None
    (warning,) = parsed.warnings
    assert warning.startswith(f"{SOURCE}: tag 'Storage.EastUS': ignored property {key!r}")


# ---------------------------------------------------------------- issue 15: the gate for names and prefixes

from tests.factory import HOSTILE_NAMES, HOSTILE_PREFIXES, nested_file  # noqa: E402
from watcher.parse import MAX_NESTING, check_tag_name, decode_document, normalize_against, parse_document  # noqa: E402


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_a_hostile_tag_name_refuses_the_file_naming_the_tag(case):
    name = HOSTILE_NAMES[case]
    data = json.dumps({"changeNumber": 1, "cloud": "Public", "values": [tag_entry(name, ["20.0.0.0/24"])]}).encode()
    with pytest.raises(ParseError) as info:
        parse_bytes(data, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: tag name ") and "refused" in message
    assert "\n" not in message and "\r" not in message and "\x00" not in message and len(message) < 400


@pytest.mark.parametrize("name", ["AzureCloud.eastus2", "Storage.EastUS2", "Sql_Internal-1.a", "A" * 200])
def test_names_real_files_use_pass_the_gate(name):
    assert check_tag_name(name, SOURCE) == name


def test_every_real_tag_name_passes_the_gate(servicetags_dir):
    for path in sorted(servicetags_dir.glob("*/*.json.gz")):
        for tag in parse_bytes(file_bytes(path), plain_name(path)).tags:
            assert check_tag_name(tag.name, path.name) == tag.name


@pytest.mark.parametrize("case", sorted(HOSTILE_PREFIXES))
def test_a_prefix_in_anything_but_plain_notation_is_refused_naming_tag_and_prefix(case):
    prefix = HOSTILE_PREFIXES[case]
    parsed = parse_bytes(build_file({"Storage.EastUS": ["20.0.0.0/24", prefix]}), SOURCE)
    with pytest.raises(ParseError, match=r"tag 'Storage.EastUS': invalid prefix .*plain IPv4 or IPv6 notation") as info:
        validate_prefixes(parsed, SOURCE)
    assert "\n" not in str(info.value)


def test_a_poisoned_prefix_a_laxer_version_stored_is_refused_when_republished():
    # ``old`` is what the store has for the tag; the string skips the parser but not the gate.
    poisoned = "fe80::%x/64"
    with pytest.raises(ParseError, match="invalid prefix"):
        normalize_against("Storage.EastUS", ["20.0.0.0/24", poisoned], SOURCE, old=sorted(["20.0.0.0/24", poisoned]))


def test_an_entry_whose_bytes_the_store_knows_is_still_checked_when_the_file_is_suspicious():
    data = build_file({"Storage.EastUS": ["fe80::%x/64"]})
    document = decode_document(data, SOURCE)
    assert document.suspicious
    from watcher.parse import entry_fingerprint
    known = {entry_fingerprint(document.entries[0]): "Storage.EastUS"}
    parsed = parse_document(document, SOURCE, sha256="0" * 64, known_entries=known)
    assert parsed.unchanged == () and [t.name for t in parsed.tags] == ["Storage.EastUS"]
    with pytest.raises(ParseError, match="invalid prefix"):
        validate_prefixes(parsed, SOURCE)


def test_real_files_are_not_suspicious_so_known_entries_stay_skipped(public_files):
    assert not decode_document(file_bytes(public_files[-1]), plain_name(public_files[-1])).suspicious


def test_names_of_unchanged_entries_pass_the_gate_too():
    data = build_file({"Storage.EastUS": ["20.0.0.0/24"]})
    document = decode_document(data, SOURCE)
    from watcher.parse import entry_fingerprint
    # A store written by an older version may know an entry under a name today's gate refuses.
    known = {entry_fingerprint(document.entries[0]): "A" * 5000}
    with pytest.raises(ParseError, match="longer than 200 characters"):
        parse_document(document, SOURCE, sha256="0" * 64, known_entries=known)


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(depth):
    with pytest.raises(ParseError, match=f"{SOURCE}: JSON nested .* levels deep"):
        parse_bytes(nested_file(depth), SOURCE)


def test_moderate_nesting_in_an_unknown_property_is_tolerated():
    assert parse_bytes(nested_file(10), SOURCE).tags[0].name == "Storage.EastUS"
    # Also on the slow path, which a wrong-typed optional property takes.
    data = nested_file(MAX_NESTING - 5).replace(b'"regionId": 0', b'"regionId": "x"')
    assert parse_bytes(data, SOURCE).warnings


def test_read_file_bytes_stops_a_gzip_bomb_at_the_cap(tmp_path):
    bomb = tmp_path / "ServiceTags_Public_20250101.json.gz"
    bomb.write_bytes(gzip.compress(b" " * (8 * 1024 * 1024)))
    with pytest.raises(ParseError, match="inflates to more than 1048576 bytes"):
        read_file_bytes(bomb, max_bytes=1024 * 1024)
    plain = tmp_path / "ServiceTags_Public_20250102.json"
    plain.write_bytes(b" " * (2 * 1024 * 1024))
    with pytest.raises(ParseError, match="larger than 1048576 bytes"):
        read_file_bytes(plain, max_bytes=1024 * 1024)
    assert len(read_file_bytes(bomb)) == 8 * 1024 * 1024


@pytest.mark.parametrize("names", [["A", ""], ["", "A"], [""], ["A\nB"], ["A", "B\n"], ["A" * 201], ["Stor\u0430ge"]])
def test_the_many_names_gate_refuses_what_the_one_name_gate_refuses(names):
    from watcher.parse import check_tag_names

    with pytest.raises(ParseError, match="refused"):
        check_tag_names(names, SOURCE)


def test_the_prefix_text_gate_passes_every_real_prefix_and_refuses_non_ascii(public_files):
    from watcher.prefixes import check_prefix_text, plain_prefix_text

    parsed = parse_bytes(file_bytes(public_files[-1]), plain_name(public_files[-1]))
    assert all(plain_prefix_text(t.raw_prefixes) for t in parsed.tags)
    with pytest.raises(ParseError, match="invalid prefix"):
        check_prefix_text("A", ["10.0.0.0/24", "１0.0.0.0/24"], SOURCE)  # a full-width digit


def test_ipv4_canonical_check_refuses_what_inet_ntop_would_write_differently():
    from watcher import prefixes

    good, other = prefixes._canonical_prefixes(
        ["10.0.0.0/8", "010.0.0.0/8", "10.0.0.1/8", "10.00.0.0/16", "10.0.0.0/08", "1.2.3/24", "256.0.0.0/8"])
    assert good == ["10.0.0.0/8"]
    assert sorted(other) == sorted(["010.0.0.0/8", "10.0.0.1/8", "10.00.0.0/16", "10.0.0.0/08", "1.2.3/24",
                                    "256.0.0.0/8"])


# ---------------------------------------------------------------- entries decoded ahead (a backfill's reading thread)


def test_entries_decoded_ahead_parse_as_entries_decoded_in_place_whatever_the_guess():
    from watcher.parse import decoded_ahead, entry_fingerprint

    good = tag_entry("Storage.EastUS", ["20.0.0.0/24"])
    kept = tag_entry("Sql.WestUS", ["20.1.0.0/24"])
    odd = tag_entry("AppService", ["20.2.0.0/24"], platform=7)  # a wrong-typed property: a warning, not a refusal
    data = json.dumps({"changeNumber": 3, "cloud": "Public", "values": [good, kept, odd]}).encode()
    document = decode_document(data, SOURCE)
    known = {entry_fingerprint(document.entries[1]): "Sql.WestUS"}
    in_place = parse_document(document, SOURCE, sha256="0" * 64, known_entries=known)
    for guess in (set(), set(known), {entry_fingerprint(e) for e in document.entries}):  # too few, right, too many
        ahead = decoded_ahead(document, guess)
        assert parse_document(ahead, SOURCE, sha256="0" * 64, known_entries=known) == in_place
    assert in_place.unchanged == ("Sql.WestUS",) and len(in_place.warnings) == 1


def test_an_entry_decoded_ahead_is_still_refused_by_the_parser():
    from watcher.parse import decoded_ahead

    data = json.dumps({"changeNumber": 3, "cloud": "Public",
                       "values": [tag_entry("Storage.EastUS", ["20.0.0.0/24"], 2**31)]}).encode()
    document = decoded_ahead(decode_document(data, SOURCE), set())
    assert document.decoded == {}
    with pytest.raises(ParseError, match="Storage.EastUS"):
        parse_document(document, SOURCE, sha256="0" * 64)
