"""Feeds: the files firewalls pull, made from a watch's effective approved state at a time.

One watch's feed set (its name: the registry, ``mcr`` or ``extra-tags``,
plus ``-<cloud>`` outside the public cloud)::

    <name>.txt                every CIDR the firewall must allow now, one per line, LF
    <name>/v4.txt, v6.txt     one address family
    <name>/<tag>.txt          one service tag
    <name>.checkpoint.json    Check Point Generic Data Center JSON (an object for the watch and one per tag)
    <name>.json               the object of ``watcher state show --json``
    <file>.md5                the MD5 of each file above (Cisco FMC polls it)

Bodies are pure functions of the approved state, the state before it and the
time (``build``): the same on every replica and in the static export, so a
body's strong ETag (a hash of its bytes) is the same wherever it is served.
``Last-Modified`` is when the effective list took its present form: the
approval, or the removal date once it has passed.

Per tag, the first phase serves the tag's old and new prefixes together
(the previous approved state's tag ∪ this one's), as the watch's list does.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from . import jsontext, state as states
from .errors import NotFoundError, StoreError, WatcherError
from .models import ApprovedState as ApprovedStateRow
from .settings import Settings
from .watches import EXTRA_WATCH, resolve_watches

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
#: Tag names that may become a file name (Microsoft's are letters, digits and dots).
_TAG_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
_ID_NAMESPACE = uuid.UUID("1b0e2c4e-9a1d-4f2e-8f6a-5d7c3b2a1f00")
MAP_FILE = "nginx-etags.map"


def feed_name(cloud: str, watch: str) -> str:
    """The name of a watch's feeds in URLs and file names (``-`` never occurs in a registry name)."""
    slug = "extra-tags" if watch == EXTRA_WATCH else re.sub(r"[^a-z0-9]+", "", watch.lower())
    return slug if cloud == "public" else f"{slug}-{cloud}"


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class FeedFile:
    path: str                 # relative to the feeds root: "myreg.txt", "myreg/v4.txt", "myreg.txt.md5"
    body: bytes
    content_type: str
    entries: int | None = None  # CIDRs in a list; None for JSON and .md5 files
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", strong_etag(self.body))


@dataclass(frozen=True)
class FeedSet:
    """Every feed file of one watch at one time, and where its lists came from."""

    name: str
    cloud: str
    watch: str
    state_id: int
    ticket_id: int
    complete: bool            # the final phase: the removals are done (or there were none to wait for)
    last_modified: dt.datetime
    publication: Mapping[str, Any]
    removals_at: dt.datetime | None
    files: Mapping[str, FeedFile]

    def describe(self) -> list[str]:
        """The ``#`` header lines of a plain-text list (no time of serving: the body must stay stable)."""
        phase = ("final list" if self.complete else
                 f"first phase: old and new lists until {self.removals_at.isoformat()}")
        return [f"# watcher feed {self.name}: approved state of {self.watch} ({self.cloud}), ticket {self.ticket_id}",
                f"# publication {self.publication['date']} (changeNumber {self.publication['change_number']}); "
                f"{phase}"]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cloud": self.cloud, "watch": self.watch, "state": self.state_id,
                "ticket": self.ticket_id, "complete": self.complete, "last_modified": self.last_modified.isoformat(),
                "files": {p: f.etag for p, f in sorted(self.files.items())}}


def _list_file(path: str, cidrs: list[str]) -> FeedFile:
    return FeedFile(path, "".join(f"{c}\n" for c in cidrs).encode(), TEXT, len(cidrs))


def with_header(feed: FeedSet, file: FeedFile) -> FeedFile:
    """A plain-text list with its ``#`` header (for pollers that accept comments); other files unchanged."""
    if file.entries is None:
        return file
    lines = feed.describe() + [f"# entries: {file.entries}" + (" (the approved list is empty)" if not file.entries
                                                                else "")]
    return FeedFile(file.path, ("\n".join(lines) + "\n").encode() + file.body, TEXT, file.entries)


def _md5(file: FeedFile) -> FeedFile:
    return FeedFile(file.path + ".md5", (hashlib.md5(file.body).hexdigest() + "\n").encode(), TEXT)


def tag_lists(state: states.ApprovedState, previous: states.ApprovedState | None,
              complete: bool) -> dict[str, list[str]]:
    """Per tag, the collapsed CIDRs to allow: during the first phase the previous state's tag prefixes too."""
    tags = {name: set(t.prefixes) for name, t in state.tags.items()}
    if not complete and previous is not None:
        for name, t in previous.tags.items():
            tags.setdefault(name, set()).update(t.prefixes)
    lists = {}
    for name, prefixes in sorted(tags.items()):
        families = states.family_lists(prefixes)
        lists[name] = families["v4"] + families["v6"]
    return lists


def build(state: states.ApprovedState, previous: states.ApprovedState | None, at: dt.datetime) -> FeedSet:
    """Every feed file of ``state``'s watch at ``at`` (``previous``: the approved state before it, if any)."""
    at = states.as_utc(at)
    complete = state.removals_at is None or at >= state.removals_at
    changed = state.removals_at if state.removals_at is not None and complete else state.approved_at
    name = feed_name(state.cloud, state.watch)
    effective = state.effective(at)
    per_tag = tag_lists(state, previous, complete)
    files = [_list_file(f"{name}.txt", effective["v4"] + effective["v6"]),
             _list_file(f"{name}/v4.txt", effective["v4"]), _list_file(f"{name}/v6.txt", effective["v6"])]
    files += [_list_file(f"{name}/{tag}.txt", cidrs) for tag, cidrs in per_tag.items() if _TAG_FILE.fullmatch(tag)]
    where = f"{state.watch} ({state.cloud}), ticket {state.ticket_id}, publication {state.publication['date']}"
    objects = [{"name": name, "id": str(uuid.uuid5(_ID_NAMESPACE, name)),
                "description": f"every address the firewall must allow for {where}",
                "ranges": effective["v4"] + effective["v6"]}]
    objects += [{"name": f"{name}.{tag}", "id": str(uuid.uuid5(_ID_NAMESPACE, f"{name}/{tag}")),
                 "description": f"service tag {tag} of {where}", "ranges": cidrs} for tag, cidrs in per_tag.items()]
    checkpoint = {"version": "1.0", "description": f"watcher: the approved allow-list of {where}",
                  "objects": objects}
    files.append(FeedFile(f"{name}.checkpoint.json", (jsontext.dumps(checkpoint) + "\n").encode(), JSON))
    # Byte for byte what `watcher state show --json` prints.
    files.append(FeedFile(f"{name}.json", (jsontext.dumps(state.to_json(at)) + "\n").encode(),
                          JSON))
    files += [_md5(f) for f in list(files)]
    return FeedSet(name=name, cloud=state.cloud, watch=state.watch, state_id=state.id, ticket_id=state.ticket_id,
                   complete=complete, last_modified=changed.replace(microsecond=0), publication=state.publication,
                   removals_at=state.removals_at, files={f.path: f for f in files})


def clock(settings: Settings, fallback: Callable[[], dt.datetime]) -> Callable[[], dt.datetime]:
    """The feeds' clock: ``fallback``, unless ``[feeds] clock_file`` (tests only) names a file holding an ISO
    time, read at every call so a test moves a running server through the phases."""
    path = settings.feeds.clock_file
    if not path:
        return fallback

    def now() -> dt.datetime:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            text = ""
        return states.as_utc(dt.datetime.fromisoformat(text)) if text else fallback()

    return now


# ---------------------------------------------------------------- reading the database


Head = tuple[str, str, int | None, dt.datetime | None]  # cloud, watch, state id, removals_at (None: none approved)


def heads(conn: Connection, settings: Settings, at: dt.datetime) -> dict[str, Head]:
    """Feed name -> the state in force at ``at`` (its id and removal date only), for every watch configured or
    with an approved state: one query, no state content read."""
    table = ApprovedStateRow.__table__
    newest = (select(func.max(table.c.id)).where(table.c.approved_at <= at)
              .group_by(table.c.cloud, table.c.watch).scalar_subquery())
    found: dict[tuple[str, str], Head] = {(w.cloud, w.name): (w.cloud, w.name, None, None)
                                          for w in resolve_watches(settings, {})}
    for row in conn.execute(select(table.c.cloud, table.c.watch, table.c.id, table.c.removals_at)
                            .where(table.c.id.in_(newest))):
        removals = states.as_utc(row.removals_at) if row.removals_at is not None else None
        found[(row.cloud, row.watch)] = (row.cloud, row.watch, row.id, removals)
    return {feed_name(cloud, watch): head for (cloud, watch), head in sorted(found.items())}


def watch_names(conn: Connection, settings: Settings) -> dict[str, tuple[str, str]]:
    """Feed name -> (cloud, watch), for every watch configured or with an approved state."""
    table = ApprovedStateRow.__table__
    pairs = {(r.cloud, r.watch) for r in conn.execute(select(table.c.cloud, table.c.watch).distinct())}
    pairs |= {(w.cloud, w.name) for w in resolve_watches(settings, {})}
    return {feed_name(cloud, watch): (cloud, watch) for cloud, watch in sorted(pairs)}


def previous_state(conn: Connection, state: states.ApprovedState) -> states.ApprovedState | None:
    earlier = [s for s in states.history(conn, state.cloud, state.watch) if s.id < state.id]
    return earlier[-1] if earlier else None


def find(conn: Connection, settings: Settings, name: str, at: dt.datetime,
         known: Mapping[str, Head] | None = None, cache: dict[Any, FeedSet] | None = None) -> FeedSet:
    """The feed set of the watch named ``name`` at ``at``; NotFoundError when unknown or nothing is approved.

    ``known``: ``heads`` read earlier; ``cache``: feed sets by (state, phase), which fix every body."""
    known = known if known is not None else heads(conn, settings, at)
    if name not in known:
        raise NotFoundError(f"no feed {name!r} (known: {', '.join(known) or 'none'})")
    cloud, watch, state_id, removals_at = known[name]
    if state_id is None:
        raise NotFoundError(f"feed {name!r}: watch {watch!r} ({cloud}) has no approved state yet")
    key = (state_id, removals_at is None or states.as_utc(at) >= removals_at)
    if cache is not None and key in cache:
        return cache[key]
    history = states.history(conn, cloud, watch)
    mine = [i for i, s in enumerate(history) if s.id == state_id]
    if not mine:
        raise NotFoundError(f"feed {name!r}: approved state {state_id} is gone")
    built = build(history[mine[0]], history[mine[0] - 1] if mine[0] else None, at)
    if cache is not None:
        if len(cache) >= 256:
            cache.clear()
        cache[key] = built
    return built


def all_sets(conn: Connection, settings: Settings, at: dt.datetime) -> list[FeedSet]:
    """The feed set of every watch with an approved state at ``at``."""
    return [build(s, previous_state(conn, s), at) for s in states.all_current(conn, at, tags=True)]


# ---------------------------------------------------------------- static export


def _write_atomically(path: Path, body: bytes, modified: dt.datetime) -> bool:
    """Write ``body`` to ``path`` by a rename (readers see the old file or the new one, never half);
    its mtime is the feed's Last-Modified, so a static server's Last-Modified agrees. True when changed."""
    stamp = modified.timestamp()
    if path.is_file() and path.read_bytes() == body:
        if path.stat().st_mtime != stamp:
            os.utime(path, (stamp, stamp))
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.utime(temporary, (stamp, stamp))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def write_sets(directory: str | os.PathLike[str], feeds: list[FeedSet]) -> list[str]:
    """Write every file of ``feeds`` under ``directory`` (each ``.md5`` after its file), drop tag files that
    are gone, and write the ETag map for nginx; returns the paths that changed."""
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        changed = []
        for feed in feeds:
            lists = sorted(p for p in feed.files if not p.endswith(".md5"))
            for path in lists:
                for item in (feed.files[path], feed.files[path + ".md5"]):
                    if _write_atomically(root / item.path, item.body, feed.last_modified):
                        changed.append(item.path)
            folder = root / feed.name
            for stale in sorted(folder.glob("*")) if folder.is_dir() else []:
                if stale.is_file() and f"{feed.name}/{stale.name}" not in feed.files:
                    stale.unlink()
                    changed.append(f"{feed.name}/{stale.name}")
        etags = "".join(f'"/feeds/{f.path}" \'{f.etag}\';\n' for feed in feeds for f in
                        sorted(feed.files.values(), key=lambda f: f.path))
        _write_atomically(root / MAP_FILE, etags.encode(), dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    except OSError as exc:
        raise StoreError(f"cannot export the feeds to {root}: {exc.strerror or exc}") from None
    return changed


def export(conn: Connection, settings: Settings, directory: str | os.PathLike[str], at: dt.datetime) -> list[str]:
    """``watcher feeds export DIR``: the served files of every watch, as they are at ``at``."""
    return write_sets(directory, all_sets(conn, settings, at))


def nginx_config(directory: str, *, listen: str = "80", cache_seconds: int = 300, public: bool = False) -> str:
    """The ``map`` and ``server`` blocks (inside ``http {}``) that serve an export folder as ``/feeds/`` with the
    watcher's headers: its ETags (from the export's map file; reload nginx after an export that changed files),
    Last-Modified (the files' mtime), content types, Cache-Control, and 304 for If-Modified-Since.

    No 304 for If-None-Match: nginx reads the map only at a reload, and a stale map answering 304 to the old
    ETag would keep a firewall on the old list. Without the ETag (``etag off``) nginx answers it 200."""
    root = directory.rstrip("/")
    cache = f"{'public' if public else 'private'}, max-age={cache_seconds}, must-revalidate"
    return f"""  map_hash_bucket_size 256;  # feed paths are longer than nginx's default bucket allows
  map $uri $watcher_feed_etag {{
    default "";
    include {root}/{MAP_FILE};
  }}
  server {{
    listen {listen};
    location /feeds/ {{
      alias {root}/;
      types {{ text/plain txt md5; application/json json; }}
      charset utf-8;
      charset_types text/plain;
      etag off;
      if_modified_since before;
      add_header ETag $watcher_feed_etag;
      add_header Cache-Control "{cache}";
    }}
  }}
"""


class Exporter:
    """The daemon's service that keeps ``[feeds] export_dir`` in step with the served feeds.

    Every ``interval`` seconds it asks the database one cheap question (how many approved states, the newest
    id); it rewrites the folder when that changed (an approval, by any process) or when a removal date has
    passed (a phase boundary), and once at start. A failed round is logged and tried again next round.
    """

    def __init__(self, settings: Settings, engine: Engine, now: Callable[[], dt.datetime],
                 interval: float = 0.1) -> None:
        if not settings.feeds.export_dir:
            raise WatcherError("the feed exporter needs [feeds] export_dir")
        self.settings, self.engine, self.now, self.interval = settings, engine, clock(settings, now), interval
        self.directory = settings.feeds.export_dir
        self._seen: tuple[Any, ...] | None = None
        self._next_boundary: dt.datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> list[str] | None:
        """One round: the files rewritten, or None when nothing could have changed."""
        at = self.now()
        table = ApprovedStateRow.__table__
        with self.engine.connect() as conn:
            seen = tuple(conn.execute(select(func.count(), func.max(table.c.id))).one())
            if seen == self._seen and (self._next_boundary is None or at < self._next_boundary):
                return None
            sets = all_sets(conn, self.settings, at)
        changed = write_sets(self.directory, sets)
        self._seen = seen
        pending = [f.removals_at for f in sets if not f.complete and f.removals_at is not None]
        self._next_boundary = min(pending) if pending else None
        if changed:
            log.info("feeds exported to %s: %d file(s) changed", self.directory, len(changed),
                     extra={"event": "feeds", "outcome": "exported"})
        return changed

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except (WatcherError, SQLAlchemyError) as exc:
                log.warning("feeds export to %s failed: %s", self.directory, str(exc).splitlines()[0],
                            extra={"event": "feeds", "outcome": "failed"})
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self.refresh()  # a folder that cannot be written stops the start
        self._thread = threading.Thread(target=self._loop, name="watcher-feed-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
