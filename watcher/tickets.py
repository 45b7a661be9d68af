"""Tickets: one firewall change ticket per watch per publication that changes it, and its review trail.

A ticket is created inside the import's transaction (``create_tickets`` is
registered in ``pipeline.derived_work``), so a publication and its tickets are
committed together or not at all. The ticket row keeps its full render
context as JSON: what the reviewer sees never depends on when it is rendered.

Review states::

    hold --release--> open --approve--> approved --applied--> applied
      \\                 \\
       +----reject--------+--reject--> rejected

A ticket is born ``hold`` instead of ``open`` when the publication looks
dangerous for the firewall (a large share of a tag's address space removed, a
watched tag withdrawn, or a file that failed the fetch stage's plausibility
check). While held, no rule snippet suggests removals.
"""
from __future__ import annotations

import datetime as dt
import json
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from . import db, diff as diffs, plausible
from . import store
from .errors import NotFoundError, StoreError, TransitionError
from .models import Ticket, TicketEvent, day_from_key, utcnow
from .settings import Settings
from .watches import EXTRA_WATCH, ResolvedWatch, WatchedTag, resolve_watches

STATES = ("open", "hold", "approved", "rejected", "applied")
#: action -> (states it may start from, state it leads to)
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "release": (("hold",), "open"),
    "approve": (("open",), "approved"),
    "reject": (("open", "hold"), "rejected"),
    "applied": (("approved",), "applied"),
}
#: Microsoft: new ranges may be in use one week after the file's publication.
LEAD_TIME = dt.timedelta(days=7)
SYSTEM_ACTOR = "watcher"
CONTEXT_VERSION = 1


@dataclass(frozen=True)
class TicketInfo:
    id: int
    uid: str
    publication_id: int
    previous_publication_id: int
    cloud: str
    watch: str
    file_date: dt.date
    state: str
    removals_allowed: bool
    context: Mapping[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime

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


@dataclass(frozen=True)
class TicketEventInfo:
    at: dt.datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    comment: str


# ---------------------------------------------------------------- context


def _space_text(v4: int, v6: int) -> str:
    parts = []
    if v4:
        parts.append(f"{v4:,} IPv4 address{'es' if v4 != 1 else ''}")
    if v6:
        bits = v6.bit_length() - 1
        # IPv6 counts are too large to read; a power of two reads as a prefix size.
        parts.append(f"2^{bits} IPv6 addresses (a /{128 - bits})" if v6 == 1 << bits else f"{v6:,} IPv6 addresses")
    return " and ".join(parts) or "nothing"


def _net_text(change: diffs.TagDiff) -> str:
    if not (change.added or change.removed):
        return "no change"
    if change.reaggregation_only:
        return "no net change (re-aggregation: the same addresses, published as different prefixes)"
    added, removed = change.net_added_addresses, change.net_removed_addresses
    parts = []
    if change.net_added:
        parts.append(f"adds {_space_text(*added)}")
    if change.net_removed:
        parts.append(f"removes {_space_text(*removed)}")
    return "; ".join(parts)


def _removal_ratio(change: diffs.TagDiff) -> float:
    """The largest share of the tag's IPv4 or IPv6 space that the change removes (families apart,
    because IPv6 counts would drown any IPv4 removal)."""
    if change.before is None:
        return 0.0
    before = diffs.address_counts(diffs.collapse(change.before.prefixes))
    removed = change.net_removed_addresses
    return max((r / b for r, b in zip(removed, before) if b), default=0.0)


def _tag_context(watched: WatchedTag, change: diffs.TagDiff) -> dict[str, Any]:
    before = sorted(change.before.prefixes) if change.before else []
    after = sorted(change.after.prefixes) if change.after else []
    old_objects, new_objects = diffs.collapse(before), diffs.collapse(after)
    old_set, new_set = set(old_objects), set(new_objects)
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
        "net_text": _net_text(change),
        "reaggregation_only": change.reaggregation_only,
        "removal_ratio": round(_removal_ratio(change), 4),
        "anomalies": list(change.anomalies),
        # Firewall objects hold each tag's collapsed CIDRs; the snippets move
        # them from the old collapsed content to the new one.
        "rules": {
            "add": [c for c in new_objects if c not in old_set],
            "remove": [c for c in old_objects if c not in new_set],
            "final": new_objects,
            # While removals are held, the object keeps the old and the new space.
            "final_held": diffs.collapse(before + after),
        },
    }


#: Implausible prefixes named per tag in a hold reason; the rest are counted.
_PROBLEMS_SHOWN = 3


def hold_reasons(
    changes: Sequence[diffs.TagDiff], ratio: float, implausible: Sequence[str] = (),
    limits: plausible.Limits | None = None,
) -> list[str]:
    """Why a ticket must wait for a reviewer before anything is removed (and before it is opened at all).

    ``implausible`` are the publication's failed checks (the fetch stage and
    the import know them); ``limits`` decide which added prefixes are
    implausible (a default route, too wide, a bogon: see ``plausible``).
    """
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
        share = _removal_ratio(change)
        if share > ratio:
            reasons.append(
                f"{change.tag} would lose {share:.0%} of its address space (more than the {ratio:.0%} threshold)"
            )
    return reasons


def _watch_context(watch: ResolvedWatch) -> dict[str, Any]:
    return {
        "name": watch.name,
        "is_registry": watch.name != EXTRA_WATCH,
        "login_server": watch.login_server,
        "cloud": watch.cloud,
        "regions": list(watch.regions),
        "data_endpoint": watch.data_endpoint,
    }


def _publication_context(pub: store.PublicationInfo) -> dict[str, Any]:
    return {"date": pub.file_date.isoformat(), "change_number": pub.change_number, "sha256": pub.sha256,
            "source": pub.source}


def build_context(
    watch: ResolvedWatch,
    old: store.PublicationInfo,
    new: store.PublicationInfo,
    changes: Sequence[diffs.TagDiff],
    *,
    uid: str,
    removal_hold_ratio: float,
    implausible: Sequence[str] = (),
    limits: plausible.Limits | None = None,
) -> dict[str, Any] | None:
    """Everything a ticket shows, as JSON-ready data; None when no watched tag changed."""
    by_name = {t.tag: t for t in watch.tags}
    changed = [c for c in changes if c.added or c.removed or c.status in ("appeared", "withdrawn")]
    if not changed:
        return None
    tags = [_tag_context(by_name[c.tag], c) for c in changed]
    reasons = hold_reasons(changed, removal_hold_ratio, implausible, limits)
    deadline = (new.file_date + LEAD_TIME).isoformat()
    label = watch.login_server or "the extra watched tags"
    endpoints = sorted({(e, t["tag"], t["region"] or "") for t in tags for e in t["endpoints"]})
    n_add = sum(len(t["added"]) for t in tags)
    n_remove = sum(len(t["removed"]) for t in tags)
    title = (f"{label}: {len(tags)} service tag{'s' if len(tags) != 1 else ''} changed in the "
             f"Azure {new.cloud} publication of {new.file_date.isoformat()}")
    summary = (f"Microsoft's {new.cloud} service-tag file of {new.file_date.isoformat()} (changeNumber "
               f"{old.change_number} -> {new.change_number}) changes {', '.join(t['tag'] for t in tags)}: "
               f"allow {n_add} new prefix{'es' if n_add != 1 else ''} before {deadline}; "
               f"remove {n_remove} prefix{'es' if n_remove != 1 else ''} only after {deadline}.")
    return {
        "version": CONTEXT_VERSION,
        "uid": uid,
        "title": title,
        "summary": summary,
        "cloud": new.cloud,
        "source": _publication_context(new),
        "previous": _publication_context(old),
        "watch": _watch_context(watch),
        "endpoints": [{"fqdn": e, "tag": t, "region": r, "protocol": "TCP", "port": 443} for e, t, r in endpoints],
        "tags": tags,
        "deadline": {"add_before": deadline, "remove_after": deadline},
        "hold": {"held": bool(reasons), "reasons": reasons, "ratio": removal_hold_ratio},
        "totals": {"added": n_add, "removed": n_remove},
        "risk": _risk(tags, label, deadline),
        "rollback": _rollback(tags),
        "verify": _verify(watch, tags, new.file_date.isoformat(), new.cloud),
    }


def _risk(tags: list[dict[str, Any]], label: str, deadline: str) -> list[str]:
    lines = []
    if any(t["net_added"] for t in tags):
        lines.append(f"Until the new ranges are allowed, connections to {label} may fail once Azure starts "
                     f"using them, which can be as early as {deadline}.")
    if any(t["net_removed"] for t in tags):
        lines.append(f"Removing rules before {deadline} can break connections that Azure still routes to the "
                     "old ranges; removing late only leaves addresses allowed a little longer.")
    if any(t["reaggregation_only"] for t in tags):
        lines.append("Some changes are re-aggregation only: the same addresses stay allowed, only the rule "
                     "objects are rewritten.")
    if any(t["anomalies"] for t in tags):
        lines.append("changeNumber anomalies were seen (listed per tag); the content comparison above is what "
                     "counts.")
    return lines or ["Low: the change adds and removes no address space."]


def _rollback(tags: list[dict[str, Any]]) -> list[str]:
    lines = ["Additions are safe to keep: they only allow Azure's own published ranges."]
    if any(t["removed"] for t in tags):
        lines.append("To undo a removal, re-add the removed prefixes listed per tag (or the previous object "
                     "content, which the previous ticket's snippets set).")
    return lines


def _verify(watch: ResolvedWatch, tags: list[dict[str, Any]], date: str, cloud: str) -> list[str]:
    lines = [f"`watcher show {t['tag']} --at {date} --cloud {cloud}` lists exactly the tag's prefixes "
             "that the firewall object should allow." for t in tags]
    if watch.login_server:
        lines.append(f"From a host behind the firewall: `curl -sI https://{watch.login_server}/v2/` answers "
                     "HTTP 401 (reachable), and `docker pull` of a small image from the registry succeeds.")
        if watch.data_endpoint:
            for region in watch.regions:
                lines.append(f"`curl -sI https://{watch.name}.{region}.data.azurecr.io` connects (TCP 443).")
    return lines


# ---------------------------------------------------------------- creation



def _has_later_publication(conn: Connection, pub: store.PublicationInfo) -> bool:
    later = [p for p in store.publications(conn, pub.cloud) if p.file_date > pub.file_date]
    return bool(later)


def create_tickets(
    conn: Connection,
    result: store.ImportResult,
    settings: Settings,
    *,
    implausible: Sequence[str] = (),
    now: Callable[[], dt.datetime] = utcnow,
) -> list[int]:
    """Tickets for the watches whose tags an import changed, in the import's transaction.

    ``implausible`` lists the plausibility checks the file failed (from the
    fetch stage); any holds every ticket of the publication.
    """
    if result.outcome != "imported" or result.previous_day is None:
        return []  # the first publication of a cloud: nothing to compare with
    new = result.publication
    if _has_later_publication(conn, new):
        # A file older than the newest one (a backfill): the firewall follows the newest.
        return []
    changed_names = {c.tag for c in result.changed_tags if c.added or c.removed or c.status != "unchanged"}
    if not changed_names:
        return []
    old = store.publication_by_day(conn, new.cloud, day_from_key(result.previous_day))
    if old is None:
        raise StoreError(f"the publication before {new.file_date} vanished during the import")
    # Resolve against every tag the cloud has had (one cheap query), so that a watched tag
    # withdrawn by this file still resolves; tags absent from both files drop out of the diff.
    names = sorted(store.tag_ids(conn, new.cloud))
    limits = plausible.Limits.from_settings(settings.tickets)
    created = []
    for watch in resolve_watches(settings, {new.cloud: names}):
        if watch.cloud != new.cloud or not changed_names.intersection(watch.tag_names):
            continue
        changes = store.diff_publications(conn, new.cloud, old, new, watch.tag_names)
        uid = str(uuid.uuid4())
        context = build_context(watch, old, new, changes, uid=uid, implausible=implausible,
                                removal_hold_ratio=settings.tickets.removal_hold_ratio, limits=limits)
        if context is not None:
            created.append(_insert(conn, watch, old, new, context, now()))
    return created


def ticket_hook(implausible: Sequence[str] = ()) -> Callable[[Connection, store.ImportResult, Settings], None]:
    """``create_tickets`` as a pipeline hook; the fetch stage passes the checks a file failed."""
    notes = tuple(implausible)

    def hook(conn: Connection, result: store.ImportResult, settings: Settings) -> None:
        create_tickets(conn, result, settings, implausible=notes)

    return hook


def _insert(conn: Connection, watch: ResolvedWatch, old, new, context: dict[str, Any], at: dt.datetime) -> int:
    held = context["hold"]["held"]
    state = "hold" if held else "open"
    ticket_id = conn.execute(
        insert(Ticket.__table__).returning(Ticket.__table__.c.id),
        {
            "uid": context["uid"], "publication_id": new.id, "previous_publication_id": old.id,
            "cloud": new.cloud, "watch": watch.name, "file_date": new.file_date, "state": state,
            "removals_allowed": not held, "context": json.dumps(context, sort_keys=True),
            "created_at": at, "updated_at": at,
        },
    ).scalar_one()
    conn.execute(insert(TicketEvent.__table__), {
        "ticket_id": ticket_id, "at": at, "actor": SYSTEM_ACTOR, "action": "create", "from_state": None,
        "to_state": state, "comment": "; ".join(context["hold"]["reasons"]),
    })
    return ticket_id


# ---------------------------------------------------------------- reading


def _ticket(row: Any) -> TicketInfo:
    return TicketInfo(
        id=row.id, uid=row.uid, publication_id=row.publication_id,
        previous_publication_id=row.previous_publication_id, cloud=row.cloud, watch=row.watch,
        file_date=row.file_date, state=row.state, removals_allowed=bool(row.removals_allowed),
        context=json.loads(row.context), created_at=row.created_at, updated_at=row.updated_at,
    )


def get_ticket(conn: Connection, ticket_id: int) -> TicketInfo:
    if not 1 <= ticket_id <= MAX_TICKET_ID:  # the drivers refuse numbers past 64 bits with an OverflowError
        raise NotFoundError(f"no ticket {ticket_id}")
    row = conn.execute(select(Ticket.__table__).where(Ticket.id == ticket_id)).first()
    if row is None:
        raise NotFoundError(f"no ticket {ticket_id}")
    return _ticket(row)


def list_tickets(conn: Connection, state: str | None = None, ids: Iterable[int] | None = None) -> list[TicketInfo]:
    query = select(Ticket.__table__).order_by(Ticket.id)
    if state is not None:
        if state not in STATES:
            raise NotFoundError(f"unknown ticket state {state!r} (known: {', '.join(STATES)})")
        query = query.where(Ticket.state == state)
    if ids is not None:
        query = query.where(Ticket.id.in_(list(ids)))
    return [_ticket(r) for r in conn.execute(query)]


def tickets_of_publication(conn: Connection, publication_id: int) -> list[int]:
    return list(conn.execute(
        select(Ticket.id).where(Ticket.publication_id == publication_id).order_by(Ticket.id)
    ).scalars())


def ticket_events(conn: Connection, ticket_id: int) -> list[TicketEventInfo]:
    e = TicketEvent.__table__
    rows = conn.execute(select(e).where(e.c.ticket_id == ticket_id).order_by(e.c.id))
    return [TicketEventInfo(r.at, r.actor, r.action, r.from_state, r.to_state, r.comment) for r in rows]


# ---------------------------------------------------------------- review

#: Ticket ids are 32-bit integers in both databases.
MAX_TICKET_ID = 2**31 - 1
MAX_ACTOR_LENGTH = 200
MAX_COMMENT_LENGTH = 10_000


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



def transition(
    engine: Engine,
    ticket_id: int,
    action: str,
    actor: str,
    comment: str = "",
    *,
    now: Callable[[], dt.datetime] = utcnow,
) -> TicketInfo:
    """Take one review step (release, approve, reject, applied) and record who took it."""
    if action not in ACTIONS:
        raise TransitionError(f"unknown review step {action!r} (known: {', '.join(ACTIONS)})")
    if not actor.strip():
        raise TransitionError("say who takes the step (--by NAME)")
    check_operator_text(actor, "the reviewer's name (--by)", MAX_ACTOR_LENGTH)
    check_operator_text(comment, "the comment", MAX_COMMENT_LENGTH)
    allowed, target = ACTIONS[action]
    table = Ticket.__table__
    try:
        with db.writer(engine).begin() as conn:
            ticket = get_ticket(conn, ticket_id)
            if ticket.state not in allowed:
                raise TransitionError(
                    f"ticket {ticket_id} is {ticket.state}: {action} needs a ticket that is "
                    f"{' or '.join(allowed)}"
                )
            at = now()
            values: dict[str, Any] = {"state": target, "updated_at": at}
            if action == "release":
                values["removals_allowed"] = True
            # Conditional on the state read: a concurrent reviewer's step wins, ours fails loudly.
            moved = conn.execute(
                update(table).where(table.c.id == ticket_id, table.c.state == ticket.state).values(**values)
            ).rowcount
            if moved != 1:
                raise TransitionError(f"ticket {ticket_id} changed while {action} was recorded; look again")
            conn.execute(insert(TicketEvent.__table__), {
                "ticket_id": ticket_id, "at": at, "actor": actor.strip(), "action": action,
                "from_state": ticket.state, "to_state": target, "comment": comment,
            })
            return get_ticket(conn, ticket_id)
    except SQLAlchemyError as exc:
        raise StoreError(f"database error while recording {action} on ticket {ticket_id}: "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc


def view(ticket: TicketInfo) -> dict[str, Any]:
    """What templates see: the stored context, the ticket's identity and its review state."""
    data = dict(ticket.context)
    data["ticket"] = {"id": ticket.id, "uid": ticket.uid, "state": ticket.state, "ref": ticket.ref}
    data["removals_allowed"] = ticket.removals_allowed
    return data
