"""The pipeline: drives one publication through the stages.

fetch -> parse -> store -> diff -> render -> notify. Each stage is a module;
this one only sequences them and passes typed values between them. Work derived
from a publication (tickets, the outbox) is created inside the import's
transaction through the store's ``on_imported`` hook, so it is committed with
the publication or not at all.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable, Sequence

from sqlalchemy import Connection, Engine

from . import notify, store, tickets
from .settings import Settings

#: Stages that add work to an import's transaction (tickets register here).
DerivedWork = Callable[[Connection, store.ImportResult, Settings], None]


def derived_work(*, implausible: Sequence[str] = ()) -> list[DerivedWork]:
    """What runs inside every import's transaction, in order: tickets, then their outbox rows.

    ``implausible`` names the plausibility checks the file failed (the fetch
    stage knows); tickets of such a publication are held for review.
    """
    return [tickets.ticket_hook(implausible), notify.enqueue_for_import]


def import_publication(
    engine: Engine,
    settings: Settings,
    data: bytes,
    source: str,
    *,
    file_date: dt.date | None = None,
    expected_cloud: str | None = None,
    implausible: Sequence[str] = (),
) -> store.ImportResult:
    """Store one file's bytes and everything derived from them, atomically."""
    hooks = derived_work(implausible=implausible)

    def on_imported(conn: Connection, result: store.ImportResult) -> None:
        for hook in hooks:
            hook(conn, result, settings)

    return store.import_bytes(
        engine, data, source, file_date=file_date, expected_cloud=expected_cloud, on_imported=on_imported
    )
