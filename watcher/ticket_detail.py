"""One ticket whole, as ``tickets show`` and ``GET /api/v1/tickets/{id}`` give it: one value, one JSON shape."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Connection, Engine, bindparam, select

from . import feed_consumers, notify, tickets
from .errors import NotFoundError
from .models import ApprovedState as ApprovedStateRow
from .models import Ticket
from .settings import Settings
from .state import as_utc


@dataclass(frozen=True)
class TicketDetail:
    """A ticket with its review trail, its deliveries and who pulled its approved state (feeds)."""

    ticket: tickets.TicketInfo
    events: tuple[tickets.TicketEventInfo, ...]
    deliveries: tuple[notify.OutboxEntry, ...]
    pulled_by: tuple[feed_consumers.Pull, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.ticket.to_json(),
            "changes": self.ticket.changes,
            "events": [e.to_json() for e in self.events],
            "deliveries": [d.to_json() for d in self.deliveries],
            "pulled_by": [p.to_json() for p in self.pulled_by],
        }


def ticket_detail(engine: Engine, settings: Settings, ticket_id: int) -> TicketDetail:
    with engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id, view=False)  # no view made: its events read below
        events = tickets.ticket_events(conn, ticket_id)
        pulls = feed_consumers.pulled_by(conn, ticket_id)
    deliveries = notify.outbox_status(engine, settings, ticket_id)
    return TicketDetail(ticket, tuple(events), tuple(deliveries), tuple(pulls))


@dataclass(frozen=True)
class OwnApproval:
    """When the ticket's newest approval was recorded, and when its removals may go (None: additions only)."""

    approved_at: dt.datetime
    removals_at: dt.datetime | None


def own_approval(conn: Connection, ticket_id: int) -> OwnApproval | None:
    """The newest approved state this ticket recorded, without reading its lists (one indexed row), or None."""
    table = ApprovedStateRow.__table__
    row = conn.execute(select(table.c.approved_at, table.c.removals_at).where(table.c.ticket_id == ticket_id)
                       .order_by(table.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return OwnApproval(as_utc(row.approved_at), as_utc(row.removals_at) if row.removals_at is not None else None)


@dataclass(frozen=True)
class PageStamp:
    """What decides how a ticket page looks, read without the ticket's context or any state's lists: the
    ticket's state and last change, the watch's approved state in force, and the ticket's own approval."""

    state: str
    updated_at: dt.datetime
    file_date: dt.date
    approved_id: int | None
    approved_removals_at: dt.datetime | None
    own: OwnApproval | None


def _page_stamp_query() -> Any:
    t, a = Ticket.__table__, ApprovedStateRow.__table__

    def newest(column: Any, *where: Any) -> Any:
        return select(column).where(*where).order_by(a.c.id.desc()).limit(1).scalar_subquery()

    of_watch = (a.c.cloud == t.c.cloud, a.c.watch == t.c.watch)
    own = (a.c.ticket_id == t.c.id,)
    return select(
        t.c.state, t.c.updated_at, t.c.file_date, newest(a.c.id, *of_watch).label("approved_id"),
        newest(a.c.removals_at, *of_watch).label("approved_removals_at"), newest(a.c.id, *own).label("own_id"),
        newest(a.c.approved_at, *own).label("own_approved_at"), newest(a.c.removals_at, *own).label("own_removals_at"),
    ).where(t.c.id == bindparam("ticket_id"))


#: Built once: every view of a ticket page runs it (building it cost more than the database's answer).
_PAGE_STAMP = _page_stamp_query()


def page_stamp(conn: Connection, ticket_id: int) -> PageStamp:
    """One query (NotFoundError for no such ticket)."""
    read = page_stamp_read(ticket_id)
    if read is None:
        raise NotFoundError(f"no ticket {ticket_id}")
    return page_stamp_from(conn.execute(*read).all(), ticket_id)


def page_stamp_read(ticket_id: int) -> tuple[Any, dict[str, Any]] | None:
    """The read of ``page_stamp`` (statement, parameters), for ``db.read_together``; None for an id no ticket
    can have (the database would refuse it as a parameter)."""
    if not 1 <= ticket_id <= tickets.MAX_TICKET_ID:
        return None
    return _PAGE_STAMP, {"ticket_id": ticket_id}


def page_stamp_from(rows: Sequence[Any], ticket_id: int) -> PageStamp:
    """``page_stamp`` from the rows of its read (NotFoundError for none)."""
    if not rows:
        raise NotFoundError(f"no ticket {ticket_id}")
    row = rows[0]

    def utc(value: Any) -> dt.datetime | None:
        if value is None:
            return None
        return as_utc(value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value))

    return PageStamp(
        state=row.state, updated_at=utc(row.updated_at), file_date=row.file_date, approved_id=row.approved_id,
        approved_removals_at=utc(row.approved_removals_at),
        own=OwnApproval(utc(row.own_approved_at), utc(row.own_removals_at)) if row.own_id is not None else None)
