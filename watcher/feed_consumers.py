"""Feed consumers: who may pull the feeds, and who has which version.

A consumer (a firewall) has a name, the feeds it pulls (none listed: every
feed) and a token, shown once when the consumer is added. The database keeps
the token's SHA-256 only: the token is 256 random bits, so a slow hash adds
nothing against guessing and would cost every poll.

Every authenticated fetch (200 or 304) is recorded as one row per consumer,
file and version (the ETag served): first and last time, how often. Rows grow
with versions, not with polls. From them: ``status`` (each consumer's last
fetch, whether it has each feed's current state), ``pulled_by`` (who got a
ticket's approved state, when) and the automatic ``applied`` step.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import db, state as states
from .errors import ConfigError, ConflictError, NotFoundError, TransitionError, translate_db_errors
from .feeds import FeedSet
from .models import ApprovedState as ApprovedStateRow, FeedConsumer, FeedDenial, FeedFetch, Ticket, day_key

TOKEN_PREFIX = "wf_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
AUTO_ACTOR = "feeds (every consumer fetched the final list)"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Consumer:
    id: int
    name: str
    watches: tuple[str, ...]   # feed names; empty: every feed
    created_at: dt.datetime

    def may_fetch(self, feed: str) -> bool:
        return not self.watches or feed in self.watches

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "watches": list(self.watches), "created_at": self.created_at.isoformat()}


def _consumer(row: Any) -> Consumer:
    return Consumer(row.id, row.name, tuple(json.loads(row.watches)), states.as_utc(row.created_at))


def add(engine: Engine, name: str, watches: Iterable[str], known: Iterable[str],
        now: dt.datetime) -> tuple[Consumer, str]:
    """A new consumer and its token (returned once; only its hash is stored)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"consumer name {name!r}: use 1 to 100 letters, digits, '.', '_' or '-'")
    wanted, known = tuple(dict.fromkeys(watches)), set(known)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ConfigError(f"unknown feed {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known)) or 'none'})")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    table = FeedConsumer.__table__
    with translate_db_errors("adding a feed consumer"):
        try:
            with db.writer(engine).begin() as conn:
                new_id = conn.execute(insert(table).returning(table.c.id), {
                    "name": name, "token_hash": token_hash(token), "watches": json.dumps(list(wanted)),
                    "created_at": now}).scalar_one()
                return _consumer(conn.execute(select(table).where(table.c.id == new_id)).one()), token
        except IntegrityError:
            raise ConflictError(f"a feed consumer named {name!r} exists already (remove it first)") from None


def consumers(conn: Connection) -> list[Consumer]:
    table = FeedConsumer.__table__
    return [_consumer(r) for r in conn.execute(select(table).order_by(table.c.name))]


def remove(engine: Engine, name: str) -> None:
    table = FeedConsumer.__table__
    with translate_db_errors("removing a feed consumer"), db.writer(engine).begin() as conn:
        if conn.execute(delete(table).where(table.c.name == name)).rowcount != 1:
            raise NotFoundError(f"no feed consumer {name!r} (watcher feeds consumer list)")


def authenticate(conn: Connection, token: str) -> Consumer | None:
    """The consumer whose token this is, or None."""
    table = FeedConsumer.__table__
    digest = token_hash(token)
    row = conn.execute(select(table).where(table.c.token_hash == digest)).first()
    # The lookup is by hash, so timing says nothing about the token; compare again for the record.
    return _consumer(row) if row is not None and hmac.compare_digest(row.token_hash, digest) else None


def consumers_by_token_hash(conn: Connection, digests: Iterable[str]) -> dict[str, Consumer]:
    """The consumers whose tokens hash to ``digests`` (missing: removed), in one query."""
    table = FeedConsumer.__table__
    wanted = list(digests)
    if not wanted:
        return {}
    return {row.token_hash: _consumer(row)
            for row in conn.execute(select(table).where(table.c.token_hash.in_(wanted)))}


def count_denial(engine: Engine, at: dt.datetime, times: int = 1) -> None:
    """Count requests refused for wrong or missing credentials (one counter row per day)."""
    table = FeedDenial.__table__
    day = day_key(at.date())
    with db.writer(engine).begin() as conn:
        if conn.execute(update(table).where(table.c.day == day).values(count=table.c.count + times)).rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(insert(table), {"day": day, "count": times})
            except IntegrityError:  # another replica counted the day's first one
                conn.execute(update(table).where(table.c.day == day).values(count=table.c.count + times))


def denials(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(FeedDenial.__table__.c.count), 0))).scalar_one())


def record_fetch(engine: Engine, consumer: Consumer, feed: FeedSet, path: str, version: str, status: int,
                 at: dt.datetime, times: int = 1, first_at: dt.datetime | None = None) -> bool:
    """Record fetches (200 or 304; ``times`` of them, the last at ``at``, the first at ``first_at``); True when
    this consumer got this version of this file for the first time."""
    table = FeedFetch.__table__
    key = (table.c.consumer_id == consumer.id) & (table.c.path == path) & (table.c.version == version)
    with db.writer(engine).begin() as conn:
        if conn.execute(update(table).where(key).values(last_at=at, last_status=status,
                                                        count=table.c.count + times)).rowcount:
            return False
        try:
            with conn.begin_nested():
                conn.execute(insert(table), {
                    "consumer_id": consumer.id, "path": path, "version": version, "cloud": feed.cloud,
                    "watch": feed.watch, "state_id": feed.state_id, "complete": feed.complete,
                    "first_at": first_at or at, "last_at": at, "last_status": status, "count": times})
            return True
        except IntegrityError:  # the same consumer's parallel request recorded it first
            conn.execute(update(table).where(key).values(last_at=at, last_status=status,
                                                         count=table.c.count + times))
            return False


# ---------------------------------------------------------------- who has which version


@dataclass(frozen=True)
class Pull:
    consumer: str
    at: dt.datetime          # when it first got the state
    complete: bool           # it got the final list (the removals done)

    def to_json(self) -> dict[str, Any]:
        return {"consumer": self.consumer, "at": self.at.isoformat(), "complete": self.complete}


def pulled_by(conn: Connection, ticket_id: int) -> list[Pull]:
    """Who fetched the approved state of a ticket, and when first (the final list counts over the first phase)."""
    fetches, people, approved = FeedFetch.__table__, FeedConsumer.__table__, ApprovedStateRow.__table__
    rows = conn.execute(
        select(people.c.name, fetches.c.complete, func.min(fetches.c.first_at))
        .join(people, people.c.id == fetches.c.consumer_id)
        .where(fetches.c.state_id.in_(select(approved.c.id).where(approved.c.ticket_id == ticket_id)))
        .group_by(people.c.name, fetches.c.complete)).all()
    best: dict[str, Pull] = {}
    for name, complete, at in rows:
        pull = Pull(name, states.as_utc(at), bool(complete))
        if name not in best or (pull.complete and not best[name].complete):
            best[name] = pull
    return sorted(best.values(), key=lambda p: (p.at, p.consumer))


def pulled_line(pulls: list[Pull]) -> str:
    """``pulled by fw-1, fw-2 at ...`` for a ticket's text."""
    if not pulls:
        return "pulled by no feed consumer yet"
    return "pulled by " + ", ".join(f"{p.consumer} at {p.at:%Y-%m-%d %H:%M} UTC"
                                    + ("" if p.complete else " (first phase)") for p in pulls)


def mark_applied_when_everyone_has_it(engine: Engine, feed: FeedSet, now: dt.datetime) -> bool:
    """``[feeds] auto_applied``: an approved ticket becomes applied once every consumer of its watch has fetched
    its final list. True when this call marked it."""
    from . import review  # review imports the notification layer: only when this is used

    if not feed.complete:
        return False
    fetches = FeedFetch.__table__
    with engine.connect() as conn:
        ticket_state = conn.execute(select(Ticket.__table__.c.state)
                                    .where(Ticket.__table__.c.id == feed.ticket_id)).scalar()
        if ticket_state != "approved":
            return False
        audience = [c for c in consumers(conn) if c.may_fetch(feed.name)]
        have = set(conn.execute(select(fetches.c.consumer_id).where(
            fetches.c.state_id == feed.state_id, fetches.c.complete.is_(True)).distinct()).scalars())
    if not audience or any(c.id not in have for c in audience):
        return False
    try:
        review.transition(engine, feed.ticket_id, "applied", AUTO_ACTOR,
                          f"{', '.join(c.name for c in audience)} fetched the final list", now=lambda: now)
    except TransitionError:  # another replica (or a person) marked it first
        return False
    return True


@dataclass(frozen=True)
class FeedStatus:
    feed: str
    current_version: str | None        # the ETag of the feed's main list now; None: nothing approved
    fetched_version: str | None
    fetched_at: dt.datetime | None
    current: bool                      # it has the state and phase in force

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "current_version": self.current_version, "fetched_version": self.fetched_version,
                "fetched_at": self.fetched_at.isoformat() if self.fetched_at else None, "current": self.current}


@dataclass(frozen=True)
class ConsumerStatus:
    consumer: Consumer
    last_fetch_at: dt.datetime | None
    last_path: str | None
    last_version: str | None
    feeds: tuple[FeedStatus, ...]
    stale: bool

    @property
    def current(self) -> bool:
        return all(f.current for f in self.feeds)

    def to_json(self) -> dict[str, Any]:
        return {**self.consumer.to_json(),
                "last_fetch": None if self.last_fetch_at is None else {
                    "at": self.last_fetch_at.isoformat(), "path": self.last_path, "version": self.last_version},
                "current": self.current, "stale": self.stale, "feeds": [f.to_json() for f in self.feeds]}


def status(conn: Connection, sets: Mapping[str, FeedSet], stale_after: dt.timedelta,
           now: dt.datetime) -> list[ConsumerStatus]:
    """Each consumer's last fetch and, per feed it pulls, whether it has the state and phase in force now."""
    fetches = FeedFetch.__table__
    found = []
    for consumer in consumers(conn):
        rows = conn.execute(select(fetches).where(fetches.c.consumer_id == consumer.id)
                            .order_by(fetches.c.last_at.desc(), fetches.c.id.desc())).all()
        last = rows[0] if rows else None
        per_feed = []
        for name, feed in sorted(sets.items()):
            if not consumer.may_fetch(name):
                continue
            mine = [r for r in rows if r.path == name or r.path.startswith(f"{name}.") or r.path.startswith(f"{name}/")]
            newest = mine[0] if mine else None
            main = feed.files[f"{name}.txt"].etag
            per_feed.append(FeedStatus(
                name, main, newest.version if newest else None,
                states.as_utc(newest.last_at) if newest else None,
                newest is not None and newest.state_id == feed.state_id and bool(newest.complete) == feed.complete))
        since = states.as_utc(last.last_at) if last is not None else consumer.created_at
        found.append(ConsumerStatus(consumer, states.as_utc(last.last_at) if last else None,
                                    last.path if last else None, last.version if last else None,
                                    tuple(per_feed), now - since > stale_after))
    return found


def last_fetches(conn: Connection) -> list[tuple[str, dt.datetime | None, dt.datetime]]:
    """(consumer, last fetch or None, created) for every consumer: for health and /metrics."""
    fetches, people = FeedFetch.__table__, FeedConsumer.__table__
    rows = conn.execute(select(people.c.name, func.max(fetches.c.last_at), people.c.created_at)
                        .join(fetches, fetches.c.consumer_id == people.c.id, isouter=True)
                        .group_by(people.c.name, people.c.created_at).order_by(people.c.name)).all()
    return [(n, states.as_utc(last) if last else None, states.as_utc(created)) for n, last, created in rows]


def report(conn: Connection, settings: Any, now: dt.datetime) -> list[ConsumerStatus]:
    """``watcher feeds status``: every consumer against the feeds in force now."""
    from . import feeds

    sets = {f.name: f for f in feeds.all_sets(conn, settings, now)}
    return status(conn, sets, dt.timedelta(hours=settings.feeds.stale_after_hours), now)
