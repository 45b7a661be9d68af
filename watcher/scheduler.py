"""The daemon: polls on a schedule, catches up after downtime, one leader among replicas.

Each run polls every configured cloud (importing and ticketing what is new,
in the import's transaction), delivers the notifications that are due
(earlier failures included), and then checks health. APScheduler 3 fires the
runs from a cron expression, with an in-memory job store rebuilt at start:
what matters (when the last run was, what was delivered) lives in the
database, not in the scheduler. A watchdog job compares the last run's time in
the database with the schedule's period, so a start after downtime, a laptop
that slept or a clock that jumped leads to one run at once, not to a missed
week; missed cron runs are coalesced, and a lock keeps one run at a time.

Shutdown: SIGTERM or SIGINT stops new work; a run in progress gets a few
seconds to finish. Every import is one transaction, so leaving mid-run rolls
back rather than half-writes, and the next run completes the work.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import health, notify, pipeline
from .errors import ConfigError, WatcherError
from .leader import Leadership
from .settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def default_schedule(seed: str | None = None) -> str:
    """Once a day at a minute picked per host, so replicas and sites spread over the day.

    Microsoft's "weekly" file appears on varying days; a daily check costs one
    page request and downloads only when a new file is listed, so each
    publication is caught within a day of its one-week lead time.
    """
    digest = hashlib.sha256((seed or socket.gethostname()).encode()).digest()
    return f"{digest[0] % 60} {digest[1] % 24} * * *"


def make_trigger(schedule: str | None) -> CronTrigger:
    """A cron trigger in UTC: five fields, or six with seconds first (``*/5 * * * * *``)."""
    expression = schedule or default_schedule()
    fields = expression.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expression, timezone=dt.timezone.utc)
        if len(fields) == 6:
            second, minute, hour, day, month, day_of_week = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                               day_of_week=day_of_week, timezone=dt.timezone.utc)
    except ValueError as exc:
        raise ConfigError(f"invalid schedule {expression!r}: {exc}") from None
    raise ConfigError(f"invalid schedule {expression!r}: use five cron fields (or six, seconds first)")


def schedule_period(trigger: CronTrigger, now: dt.datetime) -> dt.timedelta:
    """The gap between two consecutive runs of the schedule (from ``now``)."""
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + dt.timedelta(microseconds=1))
    if first is None or second is None:
        raise ConfigError("the schedule never fires")
    return second - first


@dataclass
class RunReport:
    started_at: dt.datetime
    reason: str
    ok: bool = False
    outcomes: list[pipeline.PollOutcome] = field(default_factory=list)
    delivered: int = 0
    errors: list[str] = field(default_factory=list)


class Daemon:
    """What ``watcher run`` runs; the pieces are separate so tests can drive them."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        leadership: Leadership,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ):
        self.settings = settings
        self.engine = engine
        self.leadership = leadership
        self.clock = clock
        self.trigger = make_trigger(settings.daemon.schedule)
        self.period = schedule_period(self.trigger, clock())
        self.stopping = threading.Event()
        self._run_lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- one run

    def run_once(self, reason: str) -> RunReport | None:
        """Poll, deliver, check health — if this process leads and no run is in progress."""
        if self.stopping.is_set():
            return None
        if not self._run_lock.acquire(blocking=False):
            log.info("run skipped (%s): a run is in progress", reason)
            return None
        try:
            if not self.leadership.try_lead():
                log.info("run skipped (%s): another replica leads", reason)
                return None
            return self._run(reason)
        finally:
            self._run_lock.release()

    def _run(self, reason: str) -> RunReport:
        report = RunReport(self.clock(), reason)
        log.info("run started (%s)", reason)
        try:
            run_id = health.record_run_start(self.engine, report.started_at)
        except (WatcherError, SQLAlchemyError) as exc:
            log.error("run failed: cannot record it in the database: %s", exc)
            report.errors.append(str(exc))
            return report
        deadline = time.monotonic() + self.settings.daemon.run_deadline_seconds
        clouds = list(self.settings.clouds)
        delay = self.settings.daemon.retry_backoff_seconds
        while clouds and not self.stopping.is_set():
            outcomes = self._poll(clouds, report)
            clouds = [o.cloud for o in outcomes if not o.ok]
            if not clouds:
                break
            # Failed clouds are retried with backoff, inside the run's deadline.
            wait = delay * random.uniform(0.8, 1.2)
            if time.monotonic() + wait > deadline:
                break
            log.info("retrying %s in %.0f s", ", ".join(clouds), wait)
            if self.stopping.wait(wait):
                break
            delay *= 2
        last_by_cloud = {o.cloud: o for o in report.outcomes}
        report.errors += [f"{o.cloud}: {o.error}" for o in last_by_cloud.values() if not o.ok]
        self._deliver(report)
        report.ok = not report.errors
        try:
            health.record_run_finish(self.engine, run_id, self.clock(), report.ok, "; ".join(report.errors))
            self._check_health()
        except (WatcherError, SQLAlchemyError) as exc:
            log.error("after the run: %s", exc)
        log.info("run finished (%s): %s", reason, "ok" if report.ok else "; ".join(report.errors))
        return report

    def _poll(self, clouds: list[str], report: RunReport) -> list[pipeline.PollOutcome]:
        try:
            outcomes = pipeline.poll(self.engine, self.settings, clouds, now=self.clock)
        except WatcherError as exc:
            log.error("poll failed: %s", exc)
            outcomes = [pipeline.failed_outcome(c, str(exc), self.clock()) for c in clouds]
        for outcome in outcomes:
            log.info("poll %s: %s%s", outcome.cloud, outcome.outcome, f" ({outcome.error})" if outcome.error else "",
                     extra={"cloud": outcome.cloud, "event": "poll", "outcome": outcome.outcome})
        report.outcomes += outcomes
        return outcomes

    def _deliver(self, report: RunReport) -> None:
        try:
            results = notify.deliver_due(self.engine, self.settings, now=self.clock())
        except WatcherError as exc:
            report.errors.append(f"notifications: {exc}")
            return
        report.delivered = sum(1 for r in results if r.state == "sent")
        for result in results:
            log.info("notification for ticket %s to %s: %s", result.ticket_id, result.destination, result.state,
                     extra={"event": "notify", "ticket": result.ticket_id, "outcome": result.state})

    def _check_health(self) -> None:
        now = self.clock()
        with self.engine.connect() as conn:
            state = health.evaluate(conn, self.settings, now)
        health.queue_alerts(self.engine, self.settings, state, now)
        for kind, destination, ok in health.send_alerts(self.engine, self.settings, now):
            log.info("health alert %s to %s: %s", kind, destination, "sent" if ok else "failed")

    # -- catch-up

    def catch_up_due(self, *, at_start: bool = False) -> bool:
        """Whether a run is overdue by the database's record, not the scheduler's memory.

        At start: the last successful run is older than the schedule's period.
        Later (after a sleep or a clock jump): the last run, failed or not, is;
        failed runs are not retried every minute, only at the next tick.
        """
        with self.engine.connect() as conn:
            started, succeeded = health.last_run(conn)
        reference = succeeded if at_start else started
        return reference is None or self.clock() - reference >= self.period

    def watchdog(self, at_start: bool = False) -> None:
        try:
            if self.catch_up_due(at_start=at_start):
                self.run_once("catch-up")
        except (WatcherError, SQLAlchemyError) as exc:
            log.error("catch-up check failed: %s", exc)

    # -- serving

    def next_run_time(self) -> dt.datetime | None:
        return self.trigger.get_next_fire_time(None, self.clock())

    def start(self) -> None:
        scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        scheduler.add_job(self.run_once, self.trigger, args=["schedule"], id="poll", coalesce=True,
                          max_instances=1, misfire_grace_time=int(self.period.total_seconds()) or 1)
        check_every = max(1.0, min(60.0, self.period.total_seconds() / 2))
        scheduler.add_job(self.watchdog, IntervalTrigger(seconds=check_every, timezone=dt.timezone.utc),
                          id="watchdog", coalesce=True, max_instances=1)
        scheduler.add_job(self.watchdog, kwargs={"at_start": True}, id="catch-up-at-start")  # runs at once
        scheduler.start()
        self._scheduler = scheduler
        if self.settings.daemon.http_port is not None:
            self._http = serve_health(self, self.settings.daemon.http_port)
        log.info("daemon started: schedule %r (every %s), next run %s, %s",
                 self.settings.daemon.schedule or "daily", self.period, self.next_run_time(),
                 self.leadership.description)

    def stop(self) -> None:
        """Stop taking work; give a run in progress a few seconds, then leave (its transaction rolls back)."""
        self.stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        finished = self._run_lock.acquire(timeout=SHUTDOWN_GRACE_SECONDS)
        if finished:
            self._run_lock.release()
        else:
            log.warning("a run was still in progress at shutdown; its transaction is rolled back")
        self.leadership.release()

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop_requested.wait(1.0):
            pass
        self.stop()
        log.info("daemon stopped")


def serve_health(daemon: Daemon, port: int) -> ThreadingHTTPServer:
    """``/healthz`` (200 healthy, 503 not) and ``/metrics`` (Prometheus text) on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                with daemon.engine.connect() as conn:
                    now = daemon.clock()
                    if self.path.split("?")[0] == "/healthz":
                        state = health.evaluate(conn, daemon.settings, now)
                        body = _json({**state.to_json(), "leader": daemon.leadership.description,
                                      "next_run": _iso(daemon.next_run_time())})
                        self._reply(200 if state.healthy else 503, "application/json", body)
                    elif self.path.split("?")[0] == "/metrics":
                        self._reply(200, "text/plain; version=0.0.4", health.metrics_text(conn, daemon.settings, now))
                    else:
                        self._reply(404, "text/plain", "not found: try /healthz or /metrics\n")
            except (WatcherError, SQLAlchemyError) as exc:
                self._reply(503, "application/json", _json({"healthy": False, "reasons": [f"database: {exc}"]}))

        def _reply(self, code: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep probes out of the log
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health endpoint on port %s: /healthz, /metrics", server.server_address[1])
    return server


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _json(data: Any) -> str:
    import json

    return json.dumps(data, default=str) + "\n"
