"""The review queue as the desk's start page shows it: live tickets first, then a page of the decided ones.

``tickets.list_tickets`` decodes every ticket's whole context (an AzureCloud
ticket carries thousands of prefixes); a queue of years of tickets needs only a
few columns and the titles of the rows it shows. ``review_queue`` reads those:
the live tickets (held before open, newest first), one page of the decided
ones (newest first), how many there are, and the watches and clouds to filter
by, each title read by the database from the context's JSON.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import JSON, Connection, and_, case, cast, func, select

from . import tickets
from .errors import translate_db_errors
from .models import Ticket, TicketEvent

#: Decided tickets shown per page of the queue.
DECIDED_PAGE = 50
#: A live ticket waiting longer than this is overdue (the weekly publication has moved on).
OVERDUE_AFTER = dt.timedelta(days=7)


@dataclass(frozen=True)
class QueueRow:
    id: int
    state: str
    kind: str
    watch: str
    cloud: str
    file_date: dt.date
    title: str
    updated_at: dt.datetime

    def overdue(self, now: dt.datetime) -> bool:
        due = self.overdue_after()
        return due is not None and now > due

    def overdue_after(self) -> dt.datetime | None:
        """The moment past which this ticket is overdue (None: never, it is decided)."""
        if self.state not in tickets.LIVE_STATES:
            return None
        updated = self.updated_at if self.updated_at.tzinfo else self.updated_at.replace(tzinfo=dt.timezone.utc)
        return updated + OVERDUE_AFTER


@dataclass(frozen=True)
class ReviewQueue:
    live: list[QueueRow]            # held, then open; newest first
    decided: list[QueueRow]         # one page, newest first
    decided_total: int
    decided_offset: int
    decided_limit: int
    watches: list[str]              # to filter by (among the tickets of the asked-for state)
    clouds: list[str]

    def marks_hold_until(self, now: dt.datetime) -> dt.datetime | None:
        """Until when the overdue marks as they are at ``now`` hold (the moment past which a live ticket not overdue
        yet becomes so; None: for good, until the tickets change): what is worked out from the queue is kept that
        long."""
        coming = [due for due in (t.overdue_after() for t in self.live) if due is not None and due >= now]
        return min(coming, default=None)

    @property
    def older_offset(self) -> int | None:
        following = self.decided_offset + self.decided_limit
        return following if following < self.decided_total else None

    @property
    def newer_offset(self) -> int | None:
        return max(0, self.decided_offset - self.decided_limit) if self.decided_offset else None


def _title(conn: Connection):
    """The context's title, extracted by the database (the context is JSON text)."""
    if conn.dialect.name == "postgresql":
        return cast(Ticket.context, JSON)["title"].as_string()
    return func.json_extract(Ticket.context, "$.title")


def _rows(conn: Connection, query) -> list[QueueRow]:
    return [QueueRow(ticket_id, state, kind, watch, cloud, file_date, str(title), updated_at)
            for ticket_id, state, kind, watch, cloud, file_date, title, updated_at in conn.execute(query)]


def review_queue(conn: Connection, state: str | None = None, watch: str | None = None, cloud: str | None = None,
                 decided_offset: int = 0, decided_limit: int = DECIDED_PAGE) -> ReviewQueue:
    """The queue filtered by state, watch and cloud (an unknown state matches nothing)."""
    decided_offset = max(0, decided_offset)
    if state and state not in tickets.STATES:
        return ReviewQueue([], [], 0, decided_offset, decided_limit, [], [])
    of_state = [Ticket.state == state] if state else []
    shown = [*of_state, *([Ticket.watch == watch] if watch else []), *([Ticket.cloud == cloud] if cloud else [])]
    # Three queries (each a round trip, which costs more than the work on PostgreSQL): the live tickets, a page
    # of the decided ones (ordered on the primary key, so titles are extracted for the shown rows only), and
    # the decided count per watch and cloud.
    columns = (Ticket.id, Ticket.state, Ticket.kind, Ticket.watch, Ticket.cloud, Ticket.file_date,
               _title(conn).label("title"), Ticket.updated_at)
    live_rank = case((Ticket.state == "hold", 0), else_=1)
    decided_filter = and_(Ticket.state.not_in(tickets.LIVE_STATES), *shown)
    with translate_db_errors("reading the review queue"):
        live = _rows(conn, select(*columns).where(and_(Ticket.state.in_(tickets.LIVE_STATES), *shown))
                     .order_by(live_rank, Ticket.id.desc()))
        decided = _rows(conn, select(*columns).where(decided_filter).order_by(Ticket.id.desc())
                        .limit(decided_limit).offset(decided_offset))
        # The watches and clouds to filter by, with the decided tickets of each (their sum is the total).
        groups = conn.execute(select(Ticket.watch, Ticket.cloud, func.count(case((decided_filter, 1))))
                              .where(*of_state).group_by(Ticket.watch, Ticket.cloud)).all()
    total = sum(n for w, c, n in groups if (not watch or w == watch) and (not cloud or c == cloud))
    watches, clouds = sorted({w for w, _, _ in groups}), sorted({c for _, c, _ in groups})
    return ReviewQueue(live, decided, total, decided_offset, decided_limit, watches, clouds)


def tickets_stamp(conn: Connection) -> tuple[int, int | None, int | None]:
    """How many tickets there are, the newest ticket id and the newest event id: it moves with every new ticket
    and every review step (each change of a ticket's state writes an event), so it keys what is worked out
    from the queue. Three index look-ups: ``max(updated_at)`` would read every ticket row, contexts and all
    (1,000 tickets: a few milliseconds, most of a queue view)."""
    with translate_db_errors("reading the review queue"):
        return tickets_stamp_from(conn.execute(*tickets_stamp_read()).all())


def tickets_stamp_read() -> tuple[Any, dict[str, Any]]:
    """The read of ``tickets_stamp`` (statement, parameters), for ``db.read_together``: the queue page sends it
    with the session's user look-up, one round trip for both on PostgreSQL."""
    return _TICKETS_STAMP, {}


def tickets_stamp_from(rows: Sequence[Any]) -> tuple[int, int | None, int | None]:
    """``tickets_stamp`` from the rows of its read."""
    count, newest, changed = rows[0]
    return int(count), newest, changed


#: Built once (each queue view runs it; building it cost more than SQLite's answer).
_TICKETS_STAMP = select(
    select(func.count()).select_from(Ticket.__table__).scalar_subquery(),
    select(func.max(Ticket.__table__.c.id)).scalar_subquery(),
    select(func.max(TicketEvent.__table__.c.id)).scalar_subquery())
