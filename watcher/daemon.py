"""Wiring of ``watcher run`` and ``watcher serve``: the engine, the leader, the schema lock, the HTTP server.

The CLI only parses options and calls one of these; the daemon itself (its
schedule, runs and shutdown) is ``scheduler.Daemon``, the HTTP app ``web``.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import db, feeds, fetch, leader, pipeline, polls, scheduler, store, web
from .errors import WatcherError
from .leader import Leadership
from .models import utcnow
from .settings import Settings

log = logging.getLogger(__name__)


def daemon_view(settings: Settings, leadership: Leadership,
                clock: Callable[[], dt.datetime] = utcnow) -> web.DaemonView:
    """What ``/healthz`` says about this process's daemon: who leads, its schedule, its next run."""
    schedule = settings.daemon.schedule or scheduler.default_schedule()
    trigger = scheduler.make_trigger(schedule)
    return web.DaemonView(leader=lambda: leadership.description, schedule=schedule,
                          next_run=lambda: trigger.get_next_fire_time(None, clock()))


def importing_whole_folder(poll: scheduler.PollFunction = pipeline.poll) -> scheduler.PollFunction:
    """``poll``, except that a cloud with nothing stored and a local folder as its source gets the whole folder.

    A poll takes the newest file only: a first run on a folder of weekly files
    would leave one publication, and nothing to diff. So the first poll of
    such a cloud imports every file of the folder, oldest first (each one a
    recorded poll of that file, with its tickets), and then polls as usual,
    which finds the newest one stored. A failure stops there: the run's retry
    and the next run go on from what was stored.
    """

    def poll_clouds(engine: Engine, settings: Settings, clouds: list[str], **options: Any) -> list[pipeline.PollOutcome]:
        outcomes: list[pipeline.PollOutcome] = []  # one per cloud, as ``poll`` gives: the older files' are logged
        try:
            for cloud in clouds:
                failed = None
                for older in _unimported_folder(engine, settings, cloud)[:-1]:
                    [outcome] = poll(engine, settings, [cloud], url=older.url, **options)
                    if not outcome.ok:
                        failed = outcome
                        break
                outcomes += [failed] if failed is not None else poll(engine, settings, [cloud], **options)
        finally:
            store.forget_texts()  # the decoded contents served this run's imports; at rest, memory goes back
        return outcomes

    return poll_clouds


def _unimported_folder(engine: Engine, settings: Settings, cloud: str) -> list[fetch.FileLink]:
    """The folder's files when the source is a local folder and ``cloud`` has no publication yet; else none."""
    try:
        files = fetch.folder_files(settings.fetch.source_url, cloud)
        if len(files) < 2:
            return []
        with engine.connect() as conn:
            if polls.newest_publication(conn, cloud) is not None:
                return []
    except (WatcherError, SQLAlchemyError) as exc:  # the poll itself reports and records the problem
        log.debug("%s: not importing the whole source folder: %s", cloud, exc)
        return []
    log.info("%s: nothing stored yet; importing the %d files of the source folder, oldest first", cloud, len(files),
             extra={"event": "poll", "cloud": cloud})
    return files


def run_daemon(settings: Settings, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
    """Run the daemon until SIGTERM or SIGINT, serving the HTTP app on ``[daemon] http_port`` when set.

    A bad schedule, a database that cannot be migrated or a port in use stop
    the start, before any run. Several replicas may run on one PostgreSQL
    database (one leads each run); on SQLite, one per database file.
    """
    scheduler.make_trigger(settings.daemon.schedule)  # a bad schedule stops the start, before any lock
    engine = db.create_db_engine(settings.database_url)
    try:
        leadership = leader.leadership_for(engine)
        try:
            with leader.schema_lock(engine):
                db.ensure_schema(engine)
            services = []
            if settings.daemon.http_port is not None:
                services.append(http_server(settings, engine, daemon_view(settings, leadership, clock),
                                            settings.web.http_host, settings.daemon.http_port, clock=clock))
            services += [feeds.Exporter(settings, engine, clock)] if settings.feeds.export_dir else []
            scheduler.Daemon(settings, engine, leadership, clock=clock, poll=importing_whole_folder(),
                             services=services).serve_forever()
        finally:
            leadership.release()
    finally:
        engine.dispose()


def http_server(settings: Settings, engine: Engine, view: web.DaemonView, host: str, port: int, *,
                clock: Callable[[], dt.datetime] = utcnow) -> web.HttpServer:
    """The web app on a bound socket (bound now: a port in use is an error at once)."""
    app = web.create_app(settings, engine, view, clock=clock)
    server = web.HttpServer(app, settings.web, web.bind(host, port))
    web.warm_up(app, settings.web.warm_up_seconds)  # bound, not listening yet: a port in use failed above
    return server


def serve(settings: Settings, on_ready: Callable[[str], None], host: str | None = None,
          port: int | None = None) -> None:
    """``watcher serve``: the web app alone until SIGTERM or SIGINT; ``on_ready`` gets ``listening on URL``."""
    # Bound first: a port in use is the one error line, before the database is touched.
    sock = web.bind(host if host is not None else settings.web.http_host,
                    port if port is not None else settings.web.http_port)
    engine = db.create_db_engine(settings.database_url)
    try:
        with leader.schema_lock(engine):
            db.ensure_schema(engine)
        app = web.create_app(settings, engine, web.standalone_view(settings))
        web.warm_up(app, settings.web.warm_up_seconds)
        server = web.HttpServer(app, settings.web, sock)
        server.serve(on_ready=lambda: on_ready(f"listening on {server.url}"))
        log.info("HTTP server stopped", extra={"event": "stop"})
    finally:
        sock.close()
        engine.dispose()
