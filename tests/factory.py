"""Small hand-made service-tag files, shaped like Microsoft's, for anomaly tests."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

FILE_CLOUD = {"public": "Public", "usgov": "AzureGovernment", "china": "China", "germany": "AzureGermany"}


#: The file layouts Microsoft has published: ``old`` before 2020-08-27 (no ``regionId`` and no
#: ``networkFeatures``), ``current``, and a ``future`` one with a property the watcher does not know.
SCHEMAS = ("old", "current", "future")


def tag_entry(
    name: str, prefixes: Sequence[str], change_number: int = 1, region: str = "", schema: str = "current", **props: Any
) -> dict:
    properties = {
        "changeNumber": change_number,
        "region": region,
        "regionId": props.get("regionId", 0),
        "platform": props.get("platform", "Azure"),
        "systemService": props.get("systemService", name.split(".")[0]),
        "addressPrefixes": list(prefixes),
        "networkFeatures": props.get("networkFeatures", ["API", "NSG"]),
    }
    if schema == "old":
        del properties["regionId"], properties["networkFeatures"]
    elif schema == "future":
        properties["serviceEndpoints"] = {"kind": "preview", "ports": [443, 80]}
    return {"name": name, "id": name, "properties": properties}


def build_file(
    tags: Mapping[str, Sequence[str] | tuple[int, Sequence[str]]],
    change_number: int = 1,
    cloud: str = "public",
    crlf: bool = False,
    bom: bool = False,
    schema: str = "current",
) -> bytes:
    """A file's bytes; ``tags`` maps a name to prefixes or to (changeNumber, prefixes)."""
    values = []
    for name, spec in tags.items():
        number, prefixes = spec if isinstance(spec, tuple) else (1, spec)
        values.append(tag_entry(name, prefixes, number, schema=schema))
    text = json.dumps({"changeNumber": change_number, "cloud": FILE_CLOUD[cloud], "values": values}, indent=2)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = text.encode()
    return (b"\xef\xbb\xbf" + data) if bom else data


def file_name(date: str, cloud: str = "public") -> str:
    return f"ServiceTags_{FILE_CLOUD[cloud]}_{date}.json"


# ---------------------------------------------------------------- hostile files

#: Tag names an attacker who controls the file would try: each must refuse the file.
HOSTILE_NAMES = {
    "newline and command": "Inject\ntouch PWNED_TAG;#",
    "carriage return": "Storage\rEastUS",
    "NUL": "Storage\x00",
    "space": "Storage EastUS",
    "quote": "Storage\"EastUS",
    "markup": "<script>alert(1)</script>",
    "shell": "$(reboot)",
    "non-ASCII letter": "Stor\u0430ge",  # a Cyrillic a
    "5 MB": "A" * 5_000_000,
    "201 characters": "A" * 201,
    "empty": "",
}

#: Prefixes in anything but plain notation: each must refuse the file.
HOSTILE_PREFIXES = {
    "scope id and newline": "fe80::%x\ntouch PWNED_PREFIX;#/64",
    "scope id": "fe80::%eth0/64",
    "leading space": " 10.0.0.0/24",
    "trailing newline": "10.0.0.0/24\n",
    "tab inside": "10.0.0.0\t/24",
    "NUL": "10.0.0.0/24\x00",
}


def nested_file(depth: int) -> bytes:
    """A file whose one tag carries an unknown property nested ``depth`` arrays deep."""
    doc = {"changeNumber": 1, "cloud": "Public", "values": [tag_entry("Storage.EastUS", ["20.0.0.0/24"])]}
    text = json.dumps(doc)
    return text.replace('"properties": {', '"properties": {"deep": ' + "[" * depth + "]" * depth + ", ", 1).encode()
