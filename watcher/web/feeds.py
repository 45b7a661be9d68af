"""``/feeds/...``: the feed files over HTTP, as pollers need them.

- Strong ``ETag`` (a hash of the body) and ``Last-Modified`` (when the list
  took its form); ``If-None-Match`` (which wins) or ``If-Modified-Since``
  answer 304; ``HEAD``; ``Cache-Control``.
- Never a wrong list: every answer is read from the stored approved state;
  a database that cannot be read is a 503 with ``Retry-After`` (a firewall
  keeps its last good copy), never an empty 200. An empty list is served only
  when the approved state is empty, and ``X-Feed-Empty`` says so.
- A token (HTTP basic auth password, or bearer) unless ``[feeds] public``;
  wrong or missing: 401, counted. Each authenticated 200 or 304 is recorded.
- ``?header=1`` prefixes plain-text lists with ``#`` lines saying what they are.

For pollers in numbers, the hot path reads the database at most every
``FRESH_SECONDS`` per process: which state is in force per watch (ids and
removal dates, one query) and each token's consumer are read again after
that; a feed set is built once per state and phase. Fetch records and refusals
are written in batches by a background thread (every ``FRESH_SECONDS``, and at
exit). So an approval reaches the feeds within ``FRESH_SECONDS``, a removed
token stops within it, a phase boundary at once (the phase is computed per
request), and a database that cannot be read is 503 after it.
"""
from __future__ import annotations

import atexit
import base64
import binascii
import datetime as dt
import logging
import threading
import time
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import feed_consumers, feeds
from ..errors import NotFoundError, WatcherError
from ..settings import Settings
from ..state import as_utc

log = logging.getLogger(__name__)

_SUFFIXES = (".checkpoint.json", ".json", ".txt")
FRESH_SECONDS = 0.2
_CHALLENGE = 'Basic realm="watcher feeds", charset="UTF-8", Bearer realm="watcher feeds"'


def split_path(parts: list[str]) -> tuple[str, str] | None:
    """(feed name, file path) of ``/feeds/<parts>``, or None when it names no feed file."""
    path = "/".join(parts)
    if len(parts) == 2:
        return (parts[0], path) if parts[1].endswith((".txt", ".txt.md5")) else None
    if len(parts) != 1:
        return None
    base = path.removesuffix(".md5")
    for suffix in _SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)], path
    return None


def presented_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer T`` or basic auth's password."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password or None
    return None


def _not_modified(request: Request, file: feeds.FeedFile, last_modified: dt.datetime) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or file.etag in tags
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return last_modified <= as_utc(parsedate_to_datetime(since))
        except (TypeError, ValueError):
            return False
    return False


def _text(status: int, message: str, **headers: str) -> Response:
    return Response(message + "\n", status_code=status, media_type=feeds.TEXT, headers=headers)


class _NeedsDatabase(Exception):
    """The answer needs a database read: the request goes to the thread pool."""


class _Reader:
    """The database as the feeds see it: re-read after ``FRESH_SECONDS`` (errors are never kept)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.lock = threading.Lock()
        self.heads: dict[str, feeds.Head] = {}
        self.heads_read = -1e9
        self.tokens: dict[str, tuple[feed_consumers.Consumer, float]] = {}
        self.built: dict[Any, feeds.FeedSet] = {}  # (state id, phase) -> feed set

    def consumer(self, token: str, offline: bool) -> feed_consumers.Consumer | None:
        digest = feed_consumers.token_hash(token)
        known = self.tokens.get(digest)
        if known is not None and time.monotonic() - known[1] < FRESH_SECONDS:
            return known[0]
        if offline:
            raise _NeedsDatabase
        with self.engine.connect() as conn:
            found = feed_consumers.authenticate(conn, token)
        if found is not None:
            if len(self.tokens) > 10000:
                self.tokens.clear()
            self.tokens[digest] = (found, time.monotonic())
        return found

    def find(self, name: str, at: dt.datetime, offline: bool) -> feeds.FeedSet:
        # Offline (in the event loop) never waits for the lock: a thread holding it may be reading the database.
        if not self.lock.acquire(blocking=not offline):
            raise _NeedsDatabase
        try:
            if time.monotonic() - self.heads_read >= FRESH_SECONDS:
                if offline:
                    raise _NeedsDatabase
                with self.engine.connect() as conn:
                    self.heads = feeds.heads(conn, self.settings, at)
                self.heads_read = time.monotonic()
            head = self.heads.get(name)
            if head is not None and head[2] is not None:
                key = (head[2], head[3] is None or at >= head[3])
                if key in self.built:
                    return self.built[key]
                if offline:
                    raise _NeedsDatabase
                with self.engine.connect() as conn:
                    return feeds.find(conn, self.settings, name, at, self.heads, self.built)
            return feeds.find(None, self.settings, name, at, self.heads)  # type: ignore[arg-type]  # not found
        finally:
            self.lock.release()


class _Recorder:
    """Fetch records and refusals, written in batches by a background thread (and at exit)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.lock = threading.Lock()
        self.fetches: dict[tuple[int, str, str], list[Any]] = {}
        self.denied: list[dt.datetime] = []
        self.thread: threading.Thread | None = None

    def fetch(self, consumer: feed_consumers.Consumer, feed: feeds.FeedSet, path: str, version: str, status: int,
              at: dt.datetime) -> None:
        with self.lock:
            entry = self.fetches.get((consumer.id, path, version))
            if entry is None:
                self.fetches[(consumer.id, path, version)] = [consumer, feed, status, at, at, 1]
            else:
                entry[2], entry[4], entry[5] = status, at, entry[5] + 1
            self._start()

    def denial(self, at: dt.datetime) -> None:
        with self.lock:
            self.denied.append(at)
            self._start()

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="watcher-feed-records", daemon=True)
            self.thread.start()
            atexit.register(self.flush)

    def _loop(self) -> None:
        while True:
            time.sleep(FRESH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            fetches, self.fetches = self.fetches, {}
            denied, self.denied = self.denied, []
        try:
            if denied:
                feed_consumers.count_denial(self.engine, denied[-1], len(denied))
                denied = []
            while fetches:
                (consumer_id, path, version), (consumer, feed, status, first, last, times) = next(iter(fetches.items()))
                new = feed_consumers.record_fetch(self.engine, consumer, feed, path, version, status, last, times,
                                                  first_at=first)
                del fetches[(consumer_id, path, version)]
                if new and self.settings.feeds.auto_applied:
                    feed_consumers.mark_applied_when_everyone_has_it(self.engine, feed, last)
        except (WatcherError, SQLAlchemyError) as exc:  # kept for the next round
            log.warning("cannot record feed fetches now: %s", str(exc).splitlines()[0] if str(exc) else exc,
                        extra={"event": "feeds", "outcome": "unrecorded"})
            with self.lock:
                self.denied = denied + self.denied
                for key, entry in fetches.items():
                    later = self.fetches.get(key)
                    if later is None:
                        self.fetches[key] = entry
                    else:
                        later[3], later[5] = entry[3], later[5] + entry[5]


def routes(settings: Settings, engine: Engine, clock: Callable[[], dt.datetime]) -> list[Route]:
    """The feed routes of the app."""
    now = feeds.clock(settings, clock)
    reader, recorder = _Reader(settings, engine), _Recorder(settings, engine)
    cache_control = (f"{'public' if settings.feeds.public else 'private'}, max-age={settings.feeds.cache_seconds}, "
                     "must-revalidate")

    def answer(request: Request, name: str, path: str, offline: bool = False) -> Response:
        """The answer; ``offline``: only from what was read in the last ``FRESH_SECONDS`` (else _NeedsDatabase)."""
        at = now()
        consumer = None
        if not settings.feeds.public:
            token = presented_token(request)
            consumer = reader.consumer(token, offline) if token else None
            if consumer is None:
                recorder.denial(at)
                log.info("feed %s: refused (%s credentials)", path, "wrong" if token else "no",
                         extra={"event": "feeds", "outcome": "denied"})
                return _text(401, "a feed token is needed (HTTP basic auth password or bearer token)",
                             **{"WWW-Authenticate": _CHALLENGE})
            if not consumer.may_fetch(name):
                return _text(403, f"consumer {consumer.name} does not pull feed {name}")
        try:
            feed = reader.find(name, at, offline)
        except NotFoundError as exc:
            return _text(404, str(exc))
        file = feed.files.get(path)
        if file is None:
            return _text(404, f"feed {name} has no file {path}")
        if request.query_params.get("header") in ("1", "true", "yes"):
            file = feeds.with_header(feed, file)
        headers = {"ETag": file.etag, "Last-Modified": format_datetime(feed.last_modified, usegmt=True),
                   "Cache-Control": cache_control, "X-Feed-State": str(feed.state_id),
                   "X-Feed-Ticket": str(feed.ticket_id), "X-Feed-Phase": "final" if feed.complete else "first"}
        if file.entries is not None:
            headers["X-Feed-Entries"] = str(file.entries)
            if file.entries == 0:
                headers["X-Feed-Empty"] = "the approved state is empty"
        status = 304 if _not_modified(request, file, feed.last_modified) else 200
        if consumer is not None:
            recorder.fetch(consumer, feed, path, file.etag, status, at)
        if status == 304:
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(len(file.body))
        body = b"" if request.method == "HEAD" else file.body
        return Response(body, media_type=file.content_type, headers=headers)

    async def endpoint(request: Request) -> Response:
        found = split_path(request.path_params["path"].split("/"))
        if found is None:
            return _text(404, "not a feed file: /feeds/<watch>.txt, /feeds/<watch>/v4.txt, "
                              "/feeds/<watch>/<tag>.txt, /feeds/<watch>.checkpoint.json, /feeds/<watch>.json, "
                              "and a .md5 of each")
        try:
            try:  # in the event loop when nothing needs reading: no thread hop for a poller's routine request
                return answer(request, *found, offline=True)
            except _NeedsDatabase:
                return await run_in_threadpool(answer, request, *found)
        except (WatcherError, SQLAlchemyError) as exc:
            log.warning("feed %s: %s", request.url.path, str(exc).splitlines()[0] if str(exc) else exc,
                        extra={"event": "feeds", "outcome": "unavailable"})
            return _text(503, "feeds unavailable: the approved state cannot be read now; keep the last good copy",
                         **{"Retry-After": "60", "Cache-Control": "no-store"})

    return [Route("/feeds/{path:path}", endpoint, methods=["GET", "HEAD"])]
