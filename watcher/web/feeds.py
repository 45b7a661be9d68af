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
that, by one background thread while the event loop goes on answering from
memory (for at most ``STALE_SECONDS``); a feed set is built once per state and
phase, and a routine request is answered by the HTTP protocol itself
(``FeedService.fast``). Fetch records and refusals are written in batches by a
background thread (every ``FRESH_SECONDS``, and at exit). So an approval
reaches the feeds within ``STALE_SECONDS``, a removed token stops within it, a
phase boundary at once (the phase is computed per request), and a database
that cannot be read is 503 after it.
"""
from __future__ import annotations

import atexit
import base64
import binascii
import datetime as dt
import functools
import logging
import threading
import time
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Callable, NamedTuple

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
#: How long answers may come from memory while the database is being read again (or does not answer).
STALE_SECONDS = 0.6
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


@functools.lru_cache(maxsize=256)
def http_date(moment: dt.datetime) -> str:
    """``moment`` as an HTTP date (feeds' Last-Modified: few distinct values, asked for on every request)."""
    return format_datetime(as_utc(moment), usegmt=True)


def _not_modified(request: FeedRequest, file: feeds.FeedFile, last_modified: dt.datetime) -> bool:
    if_none_match = request.if_none_match
    if if_none_match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or file.etag in tags
    since = request.if_modified_since
    if since == http_date(last_modified):  # what a poller sends back: no date parsing on the hot path
        return True
    if since:
        try:
            return last_modified <= as_utc(parsedate_to_datetime(since))
        except (TypeError, ValueError):
            return False
    return False


class _NeedsDatabase(Exception):
    """The answer needs a database read: the request goes to the thread pool."""


class _Reader:
    """The database as the feeds see it, re-read after ``FRESH_SECONDS`` (errors are never kept).

    Past ``FRESH_SECONDS`` the event loop goes on answering from what it read, for at most ``STALE_SECONDS``,
    while one background thread reads again: pollers never queue behind a read. Past ``STALE_SECONDS``
    (the database has not answered) every request reads it itself, and a database that cannot be read is a 503.
    """

    def __init__(self, settings: Settings, engine: Engine, now: Callable[[], dt.datetime]) -> None:
        self.settings, self.engine, self.now = settings, engine, now
        self.lock = threading.Lock()      # guards `built` while a feed set is being made
        self.heads: dict[str, feeds.Head] = {}
        self.heads_read = -1e9
        self.tokens: dict[str, tuple[feed_consumers.Consumer, float]] = {}
        self.built: dict[Any, feeds.FeedSet] = {}  # (state id, phase) -> feed set
        self.refreshing = threading.Lock()  # held by the one background re-read

    def consumer(self, token: str, offline: bool) -> feed_consumers.Consumer | None:
        digest = feed_consumers.token_hash(token)
        known = self.tokens.get(digest)
        if known is not None:
            age = time.monotonic() - known[1]
            if age < FRESH_SECONDS:
                return known[0]
            if offline and age < STALE_SECONDS:
                self._refresh_in_background()
                return known[0]
        if offline:
            raise _NeedsDatabase
        with self.engine.connect() as conn:
            found = feed_consumers.authenticate(conn, token)
        self._remember(digest, found)
        return found

    def _remember(self, digest: str, found: feed_consumers.Consumer | None) -> None:
        if found is None:
            self.tokens.pop(digest, None)
            return
        if len(self.tokens) > 10000:
            self.tokens.clear()
        self.tokens[digest] = (found, time.monotonic())

    def find(self, name: str, at: dt.datetime, offline: bool) -> feeds.FeedSet:
        age = time.monotonic() - self.heads_read
        if age >= FRESH_SECONDS:
            if offline and age < STALE_SECONDS:
                self._refresh_in_background()
            elif offline:
                raise _NeedsDatabase
            else:
                self._read_heads(at)
        heads = self.heads
        head = heads.get(name)
        if head is not None and head[2] is not None:
            key = (head[2], head[3] is None or at >= head[3])
            found = self.built.get(key)
            if found is not None:
                return found
            if offline:
                raise _NeedsDatabase
            with self.lock, self.engine.connect() as conn:
                return feeds.find(conn, self.settings, name, at, heads, self.built)
        return feeds.find(None, self.settings, name, at, heads)  # type: ignore[arg-type]  # not found

    def _read_heads(self, at: dt.datetime) -> None:
        started = time.monotonic()
        with self.engine.connect() as conn:
            heads = feeds.heads(conn, self.settings, at)
        self.heads, self.heads_read = heads, started

    def _refresh_in_background(self) -> None:
        if self.refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="watcher-feed-refresh", daemon=True).start()

    def _refresh(self) -> None:
        """Read the heads and every remembered token again (a token no longer valid is forgotten)."""
        try:
            self._read_heads(self.now())
            started = time.monotonic()
            with self.engine.connect() as conn:
                checked = feed_consumers.consumers_by_token_hash(conn, list(self.tokens))
            for digest in list(self.tokens):
                found = checked.get(digest)
                if found is None:
                    self.tokens.pop(digest, None)
                else:
                    self.tokens[digest] = (found, started)
        except (WatcherError, SQLAlchemyError) as exc:  # kept stale: past STALE_SECONDS requests read themselves
            log.debug("feeds: cannot read the database now: %s", exc)
        finally:
            self.refreshing.release()


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


class FeedAnswer(NamedTuple):
    """One answer of a feed URL, before it is put on the wire (by Starlette or by the fast path)."""

    status: int
    headers: dict[str, str]
    body: bytes               # empty for HEAD and 304 (headers carry the length of a 200's body)
    content_type: str | None
    same_as: tuple[Any, ...] | None = None  # equal for answers with equal headers and body (a feed file's)


class FeedRequest(NamedTuple):
    """What of a request a feed answer depends on."""

    method: str
    path: str                 # under /feeds/, decoded
    query: str                # the raw query string
    authorization: str
    if_none_match: str | None
    if_modified_since: str | None


def _text_answer(status: int, message: str, **headers: str) -> FeedAnswer:
    body = (message + "\n").encode()
    return FeedAnswer(status, {**headers, "Content-Length": str(len(body))}, body, feeds.TEXT)


_NOT_A_FEED = ("not a feed file: /feeds/<watch>.txt, /feeds/<watch>/v4.txt, /feeds/<watch>/<tag>.txt, "
               "/feeds/<watch>.checkpoint.json, /feeds/<watch>.json, and a .md5 of each")
_UNAVAILABLE = "feeds unavailable: the approved state cannot be read now; keep the last good copy"
_STATUS_LINES = {status: f"HTTP/1.1 {status} {phrase}\r\n".encode() for status, phrase in
                 ((200, "OK"), (304, "Not Modified"), (401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found"))}


class FeedService:
    """The feed URLs' answers: for Starlette's route, and for the HTTP protocol's fast path (``fast``)."""

    def __init__(self, settings: Settings, engine: Engine, clock: Callable[[], dt.datetime]) -> None:
        self.settings = settings
        self.now = feeds.clock(settings, clock)
        self.reader, self.recorder = _Reader(settings, engine, self.now), _Recorder(settings, engine)
        self.wire: dict[tuple[Any, ...], bytes] = {}  # an answer's headers and body as written, by `same_as`
        self.cache_control = (f"{'public' if settings.feeds.public else 'private'}, "
                              f"max-age={settings.feeds.cache_seconds}, must-revalidate")

    def answer(self, request: FeedRequest, offline: bool = False) -> FeedAnswer:
        """The answer; ``offline``: only from what was read in the last ``FRESH_SECONDS`` (else _NeedsDatabase)."""
        found = split_path(request.path.split("/"))
        if found is None:
            return _text_answer(404, _NOT_A_FEED)
        name, path = found
        at = self.now()
        consumer = None
        if not self.settings.feeds.public:
            token = _token(request.authorization)
            consumer = self.reader.consumer(token, offline) if token else None
            if consumer is None:
                self.recorder.denial(at)
                log.info("feed %s: refused (%s credentials)", path, "wrong" if token else "no",
                         extra={"event": "feeds", "outcome": "denied"})
                return _text_answer(401, "a feed token is needed (HTTP basic auth password or bearer token)",
                                    **{"WWW-Authenticate": _CHALLENGE})
            if not consumer.may_fetch(name):
                return _text_answer(403, f"consumer {consumer.name} does not pull feed {name}")
        try:
            feed = self.reader.find(name, at, offline)
        except NotFoundError as exc:
            return _text_answer(404, str(exc))
        file = feed.files.get(path)
        if file is None:
            return _text_answer(404, f"feed {name} has no file {path}")
        if _wants_header(request.query):
            file = feeds.with_header(feed, file)
        headers = {"ETag": file.etag, "Last-Modified": http_date(feed.last_modified),
                   "Cache-Control": self.cache_control, "X-Feed-State": str(feed.state_id),
                   "X-Feed-Ticket": str(feed.ticket_id), "X-Feed-Phase": "final" if feed.complete else "first"}
        if file.entries is not None:
            headers["X-Feed-Entries"] = str(file.entries)
            if file.entries == 0:
                headers["X-Feed-Empty"] = "the approved state is empty"
        status = 304 if _not_modified(request, file, feed.last_modified) else 200
        if consumer is not None:
            self.recorder.fetch(consumer, feed, path, file.etag, status, at)
        same_as = (status, request.method == "HEAD", path, file.etag, feed.state_id, feed.ticket_id, feed.complete,
                   feed.last_modified)
        if status == 304:
            return FeedAnswer(304, headers, b"", None, same_as)
        headers["Content-Length"] = str(len(file.body))
        return FeedAnswer(200, headers, b"" if request.method == "HEAD" else file.body, file.content_type, same_as)

    async def endpoint(self, request: Request) -> Response:
        asked = FeedRequest(request.method, request.path_params["path"], request.url.query,
                            request.headers.get("authorization", ""), request.headers.get("if-none-match"),
                            request.headers.get("if-modified-since"))
        try:
            try:  # in the event loop when nothing needs reading: no thread hop for a poller's routine request
                found = self.answer(asked, offline=True)
            except _NeedsDatabase:
                found = await run_in_threadpool(self.answer, asked)
        except (WatcherError, SQLAlchemyError) as exc:
            log.warning("feed %s: %s", request.url.path, str(exc).splitlines()[0] if str(exc) else exc,
                        extra={"event": "feeds", "outcome": "unavailable"})
            found = _text_answer(503, _UNAVAILABLE, **{"Retry-After": "60", "Cache-Control": "no-store"})
        return Response(found.body, status_code=found.status, media_type=found.content_type, headers=found.headers)

    def fast(self, method: bytes, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
             default_headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The whole HTTP/1.1 response to a feed request answerable from memory, or None (take the ASGI path).

        A poller's routine request (token and state read within ``FRESH_SECONDS``) is answered by the HTTP
        protocol itself, without an ASGI cycle: the same ``answer`` as the route, put on the wire here.
        """
        authorization, if_none_match, if_modified_since = "", None, None
        for header, value in headers:
            if header == b"authorization":
                authorization = value.decode("latin-1")
            elif header == b"if-none-match":
                if_none_match = value.decode("latin-1")
            elif header == b"if-modified-since":
                if_modified_since = value.decode("latin-1")
        asked = FeedRequest(method.decode("ascii"), path, query.decode("latin-1"), authorization, if_none_match,
                            if_modified_since)
        try:
            found = self.answer(asked, offline=True)
        except _NeedsDatabase:
            return None
        status_line = _STATUS_LINES.get(found.status)
        if status_line is None:
            return None
        rest = self.wire.get(found.same_as) if found.same_as is not None else None
        if rest is None:
            lines = []
            for header, value in found.headers.items():
                lines.append(f"{header.lower()}: {value}\r\n".encode("latin-1"))
            if found.content_type is not None:
                lines.append(f"content-type: {found.content_type}\r\n".encode("latin-1"))
            lines += [b"\r\n", found.body]
            rest = b"".join(lines)
            if found.same_as is not None:
                if len(self.wire) > 512:
                    self.wire.clear()
                self.wire[found.same_as] = rest
        lines = [status_line]
        for header, value in default_headers:
            lines += [header, b": ", value, b"\r\n"]
        lines.append(rest)
        return b"".join(lines)


def _token(authorization: str) -> str | None:
    """The token from ``Authorization: Bearer T`` or basic auth's password."""
    scheme, _, value = authorization.partition(" ")
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


def _wants_header(query: str) -> bool:
    return any(part in ("header=1", "header=true", "header=yes") for part in query.split("&")) if query else False


def routes(settings: Settings, engine: Engine, clock: Callable[[], dt.datetime]) -> tuple[list[Route], FeedService]:
    """The feed routes of the app, and the service behind them (the HTTP protocol's fast path uses it too)."""
    service = FeedService(settings, engine, clock)
    return [Route("/feeds/{path:path}", service.endpoint, methods=["GET", "HEAD"])], service
