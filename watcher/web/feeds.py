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
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from email.utils import format_datetime, parsedate_to_datetime
from typing import Callable

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


def routes(settings: Settings, engine: Engine, clock: Callable[[], dt.datetime]) -> list[Route]:
    """The feed routes of the app."""
    now = feeds.clock(settings, clock)
    built: dict = {}  # (state id, phase) -> feed set; a dict's item access is atomic across the thread pool
    cache_control = (f"{'public' if settings.feeds.public else 'private'}, max-age={settings.feeds.cache_seconds}, "
                     "must-revalidate")

    def answer(request: Request, name: str, path: str) -> Response:
        at = now()
        consumer = None
        if not settings.feeds.public:
            token = presented_token(request)
            with engine.connect() as conn:
                consumer = feed_consumers.authenticate(conn, token) if token else None
            if consumer is None:
                feed_consumers.count_denial(engine, at)
                log.info("feed %s: refused (%s credentials)", path, "wrong" if token else "no",
                         extra={"event": "feeds", "outcome": "denied"})
                return _text(401, "a feed token is needed (HTTP basic auth password or bearer token)",
                             **{"WWW-Authenticate": _CHALLENGE})
            if not consumer.may_fetch(name):
                return _text(403, f"consumer {consumer.name} does not pull feed {name}")
        try:
            with engine.connect() as conn:
                feed = feeds.find(conn, settings, name, at, cache=built)
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
            if feed_consumers.record_fetch(engine, consumer, feed, path, file.etag, status, at) \
                    and settings.feeds.auto_applied:
                feed_consumers.mark_applied_when_everyone_has_it(engine, feed, at)
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
            return await run_in_threadpool(answer, request, *found)
        except (WatcherError, SQLAlchemyError) as exc:
            log.warning("feed %s: %s", request.url.path, str(exc).splitlines()[0] if str(exc) else exc,
                        extra={"event": "feeds", "outcome": "unavailable"})
            return _text(503, "feeds unavailable: the approved state cannot be read now; keep the last good copy",
                         **{"Retry-After": "60", "Cache-Control": "no-store"})

    return [Route("/feeds/{path:path}", endpoint, methods=["GET", "HEAD"])]
