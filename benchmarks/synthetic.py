"""A long synthetic history derived from a real file by realistic weekly churn.

``Generator(document, ...)`` starts from one real service-tag file (already
decoded) and yields one file a week: week 0 is the real content, each later
week applies churn drawn from a seeded RNG, calibrated on the real Public
weeks of 2025 (a median of ~30 changed tags and a few hundred prefixes added
and removed a week, with quiet weeks and occasional large ones):

* prefixes **added** to a tag go into its aggregates too (``Storage.EastUS2``
  -> ``Storage``, ``AzureCloud.eastus2``, ``AzureCloud``), from address pools
  the real files do not use (10/8 and other private blocks, fd00::/8);
* prefixes **removed**, **split** (a /23 -> its two /24s) and **merged** (two
  siblings -> their parent) change every tag holding them;
* **new regions**: every few months, the regional tags of an existing region
  are cloned under a new region name with fresh prefixes; now and then a
  regional tag is **withdrawn**;
* each changed tag's ``changeNumber`` goes up by one and the file's global
  ``changeNumber`` goes up every week (a week may change nothing else);
* some weeks change only a tag's ``networkFeatures`` (its number goes up,
  its prefixes stay), as many real weeks since 2020-08-27 do.

``busy_weeks`` makes the first weeks of the history like the real 2019–2021
ones instead (``BUSY_FACTOR`` times the churn, as measured on the Public
archive: the whole archive imported at 3.6x json.loads where its 2025 weeks
alone took 1.5x, so the older weeks' churn costs about six times 2025's):
some changed tags keep their ``changeNumber``, and in the middle of the busy
era one week resets every tag's number to a lower value while it also
changes prefixes (as in 2020). ``like_the_archive(weeks)`` gives the options
that shape a history like the real one: busy for its first 80%, written in the
old layout for its first 36% (2019-01 to 2020-08-27 of 2019–2025).

``schema`` chooses the layout the files are written in: ``current``; ``old``,
Microsoft's layout before 2020-08-27 (no ``regionId`` and no
``networkFeatures``); or ``future``, with a property the watcher does not know
(as when Microsoft adds one). ``old_schema_until`` writes the weeks before that
date in the old layout and the rest in ``schema``, as the real history is.

Files are produced one at a time in memory (only the current state is kept).
``python -m benchmarks.synthetic --out DIR`` writes them to a directory
outside the repository instead.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import ipaddress
import math
import random
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

FILE_CLOUD = {"public": "Public", "usgov": "AzureGovernment", "china": "China"}
AGGREGATE = "AzureCloud"

# Prefix lengths of new prefixes, weighted like the real Public file of 2025-10-28.
V4_LENGTHS = [(32, 149), (28, 77), (24, 77), (27, 77), (29, 75), (26, 56), (30, 37), (31, 32), (23, 31), (25, 28),
              (22, 10), (21, 6), (20, 5)]
V6_LENGTHS = [(123, 40), (121, 32), (122, 30), (125, 28), (64, 21), (124, 19), (48, 14), (128, 9), (63, 8),
              (120, 8), (56, 6), (62, 5)]
V4_POOLS = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "198.18.0.0/15"]
V6_POOLS = ["fd00::/8"]

SCHEMAS = ("old", "current", "future")
#: The properties Microsoft added on 2020-08-27.
NEWER_PROPERTIES = ("regionId", "networkFeatures")
#: What a future file carries that no version of the watcher knows.
FUTURE_PROPERTY = ("serviceEndpoints", {"kind": "preview", "ports": [443]})

#: How many times 2025's churn a week of the busy era (2019–2021) carries.
BUSY_FACTOR = 6.0
#: In a busy week, the share of changed tags that keep their changeNumber.
STICKY_SHARE = 0.15
#: The networkFeatures a tag may list.
NETWORK_FEATURES = ("API", "NSG", "UDR", "FW", "VSE")

#: Operation weights of a churn event on one tag.
OPERATIONS = [("add", 35), ("remove", 35), ("split", 15), ("merge", 15)]
#: In the busy era: more removals, so that six times the churn grows the file about as fast as a 2025 week does
#: (~+180 against ~+130 prefix entries a week; the real file grew, it did not double).
BUSY_OPERATIONS = [("add", 20), ("remove", 50), ("split", 15), ("merge", 15)]


@dataclass(frozen=True)
class SyntheticFile:
    cloud: str
    week: int
    date: dt.date
    name: str
    data: bytes
    changed_tags: int
    added: int      # (tag, prefix) pairs added this week
    removed: int    # (tag, prefix) pairs removed this week
    new_tags: int
    withdrawn: int
    kept_numbers: int = 0     # changed tags whose changeNumber stayed
    renumbered: bool = False  # every tag's changeNumber was reset to a lower value


class _Allocator:
    """Hands out aligned, never-used prefixes from the pools, in order."""

    def __init__(self, pools: list[str], taken: set[str]) -> None:
        self.pools = [ipaddress.ip_network(p) for p in pools]
        self.index = 0
        self.cursor = int(self.pools[0].network_address)
        self.taken = taken

    def take(self, length: int) -> str:
        while True:
            pool = self.pools[self.index]
            size = 1 << (pool.max_prefixlen - length)
            start = -(-self.cursor // size) * size
            if start + size - 1 > int(pool.broadcast_address):
                self.index += 1
                if self.index == len(self.pools):
                    raise RuntimeError("synthetic address pools exhausted")
                self.cursor = int(self.pools[self.index].network_address)
                continue
            self.cursor = start + size
            prefix = str(ipaddress.ip_network((start, length)))
            if prefix not in self.taken:
                return prefix


def _sort_key(prefix: str) -> tuple[bool, bytes, int]:
    addr, _, bits = prefix.partition("/")
    v6 = ":" in addr
    return v6, socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr), int(bits)


class Generator:
    """Weekly files of one cloud, from a real decoded file, deterministic for a seed."""

    def __init__(
        self, document: dict[str, Any], cloud: str, start: dt.date, seed: int = 1, schema: str = "current",
        old_schema_until: dt.date | None = None, busy_weeks: int = 0,
    ) -> None:
        if schema not in SCHEMAS:
            raise ValueError(f"unknown schema {schema!r} (known: {', '.join(SCHEMAS)})")
        self.schema = schema
        self.old_schema_until = old_schema_until
        self.cloud = cloud
        self.start = start
        self.rng = random.Random(f"{seed}-{cloud}")
        self.change_number = int(document["changeNumber"])
        self.cloud_name = document["cloud"]
        self.order: list[str] = []
        self.entries: dict[str, dict[str, Any]] = {}
        self.prefixes: dict[str, set[str]] = {}
        self.index: dict[str, set[str]] = {}
        for entry in document["values"]:
            name = entry["name"]
            self.order.append(name)
            self.entries[name] = {"name": name, "id": entry["id"], "properties": dict(entry["properties"])}
            self.prefixes[name] = set(entry["properties"]["addressPrefixes"])
            for prefix in self.prefixes[name]:
                self.index.setdefault(prefix, set()).add(name)
        # Weekly churn scales with the cloud's size (Public has ~3,000 tags).
        self.scale = len(self.order) / 3000
        taken = set(self.index)
        self.v4 = _Allocator(V4_POOLS, taken)
        self.v6 = _Allocator(V6_POOLS, taken)
        self.regions = 0
        self.region_ids = max((int(e["properties"].get("regionId", 0)) for e in self.entries.values()), default=0)
        self.busy_weeks = busy_weeks
        self._changed: set[str] = set()
        self._sticky: set[str] = set()       # changed this week, number kept
        self._renumber = False               # this week resets every tag's number
        self._added = self._removed = self._new = self._withdrawn = 0

    # ------------------------------------------------------------ state changes

    def _add(self, name: str, prefix: str) -> None:
        if prefix not in self.prefixes[name]:
            self.prefixes[name].add(prefix)
            self.index.setdefault(prefix, set()).add(name)
            self._changed.add(name)
            self._added += 1

    def _remove(self, name: str, prefix: str) -> None:
        if prefix in self.prefixes[name]:
            self.prefixes[name].discard(prefix)
            holders = self.index.get(prefix)
            if holders is not None:
                holders.discard(name)
                if not holders:
                    del self.index[prefix]
            self._changed.add(name)
            self._removed += 1

    def _parents(self, name: str) -> list[str]:
        parents = []
        if "." in name:
            service = name.split(".", 1)[0]
            if service in self.entries and service != name:
                parents.append(service)
        region = self.entries[name]["properties"].get("region") or ""
        regional = f"{AGGREGATE}.{region}"
        if region and regional in self.entries and regional != name:
            parents.append(regional)
        if AGGREGATE in self.entries and name != AGGREGATE:
            parents.append(AGGREGATE)
        return parents

    def _new_prefix(self) -> str:
        if self.rng.random() < 0.7:
            lengths, allocator = V4_LENGTHS, self.v4
        else:
            lengths, allocator = V6_LENGTHS, self.v6
        length = self.rng.choices([n for n, _ in lengths], [w for _, w in lengths])[0]
        return allocator.take(length)

    def _count(self, mean: float, cap: int) -> int:
        return min(cap, 1 + int(self.rng.expovariate(1 / mean)))

    # ------------------------------------------------------------ operations

    def _op_add(self, name: str) -> None:
        targets = [name, *self._parents(name)]
        for _ in range(self._count(4, 40)):
            prefix = self._new_prefix()
            for target in targets:
                self._add(target, prefix)

    def _op_remove(self, name: str) -> None:
        have = sorted(self.prefixes[name])
        count = min(self._count(6, 40), len(have) - 1)  # a tag keeps at least one prefix
        for prefix in self.rng.sample(have, max(0, count)):
            for holder in sorted(self.index.get(prefix, ())):
                self._remove(holder, prefix)

    def _op_split(self, name: str) -> None:
        candidates = [p for p in sorted(self.prefixes[name])
                      if int(p.rsplit("/", 1)[1]) < (28 if ":" not in p else 124)]
        if not candidates:
            return self._op_add(name)
        prefix = self.rng.choice(candidates)
        halves = [str(n) for n in ipaddress.ip_network(prefix).subnets()]
        for holder in sorted(self.index.get(prefix, ())):
            self._remove(holder, prefix)
            for half in halves:
                self._add(holder, half)

    def _op_merge(self, name: str) -> None:
        have = self.prefixes[name]
        pairs = []
        for prefix in sorted(have):
            network = ipaddress.ip_network(prefix)
            if network.prefixlen == 0:
                continue
            parent = network.supernet()
            low, high = parent.subnets()
            if network == low and str(high) in have:
                pairs.append((str(low), str(high), str(parent)))
        if not pairs:
            return self._op_split(name)
        low, high, parent = self.rng.choice(pairs)
        for holder in sorted(self.index.get(low, set()) & self.index.get(high, set())):
            self._remove(holder, low)
            self._remove(holder, high)
            self._add(holder, parent)

    def _new_region(self) -> None:
        """Clone the regional tags of an existing region under a new region name."""
        regions: dict[str, list[str]] = {}
        for name in self.order:
            region = self.entries[name]["properties"].get("region") or ""
            if region and "." in name:
                regions.setdefault(region, []).append(name)
        if not regions:
            return
        template = self.rng.choice(sorted(r for r, names in regions.items() if len(names) >= 5) or sorted(regions))
        self.regions += 1
        self.region_ids += 1
        region = f"synthregion{self.regions}"
        created = []
        # The region's AzureCloud tag first, so the service tags aggregate into it.
        for name in sorted(regions[template], key=lambda n: not n.startswith(f"{AGGREGATE}.")):
            base = name.rsplit(".", 1)[0]
            new_name = f"{base}.{region if base == AGGREGATE else region.replace('synth', 'Synth').replace('region', 'Region')}"
            if new_name in self.entries:
                continue
            properties = dict(self.entries[name]["properties"])
            properties.update(changeNumber=1, region=region, regionId=self.region_ids, addressPrefixes=[])
            self.entries[new_name] = {"name": new_name, "id": new_name, "properties": properties}
            self.prefixes[new_name] = set()
            self.order.append(new_name)
            created.append(new_name)
            self._new += 1
        for name in created:
            if not name.startswith(f"{AGGREGATE}."):
                for _ in range(self._count(2, 8)):
                    prefix = self._new_prefix()
                    for target in [name, *self._parents(name)]:
                        self._add(target, prefix)

    def _withdraw(self) -> None:
        leaves = [n for n in self.order if "." in n and not n.startswith(f"{AGGREGATE}.")]
        for name in self.rng.sample(leaves, min(len(leaves), self.rng.randint(1, 2))):
            for prefix in list(self.prefixes[name]):
                holders = self.index.get(prefix)
                if holders is not None:
                    holders.discard(name)
                    if not holders:
                        del self.index[prefix]
            self.order.remove(name)
            del self.entries[name], self.prefixes[name]
            self._changed.discard(name)
            self._withdrawn += 1

    def _features(self) -> None:
        """Change only some tags' networkFeatures (their prefixes stay)."""
        having = [n for n in self.order if "networkFeatures" in self.entries[n]["properties"]]
        for name in self.rng.sample(having, min(len(having), self._count(3 * self.scale + 0.5, 20))):
            properties = self.entries[name]["properties"]
            features = set(properties["networkFeatures"] or ())
            features ^= {self.rng.choice(NETWORK_FEATURES)}
            properties["networkFeatures"] = sorted(features)
            self._changed.add(name)

    def _churn(self, week: int) -> None:
        self.change_number += 1
        busy = week < self.busy_weeks
        if busy and week == self.busy_weeks // 2:
            self._renumber = True  # as in 2020: every tag's number goes down, in a week that changes prefixes too
        elif self.rng.random() < 0.08:
            return  # a quiet week: only the file's changeNumber moves
        if self.rng.random() < 0.3:
            self._features()
        if self.rng.random() < (0.08 if self.scale >= 0.5 else 0.01):
            self._new_region()
        if self.rng.random() < 0.03:
            self._withdraw()
        events = max(1, round(self.rng.lognormvariate(math.log(14 * self.scale + 0.5), 0.8)
                              * (BUSY_FACTOR if busy else 1)))
        candidates = [n for n in self.order if n != AGGREGATE and not n.startswith(f"{AGGREGATE}.")]
        operations = {"add": self._op_add, "remove": self._op_remove, "split": self._op_split,
                      "merge": self._op_merge}
        for _ in range(events):
            name = self.rng.choice(candidates)
            weights = BUSY_OPERATIONS if busy else OPERATIONS
            kind = self.rng.choices([k for k, _ in weights], [w for _, w in weights])[0]
            operations[kind](name)
        if busy:
            self._sticky = {n for n in sorted(self._changed) if self.rng.random() < STICKY_SHARE}

    # ------------------------------------------------------------ output

    def _layout(self, date: dt.date) -> str:
        return "old" if self.old_schema_until is not None and date < self.old_schema_until else self.schema

    def _entries(self, layout: str) -> list[dict[str, Any]]:
        entries = [self.entries[n] for n in self.order]
        if layout == "current":
            return entries
        key, value = FUTURE_PROPERTY
        written = []
        for entry in entries:
            properties = dict(entry["properties"])
            if layout == "old":
                for name in NEWER_PROPERTIES:
                    properties.pop(name, None)
            else:
                properties[key] = value
            written.append({**entry, "properties": properties})
        return written

    def _document(self, created: set[str], layout: str = "current") -> bytes:
        for name in self._changed:
            entry = self.entries.get(name)
            if entry is None:
                continue
            properties = entry["properties"]
            properties["addressPrefixes"] = sorted(self.prefixes[name], key=_sort_key)
            if name not in created and name not in self._sticky:
                properties["changeNumber"] = int(properties["changeNumber"]) + 1
        if self._renumber:
            for name in self.order:
                self.entries[name]["properties"]["changeNumber"] = 1 + self.rng.randrange(3)
        document = {"changeNumber": self.change_number, "cloud": self.cloud_name, "values": self._entries(layout)}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    def weeks(self, count: int) -> Iterator[SyntheticFile]:
        for week in range(count):
            self._changed, self._added, self._removed, self._new, self._withdrawn = set(), 0, 0, 0, 0
            self._sticky, self._renumber = set(), False
            before = set(self.entries)
            if week:
                self._churn(week)
            created = set(self.entries) - before
            date = self.start + dt.timedelta(weeks=week)
            data = self._document(created, self._layout(date))
            yield SyntheticFile(
                cloud=self.cloud, week=week, date=date,
                name=f"ServiceTags_{FILE_CLOUD[self.cloud]}_{date:%Y%m%d}.json", data=data,
                changed_tags=len(self._changed - created), added=self._added, removed=self._removed,
                new_tags=self._new, withdrawn=self._withdrawn, kept_numbers=len(self._sticky),
                renumbered=self._renumber,
            )


def like_the_archive(start: dt.date, weeks: int) -> dict[str, Any]:
    """Generator options shaping ``weeks`` like the real 2019–2025 Public history: busy for its first 80%,
    written in the old layout (no regionId, no networkFeatures) for its first 36%."""
    return {"busy_weeks": round(weeks * 0.8), "old_schema_until": start + dt.timedelta(weeks=round(weeks * 0.36))}


def _write(args: argparse.Namespace) -> int:
    from .common import DEFAULT_DATA, REPO, read_files

    out = Path(args.out).resolve()
    if out == REPO or REPO in out.parents:
        print(f"refusing to write synthetic files inside the repository ({out})", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for cloud in args.clouds.split(","):
        base = read_files(Path(args.data) / cloud)[-1] if args.data else read_files(DEFAULT_DATA / cloud)[-1]
        start = dt.datetime.strptime(base.date, "%Y%m%d").date()
        old_until = dt.datetime.strptime(args.old_schema_until, "%Y%m%d").date() if args.old_schema_until else None
        shape = like_the_archive(start, args.weeks) if args.like_the_archive else {"old_schema_until": old_until}
        generator = Generator(orjson.loads(base.data), cloud, start, args.seed, args.schema, **shape)
        for file in generator.weeks(args.weeks):
            (out / f"{file.name}.gz").write_bytes(gzip.compress(file.data, 6))
            print(f"{file.name}: {file.changed_tags} tags changed ({file.kept_numbers} kept their number"
                  f"{', all renumbered' if file.renumbered else ''}), +{file.added} -{file.removed} prefixes, "
                  f"{file.new_tags} new, {file.withdrawn} withdrawn")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the .json.gz files to (not in the repo)")
    parser.add_argument("--weeks", type=int, default=260)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clouds", default="public,usgov,china")
    parser.add_argument("--data", default=None, help="folder with public/ usgov/ china/ real files")
    parser.add_argument("--schema", choices=SCHEMAS, default="current",
                        help="file layout: old (before 2020-08-27), current, or future (an unknown property)")
    parser.add_argument("--old-schema-until", default=None, metavar="YYYYMMDD",
                        help="write the weeks before this date in the old layout")
    parser.add_argument("--like-the-archive", action="store_true",
                        help="busy 2019–2021-like churn for the first 80%% of weeks, old layout for the first 36%%")
    return _write(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
