"""Notify stage: deliver each ticket to every configured apprise destination, once, through an outbox.

A ticket is queued per destination in the ``outbox`` table in the same
transaction that creates it, so a ticket without its messages cannot exist.
``deliver_due`` then works one row at a time:

1. claim the row in a short transaction (one ``UPDATE ... RETURNING``: with
   ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, under the write lock on SQLite;
   a conditional UPDATE on SQLite before 3.35), marking it ``sending`` with a
   claim token;
2. send it with apprise, outside any transaction, capturing apprise's log;
3. record the result at once: ``sent``, or ``pending`` again with exponential
   backoff, or ``failed`` after ``max_attempts`` (in the same transaction as
   the next claim: one commit per message).

A row recorded as sent is never sent again. Only a crash between 2 and 3
leaves a row ``sending``; after ``lease`` it is claimed again and the message
may arrive twice. Every message carries the ticket's id and uid, so a
receiver can tell a repeat.

On PostgreSQL, claims and results are single statements committed without
waiting for the server's disk flush (each statement sets ``synchronous_commit``
off for its own transaction, ``set_config(..., true)``: a flush costs
milliseconds per message; the connection's setting never changes). Other
sessions see them at once; a crash of the database server itself may forget
the last fraction of a second of them, which moves rows back to ``pending``
or ``sending``: they are sent again, as after a crash between 2 and 3, and
never lost.

Destination URLs carry secrets (passwords, tokens). The database knows a
destination by a hash of its URL and by apprise's privacy form; the URL itself
comes from the settings at send time. Apprise's own log output is kept from
propagating during a send, captured, and re-logged with every secret part of
the URL masked.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import hashlib
import logging
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import apprise
from apprise.attachment.file import AttachFile

try:  # apprise 1.9 and later attach from memory: no file is written per send
    from apprise.attachment.memory import AttachMemory
except ImportError:  # pragma: no cover - older apprise
    AttachMemory = None
from sqlalchemy import (ARRAY, Connection, Engine, Integer, String, all_, and_, any_, bindparam, func, insert, or_,
                        select, true, update)

from . import db, tickets
from .errors import NotifyError, RenderError, translate_db_errors
from .models import OutboxMessage, Ticket, utcnow
from .redact import ordered_secrets, redact_text
from .mail import attachment_type, mail_html, snippet_files, snippet_kinds
from .render import Renderer, formats_view
from .settings import Settings
from .store.records import ImportResult

log = logging.getLogger(__name__)

EMAIL_SCHEMES = ("mailto", "mailtos")
OUTBOX_STATES = ("pending", "sending", "sent", "failed")
DEFAULT_LEASE = dt.timedelta(minutes=15)
MAX_BACKOFF = dt.timedelta(days=1)
#: Changing it changes every destination key: queued messages would no longer match their destination.
DESTINATION_SALT = b"watcher-destination-v1"


# ---------------------------------------------------------------- destinations


@dataclass(frozen=True)
class Destination:
    """One apprise URL from the settings; ``url`` is secret and never shown (repr included)."""

    key: str
    label: str
    url: str = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False, default=())
    valid: bool = True

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0].lower()

    def redact(self, text: str) -> str:
        return redact_text(text, self.secrets)


@functools.lru_cache(maxsize=64)
def destination_key(url: str) -> str:
    """A stable identity for a destination that does not reveal its URL (64 hex characters).

    The URL holds the password, and the key is stored in ``outbox`` and
    ``health_alerts``: a fast unsalted hash would let whoever reads the
    database try a dictionary of passwords offline. scrypt with a fixed,
    application-specific salt keeps the key stable across processes while
    making each guess cost ~16 MiB and tens of milliseconds; it is a pure
    function of the URL, so it is computed once per process.
    """
    return hashlib.scrypt(url.strip().encode("utf-8"), salt=DESTINATION_SALT, n=2**14, r=8, p=1, dklen=32).hex()


def _secret_parts(url: str, privacy_url: str | None) -> tuple[str, ...]:
    """The pieces of ``url`` that apprise's privacy form hides: passwords, tokens, keys.

    The URL is cut at its delimiters; every piece the privacy form does not
    show is treated as secret. The password is always secret.
    """
    shown = set(re.split(r"[/:@?&=#,;+\s]+", unquote(privacy_url or ""))) | {url.partition("://")[0]}
    secrets = {p for p in re.split(r"[/:@?&=#,;+\s]+", unquote(url)) if len(p) >= 3 and p not in shown}
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        secrets.add(unquote(password))
    return ordered_secrets(secrets)  # the URL-quoted forms too: they may appear in apprise's log


@contextlib.contextmanager
def _apprise_log_captured() -> Iterator[Any]:
    """Capture apprise's log (DEBUG and up) and keep it from reaching other handlers meanwhile.

    Apprise logs through the ``apprise`` logger, and some of its messages
    quote URLs; they are re-logged by the caller after redaction. Sends are
    made one at a time, so borrowing the logger's propagation is safe here.
    """
    logger = logging.getLogger("apprise")
    propagate = logger.propagate
    logger.propagate = False
    # Apprise's debug lines (whole payloads among them) are only re-logged at debug level: when nobody reads that,
    # they are not made at all. Warnings and errors, which explain a failed send, are always captured.
    level = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING
    try:
        with apprise.LogCapture(level=level) as captured:
            yield captured
    finally:
        logger.propagate = propagate


def destinations(settings: Settings) -> list[Destination]:
    """The configured destinations, with privacy labels; invalid URLs are kept, marked invalid."""
    found: list[Destination] = []
    for index, url in enumerate(dict.fromkeys(u.strip() for u in settings.notify.urls if u.strip()), 1):
        with _apprise_log_captured():
            plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            scheme = url.partition("://")[0] if "://" in url else "?"
            label = f"<invalid apprise URL #{index} ({scheme[:20]}://...)>"
            found.append(Destination(destination_key(url), label, url, _secret_parts(url, None), valid=False))
            continue
        privacy = plugin.url(privacy=True)
        found.append(Destination(destination_key(url), privacy, url, _secret_parts(url, privacy)))
    return found


# ---------------------------------------------------------------- queueing



def enqueue(conn: Connection, ticket_ids: Sequence[int], settings: Settings, now: dt.datetime | None = None,
            *, event: str = "created", due: dt.datetime | None = None) -> int:
    """Queue each ticket for each valid destination, in the caller's transaction; returns rows added.

    ``event`` says what the message announces (``EVENTS``); ``due`` delays it (the removal-date reminder).
    """
    if event not in EVENTS:
        raise NotifyError(f"unknown notification event {event!r}")
    configured = destinations(settings)
    targets = [d for d in configured if d.valid]
    for invalid in (d for d in configured if not d.valid):
        log.warning("notification destination %s is not a valid apprise URL; nothing is queued for it", invalid.label)
    if not targets or not ticket_ids:
        return 0
    at = now or utcnow()
    table = OutboxMessage.__table__
    # Once per ticket, destination and event: a step taken twice is announced once.
    queued = {(row[0], row[1]) for row in conn.execute(select(table.c.ticket_id, table.c.destination).where(
        table.c.ticket_id.in_(list(ticket_ids)), table.c.event == event))}
    rows = [
        {"ticket_id": t, "destination": d.key, "destination_label": d.label[:1024], "state": "pending",
         "attempts": 0, "next_attempt_at": due or at, "last_error": "", "created_at": at, "event": event}
        for t in ticket_ids for d in targets if (t, d.key) not in queued
    ]
    if rows:
        conn.execute(insert(table), rows)
    return len(rows)


def enqueue_for_import(conn: Connection, result: ImportResult, settings: Settings) -> None:
    """Pipeline hook: queue the tickets the import just created (runs after ``tickets.create_tickets``)."""
    if result.outcome != "imported":
        return
    created = tickets.tickets_of_publication(conn, result.publication.id)
    enqueue(conn, created, settings)
    if created:  # the tickets these replace are announced as superseded, never as work left to do
        superseded = conn.execute(select(Ticket.id).where(Ticket.superseded_by.in_(created))).scalars().all()
        enqueue(conn, list(superseded), settings, event="superseded")


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    html: str
    attachment_name: str
    attachment: str
    #: further files, (name, text): the full-state snippets of the watch's firewall kinds
    snippets: tuple[tuple[str, str], ...] = ()


#: What an outbox row announces: the new ticket, or a later move of its state.
EVENTS = ("created", "additions", "approved", "rejected", "superseded", "reminder")
#: How a message's title says what the ticket asks for: rejected and superseded tickets are no work to do.
STATE_PREFIX = {"hold": "[HOLD] ", "rejected": "[REJECTED, nothing to apply] ",
                "superseded": "[SUPERSEDED, nothing to apply] ", "approved": "[APPROVED] ", "applied": "[APPLIED] "}


def _event_prefix(event: str, ticket: tickets.TicketInfo, data: Mapping[str, Any]) -> str:
    removals = (data.get("approval") or {}).get("removals_at")
    if event == "approved":
        return f"[APPROVED: apply the additions now, the removals on {removals}] " if removals else \
            "[APPROVED: apply the additions now] "
    if event == "additions":
        return "[ADDITIONS APPROVED: apply --phase add now; the removals wait] "
    if event == "reminder":
        return f"[REMOVALS DUE {removals}: apply --phase remove now] "
    if event == "superseded" and ticket.superseded_by:
        return f"[SUPERSEDED by ticket {ticket.superseded_by}, nothing to apply] "
    return STATE_PREFIX.get(event if event in ("rejected", "superseded") else ticket.state, "")


def build_message(renderer: Renderer, ticket: tickets.TicketInfo, data: dict | None = None,
                  event: str = "created", *, html: bool = True) -> Message:
    """The message for a ticket as it stands when sent (``data``: its full view with the review trail); its HTML
    body only with ``html`` (only mail destinations send it)."""
    data = tickets.view(ticket) if data is None else data
    prefix = _event_prefix(event, ticket, data)
    return Message(
        title=f"{ticket.ref} {prefix}{'[OVERDUE] ' if data.get('overdue') else ''}{ticket.title}",
        body=renderer.render("summary", data),
        html=renderer.render("html", data) if html else "",
        attachment_name=f"watcher-ticket-{ticket.id}.md",
        attachment=renderer.render("md", data),
    )


#: The formats of a message's own text (``build_message``).
MESSAGE_FORMATS = ("summary", "html", "md")


def _message(conn: Connection, settings: Settings, renderer: Renderer, ticket: tickets.TicketInfo,
             event: str, html: bool = True) -> Message:
    """A ticket's message with its snippet files, from one view of the ticket (one check of the state in force); its
    HTML body only with ``html`` (a batch without mail destinations never sends it)."""
    phase, kinds = snippet_kinds(settings, ticket, event)
    data = formats_view(conn, settings, ticket, (*MESSAGE_FORMATS, *kinds), phase, renderer)
    message = build_message(renderer, ticket, data, event, html=html)
    if not kinds:
        return message
    texts = {kind: renderer.render(kind, data) for kind in kinds}
    return replace(message, snippets=snippet_files(ticket, phase, texts))


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str
    log: str


#: Apprise objects kept for one delivery batch, by destination key (``send``'s ``senders``).
Senders = dict[str, tuple[Any, Any]]


def _sender(destination: Destination, senders: Senders | None) -> tuple[Any, Any]:
    """(plugin, Apprise object) for ``destination``: made once per batch when ``senders`` is given.

    Only a plugin without a send-rate limit is kept: apprise throttles a plugin object's later sends to its
    service's rate (seconds apart for many), which a fresh object per send never waits for.
    """
    kept = senders.get(destination.key) if senders is not None else None
    if kept is not None:
        return kept
    # One destination per call, so apprise's thread pool (its default) would only add a thread.
    asset = apprise.AppriseAsset(async_mode=False)
    plugin = apprise.Apprise.instantiate(destination.url, asset=asset)
    if plugin is None:
        raise NotifyError("not a valid apprise URL")
    sender = apprise.Apprise(asset=asset)
    sender.add(plugin)
    if senders is not None and getattr(plugin, "request_rate_per_sec", 1) <= 0:
        senders[destination.key] = (plugin, sender)
    return plugin, sender


#: The Apprise objects of the delivery batch under way (``deliver_due``), or None outside one.
_BATCH_SENDERS: contextvars.ContextVar[Senders | None] = contextvars.ContextVar("watcher_batch_senders", default=None)


def send(destination: Destination, message: Message) -> SendResult:
    """Send one message to one destination; check its result. Within ``deliver_due`` the batch's Apprise object for
    the destination is reused (its URL parsed once per batch)."""
    if not destination.valid:
        return SendResult(False, "not a valid apprise URL", "")
    error = ""
    ok = False
    with contextlib.ExitStack() as stack, _apprise_log_captured() as captured:
        try:
            plugin, sender = _sender(destination, _BATCH_SENDERS.get())
            attach = None
            if getattr(plugin, "attachment_support", False):
                # From memory; else (an older apprise, or an empty text, which apprise would call a missing
                # attachment in memory) written to a folder of this send alone, removed with it. Names are ours.
                attach = apprise.AppriseAttachment()
                folder = None
                for name, text in ((message.attachment_name, message.attachment), *message.snippets):
                    if AttachMemory is not None and text:
                        attach.add(AttachMemory(text.encode("utf-8"), name=name, mimetype=attachment_type(name)))
                        continue
                    if folder is None:
                        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="watcher-notify-"))
                    path = Path(folder) / name
                    path.write_text(text, encoding="utf-8")
                    attach.add(AttachFile(str(path), mimetype=attachment_type(name)))
            if destination.scheme in EMAIL_SCHEMES:
                outcome = sender.notify(title=message.title, body=mail_html(message.html),
                                        body_format=apprise.NotifyFormat.HTML, attach=attach)
            else:
                outcome = sender.notify(title=message.title, body=message.body,
                                        body_format=apprise.NotifyFormat.TEXT, attach=attach)
            ok = bool(outcome)
        except Exception as exc:  # apprise plugins raise what their libraries raise
            error = f"{type(exc).__name__}: {exc}"
        output = captured.getvalue()
    output = destination.redact(output)
    if output.strip():
        log.debug("apprise output for %s:\n%s", destination.label, output.rstrip())
    if not ok and not error:
        problems = [line for line in output.splitlines() if " - WARNING - " in line or " - ERROR - " in line]
        error = (problems[-1].split(" - ", 2)[-1] if problems else "apprise reported a failure")
    return SendResult(ok, destination.redact(error)[:2000], output)


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryResult:
    outbox_id: int
    ticket_id: int
    destination: str
    state: str
    attempts: int
    error: str


@dataclass(frozen=True)
class _Claim:
    id: int
    ticket_id: int
    destination: str
    attempts: int
    token: str
    event: str = "created"


def _due(table: Any, skip: bool, arrays: bool = False) -> Any:
    """Rows due for ``:keys`` at ``:now``: pending and due, or claimed before ``:expired`` (``:skip`` left out).

    ``arrays`` (PostgreSQL): keys and skip bound as one array each, so the statement's text is the same for every
    message of a batch and the driver prepares it (parsed and planned once) after a few messages.
    """
    keys = table.c.destination == any_(bindparam("keys", type_=ARRAY(String))) if arrays else \
        table.c.destination.in_(bindparam("keys", expanding=True))
    condition = and_(
        keys,
        or_(
            and_(table.c.state == "pending", table.c.next_attempt_at <= bindparam("now")),
            # A claim older than the lease belongs to a process that died mid-send.
            and_(table.c.state == "sending", table.c.claimed_at <= bindparam("expired")),
        ),
    )
    if arrays:
        return and_(condition, table.c.id != all_(bindparam("skip", type_=ARRAY(Integer)))) if skip else condition
    return and_(condition, table.c.id.not_in(bindparam("skip", expanding=True))) if skip else condition


def _relaxed_commit() -> Any:
    """PostgreSQL: a column that turns ``synchronous_commit`` off for the statement's own transaction (autocommit:
    the statement is one), so its commit does not wait for the disk flush (see the module's notes). Evaluated for
    every row the statement returns; a statement that returns no row wrote nothing, and has nothing to flush."""
    return func.set_config("synchronous_commit", "off", true()).label("relaxed_commit")


@functools.lru_cache(maxsize=None)
def _claim_statements() -> dict[str, Any]:
    """The claim and record statements, built once (building them cost more than running them on SQLite)."""
    table = OutboxMessage.__table__
    columns = (table.c.id, table.c.ticket_id, table.c.destination, table.c.attempts, table.c.event)
    taking = {"state": "sending", "claim_token": bindparam("token", type_=table.c.claim_token.type),
              # not named as a column: in the one-statement result and claim, a parameter named as a column
              # would be set by the other UPDATE too
              "claimed_at": bindparam("claim_time", type_=table.c.claimed_at.type), "attempts": table.c.attempts + 1}
    statements: dict[str, Any] = {}
    for skip in (False, True):
        query = select(*columns).where(_due(table, skip)).order_by(table.c.next_attempt_at, table.c.id).limit(1)
        statements[f"pick{'_skip' * skip}"] = query
        # SQLite 3.35 and later: one statement picks a due row and takes it (under the transaction's write lock).
        picked = query.with_only_columns(table.c.id).with_for_update(skip_locked=True).scalar_subquery()
        statements[f"take_locked{'_skip' * skip}"] = (update(table).where(table.c.id == picked).values(**taking)
                                                      .returning(*columns))
    statements["take"] = update(table).where(table.c.id == bindparam("row_id"), _due(table, False)).values(**taking)
    record = update(table).where(table.c.id == bindparam("row_id"), table.c.claim_token == bindparam("claim"))
    # One statement per outcome, its values bound: no statement is built (nor its cache key made) per message.
    released = {"claim_token": None, "last_error": bindparam("error", type_=table.c.last_error.type)}
    statements["record_sent"] = record.values(state="sent", sent_at=bindparam("at", type_=table.c.sent_at.type),
                                              **released)
    statements["record_failed"] = record.values(state="failed", **released)
    statements["record_pending"] = record.values(
        state="pending", next_attempt_at=bindparam("at", type_=table.c.next_attempt_at.type), **released)
    # PostgreSQL: the claim with keys and skipped rows bound as arrays (one text for every claim of a batch; an
    # empty skip array leaves nothing out), its commit relaxed by the statement itself (no SET and RESET round trips).
    picked = (select(table.c.id).where(_due(table, True, arrays=True)).order_by(table.c.next_attempt_at, table.c.id)
              .limit(1).with_for_update(skip_locked=True).scalar_subquery())
    take_pg = update(table).where(table.c.id == picked).values(**taking).returning(*columns)
    statements["take_pg"] = take_pg.returning(_relaxed_commit())
    # A result and the next claim as one statement (one round trip per message instead of two). Both updates see the
    # same snapshot; they touch different rows (the row recorded is ours, claimed and skipped). One row always comes
    # back: how many rows the result updated, and the claimed row's columns (NULL if none).
    taken = take_pg.cte("taken")
    for state in ("sent", "failed", "pending"):
        recorded = statements[f"record_{state}"].returning(table.c.id).cte(f"recorded_{state}")
        counted = select(func.count().label("recorded")).select_from(recorded).subquery("counted")
        statements[f"record_{state}_and_take"] = (
            select(counted.c.recorded, *taken.c, _relaxed_commit()).select_from(counted.outerjoin(taken, true())))
    return statements


@contextlib.contextmanager
def _outbox_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for claims and results, one transaction each (on PostgreSQL committed without waiting for the
    disk flush, which each claim and result statement asks for itself: see the module's notes); a batch keeps one for
    all its messages."""
    with db.writer(engine).connect() as conn:
        if conn.dialect.name == "postgresql":
            # Each statement its own transaction: a result is one UPDATE, a claim one UPDATE ... RETURNING (the
            # queue idiom), so no BEGIN and COMMIT round trips. The pool restores the isolation level.
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def _claim(engine: Engine, keys: Sequence[str], now: dt.datetime, lease: dt.timedelta,
           skip: Sequence[int], claimed_at: dt.datetime | None = None) -> _Claim | None:
    """Claim one row due at ``now``; the claim is stamped ``claimed_at`` (the time of claiming, default ``now``)."""
    with _outbox_connection(engine) as conn:
        return _claim_on(conn, keys, now, lease, skip, claimed_at or now)


def _claim_on(conn: Connection, keys: Sequence[str], now: dt.datetime, lease: dt.timedelta,
              skip: Sequence[int], claimed_at: dt.datetime) -> _Claim | None:
    """``_claim`` on an outbox connection, a transaction per try."""
    for _ in range(5):
        with conn.begin():
            claim = _claim_in(conn, keys, now, lease, skip, claimed_at)
        if claim is not _LOST:
            return claim
    return None  # others keep taking the rows we look at; they will deliver them


_LOST = object()  # _claim_in: another process took the row between our read and our update


def _claim_in(conn: Connection, keys: Sequence[str], now: dt.datetime, lease: dt.timedelta,
              skip: Sequence[int], claimed_at: dt.datetime) -> Any:
    """Claim one due row in the caller's writing transaction: a ``_Claim``, None when nothing is due, or ``_LOST``."""
    statements = _claim_statements()
    token = str(uuid.uuid4())
    due = {"keys": list(keys), "now": now, "expired": now - lease}
    taking = {"token": token, "claim_time": claimed_at}
    if conn.dialect.name == "postgresql":
        # One statement picks a due row no one else holds (SKIP LOCKED) and takes it.
        row = conn.execute(statements["take_pg"], {**due, **taking, "skip": list(skip)}).first()
        return None if row is None else _Claim(row.id, row.ticket_id, row.destination, row.attempts, token,
                                               row.event)
    suffix = "_skip" if skip else ""
    if skip:
        due["skip"] = list(skip)
    if conn.dialect.update_returning:
        # One statement picks a due row and takes it, under the write lock the transaction took first (SQLite 3.35
        # and later).
        row = conn.execute(statements["take_locked" + suffix], {**due, **taking}).first()
        return None if row is None else _Claim(row.id, row.ticket_id, row.destination, row.attempts, token,
                                               row.event)
    row = conn.execute(statements["pick" + suffix], due).first()
    if row is None:
        return None
    due.pop("skip", None)
    claimed = conn.execute(statements["take"], {**due, **taking, "row_id": row.id}).rowcount
    return _Claim(row.id, row.ticket_id, row.destination, row.attempts + 1, token, row.event) if claimed == 1 \
        else _LOST


def _record_values(claim: _Claim, result: SendResult, settings: Settings, now: dt.datetime) -> tuple[str, dict]:
    """The row's new state after a send, and the parameters of its ``record_<state>`` statement."""
    values: dict[str, Any] = {"row_id": claim.id, "claim": claim.token, "error": result.error}
    if result.ok:
        state = "sent"
        values.update(at=now, error="")
    elif claim.attempts >= settings.notify.max_attempts:
        state = "failed"
    else:
        state = "pending"
        delay = dt.timedelta(seconds=settings.notify.backoff_seconds * 2 ** (claim.attempts - 1))
        values["at"] = now + min(delay, MAX_BACKOFF)
    return state, values


def _record_in(conn: Connection, claim: _Claim, result: SendResult, settings: Settings, now: dt.datetime) -> str:
    """Record a send's result in the caller's writing transaction; the row's new state."""
    state, values = _record_values(claim, result, settings, now)
    _check_recorded(claim, conn.execute(_claim_statements()[f"record_{state}"], values).rowcount)
    return state


def _check_recorded(claim: _Claim, recorded: int) -> None:
    if recorded != 1:
        log.warning("outbox row %s was claimed again before its result was recorded", claim.id)


def _record_and_take(conn: Connection, claim: _Claim, result: SendResult, settings: Settings,
                     clock: Callable[[], dt.datetime], keys: Sequence[str], now: dt.datetime,
                     lease: dt.timedelta, skip: Sequence[int]) -> tuple[str, _Claim | None]:
    """PostgreSQL: a send's result and the next claim in one statement (autocommit: committed together)."""
    state, values = _record_values(claim, result, settings, clock())
    token = str(uuid.uuid4())
    values.update(keys=list(keys), now=now, expired=now - lease, token=token, claim_time=clock(), skip=list(skip))
    row = conn.execute(_claim_statements()[f"record_{state}_and_take"], values).one()
    _check_recorded(claim, row.recorded)
    following = None if row.id is None else _Claim(row.id, row.ticket_id, row.destination, row.attempts, token,
                                                    row.event)
    return state, following


def _record_and_claim(conn: Connection, claim: _Claim, result: SendResult, settings: Settings,
                      clock: Callable[[], dt.datetime], keys: Sequence[str], now: dt.datetime,
                      lease: dt.timedelta, skip: Sequence[int]) -> tuple[str, _Claim | None]:
    """Record a send's result and claim the next due row in one transaction (one commit instead of two per
    message; on PostgreSQL two statements that commit each); the result is committed before the next send all the
    same. A lost race for the next row is retried as ``_claim`` does."""
    if conn.dialect.name == "postgresql":
        with conn.begin():  # SQLAlchemy's marker: the connection is in autocommit (``_outbox_connection``)
            return _record_and_take(conn, claim, result, settings, clock, keys, now, lease, skip)
    with conn.begin():
        state = _record_in(conn, claim, result, settings, clock())
        following = _claim_in(conn, keys, now, lease, skip, clock())
    if following is _LOST:
        following = _claim_on(conn, keys, now, lease, skip, clock())
    return state, following


def _advancing_from(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that reads ``start`` now and moves on with the real time from there."""
    origin = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - origin)


def deliver_due(
    engine: Engine,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    lease: dt.timedelta = DEFAULT_LEASE,
    clock: Callable[[], dt.datetime] | None = None,
) -> list[DeliveryResult]:
    """Send every queued message that is due at ``now``, one row at a time; each result is recorded at once.

    ``now`` is only the cut-off for what is due. Each claim, backoff and
    ``sent_at`` is stamped with a fresh ``clock()`` reading (default: the real
    time, or ``now`` moving on with it): a batch can take longer than the
    lease, and a row claimed late in it must not look expired to a concurrent
    ``watcher notify``, which would send it a second time.
    """
    if clock is None:
        clock = utcnow if now is None else _advancing_from(now)
    at = now or clock()
    by_key = {d.key: d for d in destinations(settings)}
    batch = _BATCH_SENDERS.set({})  # one Apprise object per destination for the batch
    try:
        return _deliver(engine, settings, at, lease, clock, by_key)
    finally:
        _BATCH_SENDERS.reset(batch)


def _deliver(engine: Engine, settings: Settings, at: dt.datetime, lease: dt.timedelta,
             clock: Callable[[], dt.datetime], by_key: Mapping[str, Destination]) -> list[DeliveryResult]:
    renderer = Renderer(settings.tickets)
    html = any(d.scheme in EMAIL_SCHEMES for d in by_key.values())  # only mail sends a message's HTML body
    results: list[DeliveryResult] = []
    attempted: list[int] = []
    messages: dict[tuple[int, str], Message | RenderError] = {}
    with translate_db_errors("delivering notifications"), _outbox_connection(engine) as outbox:
        keys = list(by_key)
        claim = _claim_on(outbox, keys, at, lease, attempted, clock())
        while claim is not None:
            attempted.append(claim.id)
            destination = by_key[claim.destination]
            message = messages.get((claim.ticket_id, claim.event))
            if message is None:
                try:
                    if outbox.dialect.name == "postgresql":
                        # The outbox connection runs each statement on its own (autocommit), as a READ COMMITTED
                        # transaction would read them: no checkout, BEGIN or ROLLBACK round trips per ticket.
                        try:
                            message = _message(outbox, settings, renderer,
                                               tickets.get_ticket(outbox, claim.ticket_id), claim.event, html)
                        finally:
                            outbox.commit()  # SQLAlchemy's transaction marker only: nothing is sent
                    else:
                        with engine.connect() as conn:
                            ticket = tickets.get_ticket(conn, claim.ticket_id)
                            message = _message(conn, settings, renderer, ticket, claim.event, html)
                except RenderError as exc:
                    message = exc
                messages[(claim.ticket_id, claim.event)] = message
            if isinstance(message, RenderError):
                outcome = SendResult(False, f"rendering failed: {message}", "")
            else:
                outcome = send(destination, message)
            state, following = _record_and_claim(outbox, claim, outcome, settings, clock, keys, at, lease, attempted)
            results.append(DeliveryResult(claim.id, claim.ticket_id, destination.label, state, claim.attempts,
                                          outcome.error))
            claim = following
    return results


# ---------------------------------------------------------------- status and test


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    ticket_id: int
    ticket_uid: str
    destination: str
    configured: bool
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "ticket": self.ticket_id, "ticket_uid": self.ticket_uid, "destination": self.destination,
            "configured": self.configured, "state": self.state, "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None, "error": self.last_error,
        }


@dataclass(frozen=True)
class OutboxStatus:
    """The outbox at a glance: how many messages per state, and each message."""

    counts: dict[str, int]
    entries: tuple[OutboxEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "messages": [e.to_json() for e in self.entries]}


def outbox_report(engine: Engine, settings: Settings) -> OutboxStatus:
    """``outbox_status`` of every ticket, with the count of messages per state."""
    entries = outbox_status(engine, settings)
    return OutboxStatus(state_counts(entries), tuple(entries))


def outbox_status(engine: Engine, settings: Settings, ticket_id: int | None = None) -> list[OutboxEntry]:
    configured = {d.key for d in destinations(settings)}
    table = OutboxMessage.__table__
    query = (select(table, Ticket.uid).join(Ticket.__table__, Ticket.id == table.c.ticket_id)
             .order_by(table.c.ticket_id, table.c.id))
    if ticket_id is not None:
        query = query.where(table.c.ticket_id == ticket_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        OutboxEntry(r.id, r.ticket_id, r.uid, r.destination_label, r.destination in configured, r.state,
                    r.attempts, r.next_attempt_at, r.sent_at, r.last_error)
        for r in rows
    ]


def state_counts(entries: Sequence[OutboxEntry]) -> dict[str, int]:
    counts = dict.fromkeys(OUTBOX_STATES, 0)
    for entry in entries:
        counts[entry.state] = counts.get(entry.state, 0) + 1
    return counts


@dataclass(frozen=True)
class TestResult:
    destination: str
    ok: bool
    error: str


def send_test(settings: Settings, now: dt.datetime | None = None) -> list[TestResult]:
    """A short test message to each configured destination, and each one's result."""
    at = (now or utcnow()).replace(microsecond=0).isoformat()
    message = Message(
        title="[watcher test] notification test",
        body=f"This is a test message from the watcher, sent {at}. No action is needed.",
        html=f"<p>This is a test message from the watcher, sent {at}. No action is needed.</p>",
        attachment_name="watcher-test.txt",
        attachment="watcher notification test\n",
    )
    return [TestResult(d.label, (r := send(d, message)).ok, r.error) for d in destinations(settings)]
