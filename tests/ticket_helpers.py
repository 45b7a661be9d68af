"""Shared by the ticket, render and notify tests: settings, imports of real and hand-made files."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from sqlalchemy import Engine

from tests.conftest import SHARED, file_bytes, plain_name
from tests.factory import build_file, file_name
from watcher import pipeline, store
from watcher.settings import NotifySettings, RegistryWatch, Settings, TicketSettings

REAL_OLD = SHARED / "public" / "ServiceTags_Public_20251013.json.gz"
REAL_NEW = SHARED / "public" / "ServiceTags_Public_20251028.json.gz"


def make_settings(
    *registries: RegistryWatch,
    urls: Sequence[str] = (),
    extra_tags: Sequence[str] = (),
    template_dir: str | None = None,
    max_attempts: int = 3,
    backoff_seconds: float = 60.0,
) -> Settings:
    return Settings(
        registries=registries or (RegistryWatch("myreg", ("eastus2",), data_endpoint=True),),
        extra_tags=tuple(extra_tags),
        notify=NotifySettings(urls=tuple(urls), max_attempts=max_attempts, backoff_seconds=backoff_seconds),
        tickets=TicketSettings(template_dir=template_dir),
    )


def import_real(engine: Engine, settings: Settings, path: Path) -> store.ImportResult:
    return pipeline.import_publication(engine, settings, file_bytes(path), plain_name(path))


def approve_baselines(engine: Engine, actor: str = "setup") -> list[int]:
    """Approve every open baseline ticket, so that the next import makes change tickets."""
    from watcher import review, tickets

    with engine.connect() as conn:
        baselines = [t.id for t in tickets.list_tickets(conn, "open") if t.kind == "baseline"]
    for ticket_id in baselines:
        review.transition(engine, ticket_id, "approve", actor)
    return baselines


def quietly(settings: Settings) -> Settings:
    """The same watches without notification destinations (nothing is queued)."""
    return replace(settings, notify=NotifySettings())


def import_real_pair(engine: Engine, settings: Settings) -> store.ImportResult:
    """The two real October files: the first one's baseline tickets approved (and not notified)."""
    import_real(engine, quietly(settings), REAL_OLD)
    approve_baselines(engine)
    return import_real(engine, settings, REAL_NEW)


def import_made(engine: Engine, settings: Settings, date: str, tags: dict, change_number: int = 1,
                implausible: Sequence[str] = (), source: str | None = None) -> store.ImportResult:
    return pipeline.import_publication(
        engine, settings, build_file(tags, change_number=change_number), source or file_name(date),
        implausible=implausible,
    )


#: A small publication: two regions' registry and storage tags and an unwatched tag.
def week(storage_eastus2: Sequence[str] = ("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"),
         storage_westus: Sequence[str] = ("10.2.0.0/24",),
         acr_eastus2: Sequence[str] = ("10.3.0.0/24",),
         other: Sequence[str] = ("10.9.0.0/24",),
         withdraw: Sequence[str] = ()) -> dict:
    tags = {
        "AzureContainerRegistry.EastUS2": list(acr_eastus2),
        "Storage.EastUS2": list(storage_eastus2),
        "AzureContainerRegistry.WestUS": ["10.4.0.0/24"],
        "Storage.WestUS": list(storage_westus),
        "AzureFrontDoor.Frontend": list(other),
    }
    return {k: v for k, v in tags.items() if k not in withdraw}


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)
