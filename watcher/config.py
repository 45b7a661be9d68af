"""The configuration as a whole: the example file, a check of every part, the effective settings masked.

``settings.py`` reads and validates the file's shape; this module checks what
can only be checked by trying (a schedule's next run, templates rendering,
apprise accepting a URL, the database answering) and lists the secrets that
logs and output must never show.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import db, fetch, notify, redact, render, scheduler, store
from .errors import ConfigError, StoreError, WatcherError, translate_db_errors
from .settings import Settings
from .watches import resolve_watches

EXAMPLE_NAME = "watcher.example.toml"


def example_config() -> str:
    """The commented example configuration shipped with the package."""
    return resources.files("watcher.templates").joinpath(EXAMPLE_NAME).read_text(encoding="utf-8")


def write_example(path: str | Path, *, force: bool = False) -> Path:
    target = Path(path)
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; use --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example_config(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


# ---------------------------------------------------------------- secrets


def _url_secrets(url: str | None) -> set[str]:
    if not url:
        return set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found = {unquote(parts.password)} if parts.password else set()
    for item in parts.query.split("&") if parts.query else ():
        key, _, value = item.partition("=")
        if value and key.lower() not in redact.SAFE_QUERY_KEYS:
            found.add(unquote(value))
    return found


def secrets(settings: Settings) -> tuple[str, ...]:
    """Every secret string the settings hold: passwords and tokens of the database, sources and destinations."""
    found: set[str] = set()
    found.update(db.url_secrets(settings.database_url))
    found |= _url_secrets(settings.fetch.source_url) | _url_secrets(settings.fetch.proxy)
    for destination in notify.destinations(settings):
        found |= set(destination.secrets)
    # Short fragments would mask ordinary words; the URL rules of watcher.redact cover those.
    return tuple(sorted((s for s in found if len(s) >= 4), key=len, reverse=True))


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as they apply, secrets masked (apprise's privacy form, database password hidden)."""
    data = dataclasses.asdict(settings)
    data["database_url"] = db.safe_url(settings.database_url)
    data["fetch"]["source_url"] = redact.redact_url(settings.fetch.source_url) if settings.fetch.source_url else None
    data["fetch"]["proxy"] = redact.redact_url(settings.fetch.proxy) if settings.fetch.proxy else None
    data["notify"]["urls"] = [d.label for d in notify.destinations(settings)]
    data["daemon"]["schedule"] = settings.daemon.schedule or f"{scheduler.default_schedule()} (default for this host)"
    data["registries"] = [{**r, "regions": list(r["regions"]), "extra_tags": list(r["extra_tags"])}
                          for r in data["registries"]]
    return data


# ---------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    part: str
    ok: bool
    detail: str
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "ok": self.ok, "warning": self.warning, "detail": self.detail}


def check(settings: Settings, now: dt.datetime | None = None) -> list[Check]:
    """Check every part of the configuration; nothing is written (no database is created)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    checks = [_check_database(settings), *_check_clouds(settings), _check_schedule(settings, now),
              _check_http_port(settings), *_check_destinations(settings), *_check_templates(settings)]
    checks += _check_watches(settings)
    return checks


def _check_database(settings: Settings) -> Check:
    shown = db.safe_url(settings.database_url)
    try:
        url = make_url(db.normalise_url(settings.database_url))
    except ArgumentError:
        return Check("database", False, f"invalid database URL {shown}")
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return Check("database", False, "the daemon needs a database file, not an in-memory database")
        folder = Path(url.database).resolve().parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            return Check("database", False, f"{shown}: folder {folder} cannot be created")
        return Check("database", True, f"{shown} (SQLite{'' if Path(url.database).exists() else ', created on first use'})")
    try:
        engine = db.create_db_engine(settings.database_url)
    except WatcherError as exc:
        return Check("database", False, str(exc))
    try:
        with translate_db_errors(f"connecting to {shown}"), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except StoreError as exc:
        return Check("database", False, str(exc))
    finally:
        engine.dispose()
    return Check("database", True, f"{shown} answers")


def _check_clouds(settings: Settings) -> list[Check]:
    checks = []
    for cloud in settings.clouds:
        try:
            where = redact.redact_url(settings.fetch.source_url) if settings.fetch.source_url else fetch.page_url_for(cloud)
            checks.append(Check(f"cloud {cloud}", True, f"polled from {where}"))
        except WatcherError as exc:
            checks.append(Check(f"cloud {cloud}", False, str(exc)))
    try:
        fetch.make_client(settings.fetch).close()
    except WatcherError as exc:
        checks.append(Check("fetch", False, str(exc)))
    return checks


def _check_schedule(settings: Settings, now: dt.datetime) -> Check:
    try:
        trigger = scheduler.make_trigger(settings.daemon.schedule)
        period = scheduler.schedule_period(trigger, now)
    except ConfigError as exc:
        return Check("schedule", False, str(exc))
    expression = settings.daemon.schedule or scheduler.default_schedule()
    next_run = trigger.get_next_fire_time(None, now)
    return Check("schedule", True, f"{expression!r} (UTC): next run {next_run:%Y-%m-%d %H:%M:%S}Z, then every {period}")


def _check_http_port(settings: Settings) -> Check:
    port = settings.daemon.http_port
    if port is None:
        return Check("health endpoint", True, "off (set [daemon] http_port or WATCHER_HTTP_PORT)")
    if not isinstance(port, int) or not 0 < port < 65536:
        return Check("health endpoint", False, f"http_port {port!r} is not a port number")
    return Check("health endpoint", True, f"/healthz and /metrics on {settings.web.http_host}:{port}")


def _check_destinations(settings: Settings) -> list[Check]:
    found = notify.destinations(settings)
    if not found:
        return [Check("notify", True, "no destinations: tickets are kept, nobody is told", warning=True)]
    return [Check("notify", d.valid, d.label if d.valid else f"{d.label}: apprise does not accept this URL")
            for d in found]


def _check_templates(settings: Settings) -> list[Check]:
    results = render.check_templates(settings)
    broken = [r for r in results if not r.ok]
    if not broken:
        origins = sorted({r.origin for r in results})
        return [Check("templates", True, f"{len(results)} templates render ({', '.join(origins)})")]
    return [Check("templates", False, f"{r.template} ({r.origin}): {r.error}") for r in broken]


def _check_watches(settings: Settings) -> list[Check]:
    """Registries against the stored tag names, when a database with publications is at hand."""
    if not settings.registries and not settings.extra_tags:
        return [Check("watches", True, "no registries or tags configured: tickets are not made", warning=True)]
    names: dict[str, list[str]] = {}
    try:
        url = make_url(db.normalise_url(settings.database_url))
        if url.get_backend_name() != "sqlite" or (url.database and Path(url.database).exists()):
            engine = db.create_db_engine(settings.database_url)
            try:
                if db.current_revision(engine) == db.head_revision():
                    with engine.connect() as conn:
                        names = {c: store.present_tag_names(conn, c)
                                 for c in {r.cloud for r in settings.registries} | set(settings.clouds)}
            finally:
                engine.dispose()
    except (WatcherError, SQLAlchemyError, ArgumentError):
        names = {}
    if not any(names.values()):
        return [Check("watches", True, f"{len(settings.registries)} registr{'y' if len(settings.registries) == 1 else 'ies'} "
                                       "(not resolved: no publication stored yet)")]
    checks = []
    for watch in resolve_watches(settings, names):
        detail = f"{watch.name}: {', '.join(watch.tag_names) or 'no tags'}"
        checks.append(Check(f"watch {watch.name}", True, detail + "".join(f"; warning: {w}" for w in watch.warnings),
                            warning=bool(watch.warnings)))
    return checks
