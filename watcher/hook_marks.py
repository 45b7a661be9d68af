"""Which publication each cloud's ticket hooks last ran for: none is lost, none runs twice.

The tickets and outbox hooks (``pipeline.derived_work``) turn the newest
publication of a cloud into tickets. A poll runs them in its import's
transaction. A backfill imports its files without them and runs them once per
cloud after the run; a run stopped in between (killed, a crash, a database
error in the hooks) leaves publications whose hooks never ran, and its files
are "already imported" the next time.

The mark, written in the hooks' own transaction, tells: a cloud's hooks are
*due* when its newest publication is newer than the marked one, and they then
compare with the marked one, which is what the uninterrupted run would have
compared with (the newest publication stored before the run). Running the
hooks again without the mark would not be safe: compared with the previous
publication instead, a change the user rejected in between looks new, and
the rejected-change rule of ``tickets`` lets it come back as a ticket.

One mark per cloud, not per watch: the hooks of a cloud make every watch's
tickets in one transaction, so they ran for all its watches or for none.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

from sqlalchemy import Connection, Engine, insert, select, update

from . import db, diff as diffs, store, tickets
from .errors import translate_db_errors
from .models import ForcedImport, HookMark, Publication, utcnow
from .settings import Settings

#: One of the pipeline's hooks (``pipeline.derived_work``).
Hook = Callable[[Connection, store.ImportResult, Settings], None]
#: The hooks, given the plausibility checks the publication's file failed (``pipeline.derived_work``).
HookMaker = Callable[[Sequence[str]], Sequence[Hook]]


@dataclass(frozen=True)
class HookRun:
    """The hooks ran for a cloud's newest publication, comparing with ``since``; the tickets they made."""

    cloud: str
    publication: store.PublicationInfo
    since: store.PublicationInfo | None
    tickets: tuple[int, ...]
    #: the publication was imported before (by a run that stopped before its tickets): these were owed
    owed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"cloud": self.cloud, "date": self.publication.file_date.isoformat(),
                "since": self.since.file_date.isoformat() if self.since else None, "made": list(self.tickets),
                "owed": self.owed}

    def describe(self) -> str:
        since = f"changes since {self.since.file_date}" if self.since else "the cloud's first tickets"
        made = len(self.tickets)
        owed = "; owed by an earlier run that stopped before its tickets" if self.owed else ""
        return (f"{self.cloud}: {made} ticket{'s' if made != 1 else ''} made for the publication of "
                f"{self.publication.file_date} ({since}{owed})")


def marked_publication(conn: Connection, cloud: str) -> store.PublicationInfo | None:
    """The publication the cloud's hooks last ran for; None when they never ran."""
    with translate_db_errors(f"reading which {cloud} publication made tickets last"):
        row = conn.execute(select(Publication.__table__).join(HookMark, HookMark.publication_id == Publication.id)
                           .where(HookMark.cloud == cloud)).first()
    return store.publication_from_row(row) if row is not None else None


def newest_publication(conn: Connection, cloud: str) -> store.PublicationInfo | None:
    with translate_db_errors(f"reading the newest {cloud} publication"):
        row = conn.execute(select(Publication.__table__).where(Publication.cloud == cloud)
                           .order_by(Publication.file_date.desc()).limit(1)).first()
    return store.publication_from_row(row) if row is not None else None


def mark(conn: Connection, publication: store.PublicationInfo, now: Callable[[], dt.datetime] = utcnow) -> None:
    """Record that the hooks ran for ``publication`` (in their transaction: both commit or neither)."""
    table = HookMark.__table__
    values = {"publication_id": publication.id, "marked_at": now()}
    with translate_db_errors(f"recording that the {publication.cloud} tickets were made"):
        # The caller holds the cloud's import lock, so no one else writes this row in between.
        if conn.execute(update(table).where(table.c.cloud == publication.cloud).values(**values)).rowcount == 0:
            conn.execute(insert(table), {"cloud": publication.cloud, **values})


def record_forced(conn: Connection, publication: store.PublicationInfo, reasons: Sequence[str]) -> None:
    """Keep what a file imported with ``--force`` failed, in its import's transaction: whichever run makes
    the publication's tickets holds them for the same reasons."""
    if reasons:
        conn.execute(insert(ForcedImport.__table__),
                     {"publication_id": publication.id, "reasons": json.dumps(list(reasons))})


def forced_reasons(conn: Connection, publication: store.PublicationInfo) -> tuple[str, ...]:
    with translate_db_errors(f"reading why the {publication.cloud} publication of {publication.file_date} was forced"):
        row = conn.execute(select(ForcedImport.reasons).where(ForcedImport.publication_id == publication.id)).first()
    return tuple(json.loads(row.reasons)) if row is not None else ()


def due(conn: Connection, cloud: str) -> tuple[store.PublicationInfo | None, store.PublicationInfo] | None:
    """(marked, newest) when the cloud's newest publication has not had its hooks; None when nothing is owed."""
    newest = newest_publication(conn, cloud)
    if newest is None:
        return None
    marked = marked_publication(conn, cloud)
    if marked is not None and newest.file_date <= marked.file_date:
        return None
    return marked, newest


def run_result(conn: Connection, before: store.PublicationInfo | None,
               newest: store.PublicationInfo) -> store.ImportResult:
    """Everything since ``before`` as if it were one import: what the hooks see for ``newest``."""
    if before is None:  # the cloud's first tickets: as a first import, nothing to compare with
        return store.ImportResult("imported", newest)
    changes = store.diff_publications(conn, newest.cloud, before, newest)
    return store.ImportResult(
        "imported", newest,
        changes=tuple(_tag_change(c) for c in changes),
        anomalies=diffs.publication_anomalies(before.change_number, newest.change_number),
        previous_day=before.day,
    )


def _tag_change(change: diffs.TagDiff) -> store.TagChange:
    return store.TagChange(
        tag=change.tag, status=change.status, added=len(change.added), removed=len(change.removed),
        change_number_before=change.before.change_number if change.before else None,
        change_number_after=change.after.change_number if change.after else None,
        anomalies=change.anomalies,
    )


def run_for_import(conn: Connection, result: store.ImportResult, settings: Settings, hooks: Sequence[Hook]) -> None:
    """The hooks of an import, in its transaction (which holds the cloud's import lock): the poll's path.

    A publication that becomes the cloud's newest is compared with the marked
    one, not with the one stored just before it: after a stopped backfill,
    those differ, and the changes in between belong to this ticket. Older
    history runs the hooks as it always did (they make nothing for it) and
    leaves the mark where it is.
    """
    new = result.publication
    marked = marked_publication(conn, new.cloud)
    newest = newest_publication(conn, new.cloud)
    becomes_newest = newest is not None and newest.id == new.id and (
        marked is None or new.file_date > marked.file_date)
    if becomes_newest and marked is not None and result.previous_day != marked.day:
        result = run_result(conn, marked, new)
    for hook in hooks:
        hook(conn, result, settings)
    if becomes_newest:
        mark(conn, new)


def run_due(engine: Engine, settings: Settings, cloud: str, make_hooks: HookMaker,
            imported_now: Collection[int] = ()) -> HookRun | None:
    """Run the hooks a cloud owes (its newest publication's, since the marked one), once; None when none are owed.

    ``imported_now``: the publications the caller imported itself; the hooks
    of any other were owed by an earlier run (``HookRun.owed``).

    The check is read first without a write lock, so a cloud that owes nothing
    costs no write transaction; it is repeated under the cloud's import lock,
    so two runs at once run the hooks once.
    """
    with engine.connect() as conn:
        pending = due(conn, cloud)
    if pending is None:
        return None
    with translate_db_errors(f"making the {cloud} tickets"), db.writer(engine).begin() as conn:
        store.lock_cloud(conn, cloud)
        pending = due(conn, cloud)
        if pending is None:
            return None
        marked, newest = pending
        result = run_result(conn, marked, newest)
        existing = set(tickets.tickets_of_publication(conn, newest.id))
        for hook in make_hooks(forced_reasons(conn, newest)):
            hook(conn, result, settings)
        mark(conn, newest)
        made = tuple(t for t in tickets.tickets_of_publication(conn, newest.id) if t not in existing)
    return HookRun(cloud, newest, marked, made, owed=newest.id not in imported_now)
