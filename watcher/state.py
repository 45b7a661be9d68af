"""The approved state of a watch: the allow-list reviewers last approved, and what the firewall must allow now.

Per watch (a registry, ``mcr``, the extra tags) and cloud, each approval adds a
row to ``approved_states``; the newest row is in force, the older ones are the
history. A row keeps, per tag, its exact prefixes and the publication they came
from, and per address family the collapsed ``final`` list and the ``before``
list (what the firewall allowed when the approval was recorded).

Two phases, never removals first::

    effective(t) = collapse(before ∪ final)   while t < removals_at
                 = final                        from removals_at on

    removals_at  = max(publication date + removal_delay_days, approval or release time)

An approval of a held ticket's additions only has no ``removals_at``: its final
list is ``before ∪ new``, and the removals wait for a later approval.

The phase arithmetic is pure (``removals_time``, ``effective_lists``); the
storage functions take a connection and never commit.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import msgspec
from sqlalchemy import Connection, bindparam, func, insert, select

from . import db, diff as diffs
from .errors import NotFoundError
from .models import ApprovedState as ApprovedStateRow
from .models import Ticket as TicketRow
from .store import sql

FAMILIES = ("v4", "v6")
FamilyLists = dict[str, list[str]]


# ---------------------------------------------------------------- pure phase arithmetic


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every time here is UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def removals_time(publication_date: dt.date, delay_days: int, decided_at: dt.datetime) -> dt.datetime:
    """The later of the publication date plus the delay and the approval (or release) time."""
    earliest = dt.datetime.combine(publication_date, dt.time(), dt.timezone.utc) + dt.timedelta(days=delay_days)
    return max(earliest, as_utc(decided_at))


def family_lists(prefixes: Iterable[str]) -> FamilyLists:
    """Collapsed CIDRs per family, in address order."""
    collapsed = diffs.collapse(prefixes)
    return {"v4": [c for c in collapsed if ":" not in c], "v6": [c for c in collapsed if ":" in c]}


def union(first: Mapping[str, Sequence[str]], second: Mapping[str, Sequence[str]]) -> FamilyLists:
    return family_lists([*first.get("v4", ()), *first.get("v6", ()), *second.get("v4", ()), *second.get("v6", ())])


def effective_lists(before: Mapping[str, Sequence[str]], final: Mapping[str, Sequence[str]],
                    removals_at: dt.datetime | None, at: dt.datetime) -> FamilyLists:
    """What the firewall must allow at ``at``: old and new until the removal date, then the new list alone."""
    if removals_at is not None and as_utc(at) >= as_utc(removals_at):
        return {f: list(final.get(f, ())) for f in FAMILIES}
    if not any(before.get(f) for f in FAMILIES):
        return {f: list(final.get(f, ())) for f in FAMILIES}
    return union(before, final)


def empty_lists() -> FamilyLists:
    return {"v4": [], "v6": []}


def missing(earlier: Sequence[str], kept: Sequence[str]) -> list[str]:
    """The prefixes of ``earlier`` not in ``kept``, in ``earlier``'s order (set arithmetic first: usually none)."""
    gone = set(earlier).difference(kept)
    return [c for c in earlier if c in gone] if gone else []


def dropped_lists(before: Mapping[str, Sequence[str]], final: Mapping[str, Sequence[str]],
                  during: Mapping[str, Sequence[str]]) -> dict[str, FamilyLists]:
    """Per phase, what the earlier list allowed that the phase's objects no longer hold (what a snippet removes)."""
    return {"add": {f: missing(before.get(f, ()), during.get(f, ())) for f in FAMILIES},
            "remove": {f: missing(before.get(f, ()), final.get(f, ())) for f in FAMILIES}}


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class TagApproval:
    """One tag as approved: its exact prefixes and the publication they came from."""

    prefixes: tuple[str, ...]
    change_number: int | None
    publication: Mapping[str, Any]  # {"date", "change_number"}

    def to_json(self) -> dict[str, Any]:
        return {"prefixes": list(self.prefixes), "change_number": self.change_number,
                "publication": dict(self.publication)}


@dataclass(frozen=True)
class ApprovedState:
    id: int
    cloud: str
    watch: str
    ticket_id: int
    publication_id: int
    publication: Mapping[str, Any]  # {"date", "change_number"}
    approved_at: dt.datetime
    removals_at: dt.datetime | None
    tags: Mapping[str, TagApproval]
    final: Mapping[str, list[str]]
    before: Mapping[str, list[str]]
    #: collapse(before ∪ final), computed once at approval: the list of the first phase
    during: Mapping[str, list[str]] | None = None
    #: per phase ("add", "remove") and family, what ``before`` held that the phase's list does not: computed once at
    #: approval (a snippet of the state's ticket removes it); None in states recorded before it was kept
    dropped: Mapping[str, Mapping[str, list[str]]] | None = None

    @property
    def additions_only(self) -> bool:
        return self.removals_at is None

    def first_phase(self) -> FamilyLists:
        return {f: list(v) for f, v in self.during.items()} if self.during is not None else union(self.before, self.final)

    def removals_due(self, at: dt.datetime) -> bool:
        """True from the removal date on: the firewall then allows the final list alone."""
        return self.removals_at is not None and as_utc(at) >= self.removals_at

    def effective(self, at: dt.datetime) -> FamilyLists:
        if self.removals_due(at):
            return {f: list(self.final.get(f, ())) for f in FAMILIES}
        return self.first_phase()

    def to_json(self, at: dt.datetime) -> dict[str, Any]:
        """The CLI and API contract of ``watcher state show``."""
        return {
            "watch": self.watch,
            "cloud": self.cloud,
            "ticket": self.ticket_id,
            "publication": {"date": self.publication["date"], "change_number": self.publication["change_number"]},
            "effective": self.effective(at),
            "final": {f: list(self.final.get(f, ())) for f in FAMILIES},
            "removals_at": self.removals_at.isoformat() if self.removals_at else None,
        }


def prepared_lists(approved: ApprovedState | None, prefixes: Iterable[str]) -> dict[str, Any]:
    """What approving a ticket for ``prefixes`` would make the firewall allow, against ``approved``, computed once
    when the ticket is made (a ticket is rendered in every format, often, and each list is a collapse of thousands of
    prefixes): its final list, and the first phase's union with either list the approved state may be in force with.
    ``first_phase_of`` reads it back while ``approved`` is still the state in force.
    """
    final = family_lists(prefixes)
    if approved is None:
        return {"state": None, "final": final}
    lists = {"state": approved.id, "final": final, "with_final": union(approved.final, final)}
    during = approved.first_phase()
    if any(during[f] != list(approved.final.get(f, ())) for f in FAMILIES):
        lists["with_during"] = union(during, final)
    return lists


def first_phase_of(prepared: Mapping[str, Any] | None, approved: ApprovedState | None,
                   at: dt.datetime) -> tuple[FamilyLists, FamilyLists] | None:
    """(final, first phase) from ``prepared_lists``, or None when they were made against another state."""
    if prepared is None or prepared.get("state") != (approved.id if approved else None):
        return None
    final = {f: list(prepared["final"][f]) for f in FAMILIES}
    if approved is None:
        return final, {f: list(v) for f, v in final.items()}
    chosen = prepared["with_final"] if approved.removals_due(at) else prepared.get("with_during",
                                                                                    prepared["with_final"])
    return final, {f: list(chosen[f]) for f in FAMILIES}


# ---------------------------------------------------------------- storage


class _Content(msgspec.Struct):
    """A stored state's ``content`` column."""

    publication: dict[str, Any]


class _Lists(msgspec.Struct):
    """A stored state's ``lists`` column: the previous lists are kept undecoded, and so is the final list until it is
    used (a snippet of the first phase reads ``during`` alone)."""

    final: msgspec.Raw
    before: msgspec.Raw  # only a snippet of the ticket that made the state reads it
    during: dict[str, list[str]] | None = None
    dropped: dict[str, dict[str, list[str]]] | None = None


_CONTENT = msgspec.json.Decoder(_Content)
_PACKED_LISTS = msgspec.json.Decoder(_Lists)
_TAGS = msgspec.json.Decoder(dict[str, Any])
_LISTS = msgspec.json.Decoder(dict[str, list[str]])


def _packed(value: Any) -> bytes:
    """JSON with sorted keys, zstd-compressed when long (``lists`` and ``tags`` columns)."""
    return sql.compress(json.dumps(value, sort_keys=True).encode())


class _StoredLists(Mapping[str, list[str]]):
    """A state's family lists, decoded on first use."""

    def __init__(self, raw: msgspec.Raw):
        self._raw: msgspec.Raw | None = raw
        self._lists: dict[str, list[str]] = {}

    def _decoded(self) -> dict[str, list[str]]:
        if self._raw is not None:
            self._lists = _LISTS.decode(self._raw)
            self._raw = None
        return self._lists

    def __getitem__(self, family: str) -> list[str]:
        return self._decoded()[family]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


class _StoredTags(Mapping[str, TagApproval]):
    """A state's tags, decoded on first use: listing states and rendering snippets need only the family lists."""

    def __init__(self, packed: bytes | None, state_id: int):
        self._packed: bytes | None = packed
        self._tags: dict[str, TagApproval] | None = None
        self._state_id = state_id

    def _decoded(self) -> dict[str, TagApproval]:
        if self._tags is None:
            if self._packed is None:
                raise RuntimeError(f"approved state {self._state_id} was read without its tags (tags=True reads them)")
            self._tags = {name: TagApproval(tuple(t["prefixes"]), t["change_number"], t["publication"])
                          for name, t in _TAGS.decode(sql.decompress(self._packed)).items()}
            self._packed = None
        return self._tags

    def __getitem__(self, name: str) -> TagApproval:
        return self._decoded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return "<tags not read>" if self._tags is None and self._packed is None else repr(self._decoded())


def _columns(tags: bool) -> list[Any]:
    """A state's columns; ``tags`` (every tag's exact prefixes, the largest) only when asked for."""
    return [c for c in ApprovedStateRow.__table__.c if tags or c.name != "tags"]


def _state(row: Any, tags: bool = True) -> ApprovedState:
    """A state from its row (``tags``: the row has the tags column)."""
    lists = _PACKED_LISTS.decode(sql.decompress(row.lists))
    return ApprovedState(
        id=row.id, cloud=row.cloud, watch=row.watch, ticket_id=row.ticket_id, publication_id=row.publication_id,
        publication=_CONTENT.decode(row.content).publication, approved_at=as_utc(row.approved_at),
        removals_at=as_utc(row.removals_at) if row.removals_at is not None else None,
        tags=_StoredTags(row.tags if tags else None, row.id), final=_StoredLists(lists.final),
        before=_StoredLists(lists.before), during=lists.during, dropped=lists.dropped,
    )


def record(conn: Connection, *, cloud: str, watch: str, ticket_id: int, publication_id: int,
           publication: Mapping[str, Any], tags: Mapping[str, TagApproval], before: Mapping[str, list[str]],
           approved_at: dt.datetime, removals_at: dt.datetime | None) -> ApprovedState:
    """Store a new approved state of a watch (in the caller's transaction)."""
    final = family_lists(p for t in tags.values() for p in t.prefixes)
    if removals_at is None:
        final = union(final, before)  # additions only: nothing the firewall allows goes yet
    before = {f: list(before.get(f, ())) for f in FAMILIES}
    during = union(before, final)
    lists = {"final": final, "before": before, "during": during, "dropped": dropped_lists(before, final, during)}
    new_id = conn.execute(insert(ApprovedStateRow.__table__).returning(ApprovedStateRow.__table__.c.id), {
        "cloud": cloud, "watch": watch, "ticket_id": ticket_id, "publication_id": publication_id,
        "approved_at": approved_at, "removals_at": removals_at,
        "content": json.dumps({"publication": dict(publication)}, sort_keys=True),
        "lists": _packed(lists), "tags": _packed({n: t.to_json() for n, t in sorted(tags.items())}),
    }).scalar_one()
    row = conn.execute(select(ApprovedStateRow.__table__).where(ApprovedStateRow.id == new_id)).one()
    return _state(row)


def current(conn: Connection, cloud: str, watch: str, at: dt.datetime | None = None) -> ApprovedState | None:
    """The state in force for a watch (at a time, when given), or None when nothing was approved yet."""
    table = ApprovedStateRow.__table__
    query = select(*_columns(tags=True)).where(table.c.cloud == cloud, table.c.watch == watch)
    if at is not None:
        query = query.where(table.c.approved_at <= at)
    row = conn.execute(query.order_by(table.c.id.desc()).limit(1)).first()
    return _state(row) if row is not None else None


def history(conn: Connection, cloud: str, watch: str, ticket_id: int | None = None) -> list[ApprovedState]:
    """Every state of a watch, oldest first (only those a ticket's approvals recorded, when ``ticket_id`` is given)."""
    table = ApprovedStateRow.__table__
    query = select(*_columns(tags=True)).where(table.c.cloud == cloud, table.c.watch == watch)
    if ticket_id is not None:
        query = query.where(table.c.ticket_id == ticket_id)
    return [_state(r) for r in conn.execute(query.order_by(table.c.id))]


def _of_ticket_query(by_ticket: bool = False) -> Any:
    """``of_ticket``'s statement; ``by_ticket``: the watch taken from the ticket's row (only ``:ticket_id`` bound)."""
    table = ApprovedStateRow.__table__
    cloud, watch = bindparam("cloud"), bindparam("watch")
    if by_ticket:
        ticket = TicketRow.__table__
        cloud, watch = (select(column).where(ticket.c.id == bindparam("ticket_id")).scalar_subquery()
                        for column in (ticket.c.cloud, ticket.c.watch))
    newest = select(func.max(table.c.id)).where(table.c.cloud == cloud, table.c.watch == watch).scalar_subquery()
    return select(*_columns(tags=False)).where(table.c.cloud == cloud, table.c.watch == watch,
                               (table.c.ticket_id == bindparam("ticket_id")) | (table.c.id == newest)
                               ).order_by(table.c.id)


#: Built once: every render of a ticket runs it, and building it costs more than running it on SQLite.
_OF_TICKET = _of_ticket_query()
_OF_TICKET_BY_ID = _of_ticket_query(by_ticket=True)


def of_ticket(conn: Connection, cloud: str, watch: str,
              ticket_id: int) -> tuple[list[ApprovedState], ApprovedState | None]:
    """(the states a ticket's approvals recorded, oldest first; the state in force for its watch), in one query;
    read without their tags (a ticket's text and snippets need the family lists alone)."""
    return of_ticket_from(conn.execute(*of_ticket_read(cloud, watch, ticket_id)).all(), ticket_id)


def of_ticket_read(cloud: str, watch: str, ticket_id: int) -> tuple[Any, dict[str, Any]]:
    """The read of ``of_ticket`` (statement, parameters), for ``db.read_together``."""
    return _OF_TICKET, {"cloud": cloud, "watch": watch, "ticket_id": ticket_id}


def of_ticket_by_id_read(ticket_id: int) -> tuple[Any, dict[str, Any]]:
    """``of_ticket_read`` for a ticket known by its id alone (read with its row: ``tickets.get_ticket``)."""
    return _OF_TICKET_BY_ID, {"ticket_id": ticket_id}


def of_ticket_from(rows: Iterable[Any], ticket_id: int) -> tuple[list[ApprovedState], ApprovedState | None]:
    """``of_ticket`` from the rows of its read."""
    found = [_state(r, tags=False) for r in rows]
    return [s for s in found if s.ticket_id == ticket_id], (found[-1] if found else None)


def _all_current_query(at: bool, tags: bool) -> Any:
    table = ApprovedStateRow.__table__
    newest = select(func.max(table.c.id))
    if at:
        newest = newest.where(table.c.approved_at <= bindparam("at"))
    newest = newest.group_by(table.c.cloud, table.c.watch).scalar_subquery()
    return select(*_columns(tags)).where(table.c.id.in_(newest)).order_by(table.c.cloud, table.c.watch)


_ALL_CURRENT = {(at, tags): _all_current_query(at, tags) for at in (False, True) for tags in (False, True)}


def all_current(conn: Connection, at: dt.datetime | None = None, *, tags: bool = False) -> list[ApprovedState]:
    """The state in force for every watch that has one (at a time, when given), by cloud and watch (one query);
    their tags only with ``tags`` (listing states needs the family lists alone)."""
    rows = db.read_rows(conn, _ALL_CURRENT[at is not None, tags], {"at": at} if at is not None else {})
    return [_state(r, tags) for r in rows]


def require(conn: Connection, cloud: str, watch: str, at: dt.datetime | None = None) -> ApprovedState:
    found = current(conn, cloud, watch, at)
    if found is None:
        when = f" at {at.isoformat()}" if at is not None else ""
        raise NotFoundError(f"watch {watch!r} ({cloud}) has no approved state{when}: approve its baseline ticket "
                            f"first (watcher tickets list)")
    return found
