"""Tickets: a watch's change against its approved state, reviewed before the firewall follows.

A ticket is created inside the import's transaction (``create_tickets`` is
registered in ``pipeline.derived_work``), so a publication and its tickets are
committed together or not at all. The ticket row keeps its full render
context as JSON, including the target list of every watched tag: what the
reviewer sees and what an approval records never depend on when they happen.

Tickets diff against the watch's **approved state** (``watcher.state``), not
against the previous publication. A watch with nothing approved gets a
``baseline`` ticket with its full list. At most one ticket per watch is live
(open or held): a newer publication that changes the watch again supersedes it.

Review states (steps in ``watcher.review``)::

    hold --release--> open --approve--> approved --applied--> applied
      \\                 \\
       +----reject--------+--reject--> rejected
    open|hold --a newer publication--> superseded (linked to its successor)

A ticket is born ``hold`` instead of ``open`` when the change looks dangerous
for the firewall (a large share of a tag's IPv4 or IPv6 space removed, a
watched tag withdrawn, or a file that failed the fetch stage's plausibility
check). A held ticket's additions can be approved alone; its removals wait.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgspec
import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from . import db, diff as diffs, plausible
from . import ticket_text
from . import state as states
from . import store
from .errors import NotFoundError, translate_db_errors
from .models import Ticket, TicketEvent, utcnow
from .store import sql
from .settings import Settings
from .watches import STORAGE_WARNING, ResolvedWatch, WatchedTag, resolve_watches

STATES = ("open", "hold", "approved", "rejected", "applied", "superseded")
LIVE_STATES = ("open", "hold")
KINDS = ("baseline", "change")
SYSTEM_ACTOR = "watcher"
CONTEXT_VERSION = 2


@dataclass(frozen=True)
class TicketInfo:
    id: int
    uid: str
    publication_id: int
    previous_publication_id: int | None
    cloud: str
    watch: str
    file_date: dt.date
    state: str
    removals_allowed: bool
    context: Mapping[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    kind: str = "change"
    superseded_by: int | None = None
    #: the ``target`` column: every watched tag's prefixes (JSON, zstd-compressed when long), decoded when read
    packed_target: bytes | None = field(default=None, repr=False, compare=False)
    #: the rows its first view reads, read with the ticket's row (``get_ticket`` on PostgreSQL)
    view_reads: "ViewReads | None" = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        """How every message names the ticket, so receivers can tell repeats apart."""
        return f"[watcher ticket {self.id}]"

    @property
    def title(self) -> str:
        return str(self.context["title"])

    @property
    def held(self) -> bool:
        return self.state == "hold"

    def to_json(self) -> dict[str, Any]:
        """The documented shape of ``watcher tickets list --json``."""
        return {
            "id": self.id, "uid": self.uid, "state": self.state, "registry": self.watch, "cloud": self.cloud,
            "date": self.file_date.isoformat(), "title": self.title, "watch": self.watch, "kind": self.kind,
            "superseded_by": self.superseded_by,
            "held_for": list(self.context["hold"]["reasons"]), "removals_allowed": self.removals_allowed,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }

    @property
    def changes(self) -> dict[str, dict[str, list[str]]]:
        """Per tag, the exact prefixes added and removed against the approved state."""
        return {t["tag"]: {"added": list(t["added"]), "removed": list(t["removed"])} for t in self.context["tags"]}

    @functools.cached_property
    def target_lists(self) -> dict[str, Any]:
        """Every watched tag's prefixes and changeNumber as stored: {TAG: {"prefixes": [...], "change_number"}}.

        Kept apart from the context (for an AzureCloud-sized watch 13,000 prefixes, most of the ticket's bytes),
        which every render reads: only an approval, and a new ticket's comparison, read them.
        """
        return _TARGET.decode(sql.decompress(self.packed_target)) if self.packed_target else {}

    @property
    def target(self) -> dict[str, states.TagApproval]:
        """Every watched tag as this ticket's publication has it: what an approval records."""
        pub = self.context["source"]
        publication = {"date": pub["date"], "change_number": pub["change_number"]}
        return {name: states.TagApproval(tuple(t["prefixes"]), t["change_number"], publication)
                for name, t in self.target_lists.items()}


_TARGET = msgspec.json.Decoder(dict[str, Any])


class _TargetView(Mapping[str, Any]):
    """A ticket's ``target`` as templates see it (``view``): read only if a template uses it."""

    def __init__(self, ticket: TicketInfo):
        self._ticket = ticket

    def __getitem__(self, name: str) -> Any:
        return self._ticket.target_lists[name]

    def __iter__(self) -> Any:
        return iter(self._ticket.target_lists)

    def __len__(self) -> int:
        return len(self._ticket.target_lists)


@dataclass(frozen=True)
class TicketEventInfo:
    at: dt.datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    comment: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "by": self.actor, "action": self.action, "from": self.from_state,
                "to": self.to_state, "comment": self.comment}


# ---------------------------------------------------------------- context


def _removal_shares(change: diffs.TagDiff) -> dict[int, float]:
    """Per family (4, 6), the share of the tag's space the change removes; families apart, because IPv6
    counts would drown any IPv4 removal."""
    if change.before is None:
        return {4: 0.0, 6: 0.0}
    before = diffs.address_counts(diffs.collapse(change.before.prefixes))
    removed = change.net_removed_addresses
    return {family: (r / b if b else 0.0) for family, r, b in zip((4, 6), removed, before)}


def _removal_ratio(change: diffs.TagDiff) -> float:
    return max(_removal_shares(change).values())


def _family_text(change: diffs.TagDiff, family: int) -> str | None:
    """``IPv6: /48 narrowed to /49, 50% of IPv6 space`` or ``IPv4 +512 addresses``; None when unchanged."""
    index = 0 if family == 4 else 1
    added = change.net_added_addresses[index]
    removed = change.net_removed_addresses[index]
    if not (added or removed):
        return None
    name = f"IPv{family}"
    parts = []
    if removed:
        share = _removal_shares(change)[family]
        gone = [p for p in change.removed if (":" in p) == (family == 6)]
        came = [p for p in change.added if (":" in p) == (family == 6)]
        if len(gone) == 1 and len(came) == 1 and diffs.collapse([*gone, *came]) == gone:
            parts.append(f"/{gone[0].split('/')[1]} narrowed to /{came[0].split('/')[1]}")
        parts.append(f"{share:.0%} of {name} space removed")
    if added:
        parts.append(f"+{ticket_text.space_text(*((added, 0) if family == 4 else (0, added)))}")
    return f"{name}: " + ", ".join(parts)


def _tag_context(watched: WatchedTag, change: diffs.TagDiff) -> dict[str, Any]:
    before = change.before.sorted_prefixes() if change.before else ()
    after = change.after.sorted_prefixes() if change.after else ()
    return {
        "tag": change.tag,
        "role": watched.role,
        "region": watched.region,
        "endpoints": list(watched.endpoints),
        "status": change.status,
        "change_number_before": change.before.change_number if change.before else None,
        "change_number_after": change.after.change_number if change.after else None,
        "prefix_count_before": len(before),
        "prefix_count_after": len(after),
        "added": list(change.added),
        "removed": list(change.removed),
        "net_added": list(change.net_added),
        "net_removed": list(change.net_removed),
        "net_text": ticket_text.net_text(change),
        "families": [t for t in (_family_text(change, 4), _family_text(change, 6)) if t],
        "reaggregation_only": change.reaggregation_only,
        "removal_ratio": round(_removal_ratio(change), 4),
        "anomalies": list(change.anomalies),
    }


#: Implausible prefixes named per tag in a hold reason; the rest are counted.
_PROBLEMS_SHOWN = 3


def hold_reasons(
    changes: Sequence[diffs.TagDiff], ratio: float, implausible: Sequence[str] = (),
    moved: Mapping[str, str] | None = None, limits: plausible.Limits | None = None,
) -> list[str]:
    """Why a ticket must wait for a reviewer before anything is removed (and before it is opened at all).

    ``implausible`` are the publication's failed checks (the fetch stage and
    the import know them); ``limits`` decide which added prefixes are
    implausible (a default route, too wide, a bogon: see ``plausible``);
    ``moved`` maps a no-longer-covered prefix to where its space is published
    now (from ``lookup``). Removal reasons are per address family.
    """
    moved = moved or {}
    reasons = [f"the file failed a plausibility check: {note}" for note in implausible]
    limits = limits or plausible.Limits()
    for change in changes:
        problems = plausible.prefix_problems(change.added, limits)
        if problems:
            more = len(problems) - _PROBLEMS_SHOWN
            reasons.append(f"{change.tag} adds implausible prefixes: {'; '.join(problems[:_PROBLEMS_SHOWN])}"
                           + (f"; and {more} more" if more > 0 else ""))
    for change in changes:
        if change.status == "withdrawn":
            reasons.append(f"{change.tag} was withdrawn from the publication (every rule for it would go)")
            continue
        shares = _removal_shares(change)
        if max(shares.values()) > ratio:
            families = [t for t in (_family_text(change, 6), _family_text(change, 4)) if t]
            where = [f"{p} is now published in {moved[p]}" for p in change.net_removed if p in moved]
            reasons.append(f"{change.tag}: " + "; ".join(families) + f" (more than the {ratio:.0%} threshold)"
                           + (f"; {'; '.join(where)}" if where else ""))
    return reasons


def _watch_context(watch: ResolvedWatch) -> dict[str, Any]:
    return {
        "name": watch.name,
        "is_registry": watch.is_registry,
        "is_mcr": watch.name == "mcr",
        "login_server": watch.login_server,
        "cloud": watch.cloud,
        "regions": list(watch.regions),
        "data_endpoint": watch.data_endpoint,
        "warnings": list(watch.warnings),
    }


def _publication_context(pub: store.PublicationInfo, missed: store.MissedPublications | None) -> dict[str, Any]:
    return {"date": pub.file_date.isoformat(), "change_number": pub.change_number, "sha256": pub.sha256,
            "source": pub.source, "missed": None if missed is None else {**missed.to_json(), "text": missed.describe()}}


def _approved_context(approved: states.ApprovedState | None) -> dict[str, Any] | None:
    if approved is None:
        return None
    return {"date": approved.publication["date"], "change_number": approved.publication["change_number"],
            "ticket": approved.ticket_id, "approved_at": approved.approved_at.isoformat()}


def build_context(
    watch: ResolvedWatch,
    approved: states.ApprovedState | None,
    new: store.PublicationInfo,
    changes: Sequence[diffs.TagDiff],
    target: Mapping[str, diffs.TagState],
    *,
    uid: str,
    removal_hold_ratio: float,
    removal_delay_days: int = 7,
    implausible: Sequence[str] = (),
    moved: Mapping[str, str] | None = None,
    limits: plausible.Limits | None = None,
    created_at: dt.datetime | None = None,
    missed: store.MissedPublications | None = None,
) -> dict[str, Any]:
    """Everything a ticket shows, as JSON-ready data: the change from the approved state to ``target``.

    ``created_at`` decides whether the ticket is born overdue (a backfill or a
    late poll); ``missed`` is the gap before the publication, when its global
    changeNumber says publications were not seen.
    """
    by_name = {t.tag: t for t in watch.tags}
    kind = "baseline" if approved is None else "change"
    changed = [c for c in changes if c.added or c.removed or c.status in ("appeared", "withdrawn")]
    tags = [_tag_context(by_name.get(c.tag) or WatchedTag(c.tag, "former", None, ()), c) for c in changed]
    reasons = hold_reasons(changed, removal_hold_ratio, implausible, moved, limits)
    remove_after = (new.file_date + dt.timedelta(days=removal_delay_days)).isoformat()
    label = watch.login_server or ("Microsoft Container Registry" if watch.name == "mcr"
                                   else "the extra watched tags")
    endpoints = sorted({(e, t.tag, t.region or "") for t in watch.tags for e in t.endpoints})
    n_add = sum(len(t["added"]) for t in tags)
    n_remove = sum(len(t["removed"]) for t in tags)
    date = new.file_date.isoformat()
    add_before = new.file_date + dt.timedelta(days=ticket_text.ADD_LEAD_DAYS)
    if kind == "baseline":
        title = f"{label}: baseline allow-list from the Azure {new.cloud} publication of {date}"
        summary = (f"Nothing is approved for this watch yet: this ticket sets up its firewall objects with the "
                   f"full list of {len(target)} service tag{'s' if len(target) != 1 else ''} from Microsoft's "
                   f"{new.cloud} file of {date} (changeNumber {new.change_number}).")
    else:
        title = (f"{label}: {len(tags)} service tag{'s' if len(tags) != 1 else ''} changed in the "
                 f"Azure {new.cloud} publication of {date}")
        summary = (f"Microsoft's {new.cloud} file of {date} (changeNumber {new.change_number}) changes "
                   f"{', '.join(t['tag'] for t in tags)} against the approved state of "
                   f"{approved.publication['date']}: allow {n_add} new prefix{'es' if n_add != 1 else ''} at once; "
                   f"remove {n_remove} prefix{'es' if n_remove != 1 else ''} only from {remove_after} "
                   f"(or the approval, if later).")
    warnings = list(watch.warnings)
    if any(t.role == "data" for t in watch.tags) and not any(STORAGE_WARNING in w for w in warnings):
        warnings.append(STORAGE_WARNING)
    return {
        "version": CONTEXT_VERSION,
        "uid": uid,
        "kind": kind,
        "title": title,
        "summary": summary,
        "cloud": new.cloud,
        "source": _publication_context(new, missed),
        "previous": _approved_context(approved),
        "watch": _watch_context(watch),
        "warnings": warnings,
        "endpoints": [{"fqdn": e, "tag": t, "region": r, "protocol": "TCP", "port": 443} for e, t, r in endpoints],
        "tags": tags,
        "target": {name: {"prefixes": list(s.sorted_prefixes()), "change_number": s.change_number}
                   for name, s in sorted(target.items())},
        "deadline": {"add_before": add_before.isoformat(), "remove_after": remove_after},
        "overdue": ticket_text.overdue_note(add_before, created_at),
        "hold": {"held": bool(reasons), "reasons": reasons, "ratio": removal_hold_ratio},
        "totals": {"added": n_add, "removed": n_remove, "tags": len(target)},
        "risk": ticket_text.risk_lines(tags, label, remove_after),
        "rollback": ticket_text.rollback_lines(tags),
        "verify": ticket_text.verify_lines(watch, tags, date, new.cloud),
    }


# ---------------------------------------------------------------- creation


def _missed_before(new: store.PublicationInfo,
                   pubs: Sequence[store.PublicationInfo]) -> store.MissedPublications | None:
    """The gap the global changeNumber records before ``new``, between the stored publication before it and it."""
    earlier = [p.file_date for p in pubs if p.file_date < new.file_date]
    if not new.missed_before or not earlier:
        return None
    return store.MissedPublications(new.missed_before, max(earlier), new.file_date)


def live_ticket(conn: Connection, cloud: str, watch: str) -> TicketInfo | None:
    """The watch's open or held ticket, if any (there is at most one)."""
    row = conn.execute(select(Ticket.__table__).where(
        Ticket.cloud == cloud, Ticket.watch == watch, Ticket.state.in_(LIVE_STATES)).order_by(Ticket.id.desc())).first()
    return _ticket(row) if row is not None else None


def _same_target(target: Mapping[str, diffs.TagState], recorded: Mapping[str, Sequence[str]]) -> bool:
    return set(target) == set(recorded) and all(target[n].prefixes == frozenset(recorded[n]) for n in target)


def _moved(conn: Connection, new: store.PublicationInfo, changes: Sequence[diffs.TagDiff]) -> dict[str, str]:
    """Where each no-longer-covered prefix is published now (the first address's tags), for hold reasons."""
    found: dict[str, str] = {}
    for change in changes:
        for prefix in change.net_removed[:20]:
            hits = [h.tag for h in store.lookup(conn, new.cloud, prefix.split("/")[0], new) if h.tag != change.tag]
            if hits:
                found[prefix] = ", ".join(sorted(set(hits))[:5])
    return found


def create_tickets(
    conn: Connection,
    result: store.ImportResult,
    settings: Settings,
    *,
    implausible: Sequence[str] = (),
    now: Callable[[], dt.datetime] = utcnow,
) -> list[int]:
    """Tickets for the watches whose target list differs from their approved state, in the import's transaction.

    ``implausible`` lists the plausibility checks the file failed (from the
    fetch stage); any holds every ticket of the publication.
    """
    if result.outcome != "imported":
        return []
    new = result.publication
    pubs = store.publications(conn, new.cloud)
    if any(p.file_date > new.file_date for p in pubs):
        return []  # a file older than the newest one (a backfill): the firewall follows the newest
    missed = _missed_before(new, pubs)
    changed = None if result.previous_day is None else {
        c.tag for c in result.changed_tags if c.added or c.removed or c.status != "unchanged"}
    # Resolve against every tag the cloud has had (one cheap query), so that a watched tag
    # withdrawn by this file still resolves; tags absent from the file drop out of the target.
    names = sorted(store.tag_ids(conn, new.cloud))
    created = []
    for watch in resolve_watches(settings, {new.cloud: names}):
        if watch.cloud == new.cloud:
            ticket_id = _ticket_for_watch(conn, watch, new, changed, settings, implausible, now(), missed)
            if ticket_id is not None:
                created.append(ticket_id)
    return created


def _ticket_for_watch(conn: Connection, watch: ResolvedWatch, new: store.PublicationInfo, changed: set[str] | None,
                      settings: Settings, implausible: Sequence[str], at: dt.datetime,
                      missed: store.MissedPublications | None = None) -> int | None:
    approved = states.current(conn, watch.cloud, watch.name)
    live = live_ticket(conn, watch.cloud, watch.name)
    # A prefix an older version stored that today's gate refuses never reaches a ticket or an approved state.
    target = {name: diffs.passing_gate(state) for name, state in
              store.tag_states(conn, watch.cloud, new.day, watch.tag_names).items()} if watch.tag_names else {}
    if approved is None and not target:
        return None  # nothing published for the watch yet (a misspelt region, a cloud without the tags)
    approved_lists = {n: t.prefixes for n, t in approved.tags.items()} if approved else None
    if approved_lists is not None and _same_target(target, approved_lists):
        if live is not None:  # the publication went back to what is approved: the live change is moot
            _supersede(conn, live, None, at, f"the publication of {new.file_date} matches the approved state")
        return None
    if live is not None and _same_target(target, {n: t["prefixes"] for n, t in live.target_lists.items()}):
        return None
    if (live is None and approved_lists is not None and changed is not None
            and not changed.intersection(watch.tag_names) and set(target) == set(approved_lists)):
        return None  # a rejected change comes back with the next publication that changes the watch
    before = {n: diffs.TagState(t.change_number, frozenset(t.prefixes)) for n, t in approved.tags.items()} \
        if approved else {}
    cache: diffs.ParseCache = {}
    changes = [diffs.diff_tag(n, before.get(n), target.get(n), cache) for n in sorted(set(before) | set(target))]
    context = build_context(
        watch, approved, new, changes, target, uid=str(uuid.uuid4()), implausible=implausible,
        removal_hold_ratio=settings.tickets.removal_hold_ratio,
        removal_delay_days=settings.tickets.removal_delay_days, moved=_moved(conn, new, changes) if approved else {},
        limits=plausible.Limits.from_settings(settings.tickets), created_at=at, missed=missed,
    )
    context["approval_lists"] = states.prepared_lists(approved, (p for t in target.values() for p in t.prefixes))
    ticket_id = _insert(conn, watch, approved, new, context, at)
    if live is not None:
        _supersede(conn, live, ticket_id, at, f"superseded by ticket {ticket_id} (publication of {new.file_date})")
    return ticket_id


def _supersede(conn: Connection, live: TicketInfo, successor: int | None, at: dt.datetime, comment: str) -> None:
    table = Ticket.__table__
    conn.execute(update(table).where(table.c.id == live.id).values(
        state="superseded", superseded_by=successor, updated_at=at))
    conn.execute(insert(TicketEvent.__table__), {
        "ticket_id": live.id, "at": at, "actor": SYSTEM_ACTOR, "action": "supersede", "from_state": live.state,
        "to_state": "superseded", "comment": comment,
    })


def ticket_hook(implausible: Sequence[str] = ()) -> Callable[[Connection, store.ImportResult, Settings], None]:
    """``create_tickets`` as a pipeline hook; the fetch stage passes the checks a file failed."""
    notes = tuple(implausible)

    def hook(conn: Connection, result: store.ImportResult, settings: Settings) -> None:
        create_tickets(conn, result, settings, implausible=notes)

    return hook


def _insert(conn: Connection, watch: ResolvedWatch, approved: states.ApprovedState | None,
            new: store.PublicationInfo, context: dict[str, Any], at: dt.datetime) -> int:
    held = context["hold"]["held"]
    state = "hold" if held else "open"
    target = context.pop("target")
    ticket_id = conn.execute(
        insert(Ticket.__table__).returning(Ticket.__table__.c.id),
        {
            "uid": context["uid"], "publication_id": new.id,
            "previous_publication_id": approved.publication_id if approved else None,
            "cloud": new.cloud, "watch": watch.name, "file_date": new.file_date, "state": state,
            "removals_allowed": not held, "context": json.dumps(context, sort_keys=True),
            "target": sql.compress(json.dumps(target, sort_keys=True).encode()),
            "created_at": at, "updated_at": at, "kind": context["kind"],
        },
    ).scalar_one()
    conn.execute(insert(TicketEvent.__table__), {
        "ticket_id": ticket_id, "at": at, "actor": SYSTEM_ACTOR, "action": "create", "from_state": None,
        "to_state": state, "comment": "; ".join(context["hold"]["reasons"]),
    })
    return ticket_id


# ---------------------------------------------------------------- reading


class ViewReads:
    """A ticket's events and its watch's approved states (as ``states.of_ticket`` reads them), read in the round trip
    that read the ticket's row: the first view made of the ticket on the same connection takes them instead of reading
    them again, so the view shows the ticket, its trail and the states of one moment. Taken once, by the first view
    (dropped if that view is made on another connection): a later view reads afresh."""

    def __init__(self, conn: Connection, events: list[Any], states: list[Any]):
        self._connection = weakref.ref(conn)
        self._rows: tuple[list[Any], list[Any]] | None = (events, states)

    def take(self, conn: Connection) -> tuple[list[Any], list[Any]] | None:
        """(event rows, state rows) for a view made on ``conn``, the first time; else None."""
        rows, self._rows = self._rows, None
        return rows if rows is not None and self._connection() is conn else None


def _ticket(row: Any, view_reads: ViewReads | None = None) -> TicketInfo:
    return TicketInfo(
        id=row.id, uid=row.uid, publication_id=row.publication_id,
        previous_publication_id=row.previous_publication_id, cloud=row.cloud, watch=row.watch,
        file_date=row.file_date, state=row.state, removals_allowed=bool(row.removals_allowed),
        context=orjson.loads(row.context), created_at=row.created_at, updated_at=row.updated_at,
        kind=row.kind, superseded_by=row.superseded_by, packed_target=row.target, view_reads=view_reads,
    )


def get_ticket(conn: Connection, ticket_id: int, *, view: bool = True) -> TicketInfo:
    """The ticket; with ``view`` (most readers render or show it next), on PostgreSQL its view's reads come in the
    same round trip (``ViewReads``: the server runs two more small reads, the client saves a round trip)."""
    if not 1 <= ticket_id <= MAX_TICKET_ID:  # the drivers refuse numbers past 64 bits with an OverflowError
        raise NotFoundError(f"no ticket {ticket_id}")
    with translate_db_errors(f"reading ticket {ticket_id}"):
        if view and db.pipelined(conn):
            rows, events, approved = db.read_together(conn, [
                (_TICKET, {"ticket_id": ticket_id}), events_read(ticket_id), states.of_ticket_by_id_read(ticket_id)])
            row = rows[0] if rows else None
            reads = ViewReads(conn, events, approved)
        else:
            row = conn.execute(_TICKET, {"ticket_id": ticket_id}).first()
            reads = None
    if row is None:
        raise NotFoundError(f"no ticket {ticket_id}")
    return _ticket(row, reads)


def list_tickets(conn: Connection, state: str | None = None, ids: Iterable[int] | None = None) -> list[TicketInfo]:
    query = select(Ticket.__table__).order_by(Ticket.id)
    if state is not None:
        if state not in STATES:
            raise NotFoundError(f"unknown ticket state {state!r} (known: {', '.join(STATES)})")
        query = query.where(Ticket.state == state)
    if ids is not None:
        query = query.where(Ticket.id.in_(list(ids)))
    with translate_db_errors("listing tickets"):
        return [_ticket(r) for r in conn.execute(query)]


def tickets_of_publication(conn: Connection, publication_id: int) -> list[int]:
    with translate_db_errors(f"listing the tickets of publication {publication_id}"):
        return list(conn.execute(
            select(Ticket.id).where(Ticket.publication_id == publication_id).order_by(Ticket.id)
        ).scalars())


#: Built once (every render of a ticket's text reads its events).
_EVENTS = select(TicketEvent.__table__).where(TicketEvent.__table__.c.ticket_id == bindparam("ticket_id")) \
    .order_by(TicketEvent.__table__.c.id)
_TICKET = select(Ticket.__table__).where(Ticket.__table__.c.id == bindparam("ticket_id"))


def ticket_events(conn: Connection, ticket_id: int) -> list[TicketEventInfo]:
    with translate_db_errors(f"reading the events of ticket {ticket_id}"):
        rows = conn.execute(*events_read(ticket_id)).all()
    return events_of(rows)


def events_read(ticket_id: int) -> tuple[Any, dict[str, Any]]:
    """The read of ``ticket_events`` (statement, parameters), for ``db.read_together``."""
    return _EVENTS, {"ticket_id": ticket_id}


def events_of(rows: Iterable[Any]) -> list[TicketEventInfo]:
    return [TicketEventInfo(r.at, r.actor, r.action, r.from_state, r.to_state, r.comment) for r in rows]


#: Ticket ids are 32-bit integers in both databases.
MAX_TICKET_ID = 2**31 - 1


def view(ticket: TicketInfo) -> dict[str, Any]:
    """What templates see: the stored context, the ticket's identity and its review state."""
    data = dict(ticket.context)
    data["target"] = _TargetView(ticket)
    data["ticket"] = {"id": ticket.id, "uid": ticket.uid, "state": ticket.state, "ref": ticket.ref,
                      "kind": ticket.kind, "superseded_by": ticket.superseded_by}
    data["removals_allowed"] = ticket.removals_allowed
    data.setdefault("trail", [])
    data.setdefault("approval", {"removals_at": None, "additions_only": False})
    # Late additions matter while there is work to do; a superseded, rejected or applied ticket asks for none.
    data["source"] = {"missed": None, **data["source"]}  # tickets made before missed publications were recorded
    data["overdue"] = ticket.context.get("overdue") if ticket.state in ("open", "hold", "approved") else None
    return data
