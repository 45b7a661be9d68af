"""SQLAlchemy 2 typed models: the schema the migrations create.

History is kept as change, not as weeks:

* ``publications`` — one row per imported file of a cloud.
* ``tags`` — one row per (cloud, tag name) ever seen.
* ``tag_versions`` — one row each time a tag's entry changes (prefix content,
  changeNumber or metadata) or the tag is withdrawn; a version holds from its
  ``valid_from`` day until ``valid_until``, the day of the tag's next version
  (NULL for the current one), so the versions in force on any day are an
  index range, however long the history.
* ``contents`` — each distinct prefix set once, compressed, keyed by its hash:
  any tag at any publication is one row away (or, for a big set stored as a
  zstd delta against its tag's previous content, a short chain of rows: see
  ``store.packing``), and an import reads only the tags that changed.
* ``prefix_spans`` — one row per stretch of publications in which a tag had a
  prefix: present from ``first_day`` until (not including) ``until_day``;
  ``until_day`` is NULL while the prefix is still published. This is the index
  for address look-ups ("which tags contain this IP, since when").

Days are stored as ``YYYYMMDD`` integers: compact, sortable and readable.

Review and delivery (revision 0002):

* ``tickets`` — one firewall change ticket per watch (registry) per
  publication that changed its tags; ``context`` holds the full render context
  as JSON, so a ticket renders the same way whenever it is rendered.
* ``ticket_events`` — the review trail: who moved a ticket from which state to
  which, when, and why.
* ``outbox`` — one row per ticket and notification destination, claimed,
  sent and recorded one at a time. A destination is known by a hash of its
  URL (``destination``) and its masked form (``destination_label``); the URL
  itself, which may carry a token, stays in the settings.

The daemon (revision 0004): ``daemon_runs`` (who ran when, and how it went)
and ``health_alerts`` (one row per destination each time health flips).

``entry_manifests`` (revision 0006) caches, per cloud, the newest
publication's entry fingerprints, so that a weekly import reads one row.

Approved state (revision 0007): ``tickets`` gain ``kind`` (baseline or
change) and ``superseded_by``; ``approved_states`` keeps one row per approval
of a watch, the newest being the allow-list the firewall must follow (see
``watcher.state``).

Revision 0008: optional tag metadata is NULL when the file has none, and each
publication records the publications it says were missed and its parse warnings.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC: every timestamp the watcher writes is UTC."""
    return dt.datetime.now(dt.timezone.utc)


def day_key(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def day_from_key(key: int) -> dt.date:
    return dt.date(key // 10000, key // 100 % 100, key % 100)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Publication(Base):
    __tablename__ = "publications"
    __table_args__ = (
        UniqueConstraint("cloud", "file_date"),
        Index("ix_publications_cloud_sha256", "cloud", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    file_date: Mapped[dt.date] = mapped_column(Date)
    change_number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    tag_count: Mapped[int] = mapped_column(Integer)
    prefix_count: Mapped[int] = mapped_column(Integer)
    #: publications the global changeNumber says were not seen since the previous stored one (0008)
    missed_before: Mapped[int] = mapped_column(Integer, server_default="0")
    #: JSON list of the parse warnings (wrong-typed optional metadata); NULL when none (0008)
    parse_warnings: Mapped[str | None] = mapped_column(Text)


class EntryManifest(Base):
    """The newest publication's published tags, per cloud: what the next week's import compares with.

    Derived from ``tag_versions`` (see migration 0006). Parallel arrays, in
    the order of ``names`` (a JSON list): 16-byte entry
    fingerprints, and little-endian unsigned 32-bit tag ids and prefix counts.
    """

    __tablename__ = "entry_manifests"

    cloud: Mapped[str] = mapped_column(String(16), primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    names: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprints: Mapped[bytes] = mapped_column(LargeBinary)
    tag_ids: Mapped[bytes] = mapped_column(LargeBinary)
    prefix_counts: Mapped[bytes] = mapped_column(LargeBinary)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("cloud", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))


class Content(Base):
    __tablename__ = "contents"

    hash: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    prefix_count: Mapped[int] = mapped_column(Integer)
    #: newline-separated, sorted canonical prefixes; zstd-compressed unless short (see store.sql.pack),
    #: or a delta against the content ``base_hash`` (see store.packing)
    prefixes: Mapped[bytes] = mapped_column(LargeBinary)
    #: NULL: a full copy; else the content whose text is the dictionary of this delta
    base_hash: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    #: deltas to decode down to a full copy (1: the base is one); NULL for a full copy
    depth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The set's size per family (``address_space.family_sizes``), counted once when it is stored: a tag's
    # history then reads its sizes instead of recounting every version's set (the tag page's series).
    # IPv6 space in /64 networks. NULL: not counted (a set of 2**63 /64s or more, ``::/1`` or ``::/0``, does not
    # fit a BIGINT: counted when read, see ``address_space.storable_sizes``).
    v4_prefixes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    v6_prefixes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    v4_addresses: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    v6_networks_64: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TagVersion(Base):
    __tablename__ = "tag_versions"
    __table_args__ = (
        Index("ix_tag_versions_valid_from", "valid_from"),
        Index("ix_tag_versions_valid_until", "valid_until"),
    )

    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    valid_from: Mapped[int] = mapped_column(Integer, primary_key=True)
    valid_until: Mapped[int | None] = mapped_column(Integer)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), index=True)
    present: Mapped[bool] = mapped_column(Boolean)
    change_number: Mapped[int | None] = mapped_column(Integer)
    # Optional in the files (absent before August 2020): NULL when absent, never a made-up value.
    region: Mapped[str | None] = mapped_column(String(100))
    region_id: Mapped[int | None] = mapped_column(Integer)
    platform: Mapped[str | None] = mapped_column(String(100))
    system_service: Mapped[str | None] = mapped_column(String(200))
    network_features: Mapped[str | None] = mapped_column(String(200))
    prefix_count: Mapped[int] = mapped_column(Integer, default=0)
    #: the canonical prefix set
    content_hash: Mapped[bytes] = mapped_column(ForeignKey("contents.hash"), index=True)
    #: fingerprint of the entry as published, to skip unchanged entries cheaply
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(16))
    #: prefixes this version added and removed against the one before (migration 0017): what the tag's prefix
    #: spans starting and ending on its day count, stored by the import so that a tag's history reads no span
    added_count: Mapped[int | None] = mapped_column(Integer)
    removed_count: Mapped[int | None] = mapped_column(Integer)
    #: its content's sizes (``Content``'s columns of the same names), copied here once counted (migration 0018):
    #: a tag's history then reads its versions alone, not a content row per version. NULL: not copied yet (the
    #: import writes none; the first view of the tag or a server's warm-up copies them) or too big to store.
    v4_prefixes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    v6_prefixes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    v4_addresses: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    v6_networks_64: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class PrefixSpan(Base):
    __tablename__ = "prefix_spans"
    # Keyed by prefix first: an address look-up is a handful of exact key
    # searches, an import's updates name (prefix, tag), and a first import
    # writes its ~93,000 rows in key order.
    # And by tag (migration 0016): a tag's history reads its spans alone; each index entry carries the prefix too.
    __table_args__ = (Index("ix_prefix_spans_tag_id", "tag_id", "first_day", "until_day"),
                      {"sqlite_with_rowid": False})

    # Byte order on PostgreSQL: the key is ASCII, and locale-aware comparison
    # only slows the index down. No foreign key to tags: see migration 0005.
    prefix: Mapped[str] = mapped_column(
        String(43).with_variant(String(43, collation="C"), "postgresql"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_day: Mapped[int] = mapped_column(Integer, primary_key=True)
    until_day: Mapped[int | None] = mapped_column(Integer)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("publication_id", "watch"),
        Index("ix_tickets_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: stable identity carried by every message about the ticket
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    #: the publication of the approved state it diffs against (NULL for a baseline)
    previous_publication_id: Mapped[int | None] = mapped_column(
        ForeignKey("publications.id", ondelete="CASCADE"), index=True)
    cloud: Mapped[str] = mapped_column(String(16))
    #: the registry name, "mcr", or watches.EXTRA_WATCH
    watch: Mapped[str] = mapped_column(String(100))
    file_date: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))
    #: False while a held ticket's removals await a reviewer's release
    removals_allowed: Mapped[bool] = mapped_column(Boolean)
    context: Mapped[str] = mapped_column(Text)
    #: per watched tag its prefixes and changeNumber (what an approval records): JSON, zstd-compressed when long,
    #: apart from the context that every render reads (NULL never written: a column added in place is nullable)
    target: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: "baseline" (nothing approved yet: the full list) or "change" (against the approved state)
    kind: Mapped[str] = mapped_column(String(16), server_default="change")
    #: the ticket that replaced this one when a newer publication changed the watch again
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))


class ApprovedState(Base):
    """One approval of a watch's allow-list; the newest row per (cloud, watch) is in force."""

    __tablename__ = "approved_states"
    __table_args__ = (Index("ix_approved_states_cloud_watch", "cloud", "watch", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    watch: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), index=True)
    approved_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: until then the firewall keeps the previous list as well; NULL: additions only, nothing removed
    removals_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: JSON: the publication the state came from
    content: Mapped[str] = mapped_column(Text)
    #: per family the final list, the previous one and the first phase's union: JSON, zstd-compressed when long
    lists: Mapped[bytes] = mapped_column(LargeBinary)
    #: per tag its exact prefixes, changeNumber and publication: JSON, zstd-compressed when long (read only by the
    #: few that need the tags: a state list and a snippet need the lists alone)
    tags: Mapped[bytes] = mapped_column(LargeBinary)


class TicketEvent(Base):
    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("ticket_id", "destination", "event"),
        Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    #: hash of the destination URL: stable, and no secret in the database
    destination: Mapped[str] = mapped_column(String(64))
    #: the URL in apprise's privacy form, for status output
    destination_label: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))          # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: what the message announces: created, approved, rejected, superseded, or the removal-date reminder (0007)
    event: Mapped[str] = mapped_column(String(16), server_default="created")


class Poll(Base):
    """One attempt to poll a cloud (``polls``, revision 0003): when, from where, what came of it.

    ``url`` and ``error`` are redacted before they are written: no source
    credentials in the database. ``outcome`` is one of ``pipeline.POLL_OUTCOMES``.
    """

    __tablename__ = "polls"
    __table_args__ = (Index("ix_polls_cloud_started_at", "cloud", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    url: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    publication_id: Mapped[int | None] = mapped_column(ForeignKey("publications.id", ondelete="SET NULL"), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))


class DaemonRun(Base):
    """One scheduled (or catch-up) run of ``watcher run`` (``daemon_runs``, revision 0004).

    Written by the replica that led the run: ``runner`` is ``host:pid``. A run
    whose process died has ``finished_at`` NULL and counts neither as a success
    nor as a failure. Catch-up and health read this table, not the scheduler.
    """

    __tablename__ = "daemon_runs"
    __table_args__ = (Index("ix_daemon_runs_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    runner: Mapped[str] = mapped_column(String(200))
    #: schedule, catch-up
    reason: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str] = mapped_column(Text, default="")


class HealthAlert(Base):
    """A "watcher unhealthy" or "watcher recovered" message for one destination (``health_alerts``, 0004).

    Rows are queued only when the health state flips, so a week of failing
    runs queues one alert per destination, not one per run; each row is sent
    until it succeeds or runs out of attempts. ``destination`` is the hash
    of the apprise URL (as in ``outbox``); an empty one records a flip with
    nobody to tell.
    """

    __tablename__ = "health_alerts"
    __table_args__ = (Index("ix_health_alerts_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))           # unhealthy, recovered
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    destination: Mapped[str] = mapped_column(String(64))
    destination_label: Mapped[str] = mapped_column(String(1024), default="")
    state: Mapped[str] = mapped_column(String(16))          # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- feeds (revision 0009)


class FeedConsumer(Base):
    """A firewall (or any poller) allowed to fetch feeds: its name, the hash of its token, its watches."""

    __tablename__ = "feed_consumers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)   # sha256 hex of the token; never the token
    watches: Mapped[str] = mapped_column(Text, default="[]")            # JSON list of feed names; [] = every feed
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class FeedFetch(Base):
    """One row per consumer, feed file and version it got: first and last fetch, and how many (200 or 304)."""

    __tablename__ = "feed_fetches"
    __table_args__ = (UniqueConstraint("consumer_id", "path", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("feed_consumers.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(80))                    # the ETag served
    cloud: Mapped[str] = mapped_column(String(16))
    watch: Mapped[str] = mapped_column(String(100))
    state_id: Mapped[int] = mapped_column(Integer, index=True)          # the approved state it came from
    complete: Mapped[bool] = mapped_column(Boolean)                     # the final phase (removals done)
    first_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)


class FeedDenial(Base):
    """Requests refused for wrong or missing credentials, counted per day."""

    __tablename__ = "feed_denials"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


# ---------------------------------------------------------------- the review desk's users (revision 0010)


class User(Base):
    """Someone who signs in to the review desk (``users``, 0010): a role and a scrypt password hash."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))            # viewer, approver, admin
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token of a user for ``/api/v1``, kept as its SHA-256 only (``api_tokens``, 0010)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- secrets every server process shares (revision 0011)


class ServerSecret(Base):
    """A random secret made once and shared by every process on the database (``server_secrets``, 0011).

    ``session_key`` signs the review desk's session cookies and CSRF tokens: kept
    here, a restart does not sign everyone out and replicas behind one load
    balancer accept each other's cookies.
    """

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- which publication the ticket hooks last ran for (0014)


class HookMark(Base):
    """Per cloud, the publication whose tickets and outbox hooks ran last (``watcher.hook_marks``, 0014).

    Written in the hooks' own transaction: a backfill stopped between its last
    import and its hooks leaves the mark behind its newest publication, and the
    next run (or poll) runs the hooks it owes from there, once.
    """

    __tablename__ = "hook_marks"

    cloud: Mapped[str] = mapped_column(String(16), primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"))
    marked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ForcedImport(Base):
    """A publication imported with ``--force`` despite failed plausibility checks, and the checks (0014).

    Written in the import's transaction: the checks hold the publication's
    tickets, and a backfill's tickets may be made by a later run or a poll.
    """

    __tablename__ = "forced_imports"

    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id", ondelete="CASCADE"), primary_key=True)
    #: JSON list of what the file failed, as the tickets' hold reasons name it
    reasons: Mapped[str] = mapped_column(Text)
