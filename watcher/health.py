"""Health: is the watcher doing its job, and who needs to know when it is not.

Unhealthy means: the last N daemon runs failed (default 3), or a polled
cloud's newest publication is older than ``stale_after_days`` (default 8 —
Microsoft publishes weekly). The state is computed from the database, so the
daemon, ``watcher status --check`` and the HTTP endpoint agree, and survives
restarts.

When the state flips, one alert per destination is queued in
``health_alerts`` ("watcher unhealthy", later "watcher recovered") and sent
by the daemon; a sent alert is never sent again, so a week of failing runs
produces one message, not one per run.
"""
from __future__ import annotations

import datetime as dt
import logging
import socket
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy import Connection, Engine, func, insert, select, update

from . import notify, polls, status
from .models import DaemonRun, HealthAlert, OutboxMessage, Poll, Publication, Ticket
from .settings import Settings

log = logging.getLogger(__name__)

ALERT_KINDS = ("unhealthy", "recovered")


@dataclass(frozen=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...]
    consecutive_failures: int
    last_run_at: dt.datetime | None
    last_success_at: dt.datetime | None
    clouds: tuple[status.CloudStatus, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reasons": list(self.reasons),
            "consecutive_failed_runs": self.consecutive_failures,
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last_successful_run_at": self.last_success_at.isoformat() if self.last_success_at else None,
        }


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything the watcher writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_run_start(engine: Engine, now: dt.datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(DaemonRun.__table__).returning(DaemonRun.__table__.c.id),
            {"started_at": now, "runner": runner_name(), "ok": False, "error": "running"},
        ).scalar_one()


def record_run_finish(engine: Engine, run_id: int, now: dt.datetime, ok: bool, error: str) -> None:
    table = DaemonRun.__table__
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == run_id).values(finished_at=now, ok=ok, error=error[:4000]))


def last_run(conn: Connection) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(start of the last run, start of the last successful run)."""
    table = DaemonRun.__table__
    started = conn.execute(select(func.max(table.c.started_at))).scalar()
    succeeded = conn.execute(select(func.max(table.c.started_at)).where(table.c.ok.is_(True))).scalar()
    return _aware(started), _aware(succeeded)


def consecutive_failures(conn: Connection, limit: int = 100) -> int:
    table = DaemonRun.__table__
    rows = conn.execute(
        select(table.c.ok).where(table.c.finished_at.is_not(None)).order_by(table.c.started_at.desc()).limit(limit)
    ).scalars()
    count = 0
    for ok in rows:
        if ok:
            break
        count += 1
    return count


def evaluate(conn: Connection, settings: Settings, now: dt.datetime) -> Health:
    failures = consecutive_failures(conn)
    started, succeeded = last_run(conn)
    clouds = tuple(status.status(conn, settings, now))
    reasons = []
    if failures >= settings.daemon.unhealthy_after_failures:
        reasons.append(f"the last {failures} runs failed")
    for cloud in clouds:
        if cloud.stale:
            age = "no publication" if cloud.newest is None else f"newest publication {cloud.newest.file_date}"
            reasons.append(f"{cloud.cloud}: stale ({age}; expected one every week)")
    return Health(not reasons, tuple(reasons), failures, started, succeeded, clouds)


def _last_alert_kind(conn: Connection) -> str | None:
    table = HealthAlert.__table__
    return conn.execute(select(table.c.kind).order_by(table.c.id.desc()).limit(1)).scalar()


def queue_alerts(engine: Engine, settings: Settings, health: Health, now: dt.datetime) -> str | None:
    """Queue an alert per destination when the health state flipped; returns the kind queued."""
    with engine.begin() as conn:
        last = _last_alert_kind(conn)
        if not health.healthy and last != "unhealthy":
            kind, reason = "unhealthy", "; ".join(health.reasons)
        elif health.healthy and last == "unhealthy":
            kind, reason = "recovered", "polls succeed and publications are current again"
        else:
            return None
        rows = [{"kind": kind, "reason": reason, "created_at": now, "destination": d.key,
                 "state": "pending", "attempts": 0, "last_error": ""} for d in notify.destinations(settings)]
        if not rows:  # remember the state even with nobody to tell, so a later destination gets no stale alert
            rows = [{"kind": kind, "reason": reason, "created_at": now, "destination": "",
                     "state": "sent", "attempts": 0, "last_error": "no destination configured"}]
        conn.execute(insert(HealthAlert.__table__), rows)
    log.warning("watcher %s: %s", kind, reason)
    return kind


def send_alerts(engine: Engine, settings: Settings, now: dt.datetime) -> list[tuple[str, str, bool]]:
    """Send pending alerts; each result is recorded at once. Returns (kind, destination, ok)."""
    table = HealthAlert.__table__
    by_key = {d.key: d for d in notify.destinations(settings)}
    with engine.connect() as conn:
        pending = conn.execute(
            select(table).where(table.c.state == "pending").order_by(table.c.id)
        ).all()
    results = []
    for alert in pending:
        destination = by_key.get(alert.destination)
        if destination is None:
            continue  # that destination was removed from the config; the alert waits for it
        title = f"[watcher] {'unhealthy' if alert.kind == 'unhealthy' else 'recovered'} on {socket.gethostname()}"
        body = f"watcher {alert.kind}: {alert.reason} (since {alert.created_at:%Y-%m-%d %H:%M} UTC)"
        outcome = notify.send(destination, notify.Message(
            title=title, body=body, html=f"<p>{body}</p>", attachment_name="", attachment="",
        ))
        attempts = alert.attempts + 1
        state = "sent" if outcome.ok else ("failed" if attempts >= settings.notify.max_attempts else "pending")
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == alert.id).values(
                state=state, attempts=attempts, last_error=outcome.error, sent_at=now if outcome.ok else None,
            ))
        results.append((alert.kind, destination.label, outcome.ok))
    return results


def _count_by(conn: Connection, column, *where) -> dict[str, int]:
    return {str(k): v for k, v in conn.execute(select(column, func.count()).where(*where).group_by(column)).all()}


def metrics_text(conn: Connection, settings: Settings, now: dt.datetime) -> str:
    """Prometheus text exposition of what an operator watches."""
    health = evaluate(conn, settings, now)
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")

    SUCCESS = polls.SUCCESS_OUTCOMES
    polls_table = Poll.__table__
    poll_counts = conn.execute(
        select(polls_table.c.cloud, polls_table.c.outcome, func.count())
        .group_by(polls_table.c.cloud, polls_table.c.outcome)
    ).all()
    metric("watcher_polls_total", "counter", "Polls by cloud and outcome.",
           [({"cloud": c, "outcome": o}, n) for c, o, n in poll_counts])
    runs = DaemonRun.__table__
    failed = conn.execute(select(func.count()).where(runs.c.ok.is_(False), runs.c.finished_at.is_not(None))).scalar()
    metric("watcher_run_failures_total", "counter", "Daemon runs that failed.", [({}, failed or 0)])
    metric("watcher_consecutive_failed_runs", "gauge", "Failed daemon runs since the last success.",
           [({}, health.consecutive_failures)])
    success = conn.execute(
        select(polls_table.c.cloud, func.max(polls_table.c.finished_at))
        .where(polls_table.c.outcome.in_(list(SUCCESS))).group_by(polls_table.c.cloud)
    ).all()
    metric("watcher_last_success_timestamp_seconds", "gauge", "When each cloud was last polled successfully.",
           [({"cloud": c}, _aware(t).timestamp()) for c, t in success if t])
    pubs = Publication.__table__
    metric("watcher_publications", "gauge", "Publications stored per cloud.",
           [({"cloud": c}, n) for c, n in _count_by(conn, pubs.c.cloud).items()])
    newest = conn.execute(select(pubs.c.cloud, func.max(pubs.c.file_date)).group_by(pubs.c.cloud)).all()
    metric("watcher_newest_publication_timestamp_seconds", "gauge", "File date of the newest publication per cloud.",
           [({"cloud": c}, dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp()) for c, d in newest])
    tickets = Ticket.__table__
    metric("watcher_tickets", "gauge", "Tickets by state.",
           [({"state": s}, n) for s, n in _count_by(conn, tickets.c.state).items()])
    outbox = OutboxMessage.__table__
    metric("watcher_notifications", "gauge", "Queued notifications by state.",
           [({"state": s}, n) for s, n in _count_by(conn, outbox.c.state).items()])
    metric("watcher_healthy", "gauge", "1 when healthy.", [({}, 1 if health.healthy else 0)])
    return "\n".join(lines) + "\n"
