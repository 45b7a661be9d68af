"""Store stage: record publications and keep every tag's history as change.

The package's modules, by job:

* ``records``: the value types (``PublicationInfo``, ``ImportResult``, ...), no SQL;
* ``sql``: driver-level bulk reads and writes, COPY, packing of prefix sets;
* ``packing``: prefix sets stored as deltas against their tag's previous content, and read back;
* ``versions``: the version view (which version of each tag held at a day) and the entry manifest;
* ``planner``: what an import writes, as a pure function of what it read;
* ``importer``: placing a file among the publications, reading the planner's inputs, writing the plan;
* ``queries``: reading the history back (publications, history, snapshot, look-up, diff).

``from watcher import store`` gives the public names of all of them.
"""
from __future__ import annotations

from .importer import Sha256, build_span_index, date_from_source, drop_span_index, import_bytes, lock_cloud
from .queries import (
    all_publications, changed_tag_names, entries_since, lookup_all_time, resolve_at, containing_networks, diff_publications, history, lookup, parse_publication_ref,
    present_tag_names, publication_by_day, publications, resolve_publication, snapshot, tag_ids, tag_name,
    tag_states,
)
from .records import (
    EMPTY_HASH, METADATA_NAMES, AddressHolder, NO_METADATA, HistoryEntry, ImportHook, ImportResult, LookupHit, MissedPublications,
    PublicationInfo, ResolvedPublication, TagChange, TagSnapshot, VersionInfo, absent_version, missed_gaps, publication_from_row,
)
from .packing import forget_texts, load_texts, prefix_lists_kept
from .sql import pack, unpack
from .versions import Versions, load_contents, versions_at, versions_before

__all__ = [
    "EMPTY_HASH", "METADATA_NAMES", "Sha256", "MissedPublications", "missed_gaps", "NO_METADATA", "HistoryEntry", "ImportHook", "ImportResult", "LookupHit", "PublicationInfo",
    "TagChange", "TagSnapshot", "all_publications", "entries_since", "resolve_at", "lookup_all_time", "AddressHolder", "ResolvedPublication", "VersionInfo", "Versions", "absent_version", "changed_tag_names",
    "containing_networks", "date_from_source", "diff_publications", "history", "import_bytes", "load_contents",
    "forget_texts", "load_texts", "lock_cloud", "prefix_lists_kept", "build_span_index", "drop_span_index",
    "lookup", "pack", "parse_publication_ref", "present_tag_names", "publication_by_day", "publication_from_row",
    "publications", "resolve_publication", "snapshot", "tag_ids", "tag_name", "tag_states", "unpack",
    "versions_at", "versions_before",
]
