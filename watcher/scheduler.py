"""The daemon: polls on a schedule, catches up after downtime, one leader among replicas.

Each run polls every configured cloud (importing and ticketing what is new,
in the import's transaction), delivers the notifications that are due
(earlier failures included), and then checks health. APScheduler 3 fires the
runs from a cron expression, with an in-memory job store rebuilt at start:
what matters (when the last poll succeeded, what was delivered) lives in the
database, not in the scheduler.

Threads: APScheduler's jobs only *request* a run; one worker thread does the
runs, one at a time, and coalesces requests that piled up meanwhile. A
watchdog request every few seconds compares the database's record with the
schedule's fire times, so a start after downtime, a laptop that slept or a clock
that jumped leads to one run at once, not to a missed week.

Shutdown: the main thread only waits for SIGTERM/SIGINT (blocked in every
thread and taken with ``sigtimedwait``, so no handler runs in the middle of a
lock). It stops the scheduler, lets a run in progress finish for a grace
period, and otherwise leaves at once: every import and every outbox update
is one transaction, and a transaction whose connection goes away is rolled
back by the database, exactly as after ``kill -9``. The next run completes
the work.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import gc
import hashlib
import logging
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import health, notify, pipeline
from .errors import ConfigError, WatcherError
from .leader import Leadership
from .models import utcnow
from .settings import Settings

log = logging.getLogger(__name__)

#: How long a run in progress may go on after SIGTERM before the process leaves (the bound is 10 s).
SHUTDOWN_GRACE_SECONDS = 6.0
#: How late a fire time may be before the watchdog takes it as missed: the scheduled run itself
#: (requested at the fire time) must have had the time to record its start first.
CATCH_UP_SLACK = dt.timedelta(seconds=30)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def release_memory() -> None:
    """Hand the memory of a run (a parsed 4 MB file is ~100 MB of objects) back to the system.

    The daemon rests for a day between runs; without this, glibc keeps the
    freed arenas and the process sits at its peak size.
    """
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass



# ---------------------------------------------------------------- the schedule


def default_schedule(seed: str | None = None) -> str:
    """Once a day at a minute picked per host, so replicas and sites spread over the day.

    Microsoft's "weekly" file appears on varying days; a daily check costs one
    page request and downloads only when a new file is listed, so each
    publication is caught within a day of its one-week lead time.
    """
    digest = hashlib.sha256((seed or socket.gethostname()).encode()).digest()
    return f"{digest[0] % 60} {digest[1] % 24} * * *"


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(value: str) -> str:
    """Standard cron weekdays (0 or 7 = Sunday) as names: APScheduler 3 counts 0 as Monday."""
    days: list[str] = []
    for token in value.split(","):
        base, _, step_text = token.partition("/")
        if any(c.isalpha() for c in base) or (base == "*" and not step_text):
            days.append(token)  # names and a plain * mean the same in both
            continue
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            low_text, _, high_text = base.partition("-")
            low, high = int(low_text), int(high_text)
        else:
            low = high = int(base)
            if step_text:
                high = 6
        step = int(step_text) if step_text else 1
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step > 0):
            raise ValueError(f"day of week {token!r} is out of range (0-7)")
        days.extend(_DAY_NAMES[n % 7] for n in range(low, high + 1, step))
    return ",".join(dict.fromkeys(days))


def make_trigger(schedule: str | None) -> CronTrigger:
    """A cron trigger in UTC: five fields, or six with seconds first (``*/5 * * * * *``).

    Weekdays follow cron (0 = Sunday), not APScheduler 3 (0 = Monday).
    """
    expression = (schedule or default_schedule()).strip()
    fields = expression.split()
    try:
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ConfigError(f"invalid schedule {expression!r}: use five cron fields (or six, seconds first)")
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_cron_day_of_week(day_of_week), timezone=dt.timezone.utc)
    except ValueError as exc:
        raise ConfigError(f"invalid schedule {expression!r}: {exc}") from None


def missed_fire_time(trigger: CronTrigger, since: dt.datetime, now: dt.datetime,
                     slack: dt.timedelta) -> dt.datetime | None:
    """The schedule's first fire time after ``since`` when it passed more than ``slack`` before ``now``.

    Compared with fire times, not with a period: a schedule's gaps may be
    uneven (``0 3 * * 1-5`` rests over the weekend), and a fixed period taken
    at start would find a run "overdue" where the schedule has none.
    """
    # Just after ``since``: a run that started exactly at a fire time covers that fire time.
    fire = trigger.get_next_fire_time(None, since + dt.timedelta(microseconds=1))
    return fire if fire is not None and now - fire > slack else None


def schedule_period(trigger: CronTrigger, now: dt.datetime) -> dt.timedelta:
    """The gap between the next two runs of the schedule after ``now``."""
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + dt.timedelta(microseconds=1)) if first else None
    if first is None or second is None:
        raise ConfigError("the schedule never fires (twice)")
    return second - first


# ---------------------------------------------------------------- the daemon


@dataclass
class RunReport:
    started_at: dt.datetime
    reason: str
    ok: bool = False
    outcomes: list[pipeline.PollOutcome] = field(default_factory=list)
    delivered: int = 0
    errors: list[str] = field(default_factory=list)


class Service(Protocol):
    """Something the daemon starts first and stops with itself (the HTTP server)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


#: ``pipeline.poll``'s shape: the outcome of polling each cloud.
PollFunction = Callable[..., Sequence[pipeline.PollOutcome]]
#: ``notify.deliver_due``'s shape: what was delivered this time.
DeliverFunction = Callable[..., Sequence[notify.DeliveryResult]]
#: ``health.health_state``'s shape: the health after a run (database errors as StoreError).
HealthFunction = Callable[[Engine, Settings, dt.datetime], health.Health]


class Daemon:
    """What ``watcher run`` runs; the pieces are separate so tests can drive them.

    Its collaborators are arguments, so a test hands in a failing delivery
    or health check instead of patching modules: ``poll`` polls clouds,
    ``deliver`` sends the notifications that are due, ``evaluate_health``
    says how the watcher is after a run, ``clock`` tells the time, and
    ``services`` (the HTTP server) start before the schedule and stop with it.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        leadership: Leadership,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        poll: PollFunction = pipeline.poll,
        deliver: DeliverFunction = notify.deliver_due,
        evaluate_health: HealthFunction = health.health_state,
        services: Sequence[Service] = (),
        grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
    ):
        self.settings = settings
        self.engine = engine
        self.leadership = leadership
        self.clock = clock
        self.poll = poll
        self.deliver = deliver
        self.evaluate_health = evaluate_health
        self.services = tuple(services)
        self.grace_seconds = grace_seconds
        self.schedule = settings.daemon.schedule or default_schedule()
        self.trigger = make_trigger(self.schedule)
        self.period = schedule_period(self.trigger, clock())
        self.stopping = threading.Event()
        self._requests: queue.Queue[str] = queue.Queue()
        self._scheduler: BackgroundScheduler | None = None
        self._started: list[Service] = []
        self._worker: threading.Thread | None = None

    # -- one run

    def run_once(self, reason: str, *, only_if: Callable[[], bool] | None = None) -> RunReport | None:
        """Poll, deliver, check health — if this process leads (and ``only_if`` says the run is due)."""
        if self.stopping.is_set():
            return None
        if not self.leadership.try_lead():
            log.debug("run skipped (%s): another replica leads", reason)
            return None
        # Decided after taking the lead: the leader's view of the database is the one that counts.
        if only_if is not None and not only_if():
            return None
        return self._run(reason)

    def _run(self, reason: str) -> RunReport:
        report = RunReport(self.clock(), reason)
        log.info("run started (%s)", reason, extra={"event": "run"})
        try:
            run_id = health.record_run_start(self.engine, report.started_at, reason)
        except WatcherError as exc:
            log.error("run failed: %s", exc, extra={"event": "run", "outcome": "error"})
            report.errors.append(str(exc))
            return report
        try:
            self._poll_and_deliver(report)
        except Exception as exc:  # a bug or an untranslated failure: the run is recorded failed, the daemon goes on
            log.exception("run failed with an internal error")
            report.errors.append(f"internal error: {type(exc).__name__}: {exc}")
        report.ok = not report.errors
        try:
            health.record_run_finish(self.engine, run_id, self.clock(), report.ok, "; ".join(report.errors))
            self._check_health()
        except WatcherError as exc:
            log.error("after the run: %s", exc)
        except Exception:  # the run is recorded; a bug in the health check must not end the worker either
            log.exception("after the run: internal error")
        log.info("run finished (%s): %s", reason, "ok" if report.ok else "failed: " + "; ".join(report.errors),
                 extra={"event": "run", "outcome": "ok" if report.ok else "failed"})
        release_memory()
        return report

    def _poll_and_deliver(self, report: RunReport) -> None:
        deadline = time.monotonic() + self.settings.daemon.run_deadline_seconds
        clouds = list(self.settings.clouds)
        delay = self.settings.daemon.retry_backoff_seconds
        while clouds and not self.stopping.is_set():
            clouds = self._poll(clouds, report)
            if not clouds:
                break
            # Failed clouds are tried again with backoff (and jitter), within the run's deadline.
            wait = delay * random.uniform(0.8, 1.2)
            if time.monotonic() + wait > deadline:
                break
            log.info("retrying %s in %.1f s", ", ".join(clouds), wait, extra={"event": "retry"})
            if self.stopping.wait(wait):
                break
            delay *= 2
        report.errors += [f"{cloud}: {error}" for cloud, error in self._last_errors(report).items()]
        if not self.stopping.is_set():
            self._deliver(report)

    def _poll(self, clouds: list[str], report: RunReport) -> list[str]:
        """Poll each cloud in turn (stopping between clouds on shutdown); returns the clouds that failed."""
        failed = []
        for cloud in clouds:
            if self.stopping.is_set():
                failed.append(cloud)
                continue
            try:
                [outcome] = self.poll(self.engine, self.settings, [cloud], now=self.clock)
            except Exception as exc:  # a bug or an untranslated failure: the run fails, the daemon goes on
                log.exception("%s poll: internal error", cloud)
                report.outcomes.append(_failed_outcome(cloud, f"internal error: {type(exc).__name__}: {exc}",
                                                       self.clock()))
                failed.append(cloud)
                continue
            report.outcomes.append(outcome)
            if not outcome.ok:
                failed.append(cloud)
        return failed

    @staticmethod
    def _last_errors(report: RunReport) -> dict[str, str]:
        last = {o.cloud: o for o in report.outcomes}
        return {cloud: o.error or o.outcome for cloud, o in last.items() if not o.ok}

    def _deliver(self, report: RunReport) -> None:
        try:
            results = self.deliver(self.engine, self.settings, now=self.clock(), clock=self.clock)
        except WatcherError as exc:
            report.errors.append(f"notifications: {exc}")
            return
        report.delivered = sum(1 for r in results if r.state == "sent")
        for r in results:
            log.info("notification for ticket %s to %s: %s%s", r.ticket_id, r.destination, r.state,
                     f" ({r.error})" if r.error and r.state != "sent" else "",
                     extra={"event": "notify", "ticket": r.ticket_id, "outcome": r.state})

    def _check_health(self) -> None:
        now = self.clock()
        state = self.evaluate_health(self.engine, self.settings, now)  # database errors come back as StoreError
        health.queue_alerts(self.engine, self.settings, state, now)
        for kind, destination, ok in health.send_alerts(self.engine, self.settings, now):
            log.info("health alert %s to %s: %s", kind, destination, "sent" if ok else "failed",
                     extra={"event": "health", "outcome": "sent" if ok else "failed"})

    # -- catch-up

    def catch_up_due(self, *, at_start: bool = False) -> bool:
        """Whether a scheduled fire time was missed, by the database's record, not the scheduler's memory.

        At start: some configured cloud has not been polled successfully
        (by the daemon or by ``watcher poll``) since a fire time that has
        passed. Later (after a sleep or a clock jump): a fire time passed
        with no daemon run started or finished since the one before it. That
        one counts failed runs too, so a failing source is tried again at the
        next tick, not every few seconds.
        """
        now = self.clock()
        with self.engine.connect() as conn:
            if at_start:
                reference = health.oldest_last_success(conn, self.settings.clouds)
            else:
                reference = health.last_activity(conn)
        # Half a period at most, so a schedule of a few seconds is still watched.
        missed = None if reference is None else missed_fire_time(self.trigger, reference, now,
                                                                  min(CATCH_UP_SLACK, self.period / 2))
        due = reference is None or missed is not None
        if at_start:
            log.info("catch-up at start: %s (last successful poll %s, missed fire time %s)",
                     "polling now" if due else "not due", reference.isoformat() if reference else "never",
                     _iso(missed), extra={"event": "catch-up", "outcome": "due" if due else "not-due"})
        elif due:
            log.info("catch-up: no run since %s, missed the run due at %s: polling now",
                     reference.isoformat() if reference else "ever", _iso(missed), extra={"event": "catch-up"})
        return due

    def _catch_up_check(self, at_start: bool) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return self.catch_up_due(at_start=at_start)
            except (WatcherError, SQLAlchemyError) as exc:
                log.error("catch-up check failed: %s", exc)
                return False

        return check

    # -- the worker

    def request_run(self, reason: str) -> None:
        """Called from APScheduler's thread: only queue the request; the worker does the run."""
        self._requests.put(reason)

    def _work(self) -> None:
        self._guarded(lambda: self.run_once("catch-up", only_if=self._catch_up_check(at_start=True)))
        while not self.stopping.is_set():
            try:
                reasons = {self._requests.get(timeout=0.5)}
            except queue.Empty:
                continue
            while True:  # coalesce whatever piled up during the last run
                try:
                    reasons.add(self._requests.get_nowait())
                except queue.Empty:
                    break
            if "schedule" in reasons:
                self._guarded(lambda: self.run_once("schedule"))
            else:
                self._guarded(lambda: self.run_once("catch-up", only_if=self._catch_up_check(at_start=False)))

    @staticmethod
    def _guarded(run: Callable[[], object]) -> None:
        """Never let a bug end the worker thread (the first run included): log it, wait for the next tick."""
        try:
            run()
        except Exception:
            log.exception("run failed with an internal error")

    # -- serving

    def next_run_time(self) -> dt.datetime | None:
        return self.trigger.get_next_fire_time(None, self.clock())

    def start(self) -> None:
        for service in self.services:  # first: a service that cannot start fails the start, not later
            service.start()
            self._started.append(service)
        scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        scheduler.add_job(self.request_run, self.trigger, args=["schedule"], id="poll", coalesce=True,
                          max_instances=1, misfire_grace_time=max(1, int(self.period.total_seconds())))
        check_every = max(1.0, min(60.0, self.period.total_seconds() / 2))
        scheduler.add_job(self.request_run, IntervalTrigger(seconds=check_every, timezone=dt.timezone.utc),
                          args=["watchdog"], id="watchdog", coalesce=True, max_instances=1)
        scheduler.start()
        self._scheduler = scheduler
        self._worker = threading.Thread(target=self._work, name="watcher-runs", daemon=True)
        self._worker.start()
        log.info("daemon started: schedule %r (UTC, every %s), next run %s; %s", self.schedule, self.period,
                 _iso(self.next_run_time()), self.leadership.description, extra={"event": "start"})

    def stop(self) -> bool:
        """Stop taking work and wait up to the grace period; True when no run was left in progress."""
        self.stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for service in reversed(self._started):
            service.stop()
        self._started.clear()
        finished = True
        if self._worker is not None:
            self._worker.join(self.grace_seconds)
            finished = not self._worker.is_alive()
        if finished:
            self.leadership.release()
        return finished

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT (called from the main thread)."""
        # Blocked before any thread starts, so every thread inherits the mask and only this one takes them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self.start()
        received = None
        while received is None:
            received = signal.sigtimedwait(STOP_SIGNALS, 1.0)
            if received is None and self._worker is not None and not self._worker.is_alive():
                raise WatcherError("the daemon's worker thread ended unexpectedly")  # pragma: no cover
        log.info("received %s: stopping", signal.Signals(received.si_signo).name, extra={"event": "stop"})
        if self.stop():
            log.info("daemon stopped", extra={"event": "stop"})
            return
        log.warning("a run was still in progress after %.0f s: leaving now; the database rolls back its open "
                    "transaction and the next run completes the work", self.grace_seconds, extra={"event": "stop"})
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        os._exit(0)  # the worker thread cannot be interrupted; leaving is what rolls its transaction back


def _failed_outcome(cloud: str, error: str, at: dt.datetime) -> pipeline.PollOutcome:
    return pipeline.PollOutcome(cloud=cloud, outcome="error", url="", file_date=None, started_at=at,
                                finished_at=at, error=error)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None
