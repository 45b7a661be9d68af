"""Small hand-made service-tag files, shaped like Microsoft's, for anomaly tests."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

FILE_CLOUD = {"public": "Public", "usgov": "AzureGovernment", "china": "China", "germany": "AzureGermany"}


def tag_entry(name: str, prefixes: Sequence[str], change_number: int = 1, region: str = "", **props: Any) -> dict:
    return {
        "name": name,
        "id": name,
        "properties": {
            "changeNumber": change_number,
            "region": region,
            "regionId": props.get("regionId", 0),
            "platform": props.get("platform", "Azure"),
            "systemService": props.get("systemService", name.split(".")[0]),
            "addressPrefixes": list(prefixes),
            "networkFeatures": props.get("networkFeatures", ["API", "NSG"]),
        },
    }


def build_file(
    tags: Mapping[str, Sequence[str] | tuple[int, Sequence[str]]],
    change_number: int = 1,
    cloud: str = "public",
    crlf: bool = False,
    bom: bool = False,
) -> bytes:
    """A file's bytes; ``tags`` maps a name to prefixes or to (changeNumber, prefixes)."""
    values = []
    for name, spec in tags.items():
        number, prefixes = spec if isinstance(spec, tuple) else (1, spec)
        values.append(tag_entry(name, prefixes, number))
    text = json.dumps({"changeNumber": change_number, "cloud": FILE_CLOUD[cloud], "values": values}, indent=2)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = text.encode()
    return (b"\xef\xbb\xbf" + data) if bom else data


def file_name(date: str, cloud: str = "public") -> str:
    return f"ServiceTags_{FILE_CLOUD[cloud]}_{date}.json"
