"""The wording of a ticket: address-space sentences, risk, rollback and verification lines (pure)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from . import diff as diffs
from .watches import ResolvedWatch

#: Microsoft publishes new ranges a week before Azure uses them: the additions are due by publication + 7 days.
ADD_LEAD_DAYS = 7


def space_text(v4: int, v6: int) -> str:
    parts = []
    if v4:
        parts.append(f"{v4:,} IPv4 address{'es' if v4 != 1 else ''}")
    if v6:
        bits = v6.bit_length() - 1
        # IPv6 counts are too large to read; a power of two reads as a prefix size.
        parts.append(f"2^{bits} IPv6 addresses (a /{128 - bits})" if v6 == 1 << bits else f"{v6:,} IPv6 addresses")
    return " and ".join(parts) or "nothing"


def net_text(change: diffs.TagDiff) -> str:
    if not (change.added or change.removed):
        return "no change"
    if change.reaggregation_only:
        return "no net change (re-aggregation: the same addresses, published as different prefixes)"
    added, removed = change.net_added_addresses, change.net_removed_addresses
    parts = []
    if change.net_added:
        parts.append(f"adds {space_text(*added)}")
    if change.net_removed:
        parts.append(f"removes {space_text(*removed)}")
    return "; ".join(parts)


def risk_lines(tags: list[dict[str, Any]], label: str, deadline: str) -> list[str]:
    lines = []
    if any(t["net_added"] for t in tags):
        lines.append(f"Until the new ranges are allowed, connections to {label} may fail once Azure starts "
                     f"using them: apply the additions as soon as the ticket is approved.")
    if any(t["net_removed"] for t in tags):
        lines.append(f"Removing rules before {deadline} can break connections that Azure still routes to the "
                     "old ranges; removing late only leaves addresses allowed a little longer.")
    if any(t["reaggregation_only"] for t in tags):
        lines.append("Some changes are re-aggregation only: the same addresses stay allowed, only the rule "
                     "objects are rewritten.")
    if any(t["anomalies"] for t in tags):
        lines.append("changeNumber anomalies were seen (listed per tag); the content comparison above is what "
                     "counts.")
    return lines or ["Low: the change adds and removes no address space."]


def rollback_lines(tags: list[dict[str, Any]]) -> list[str]:
    lines = ["Additions are safe to keep: they only allow Azure's own published ranges."]
    if any(t["removed"] for t in tags):
        lines.append("To undo a removal, apply the add phase again (`--phase add`): it allows the previous "
                     "approved list as well as the new one.")
    return lines


def verify_lines(watch: ResolvedWatch, tags: list[dict[str, Any]], date: str, cloud: str) -> list[str]:
    lines = [f"`watcher state show {watch.name} --cloud {cloud} --json` lists exactly what the firewall objects "
             "should allow once this ticket is approved."]
    if watch.login_server:
        lines.append(f"From a host behind the firewall: `curl -sI https://{watch.login_server}/v2/` answers "
                     "HTTP 401 (reachable), and `docker pull` of a small image from the registry succeeds.")
    return lines


def overdue_note(add_before: dt.date, created_at: dt.datetime | None) -> str | None:
    """Why a ticket born after its "add before" date is late, or None when it is on time (or the time unknown)."""
    if created_at is None or created_at.date() <= add_before:
        return None
    late = (created_at.date() - add_before).days
    return (f"OVERDUE: the additions were due before {add_before.isoformat()} (publication + {ADD_LEAD_DAYS} days); "
            f"this ticket was created on {created_at.date().isoformat()}, {late} day{'s' if late != 1 else ''} late. "
            f"Azure may already use the new prefixes: approve and apply the additions at once.")
