"""The text views of the CLI: pure functions from the library's values to lines for people.

``--json`` prints the values' ``to_json()`` instead; nothing here touches the
database or prints.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Sequence

from .. import backfill, notify, pipeline, store
from ..config import Check
from ..diff import TagDiff, address_counts, describe_metadata
from ..overview import StatusReport
from ..render import TemplateCheck, one_line
from ..state import FAMILIES
from ..store.sql import is_plain_text
from ..tickets import TicketEventInfo, TicketInfo
from ..watches import ResolvedWatch


# ---------------------------------------------------------------- publications


def describe_import(result: store.ImportResult) -> str:
    pub = result.publication
    head = f"{pub.cloud} {pub.file_date} (changeNumber {pub.change_number}): "
    if result.outcome != "imported":
        return head + f"already imported: {result.reason}"
    changes = result.changed_tags
    counts = {s: sum(1 for c in changes if c.status == s) for s in ("appeared", "withdrawn", "changed")}
    added = sum(c.added for c in changes)
    removed = sum(c.removed for c in changes)
    text = (f"imported {pub.tag_count} tags, {pub.prefix_count} prefixes; {counts['changed']} changed, "
            f"{counts['appeared']} appeared, {counts['withdrawn']} withdrawn; +{added} -{removed} prefixes")
    anomalies = list(result.anomalies) + [f"{c.tag}: {a}" for c in changes for a in c.anomalies if "skipped" not in a]
    if anomalies:
        text += f"; {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}"
    text += "".join(f"; {note}" for note in result.notes if "not seen between" in note)
    return head + text


def describe_file_outcome(outcome: backfill.FileOutcome) -> str:
    """One line per file of an import: what its import did, or why it failed."""
    if outcome.result is None:
        return f"{outcome.file}: failed: {outcome.error}"
    return describe_import(outcome.result)


def publication_lines(cloud: str, pubs: Sequence[store.PublicationInfo]) -> list[str]:
    if not pubs:
        return [f"no {cloud} publications imported yet"]
    lines = []
    for before, p in zip([None, *pubs], pubs):
        if p.missed_before and before is not None:
            lines.append(f"            ({store.MissedPublications(p.missed_before, before.file_date, p.file_date).describe()})")
        lines.append(f"{p.file_date}  changeNumber {p.change_number:>5}  {p.tag_count:>5} tags  "
                     f"{p.prefix_count:>6} prefixes  {p.sha256[:12]}  {p.source}")
    return lines


def history_lines(entries: Iterable[store.HistoryEntry]) -> list[str]:
    lines = []
    for e in entries:
        if not e.present:
            lines.append(f"{e.date}  withdrawn                      -{e.removed}")
            continue
        flags = f"  [{'; '.join(e.anomalies)}]" if e.anomalies else ""
        metadata = f"  {describe_metadata(e.metadata)}" if e.metadata else ""
        lines.append(f"{e.date}  changeNumber {e.change_number:>5}  {e.prefix_count:>6} prefixes  "
                     f"+{e.added} -{e.removed}{metadata}{flags}")
    return lines


def describe_diff(change: TagDiff) -> list[str]:
    before = change.before.change_number if change.before else "-"
    after = change.after.change_number if change.after else "-"
    lines = [f"{change.tag}: {change.status} (changeNumber {before} -> {after}), "
             f"+{len(change.added)} -{len(change.removed)} prefixes"]
    lines += [f"  + {p}" for p in change.added]
    lines += [f"  - {p}" for p in change.removed]
    if change.added or change.removed:
        if change.reaggregation_only:
            lines.append("  net address space: no net change (re-aggregation)")
        else:
            v4a, v6a = address_counts(change.net_added)
            v4r, v6r = address_counts(change.net_removed)
            lines.append(f"  net address space: +{v4a} IPv4 / +{v6a} IPv6 addresses, "
                         f"-{v4r} IPv4 / -{v6r} IPv6 addresses")
            lines += [f"  net +{p}" for p in change.net_added] + [f"  net -{p}" for p in change.net_removed]
    if change.metadata:
        lines.append(f"  {describe_metadata(change.metadata)}")
    lines += [f"  anomaly: {a}" for a in change.anomalies]
    return lines


def diff_lines(old: store.PublicationInfo, new: store.PublicationInfo, changes: Sequence[TagDiff]) -> list[str]:
    lines = [f"{old.cloud}: {old.file_date} (changeNumber {old.change_number}) -> "
             f"{new.file_date} (changeNumber {new.change_number}): {len(changes)} tag(s)"]
    for change in changes:
        lines += describe_diff(change)
    return lines


def snapshot_lines(snap: store.TagSnapshot) -> list[str]:
    """The heading, then the prefixes one a line: as one string, the stored text (AzureCloud's 13,000 lines
    printed one by one took ~56 ms of CPU, as one piece ~0.3 ms)."""
    pub = snap.publication
    heading = (f"# {snap.tag} in {pub.cloud} {pub.file_date} (changeNumber {snap.version.change_number}, "
               f"unchanged since {snap.since}), {snap.prefix_count} prefixes")
    return [heading, snap.prefix_text] if snap.text else [heading]


def snapshot_json(snap: store.TagSnapshot, resolved_from: dt.date | None = None) -> str:
    """``snap.to_json(resolved_from)`` as ``--json`` prints it (``json.dumps``, indent 2), the prefixes written
    from the stored text: in plain prefix notation (the only one stored today) they need no escaping, so
    AzureCloud's 13,000 are neither made into strings nor encoded one by one (~0.6 ms of CPU instead of ~3.5)."""
    if not snap.text or not is_plain_text(snap.text):
        return json.dumps(snap.to_json(resolved_from), indent=2)
    heading = json.dumps(snap.heading_json(resolved_from), indent=2)
    items = snap.prefix_text.replace("\n", '",\n    "')
    return f'{heading[:-2]},\n  "prefixes": [\n    "{items}"\n  ]\n}}'


def lookup_lines(address: str, pub: store.PublicationInfo, hits: Sequence[store.LookupHit]) -> list[str]:
    if not hits:
        return [f"{address} is in no {pub.cloud} tag of {pub.file_date}"]
    return [f"{h.tag}  {h.prefix}  since {h.since}" for h in hits]


def holder_lines(address: str, cloud: str, holders: Sequence[store.AddressHolder]) -> list[str]:
    if not holders:
        return [f"{address} was in no {cloud} tag of any stored publication"]
    return [f"{h.tag}  {h.prefix}  {h.first} .. {'now' if h.current else h.last}"
            + ("" if h.current else f" (last published {h.last})") for h in holders]


def watch_lines(watches: Sequence[ResolvedWatch]) -> list[str]:
    if not watches:
        return ["no registries configured (see `watcher --config FILE watches`)"]
    lines = []
    for w in watches:
        lines.append(f"{w.name} ({w.cloud}; regions {', '.join(w.regions) or '-'})")
        for t in w.tags:
            endpoints = f"  -> {', '.join(t.endpoints)} TCP 443" if t.endpoints else ""
            lines.append(f"  {t.tag}{endpoints}")
        lines += [f"  warning: {warning}" for warning in w.warnings]
    return lines


# ---------------------------------------------------------------- tickets and notifications


def ticket_list_lines(found: Sequence[TicketInfo], state: str | None) -> list[str]:
    if not found:
        return ["no tickets" + (f" in state {state}" if state else "")]
    return [f"{t.id:>5}  {t.state:<10}  {t.kind:<8}  {t.watch:<20}  {t.cloud} {t.file_date}  {one_line(t.title)}"
            for t in found]


def ticket_trail_lines(events: Sequence[TicketEventInfo], deliveries: Sequence[notify.OutboxEntry]) -> list[str]:
    lines = ["", "Review trail:"]
    for e in events:
        comment = f"  ({one_line(e.comment)})" if e.comment else ""
        lines.append(f"  {e.at:%Y-%m-%d %H:%M} {one_line(e.actor)}: {e.action} {e.from_state or '-'} -> "
                     f"{e.to_state}{comment}")
    if deliveries:
        lines.append("Deliveries:")
        for d in deliveries:
            error = f"  ({d.last_error})" if d.last_error and d.state != "sent" else ""
            lines.append(f"  {d.state:<8} after {d.attempts} attempt(s)  {d.destination}{error}")
    return lines


def state_lines(data: dict[str, Any]) -> list[str]:
    """One approved state (its ``to_json()``): the ticket, the publication, the removal date, list sizes."""
    removals = data["removals_at"] or "not yet approved (additions only)"
    lines = [f"{data['watch']} ({data['cloud']}): ticket {data['ticket']}, publication "
             f"{data['publication']['date']} (changeNumber {data['publication']['change_number']})",
             f"  removals at: {removals}"]
    lines += [f"  effective {family}: {len(data['effective'][family])} CIDRs; "
              f"final {family}: {len(data['final'][family])} CIDRs" for family in FAMILIES]
    return lines


def state_list_lines(states: Sequence[dict[str, Any]]) -> list[str]:
    if not states:
        return ["no watch has an approved state yet"]
    return [line for data in states for line in state_lines(data)]


def db_check_lines(report: Any) -> list[str]:
    """``watcher db check``: one line per invariant, its violations below it."""
    lines = []
    for result in report.results:
        lines.append(f"{'ok' if result.ok else 'FAILED'}  {result.name} ({result.checked} checked)")
        lines += [f"    {violation}" for violation in result.violations]
        if result.more:
            lines.append(f"    ... and {result.more} more")
    return lines


def template_check_lines(results: Sequence[TemplateCheck]) -> list[str]:
    return [f"{'ok    ' if r.ok else 'BROKEN'}  {r.format:<10} {r.origin:<8} {r.template}"
            + ("" if r.ok else f": {r.error}") for r in results]


def delivery_lines(results: Sequence[notify.DeliveryResult]) -> list[str]:
    if not results:
        return ["nothing due"]
    lines = []
    for r in results:
        error = f": {r.error}" if r.error and r.state != "sent" else ""
        lines.append(f"ticket {r.ticket_id} -> {r.destination}: {r.state} (attempt {r.attempts}){error}")
    return lines


def outbox_lines(report: notify.OutboxStatus) -> list[str]:
    lines = [", ".join(f"{n} {s}" for s, n in report.counts.items())]
    for e in report.entries:
        if e.state == "sent":
            continue
        where = "" if e.configured else "  [destination no longer configured]"
        when = f" next {e.next_attempt_at:%Y-%m-%d %H:%M}" if e.state == "pending" else ""
        error = f"  ({e.last_error})" if e.last_error else ""
        lines.append(f"  ticket {e.ticket_id} -> {e.destination}: {e.state}, {e.attempts} attempt(s){when}{where}{error}")
    return lines


def notify_test_lines(results: Sequence[notify.TestResult]) -> list[str]:
    return [f"{'ok    ' if r.ok else 'FAILED'}  {r.destination}" + ("" if r.ok else f": {r.error}") for r in results]


# ---------------------------------------------------------------- poll, status, configuration


def describe_poll(outcome: pipeline.PollOutcome) -> str:
    head = f"{outcome.cloud}: "
    if outcome.outcome in ("new", "unchanged") and outcome.result is not None:
        text = head + f"{outcome.outcome}: " + describe_import(outcome.result)
    elif outcome.outcome == "skipped-known-url":
        text = head + f"no new file: {outcome.url} was imported before ({outcome.file_date}); not downloaded"
    elif outcome.outcome == "already-imported":
        text = head + f"no new file: {outcome.url} is the publication of {outcome.file_date}, already imported"
    elif outcome.outcome == "error":
        text = head + f"{outcome.error}"
    else:
        text = head + f"{outcome.outcome}: {outcome.error}"
    return "; ".join([text, *outcome.notes])


def status_lines(report: StatusReport) -> list[str]:
    lines = []
    for r in report.clouds:
        lines.append(f"{r.cloud}: {'STALE' if r.stale else 'fresh'}")
        if r.newest is None:
            lines.append("  newest publication: none imported yet")
        else:
            lines.append(f"  newest publication: {r.newest.file_date} (changeNumber {r.newest.change_number}), "
                         f"{r.age_days} day(s) old, imported {r.newest.imported_at:%Y-%m-%d %H:%M}")
        for gap in r.missed:
            lines.append(f"  missed: {gap.describe()}")
        for label, attempt in (("last attempt", r.last_attempt), ("last success", r.last_success)):
            if attempt is None:
                lines.append(f"  {label}: never")
                continue
            error = f": {attempt.error}" if attempt.error and label == "last attempt" else ""
            lines.append(f"  {label}: {attempt.finished_at:%Y-%m-%d %H:%M:%S}Z {attempt.outcome}{error}")
    daemon, state = report.daemon, report.health
    default = " (default for this host)" if daemon.schedule_is_default else ""
    next_run = daemon.next_run.isoformat() if daemon.next_run else daemon.schedule_error
    lines.append(f"daemon: schedule {daemon.schedule!r} UTC{default}, next run {next_run}")
    last = daemon.last_run
    if last is None:
        lines.append("  last run: never (is `watcher run` running?)")
    else:
        result = "running or interrupted" if last.ok is None else ("ok" if last.ok else f"failed: {last.error}")
        lines.append(f"  last run: {last.started_at:%Y-%m-%d %H:%M:%S}Z by {last.runner} ({last.reason}): {result}")
    lines.append(f"  outbox backlog: {daemon.outbox_backlog} message(s) to deliver, "
                 f"{daemon.outbox.get('failed', 0)} failed")
    lines.append("health: " + ("healthy" if state.healthy else "UNHEALTHY: " + "; ".join(state.reasons)))
    return lines


def config_check_lines(source: str, checks: Sequence[Check], effective: Any) -> list[str]:
    lines = [f"configuration: {source}"]
    for c in checks:
        mark = "ok     " if c.ok and not c.warning else ("warning" if c.ok else "FAILED ")
        lines.append(f"{mark}  {c.part}: {c.detail}")
    lines += ["", "effective settings:", json.dumps(effective, indent=2, default=str)]
    return lines
