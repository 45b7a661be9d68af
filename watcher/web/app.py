"""The routes: ``/healthz`` (200 healthy, 503 not) and ``/metrics`` (Prometheus text).

The database is read in Starlette's thread pool (the driver blocks); the
event loop only moves bytes, so a slow or half-sent request holds no thread.
"""
from __future__ import annotations

import datetime as dt
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .. import health, jsontext, scheduler
from . import feeds
from ..errors import ConfigError, WatcherError, database_detail
from ..models import utcnow
from ..settings import Settings

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class DaemonView:
    """What ``/healthz`` says about the daemon beside the health: who leads, the schedule, the next run."""

    leader: Callable[[], str]
    schedule: str
    next_run: Callable[[], dt.datetime | None]

    def to_json(self) -> dict[str, Any]:
        next_run = self.next_run()
        return {"leader": self.leader(), "schedule": self.schedule,
                "next_run": next_run.isoformat() if next_run else None}


def standalone_view(settings: Settings, clock: Callable[[], dt.datetime] = utcnow) -> DaemonView:
    """For ``watcher serve``: no daemon in this process; the schedule is the configured one."""
    schedule = settings.daemon.schedule or scheduler.default_schedule()
    try:
        trigger = scheduler.make_trigger(schedule)
    except ConfigError:
        trigger = None
    return DaemonView(
        leader=lambda: "none in this process (watcher serve)",
        schedule=schedule,
        next_run=lambda: trigger.get_next_fire_time(None, clock()) if trigger else None,
    )


def _json(status: int, data: Any) -> Response:
    return Response(jsontext.dumps(data, indent=None) + "\n", status_code=status, media_type="application/json")


def create_app(settings: Settings, engine: Engine, daemon: DaemonView, *,
               clock: Callable[[], dt.datetime] = utcnow) -> Starlette:
    """The ASGI app on ``engine``; ``daemon`` describes the daemon (or its absence) for ``/healthz``."""

    def healthz() -> Response:
        with engine.connect() as conn:
            state = health.evaluate(conn, settings, clock())
        return _json(200 if state.healthy else 503, {**state.to_json(), **daemon.to_json()})

    def metrics() -> Response:
        with engine.connect() as conn:
            text = health.metrics_text(conn, settings, clock())
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    def from_database(read: Callable[[], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await run_in_threadpool(read)
            except (WatcherError, SQLAlchemyError) as exc:
                log.warning("%s: %s", request.url.path, exc)
                return _json(503, {"healthy": False, "reasons": ["database unavailable"]})

        return endpoint

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found: try /healthz or /metrics\n", status_code=404)

    feed_routes, feed_service = feeds.routes(settings, engine, clock)
    routes = [Route("/healthz", from_database(healthz), methods=["GET", "HEAD"]),
              Route("/metrics", from_database(metrics), methods=["GET", "HEAD"]), *feed_routes]
    # The review desk: the JSON API and the pages, behind sign-in (watcher.web.auth).
    from . import api, pages
    from .auth import Authenticator

    auth = Authenticator.create(settings.web, engine)
    try:
        auth.key  # read at start when the database is there; otherwise on the first request that needs it
    except (WatcherError, SQLAlchemyError) as exc:
        log.warning("session key not read yet (database unavailable): %s", type(exc).__name__)
    warm_ups: list[Callable[[float], dict[str, Any]]] = []
    routes += api.routes(settings, engine, auth) + pages.routes(settings, engine, auth, warm_ups)
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.feed_fast_path = feed_service.fast  # the HTTP protocol answers pollers' routine requests itself
    app.state.warm_ups = warm_ups
    return app


def warm_up(app: Starlette, seconds: float, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Make what the first requests would make, for at most about ``seconds`` (0: nothing), before the server
    listens (``watcher serve``, and the HTTP server of ``watcher run``): the pages' warm-up (``pages.routes``).
    Logged, with what it did and how long it took; an error is logged and ends the warm-up, never the start
    (every view still makes what it finds missing)."""
    if seconds <= 0:
        return {}
    started = clock()
    done: dict[str, Any] = {}
    try:
        for step in app.state.warm_ups:
            done.update(step(started + seconds))
    except Exception as exc:  # noqa: BLE001 - a warm-up is an optimisation: whatever stops it, the server starts
        # The driver's first line, not the statement and its parameters a database error carries.
        log.warning("warm-up stopped by %s: %s", type(exc).__name__, database_detail(exc), extra={"event": "warm-up"})
        log.debug("warm-up stopped here", exc_info=True)
        done["error"] = type(exc).__name__
    # What start-up and the warm-up made and keep (compiled templates and statements, the kept pages) is moved to
    # the oldest generation now: left in the young ones, the first requests' collections scan it all (a gen-1 pass
    # of ~1 ms, finding nothing to free, inside the first tag page view).
    gc.collect()
    done["seconds"] = round(clock() - started, 3)
    log.info("warmed up in %.2f s: %s", done["seconds"], ", ".join(f"{k} {v}" for k, v in done.items()
                                                                    if k != "seconds"),
             extra={"event": "warm-up"})
    return done
