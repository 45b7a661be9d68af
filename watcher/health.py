"""Health: is the watcher doing its job, and who needs to know when it is not.

Unhealthy means: the last N daemon runs failed (default 3), or a polled
cloud's newest publication is older than ``stale_after_days`` (default 8 —
Microsoft publishes weekly). The state is computed from the database, so the
daemon, ``watcher status --check`` and the HTTP endpoint agree, and it
survives restarts. A cloud with no publication at all is not "stale" here: a
new installation whose first polls fail is reported by the failure count, and
one that has not polled yet is not unhealthy.

When the state flips, one alert per destination is queued in
``health_alerts`` ("watcher unhealthy", later "watcher recovered") and sent
by the daemon; a sent alert is never sent again, so a week of failing runs
produces one message, not one per run.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, Engine, func, insert, select, update

from . import db, notify, polls, status
from .errors import translate_db_errors
from .models import DaemonRun, HealthAlert, OutboxMessage, Poll, Publication, Ticket
from .settings import Settings

log = logging.getLogger(__name__)

ALERT_KINDS = ("unhealthy", "recovered")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else polls.as_utc(value)


# ---------------------------------------------------------------- daemon runs


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_run_start(engine: Engine, now: dt.datetime, reason: str) -> int:
    with translate_db_errors("recording the start of a run"), db.writer(engine).begin() as conn:
        return conn.execute(
            insert(DaemonRun.__table__).returning(DaemonRun.__table__.c.id),
            {"started_at": now, "runner": runner_name()[:200], "reason": reason[:32], "ok": None, "error": ""},
        ).scalar_one()


def record_run_finish(engine: Engine, run_id: int, now: dt.datetime, ok: bool, error: str) -> None:
    table = DaemonRun.__table__
    with translate_db_errors("recording the end of a run"), db.writer(engine).begin() as conn:
        conn.execute(update(table).where(table.c.id == run_id).values(finished_at=now, ok=ok, error=error[:4000]))


@dataclass(frozen=True)
class RunRecord:
    started_at: dt.datetime
    finished_at: dt.datetime | None
    runner: str
    reason: str
    ok: bool | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "runner": self.runner, "reason": self.reason, "ok": self.ok, "error": self.error or None}


def last_run(conn: Connection) -> RunRecord | None:
    table = DaemonRun.__table__
    row = conn.execute(select(table).order_by(table.c.started_at.desc(), table.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return RunRecord(polls.as_utc(row.started_at), _aware(row.finished_at), row.runner, row.reason, row.ok, row.error)


def last_successful_run_at(conn: Connection) -> dt.datetime | None:
    table = DaemonRun.__table__
    return _aware(conn.execute(select(func.max(table.c.started_at)).where(table.c.ok.is_(True))).scalar())


def last_activity(conn: Connection) -> dt.datetime | None:
    """When a daemon run last started or finished, whoever ran it and however it went."""
    table = DaemonRun.__table__
    started, finished = conn.execute(select(func.max(table.c.started_at), func.max(table.c.finished_at))).one()
    times = [t for t in (_aware(started), _aware(finished)) if t is not None]
    return max(times) if times else None


def oldest_last_success(conn: Connection, clouds: Iterable[str]) -> dt.datetime | None:
    """The least recent of the clouds' last successful polls; None when some cloud has none."""
    times = []
    for cloud in clouds:
        success = polls.last_success(conn, cloud)
        if success is None:
            return None
        times.append(success.finished_at)
    return min(times) if times else None


def consecutive_failures(conn: Connection, limit: int = 100) -> int:
    """Finished runs that failed since the last one that succeeded (runs cut short by a crash do not count)."""
    table = DaemonRun.__table__
    rows = conn.execute(
        select(table.c.ok).where(table.c.finished_at.is_not(None))
        .order_by(table.c.started_at.desc(), table.c.id.desc()).limit(limit)
    ).scalars()
    count = 0
    for ok in rows:
        if ok:
            break
        count += 1
    return count


# ---------------------------------------------------------------- health


@dataclass(frozen=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...]
    consecutive_failures: int
    last_run: RunRecord | None
    last_success_at: dt.datetime | None
    clouds: tuple[status.CloudStatus, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reasons": list(self.reasons),
            "consecutive_failed_runs": self.consecutive_failures,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "last_successful_run_at": self.last_success_at.isoformat() if self.last_success_at else None,
        }


def evaluate(conn: Connection, settings: Settings, now: dt.datetime) -> Health:
    failures = consecutive_failures(conn)
    clouds = tuple(status.status(conn, settings, now))
    reasons = []
    if failures >= settings.daemon.unhealthy_after_failures:
        reasons.append(f"the last {failures} runs failed")
    for cloud in clouds:
        if cloud.newest is not None and cloud.stale:
            reasons.append(f"{cloud.cloud}: no new publication for {cloud.age_days} days (newest "
                           f"{cloud.newest.file_date}; Microsoft publishes weekly)")
    reasons += stale_consumers(conn, settings, now)
    return Health(not reasons, tuple(reasons), failures, last_run(conn), last_successful_run_at(conn), clouds)


def stale_consumers(conn: Connection, settings: Settings, now: dt.datetime) -> list[str]:
    """A feed consumer silent longer than ``[feeds] stale_after_hours`` (counted from its creation if it never
    fetched): its firewall may be running an old list."""
    from . import feed_consumers

    limit = dt.timedelta(hours=settings.feeds.stale_after_hours)
    reasons = []
    for name, last, created in feed_consumers.last_fetches(conn):
        if now - (last or created) > limit:
            since = f"since {last:%Y-%m-%d %H:%M} UTC" if last else "ever (added {:%Y-%m-%d %H:%M} UTC)".format(created)
            reasons.append(f"feed consumer {name} has not fetched {since}")
    return reasons


def health_state(engine: Engine, settings: Settings, now: dt.datetime) -> Health:
    with translate_db_errors("checking health"), engine.connect() as conn:
        return evaluate(conn, settings, now)


# ---------------------------------------------------------------- alerts


def last_alert_kind(conn: Connection) -> str | None:
    table = HealthAlert.__table__
    return conn.execute(select(table.c.kind).order_by(table.c.id.desc()).limit(1)).scalar()


def queue_alerts(engine: Engine, settings: Settings, health: Health, now: dt.datetime) -> str | None:
    """Queue an alert per destination when the health state flipped; returns the kind queued.

    Only the leader calls this, after its run, so flips are not queued twice.
    """
    with translate_db_errors("queueing a health alert"), db.writer(engine).begin() as conn:
        kind = _queue_alert_rows(conn, settings, health, now)
    if kind is not None:
        log.warning("watcher %s: %s", kind, "; ".join(health.reasons) or "recovered",
                    extra={"event": "health", "outcome": kind})
    return kind


def _queue_alert_rows(conn: Connection, settings: Settings, health: Health, now: dt.datetime) -> str | None:
    """Queue the alert rows of a flip of the health state, if it flipped; the kind queued."""
    last = last_alert_kind(conn)
    if not health.healthy and last != "unhealthy":
        kind, reason = "unhealthy", "; ".join(health.reasons)
    elif health.healthy and last == "unhealthy":
        kind, reason = "recovered", "runs succeed and publications are current again"
    else:
        return None
    base = {"kind": kind, "reason": reason, "created_at": now, "attempts": 0, "last_error": ""}
    rows = [{**base, "destination": d.key, "destination_label": d.label[:1024], "state": "pending"}
            for d in notify.destinations(settings) if d.valid]
    if not rows:  # remember the state even with nobody to tell, so no stale alert is sent later
        rows = [{**base, "destination": "", "destination_label": "", "state": "sent",
                 "last_error": "no destination configured"}]
    conn.execute(insert(HealthAlert.__table__), rows)
    return kind


def alert_message(kind: str, reason: str, since: dt.datetime) -> notify.Message:
    host = socket.gethostname()
    title = f"[watcher] {'UNHEALTHY' if kind == 'unhealthy' else 'recovered'} on {host}"
    body = (f"watcher {kind} on {host} since {since:%Y-%m-%d %H:%M} UTC: {reason}\n"
            + ("Check `watcher status` and the daemon's log." if kind == "unhealthy" else "No action is needed."))
    return notify.Message(title=title, body=body, html=f"<p>{body}</p>", attachment_name="watcher-health.txt",
                          attachment=body + "\n")


def send_alerts(engine: Engine, settings: Settings, now: dt.datetime) -> list[tuple[str, str, bool]]:
    """Send pending alerts; each result is recorded at once. Returns (kind, destination, ok)."""
    table = HealthAlert.__table__
    by_key = {d.key: d for d in notify.destinations(settings)}
    with translate_db_errors("reading health alerts"), engine.connect() as conn:
        pending = conn.execute(select(table).where(table.c.state == "pending").order_by(table.c.id)).all()
    results = []
    for alert in pending:
        destination = by_key.get(alert.destination)
        if destination is None:
            continue  # that destination was removed from the config; the alert waits for it
        outcome = notify.send(destination, alert_message(alert.kind, alert.reason, _aware(alert.created_at)))
        attempts = alert.attempts + 1
        state = "sent" if outcome.ok else ("failed" if attempts >= settings.notify.max_attempts else "pending")
        with translate_db_errors("recording a health alert"), db.writer(engine).begin() as conn:
            conn.execute(update(table).where(table.c.id == alert.id).values(
                state=state, attempts=attempts, last_error=outcome.error, sent_at=now if outcome.ok else None,
            ))
        results.append((alert.kind, destination.label, outcome.ok))
    return results


# ---------------------------------------------------------------- metrics


def _count_by(conn: Connection, column: Any) -> dict[str, int]:
    return {str(k): v for k, v in conn.execute(select(column, func.count()).group_by(column)).all()}


def _sample_value(value: float) -> str:
    # Full precision: a timestamp in %g would lose its last digits (1.79587e+09).
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(conn: Connection, settings: Settings, now: dt.datetime) -> str:
    """Prometheus text exposition (format 0.0.4) of what an operator watches."""
    health = evaluate(conn, settings, now)
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
            number = _sample_value(value)
            lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")

    polls_table = Poll.__table__
    poll_counts = conn.execute(
        select(polls_table.c.cloud, polls_table.c.outcome, func.count())
        .group_by(polls_table.c.cloud, polls_table.c.outcome).order_by(polls_table.c.cloud, polls_table.c.outcome)
    ).all()
    metric("watcher_polls_total", "counter", "Poll attempts by cloud and outcome.",
           [({"cloud": c, "outcome": o}, n) for c, o, n in poll_counts])
    metric("watcher_poll_failures_total", "counter", "Poll attempts that failed, by cloud.",
           [({"cloud": c}, sum(n for c2, o, n in poll_counts if c2 == c and o not in polls.SUCCESS_OUTCOMES))
            for c in sorted({c for c, _, _ in poll_counts})])
    runs = DaemonRun.__table__
    run_counts = conn.execute(
        select(runs.c.ok, func.count()).where(runs.c.finished_at.is_not(None)).group_by(runs.c.ok)).all()
    metric("watcher_runs_total", "counter", "Finished daemon runs by result.",
           [({"result": "ok" if ok else "failed"}, n) for ok, n in sorted(run_counts, key=lambda r: bool(r[0]))])
    metric("watcher_consecutive_failed_runs", "gauge", "Failed daemon runs since the last success.",
           [({}, health.consecutive_failures)])
    success = conn.execute(
        select(polls_table.c.cloud, func.max(polls_table.c.finished_at))
        .where(polls_table.c.outcome.in_(list(polls.SUCCESS_OUTCOMES))).group_by(polls_table.c.cloud)
        .order_by(polls_table.c.cloud)
    ).all()
    metric("watcher_last_success_timestamp_seconds", "gauge", "When each cloud was last polled successfully.",
           [({"cloud": c}, polls.as_utc(t).timestamp()) for c, t in success if t])
    pubs = Publication.__table__
    metric("watcher_publications", "gauge", "Publications stored, by cloud.",
           [({"cloud": c}, n) for c, n in sorted(_count_by(conn, pubs.c.cloud).items())])
    missed = conn.execute(
        select(pubs.c.cloud, func.sum(pubs.c.missed_before)).group_by(pubs.c.cloud).order_by(pubs.c.cloud)).all()
    metric("watcher_missed_publications", "gauge",
           "Publications the global changeNumber says were never seen (gaps between stored ones), by cloud.",
           [({"cloud": c}, int(n or 0)) for c, n in missed])
    newest = conn.execute(
        select(pubs.c.cloud, func.max(pubs.c.file_date)).group_by(pubs.c.cloud).order_by(pubs.c.cloud)).all()
    metric("watcher_newest_publication_timestamp_seconds", "gauge", "File date of the newest publication, by cloud.",
           [({"cloud": c}, dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp()) for c, d in newest])
    metric("watcher_tickets", "gauge", "Tickets by state.",
           [({"state": s}, n) for s, n in sorted(_count_by(conn, Ticket.__table__.c.state).items())])
    outbox = _count_by(conn, OutboxMessage.__table__.c.state)
    metric("watcher_notifications", "gauge", "Ticket notifications by outcome (per destination).",
           [({"state": s}, outbox.get(s, 0)) for s in notify.OUTBOX_STATES])
    from . import feed_consumers

    metric("watcher_feed_consumer_last_fetch_timestamp_seconds", "gauge",
           "When each feed consumer last fetched a feed (0: never).",
           [({"consumer": n}, last.timestamp() if last else 0) for n, last, _ in feed_consumers.last_fetches(conn)])
    metric("watcher_feed_denied_total", "counter", "Feed requests refused for wrong or missing credentials.",
           [({}, feed_consumers.denials(conn))])
    metric("watcher_healthy", "gauge", "1 when healthy, 0 when not.", [({}, 1 if health.healthy else 0)])
    return "\n".join(lines) + "\n"


def outbox_counts(conn: Connection) -> dict[str, int]:
    """Ticket notifications per outbox state (pending and sending are the backlog)."""
    counts = dict.fromkeys(notify.OUTBOX_STATES, 0)
    counts.update(_count_by(conn, OutboxMessage.__table__.c.state))
    return counts
