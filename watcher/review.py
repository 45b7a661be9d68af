"""Review steps on tickets, and what a ticket's snippets must make the firewall allow.

Steps (``ACTIONS``)::

    release            hold -> open       (the removals may go, after review)
    approve            open -> approved   (the watch's approved state moves: watcher.state)
    approve-adds  hold -> hold       (only the additions join the approved state)
    reject             open|hold -> rejected   (the approved state stays)
    applied            approved -> applied

Who takes a step is recorded as given (``--by``, by default the operating-system
user), refused when it carries control characters (it is printed in tickets
and messages). With ``[tickets] four_eyes``, who releases a hold or approves a
baseline cannot be who created the ticket or last changed it.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from typing import Any, Callable

from sqlalchemy import Connection, Engine, insert, update

from . import db, state as states
from .errors import RenderError, TransitionError, translate_db_errors
from .models import Ticket, TicketEvent, utcnow
from .settings import Settings, TicketSettings
from .tickets import TicketInfo, events_of, events_read, get_ticket, ticket_events, view
from .watches import EXTRA_WATCH, MCR_WATCH

#: action -> (states it may start from, state it leads to)
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "release": (("hold",), "open"),
    "approve": (("open",), "approved"),
    "approve-adds": (("hold",), "hold"),
    "reject": (("open", "hold"), "rejected"),
    "applied": (("approved",), "applied"),
}
PHASES = ("add", "remove")
NFT_FAMILIES = ("ip", "ip6", "inet", "bridge", "netdev")
MAX_ACTOR = 200
MAX_COMMENT = 2000


def check_operator_text(value: str, what: str, limit: int) -> str:
    """``value`` if fit for the review trail: no control or format characters, at most ``limit`` characters.

    A newline in ``--by`` or a comment would forge a line of the trail
    (``alice\n[watcher ticket 3] approved by root``); bidirectional overrides
    and other invisible format characters would make a line read differently
    than it is stored.
    """
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise TransitionError(f"{what} must not contain control or invisible characters (found U+{ord(bad):04X})")
    if len(value) > limit:
        raise TransitionError(f"{what} is longer than {limit} characters")
    return value


def check_actor(actor: str) -> str:
    name = actor.strip()
    if not name:
        raise TransitionError("say who takes the step (--by NAME)")
    return check_operator_text(name, "the reviewer's name (--by)", MAX_ACTOR)


def _check_comment(comment: str) -> str:
    return check_operator_text(comment, "the comment", MAX_COMMENT)


def transition(
    engine: Engine,
    ticket_id: int,
    action: str,
    actor: str,
    comment: str = "",
    *,
    settings: TicketSettings | None = None,
    announce: Settings | None = None,
    now: Callable[[], dt.datetime] = utcnow,
) -> TicketInfo:
    """Take one review step and record who took it; an approval moves the watch's approved state.

    With ``announce`` (the settings with notification destinations), an approval queues its message ("apply the
    additions now, the removals on DATE") and a reminder due on the removal date; a rejection queues its own.
    """
    settings = settings or TicketSettings()
    if action not in ACTIONS:
        raise TransitionError(f"unknown review step {action!r} (known: {', '.join(ACTIONS)})")
    actor = check_actor(actor)
    comment = _check_comment(comment)
    allowed, target = ACTIONS[action]
    table = Ticket.__table__
    with translate_db_errors(f"recording {action} on ticket {ticket_id}"):
        with db.writer(engine).begin() as conn:
            ticket = get_ticket(conn, ticket_id, view=False)
            if ticket.state not in allowed:
                raise TransitionError(
                    f"ticket {ticket_id} is {ticket.state}: {action} needs a ticket that is {' or '.join(allowed)}"
                    + (f" (superseded by ticket {ticket.superseded_by})" if ticket.superseded_by else ""))
            events = ticket_events(conn, ticket_id)
            if settings.four_eyes and (action == "release" or (action == "approve" and ticket.kind == "baseline")):
                others = {events[0].actor, events[-1].actor}
                if actor in others:
                    raise TransitionError(f"four-eyes rule: {actor} created or last changed ticket {ticket_id}; "
                                          f"someone else must {action} it")
            at = now()
            values: dict[str, Any] = {"state": target, "updated_at": at}
            if action == "release":
                values["removals_allowed"] = True
            if action in ("approve", "approve-adds") and "approval_lists" in ticket.context:
                # What an approval would make, kept to render the ticket before it: from now on the ticket
                # renders the state its approval records, and every read of the ticket decodes less.
                values["context"] = json.dumps({k: v for k, v in ticket.context.items() if k != "approval_lists"},
                                               sort_keys=True)
            # Conditional on the state read: a concurrent reviewer's step wins, ours fails loudly.
            moved = conn.execute(
                update(table).where(table.c.id == ticket_id, table.c.state == ticket.state).values(**values)
            ).rowcount
            if moved != 1:
                raise TransitionError(f"ticket {ticket_id} changed while {action} was recorded; look again")
            moved_to = None
            if action in ("approve", "approve-adds"):
                moved_to = _move_state(conn, ticket, events, settings, at, additions_only=action == "approve-adds")
            conn.execute(insert(TicketEvent.__table__), {
                "ticket_id": ticket_id, "at": at, "actor": actor, "action": action,
                "from_state": ticket.state, "to_state": target, "comment": comment,
            })
            if announce is not None:
                _announce(conn, announce, ticket_id, action, moved_to, at)
            return get_ticket(conn, ticket_id, view=False)


def _announce(conn: Connection, settings: Settings, ticket_id: int, action: str,
              moved_to: states.ApprovedState | None, at: dt.datetime) -> None:
    from . import notify  # notify renders through this module: imported when needed

    if action == "reject":
        notify.enqueue(conn, [ticket_id], settings, at, event="rejected")
    elif action in ("approve", "approve-adds"):
        notify.enqueue(conn, [ticket_id], settings, at, event="approved" if action == "approve" else "additions")
        if moved_to is not None and moved_to.removals_at is not None:
            notify.enqueue(conn, [ticket_id], settings, at, event="reminder", due=moved_to.removals_at)


def _move_state(conn: Connection, ticket: TicketInfo, events, settings: TicketSettings, at: dt.datetime,
                *, additions_only: bool) -> states.ApprovedState:
    previous = states.current(conn, ticket.cloud, ticket.watch)
    before = previous.effective(at) if previous else states.empty_lists()
    tags = ticket.target
    removals_at = None
    if additions_only:
        # Every tag keeps what was approved and gains the new prefixes: the removals stay pending,
        # so the next approval (or the next ticket) still carries them.
        old = previous.tags if previous else {}
        tags = {n: states.TagApproval(tuple(sorted(set(t.prefixes) | set(old[n].prefixes if n in old else ()))),
                                      t.change_number, t.publication) for n, t in tags.items()}
        tags.update({n: t for n, t in old.items() if n not in tags})
    else:
        released = [e.at for e in events if e.action == "release"]
        decided = states.as_utc(released[-1]) if released else at
        removals_at = states.removals_time(ticket.file_date, settings.removal_delay_days, decided)
    source = ticket.context["source"]
    return states.record(
        conn, cloud=ticket.cloud, watch=ticket.watch, ticket_id=ticket.id, publication_id=ticket.publication_id,
        publication={"date": source["date"], "change_number": source["change_number"]}, tags=tags,
        before=before, approved_at=at, removals_at=removals_at)


# ---------------------------------------------------------------- what the snippets allow


def object_base(watch: str, cloud: str) -> str:
    """The firewall objects' common name: ``wt_<watch>`` (plus the cloud outside the public one)."""
    name = "extra" if watch == EXTRA_WATCH else re.sub(r"[^a-z0-9]+", "", watch.lower())
    return f"wt_{name}" + ("" if cloud == "public" else f"_{cloud}")


def nsg_priority(settings: Settings, watch: str) -> int:
    """A stable NSG priority pair per watch: mcr, the extra tags, then registries in config order."""
    base = settings.tickets.nsg_priority_base
    if watch == MCR_WATCH:
        return base
    if watch == EXTRA_WATCH:
        return base + 2
    names = [r.name for r in settings.registries]
    if watch not in names:
        raise RenderError(f"watch {watch!r} is no longer configured: it has no NSG priority")
    return base + 4 + 2 * names.index(watch)


_READ = object()  # firewall(): the state in force is read from the database


def firewall(conn: Connection, ticket: TicketInfo, settings: Settings, phase: str,
             at: dt.datetime | None = None, recorded: list[states.ApprovedState] | None = None,
             latest: Any = _READ) -> dict[str, Any]:
    """The full object contents a snippet sets for ``phase``, and what earlier states left that must go.

    ``recorded`` (the states the ticket's approvals recorded) and ``latest`` (the watch's state in force, or None)
    may be given when read already (``states.of_ticket``).
    """
    if phase not in PHASES:
        raise RenderError(f"unknown phase {phase!r} (choose add or remove)")
    if ticket.state in ("rejected", "superseded"):
        successor = f"; see ticket {ticket.superseded_by}" if ticket.superseded_by else ""
        raise RenderError(f"ticket {ticket.id} is {ticket.state}: nothing to apply{successor} "
                          f"(`watcher state show {ticket.watch}` gives the approved list)")
    if recorded is None or latest is _READ:
        recorded, latest = states.of_ticket(conn, ticket.cloud, ticket.watch, ticket.id)
    if phase == "remove" and ticket.state == "hold":
        raise RenderError(f"ticket {ticket.id} is held: its removals wait for a reviewer's release "
                          f"(render --phase add for the additions)")
    if recorded:
        mine = recorded[-1]
        if latest is not None and latest.id != mine.id and ticket.state != "hold":
            # An older approval's list would undo a newer one: only the newest approval renders.
            raise RenderError(f"ticket {ticket.id}'s approval was followed by ticket {latest.ticket_id}'s: render "
                              f"ticket {latest.ticket_id} (or `watcher state show {ticket.watch}`)")
        final, removals_at = mine.final, mine.removals_at
        first_phase = mine.first_phase()
        before = None if mine.dropped is not None else mine.before  # computed at approval, when it was kept
    else:  # not approved yet: what an approval now would record
        previous = latest
        at = at or utcnow()
        before = previous.effective(at) if previous else states.empty_lists()
        removals_at = None
        prepared = states.first_phase_of(ticket.context.get("approval_lists"), previous, at)
        if prepared is not None:  # computed when the ticket was made, against the state still in force
            final, first_phase = prepared
        else:
            final = states.family_lists(p for t in ticket.target.values() for p in t.prefixes)
            first_phase = states.union(before, final)
    objects = first_phase if phase == "add" else {f: list(final[f]) for f in states.FAMILIES}
    if before is None:
        dropped = {f: list(mine.dropped[phase][f]) for f in states.FAMILIES}
    else:
        dropped = {f: states.missing(before.get(f, ()), objects[f]) for f in states.FAMILIES}
    family, _, table = settings.tickets.nft_table.partition(" ")
    if family not in NFT_FAMILIES or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", table or "watcher"):
        raise RenderError(f"[tickets] nft_table {settings.tickets.nft_table!r} is not '<family> <name>' "
                          f"(family one of {', '.join(NFT_FAMILIES)}, name letters, digits and _)")
    return {
        "phase": phase,
        "objects": objects,
        "dropped": dropped,
        "base": object_base(ticket.watch, ticket.cloud),
        "nsg_priority": nsg_priority(settings, ticket.watch),
        "nft": {"family": family, "table": table or "watcher"},
        "removals_at": removals_at.isoformat() if removals_at else None,
    }




def full_view(conn: Connection, ticket: TicketInfo, settings: Settings, phase: str | None = None,
              *, trail: bool = True) -> dict[str, Any]:
    """What templates see: the ticket's context, its review trail (unless ``trail`` is false: an empty one, for
    templates that do not show it), and (for a phase) the snippet objects."""
    data = view(ticket)
    read: tuple[list[states.ApprovedState], states.ApprovedState | None] | None = None
    taken = ticket.view_reads.take(conn) if ticket.view_reads is not None else None
    state_rows: list[Any] | None = None
    if taken is not None:  # read with the ticket's row
        event_rows, state_rows = taken
        events = events_of(event_rows) if trail else None
    elif trail and phase is not None:  # both reads wanted: one round trip
        with translate_db_errors(f"reading ticket {ticket.id}'s events and approved states"):
            event_rows, both_read = db.read_together(conn, [
                events_read(ticket.id), states.of_ticket_read(ticket.cloud, ticket.watch, ticket.id)])
        events = events_of(event_rows)
        read = states.of_ticket_from(both_read, ticket.id)
    else:
        events = ticket_events(conn, ticket.id) if trail else None
    if events is not None:
        data["trail"] = [{"at": e.at.isoformat() if hasattr(e.at, "isoformat") else str(e.at), "actor": e.actor,
                          "action": e.action, "to_state": e.to_state, "comment": e.comment} for e in events]
    if phase is None and events is not None and not any(e.action in ("approve", "approve-adds") for e in events):
        approval: list[states.ApprovedState] = []  # every approval records its state and its event together
    else:
        if state_rows is not None:  # decoded only here: a message of a ticket never approved needs none
            read = states.of_ticket_from(state_rows, ticket.id)
        approval, latest = read if read is not None else states.of_ticket(conn, ticket.cloud, ticket.watch,
                                                                          ticket.id)
    data["approval"] = {"removals_at": approval[-1].removals_at.date().isoformat()
                        if approval and approval[-1].removals_at else None,
                        "additions_only": bool(approval) and approval[-1].removals_at is None}
    if phase is not None:
        data["firewall"] = firewall(conn, ticket, settings, phase, recorded=approval, latest=latest)
    return data

