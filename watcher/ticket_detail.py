"""One ticket whole, as ``tickets show`` and ``GET /api/v1/tickets/{id}`` give it: one value, one JSON shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datetime as dt

from sqlalchemy import Connection, Engine, select

from . import feed_consumers, notify, tickets
from .models import ApprovedState as ApprovedStateRow
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
        ticket = tickets.get_ticket(conn, ticket_id)
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
