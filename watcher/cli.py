"""The ``watcher`` command line: a thin click layer over the library functions.

Every command builds the settings once (config file, ``WATCHER_*`` variables,
options), opens the database (upgrading its schema), calls one library
function and prints. A ``WatcherError`` becomes one line on stderr and exit
status 1; wrong usage exits 2.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import click
from sqlalchemy import Engine

from . import __version__, db, dbcheck, health, leader, logs, notify, pipeline, render, scheduler, status, store, tickets
from . import config as configuration
from .diff import TagDiff, address_counts
from .errors import ConfigError, WatcherError
from .parse import FILE_NAME_RE
from .settings import CLOUD_FILE_NAMES, Settings, load_settings
from .watches import ResolvedWatch, resolve_watches

CLOUD_CHOICE = click.Choice(sorted(CLOUD_FILE_NAMES), case_sensitive=False)


@dataclass
class AppContext:
    """What every command shares: the settings, and the database opened on first use."""

    settings: Settings
    log_format: str = "human"
    secrets: tuple[str, ...] = field(default=(), repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.open_database(self.settings.database_url)
        return self._engine


pass_app = click.make_pass_decorator(AppContext)


class WatcherGroup(click.Group):
    """Turns the watcher's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WatcherError as exc:
            raise click.ClickException(str(exc)) from None


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


LOG_FORMAT_CHOICE = click.Choice(logs.LOG_FORMATS)


@click.group(cls=WatcherGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "database_url", metavar="URL", help="Database URL (default sqlite:///watcher.db; env WATCHER_DATABASE_URL).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML config file (env WATCHER_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.option("--log-format", type=LOG_FORMAT_CHOICE, default="human", show_default=True,
              help="Log lines for people, or one JSON object per line.")
@click.version_option(__version__, prog_name="watcher")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, config_path: str | None, verbose: bool, log_format: str) -> None:
    """Keep firewall rules in step with Microsoft's Azure IP Ranges and Service Tags."""
    try:
        settings = load_settings(config_path, os.environ).with_overrides(database_url=database_url)
        secrets = configuration.secrets(settings)
    except WatcherError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure_logging(log_format, logging.INFO if verbose else logging.WARNING, secrets)
    ctx.obj = AppContext(settings, log_format=log_format, secrets=secrets)
    ctx.call_on_close(logs.remove_handler)
    ctx.call_on_close(lambda: ctx.obj._engine and ctx.obj._engine.dispose())


# ---------------------------------------------------------------- db


@main.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Bring the database schema up to the latest revision (every command also does this)."""
    engine = db.create_db_engine(app.settings.database_url)
    try:
        db.upgrade(engine, revision)
        click.echo(f"database {db.safe_url(app.settings.database_url)} is at revision {db.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_app
def db_check(app: AppContext, as_json: bool) -> None:
    """Check the database's invariants (names and prefixes pass today's checks); exit 1 on a violation."""
    report = dbcheck.check_database(app.engine)
    if as_json:
        _emit_json(report.to_json())
    else:
        for result in report.results:
            click.echo(f"{'ok' if result.ok else 'FAILED'}  {result.name} ({result.checked} checked)")
            for violation in result.violations:
                click.echo(f"    {violation}")
            if result.more:
                click.echo(f"    ... and {result.more} more")
    if not report.ok:
        raise click.ClickException("the database breaks its invariants (listed above); readers skip those rows")


# ---------------------------------------------------------------- import


def _files(paths: Iterable[str]) -> list[Path]:
    """Files named, and the service-tag files inside folders named, oldest date first."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and FILE_NAME_RE.search(p.name))
        elif path.exists():
            found.append(path)
        else:
            raise click.ClickException(f"no such file or folder: {raw}")
    return sorted(found, key=lambda p: (m.group("date") if (m := FILE_NAME_RE.search(p.name)) else "", str(p)))


def _describe_import(result: store.ImportResult) -> str:
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
    return head + text


@main.command("import")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--date", "file_date", type=click.DateTime(["%Y%m%d", "%Y-%m-%d"]),
              help="Publication date, for a file whose name does not carry one.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--force", is_flag=True, help="Import a file that fails the plausibility check (its tickets are held).")
@pass_app
def import_command(
    app: AppContext, paths: tuple[str, ...], file_date: dt.datetime | None, as_json: bool, force: bool
) -> None:
    """Import service-tag files (.json or .json.gz) or folders of them, oldest first.

    Each file is imported whole or not at all; a file that fails stops the
    import, and the files before it stay imported (and are listed).
    """
    files = _files(paths)
    if not files:
        raise click.ClickException("no ServiceTags_<Cloud>_<YYYYMMDD>.json files found in " + ", ".join(paths))
    results: list[store.ImportResult] = []
    show_bar = sys.stderr.isatty() and not as_json and len(files) > 1
    try:
        with click.progressbar(files, label="importing", file=sys.stderr, show_pos=True) if show_bar else _plain(files) as bar:
            for path in bar:
                result = pipeline.import_file(
                    app.engine, app.settings, path, file_date=file_date.date() if file_date else None, force=force
                )
                results.append(result)
                if not as_json:
                    click.echo(_describe_import(result))
    finally:
        if as_json:
            _emit_json([_import_json(r) for r in results])


class _plain:
    """A stand-in for click.progressbar when output is not a terminal."""

    def __init__(self, items: list[Path]):
        self.items = items

    def __enter__(self) -> list[Path]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


def _import_json(result: store.ImportResult) -> dict[str, Any]:
    pub = result.publication
    return {
        "outcome": result.outcome,
        "reason": result.reason,
        "cloud": pub.cloud,
        "date": pub.file_date.isoformat(),
        "change_number": pub.change_number,
        "sha256": pub.sha256,
        "anomalies": list(result.anomalies),
        "notes": list(result.notes),
        "changes": [
            {"tag": c.tag, "status": c.status, "added": c.added, "removed": c.removed,
             "change_number_before": c.change_number_before, "change_number_after": c.change_number_after,
             "anomalies": list(c.anomalies)}
            for c in result.changed_tags
        ],
    }


# ---------------------------------------------------------------- reading


def _cloud_option(f: Callable) -> Callable:
    return click.option("--cloud", type=CLOUD_CHOICE, default="public", show_default=True,
                        help="Which cloud's publications.")(f)


@main.command("publications")
@_cloud_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def publications_command(app: AppContext, cloud: str, as_json: bool) -> None:
    """List the imported publications of a cloud, oldest first."""
    with app.engine.connect() as conn:
        pubs = store.publications(conn, cloud.lower())
    if as_json:
        _emit_json([
            {"cloud": p.cloud, "date": p.file_date.isoformat(), "change_number": p.change_number, "sha256": p.sha256,
             "source": p.source, "imported_at": p.imported_at.isoformat(), "tags": p.tag_count,
             "prefixes": p.prefix_count}
            for p in pubs
        ])
        return
    if not pubs:
        click.echo(f"no {cloud} publications imported yet")
    for p in pubs:
        click.echo(f"{p.file_date}  changeNumber {p.change_number:>5}  {p.tag_count:>5} tags  "
                   f"{p.prefix_count:>6} prefixes  {p.sha256[:12]}  {p.source}")


@main.command("history")
@click.argument("tag")
@_cloud_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def history_command(app: AppContext, tag: str, cloud: str, as_json: bool) -> None:
    """Show each version of TAG: date, changeNumber, prefix count, +added/-removed."""
    with app.engine.connect() as conn:
        name, entries = store.history(conn, cloud.lower(), tag)
    if as_json:
        _emit_json([
            {"tag": name, "date": e.date.isoformat(), "present": e.present, "change_number": e.change_number,
             "prefixes": e.prefix_count, "added": e.added, "removed": e.removed, "anomalies": list(e.anomalies)}
            for e in entries
        ])
        return
    for e in entries:
        if not e.present:
            click.echo(f"{e.date}  withdrawn                      -{e.removed}")
            continue
        flags = f"  [{'; '.join(e.anomalies)}]" if e.anomalies else ""
        click.echo(f"{e.date}  changeNumber {e.change_number:>5}  {e.prefix_count:>6} prefixes  "
                   f"+{e.added} -{e.removed}{flags}")


def _watched_tags(app: AppContext, conn, cloud: str) -> list[str]:
    names = store.present_tag_names(conn, cloud)
    watches = [w for w in resolve_watches(app.settings, {cloud: names}) if w.cloud == cloud]
    for w in watches:
        for warning in w.warnings:
            click.echo(f"warning: {warning}", err=True)
    tags = list(dict.fromkeys(t for w in watches for t in w.tag_names))
    if not tags:
        raise click.ClickException(
            "no watched tags: name tags, use --all, or list registries in the config file (--config)"
        )
    return tags


def _diff_json(change: TagDiff, old: store.PublicationInfo, new: store.PublicationInfo) -> dict[str, Any]:
    return {
        "tag": change.tag,
        "status": change.status,
        "added": list(change.added),
        "removed": list(change.removed),
        "net_added": sorted(change.net_added),
        "net_removed": sorted(change.net_removed),
        "anomalies": list(change.anomalies),
        "from": {"date": old.file_date.isoformat(),
                 "change_number": change.before.change_number if change.before else None,
                 "file_change_number": old.change_number},
        "to": {"date": new.file_date.isoformat(),
               "change_number": change.after.change_number if change.after else None,
               "file_change_number": new.change_number},
    }


def _describe_diff(change: TagDiff) -> list[str]:
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
    lines += [f"  anomaly: {a}" for a in change.anomalies]
    return lines


@main.command("diff")
@click.argument("tags", nargs=-1, metavar="[TAG...]")
@click.option("--from", "from_ref", default="previous", show_default=True, metavar="PUB",
              help="Publication: YYYYMMDD, YYYY-MM-DD, latest or previous.")
@click.option("--to", "to_ref", default="latest", show_default=True, metavar="PUB", help="Publication to compare with.")
@_cloud_option
@click.option("--all", "all_tags", is_flag=True, help="Every tag that changed, not just the watched ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def diff_command(app: AppContext, tags: tuple[str, ...], from_ref: str, to_ref: str, cloud: str,
                 all_tags: bool, as_json: bool) -> None:
    """What changed for tags between two publications (default: previous -> latest, the watched tags)."""
    cloud = cloud.lower()
    if tags and all_tags:
        raise click.UsageError("name tags or use --all, not both")
    with app.engine.connect() as conn:
        old = store.resolve_publication(conn, cloud, from_ref)
        new = store.resolve_publication(conn, cloud, to_ref)
        names = None if all_tags else (list(tags) or _watched_tags(app, conn, cloud))
        changes = store.diff_publications(conn, cloud, old, new, names)
    if as_json:
        _emit_json([_diff_json(c, old, new) for c in changes])
        return
    click.echo(f"{cloud}: {old.file_date} (changeNumber {old.change_number}) -> "
               f"{new.file_date} (changeNumber {new.change_number}): {len(changes)} tag(s)")
    for change in changes:
        for line in _describe_diff(change):
            click.echo(line)


@main.command("show")
@click.argument("tag")
@click.option("--at", "at_ref", default="latest", show_default=True, metavar="PUB",
              help="Publication: YYYYMMDD, YYYY-MM-DD, latest or previous.")
@_cloud_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show_command(app: AppContext, tag: str, at_ref: str, cloud: str, as_json: bool) -> None:
    """Print TAG's prefixes as published at a publication."""
    cloud = cloud.lower()
    with app.engine.connect() as conn:
        pub = store.resolve_publication(conn, cloud, at_ref)
        snap = store.snapshot(conn, cloud, tag, pub)
    if snap is None:
        raise click.ClickException(f"tag {tag!r} was not published in the {cloud} file of {pub.file_date}")
    if as_json:
        _emit_json({"tag": snap.tag, "date": pub.file_date.isoformat(), "change_number": snap.version.change_number,
                    "prefixes": list(snap.prefixes), "since": snap.since.isoformat()})
        return
    click.echo(f"# {snap.tag} in {cloud} {pub.file_date} (changeNumber {snap.version.change_number}, "
               f"unchanged since {snap.since}), {len(snap.prefixes)} prefixes")
    for prefix in snap.prefixes:
        click.echo(prefix)


@main.command("lookup")
@click.argument("ip")
@click.option("--at", "at_ref", default="latest", show_default=True, metavar="PUB", help="Publication to search.")
@_cloud_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def lookup_command(app: AppContext, ip: str, at_ref: str, cloud: str, as_json: bool) -> None:
    """Which tags' prefixes contain IP, and since when."""
    cloud = cloud.lower()
    with app.engine.connect() as conn:
        pub = store.resolve_publication(conn, cloud, at_ref)
        hits = store.lookup(conn, cloud, ip, pub)
    if as_json:
        _emit_json([{"tag": h.tag, "prefix": h.prefix, "since": h.since.isoformat()} for h in hits])
        return
    if not hits:
        click.echo(f"{ip} is in no {cloud} tag of {pub.file_date}")
    for h in hits:
        click.echo(f"{h.tag}  {h.prefix}  since {h.since}")


@main.command("watches")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def watches_command(app: AppContext, as_json: bool) -> None:
    """The tags the configured registries resolve to, per registry."""
    clouds = {r.cloud for r in app.settings.registries} | set(app.settings.clouds)
    with app.engine.connect() as conn:
        names = {c: store.present_tag_names(conn, c) for c in clouds}
    watches = resolve_watches(app.settings, names)
    if as_json:
        _emit_json([_watch_json(w) for w in watches])
        return
    if not watches:
        click.echo("no registries configured (see `watcher --config FILE watches`)")
    for w in watches:
        click.echo(f"{w.name} ({w.cloud}; regions {', '.join(w.regions) or '-'})")
        for t in w.tags:
            endpoints = f"  -> {', '.join(t.endpoints)} TCP 443" if t.endpoints else ""
            click.echo(f"  {t.tag}{endpoints}")
        for warning in w.warnings:
            click.echo(f"  warning: {warning}")


def _watch_json(w: ResolvedWatch) -> dict[str, Any]:
    return {
        "registry": w.name,
        "login_server": w.login_server,
        "cloud": w.cloud,
        "regions": list(w.regions),
        "data_endpoint": w.data_endpoint,
        "tags": [{"tag": t.tag, "role": t.role, "region": t.region, "endpoints": list(t.endpoints)} for t in w.tags],
        "warnings": list(w.warnings),
    }


# ---------------------------------------------------------------- tickets


@main.group("tickets")
def tickets_group() -> None:
    """Firewall change tickets: list, show, render and review them."""


def _ticket_json(t: tickets.TicketInfo) -> dict[str, Any]:
    return {
        "id": t.id, "uid": t.uid, "state": t.state, "registry": t.watch, "cloud": t.cloud,
        "date": t.file_date.isoformat(), "title": t.title, "held_for": list(t.context["hold"]["reasons"]),
        "removals_allowed": t.removals_allowed, "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }


@tickets_group.command("list")
@click.option("--state", type=click.Choice(tickets.STATES), help="Only tickets in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tickets_list(app: AppContext, state: str | None, as_json: bool) -> None:
    """List tickets: id, state, registry, publication date, title."""
    with app.engine.connect() as conn:
        found = tickets.list_tickets(conn, state)
    if as_json:
        _emit_json([_ticket_json(t) for t in found])
        return
    if not found:
        click.echo("no tickets" + (f" in state {state}" if state else ""))
    for t in found:
        click.echo(f"{t.id:>5}  {t.state:<8}  {t.watch:<20}  {t.cloud} {t.file_date}  {t.title}")


@tickets_group.command("show")
@click.argument("ticket_id", type=click.IntRange(1, tickets.MAX_TICKET_ID), metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def tickets_show(app: AppContext, ticket_id: int, as_json: bool) -> None:
    """A ticket's summary, review trail and deliveries."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
        events = tickets.ticket_events(conn, ticket_id)
    deliveries = notify.outbox_status(app.engine, app.settings, ticket_id)
    if as_json:
        data = _ticket_json(ticket)
        data["events"] = [{"at": e.at.isoformat(), "by": e.actor, "action": e.action, "from": e.from_state,
                           "to": e.to_state, "comment": e.comment} for e in events]
        data["deliveries"] = [{"destination": d.destination, "state": d.state, "attempts": d.attempts,
                               "error": d.last_error} for d in deliveries]
        _emit_json(data)
        return
    click.echo(render.render(app.settings, "summary", tickets.view(ticket)).rstrip())
    click.echo("\nReview trail:")
    for e in events:
        comment = f"  ({e.comment})" if e.comment else ""
        click.echo(f"  {e.at:%Y-%m-%d %H:%M} {e.actor}: {e.action} {e.from_state or '-'} -> {e.to_state}{comment}")
    if deliveries:
        click.echo("Deliveries:")
        for d in deliveries:
            error = f"  ({d.last_error})" if d.last_error and d.state != "sent" else ""
            click.echo(f"  {d.state:<8} after {d.attempts} attempt(s)  {d.destination}{error}")


@tickets_group.command("render")
@click.argument("ticket_id", type=click.IntRange(1, tickets.MAX_TICKET_ID), metavar="ID")
@click.option("--format", "fmt", type=click.Choice([*render.TICKET_FORMATS, *render.RULE_FORMATS]),
              default="md", show_default=True, help="The ticket (md, html, txt) or a firewall's rule snippet.")
@pass_app
def tickets_render(app: AppContext, ticket_id: int, fmt: str) -> None:
    """Print a ticket, or its rule snippet for one kind of firewall."""
    with app.engine.connect() as conn:
        ticket = tickets.get_ticket(conn, ticket_id)
    click.echo(render.render(app.settings, fmt, tickets.view(ticket)), nl=False)


def _review_command(action: str, help_text: str) -> None:
    @tickets_group.command(action, help=help_text)
    @click.argument("ticket_id", type=click.IntRange(1, tickets.MAX_TICKET_ID), metavar="ID")
    @click.option("--by", "actor", required=True, metavar="NAME", help="Who takes this step (recorded).")
    @click.option("--comment", default="", metavar="TEXT", help="Why (recorded with the step).")
    @pass_app
    def command(app: AppContext, ticket_id: int, actor: str, comment: str) -> None:
        ticket = tickets.transition(app.engine, ticket_id, action, actor, comment)
        click.echo(f"ticket {ticket.id} is now {ticket.state}")


_review_command("approve", "Approve an open ticket.")
_review_command("reject", "Reject an open or held ticket.")
_review_command("applied", "Record that an approved ticket's rules are in place.")
_review_command("release", "Release a held ticket after review: it opens, and its snippets include removals.")


@tickets_group.command("check-templates")
@pass_app
def tickets_check_templates(app: AppContext) -> None:
    """Render every template (built-in or from [tickets] template_dir) against sample tickets."""
    results = render.check_templates(app.settings)
    for r in results:
        click.echo(f"{'ok    ' if r.ok else 'BROKEN'}  {r.format:<10} {r.origin:<8} {r.template}"
                   + ("" if r.ok else f": {r.error}"))
    broken = [r for r in results if not r.ok]
    if broken:
        raise click.ClickException(f"{len(broken)} template(s) broken")


# ---------------------------------------------------------------- notify


@main.group("notify", invoke_without_command=True)
@pass_app
@click.pass_context
def notify_group(ctx: click.Context, app: AppContext) -> None:
    """Deliver the notifications that are due (status, test: see the subcommands)."""
    if ctx.invoked_subcommand is not None:
        return
    results = notify.deliver_due(app.engine, app.settings)
    if not results:
        click.echo("nothing due")
    for r in results:
        error = f": {r.error}" if r.error and r.state != "sent" else ""
        click.echo(f"ticket {r.ticket_id} -> {r.destination}: {r.state} (attempt {r.attempts}){error}")


@notify_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def notify_status(app: AppContext, as_json: bool) -> None:
    """Queued, sent and failed notifications, per ticket and destination."""
    entries = notify.outbox_status(app.engine, app.settings)
    counts = notify.state_counts(entries)
    if as_json:
        _emit_json({"counts": counts, "messages": [
            {"id": e.id, "ticket": e.ticket_id, "ticket_uid": e.ticket_uid, "destination": e.destination,
             "configured": e.configured, "state": e.state, "attempts": e.attempts,
             "next_attempt_at": e.next_attempt_at.isoformat(),
             "sent_at": e.sent_at.isoformat() if e.sent_at else None, "error": e.last_error}
            for e in entries]})
        return
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    for e in entries:
        if e.state == "sent":
            continue
        where = "" if e.configured else "  [destination no longer configured]"
        when = f" next {e.next_attempt_at:%Y-%m-%d %H:%M}" if e.state == "pending" else ""
        error = f"  ({e.last_error})" if e.last_error else ""
        click.echo(f"  ticket {e.ticket_id} -> {e.destination}: {e.state}, {e.attempts} attempt(s){when}{where}{error}")


@notify_group.command("test")
@pass_app
def notify_test(app: AppContext) -> None:
    """Send a test message to each configured destination and print each result."""
    results = notify.send_test(app.settings)
    if not results:
        raise click.ClickException("no notification destinations configured ([notify] urls or WATCHER_NOTIFY_URLS)")
    for r in results:
        click.echo(f"{'ok    ' if r.ok else 'FAILED'}  {r.destination}" + ("" if r.ok else f": {r.error}"))
    if not all(r.ok for r in results):
        raise click.ClickException(f"{sum(not r.ok for r in results)} destination(s) failed")


# ---------------------------------------------------------------- poll and status


def _describe_poll(outcome: pipeline.PollOutcome) -> str:
    head = f"{outcome.cloud}: "
    if outcome.outcome in ("new", "unchanged") and outcome.result is not None:
        text = head + f"{outcome.outcome}: " + _describe_import(outcome.result)
    elif outcome.outcome == "skipped-known-url":
        text = head + f"no new file: {outcome.url} was imported before ({outcome.file_date}); not downloaded"
    elif outcome.outcome == "already-imported":
        text = head + f"no new file: {outcome.url} is the publication of {outcome.file_date}, already imported"
    elif outcome.outcome == "error":
        text = head + f"{outcome.error}"
    else:
        text = head + f"{outcome.outcome}: {outcome.error}"
    return "; ".join([text, *outcome.notes])


@main.command("poll")
@click.option("--cloud", "clouds", type=CLOUD_CHOICE, multiple=True,
              help="Cloud to poll; repeat for several (default: the configured clouds).")
@click.option("--url", metavar="URL",
              help="Poll this page or file instead of Microsoft's download page (env WATCHER_SOURCE_URL).")
@click.option("--force", is_flag=True, help="Import a file even if it fails the plausibility check.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON.")
@pass_app
def poll_command(app: AppContext, clouds: tuple[str, ...], url: str | None, force: bool, as_json: bool) -> None:
    """Fetch and import the newest service-tag file of each cloud.

    Exits 0 when every poll worked (new data or not), 1 when any failed.
    """
    outcomes = pipeline.poll(app.engine, app.settings, tuple(c.lower() for c in clouds) or None, url=url, force=force)
    if as_json:
        _emit_json([{**o.to_json(), "import": _import_json(o.result) if o.result else None} for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if not as_json and o.ok:
            click.echo(_describe_poll(o))
    for o in failed:
        click.echo(f"Error: {_describe_poll(o)}", err=True)
    if failed:
        raise SystemExit(1)


def _daemon_json(app: AppContext, conn, now: dt.datetime, state: health.Health) -> dict[str, Any]:
    expression = app.settings.daemon.schedule or scheduler.default_schedule()
    try:
        next_run: str | None = _iso(scheduler.make_trigger(expression).get_next_fire_time(None, now))
        schedule_error = None
    except ConfigError as exc:
        next_run, schedule_error = None, str(exc)
    backlog = health.outbox_counts(conn)
    return {
        "schedule": expression,
        "schedule_is_default": app.settings.daemon.schedule is None,
        "schedule_error": schedule_error,
        "next_run": next_run,
        "leader": state.last_run.runner if state.last_run else None,
        "last_run": state.last_run.to_json() if state.last_run else None,
        "outbox": backlog,
        "outbox_backlog": backlog.get("pending", 0) + backlog.get("sending", 0),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when unhealthy (for container and monitoring health checks).")
@pass_app
def status_command(app: AppContext, as_json: bool, check: bool) -> None:
    """Per cloud: last poll, last success, newest publication, staleness; the daemon's schedule, leader and health."""
    now = dt.datetime.now(dt.timezone.utc)
    with app.engine.connect() as conn:
        reports = status.status(conn, app.settings, now)
        state = health.evaluate(conn, app.settings, now)
        daemon = _daemon_json(app, conn, now, state)
    if as_json:
        _emit_json({"clouds": [r.to_json() for r in reports], "daemon": daemon, "health": state.to_json()})
    else:
        _print_status(reports, daemon, state)
    if check and not state.healthy:
        raise click.ClickException("unhealthy: " + "; ".join(state.reasons))


def _print_status(reports: list[status.CloudStatus], daemon: dict[str, Any], state: health.Health) -> None:
    for r in reports:
        freshness = "STALE" if r.stale else "fresh"
        click.echo(f"{r.cloud}: {freshness}")
        if r.newest is None:
            click.echo("  newest publication: none imported yet")
        else:
            click.echo(f"  newest publication: {r.newest.file_date} (changeNumber {r.newest.change_number}), "
                       f"{r.age_days} day(s) old, imported {r.newest.imported_at:%Y-%m-%d %H:%M}")
        for label, attempt in (("last attempt", r.last_attempt), ("last success", r.last_success)):
            if attempt is None:
                click.echo(f"  {label}: never")
                continue
            error = f": {attempt.error}" if attempt.error and label == "last attempt" else ""
            click.echo(f"  {label}: {attempt.finished_at:%Y-%m-%d %H:%M:%S}Z {attempt.outcome}{error}")
    default = " (default for this host)" if daemon["schedule_is_default"] else ""
    click.echo(f"daemon: schedule {daemon['schedule']!r} UTC{default}, next run "
               f"{daemon['next_run'] or daemon['schedule_error']}")
    last = state.last_run
    if last is None:
        click.echo("  last run: never (is `watcher run` running?)")
    else:
        result = "running or interrupted" if last.ok is None else ("ok" if last.ok else f"failed: {last.error}")
        click.echo(f"  last run: {last.started_at:%Y-%m-%d %H:%M:%S}Z by {last.runner} ({last.reason}): {result}")
    click.echo(f"  outbox backlog: {daemon['outbox_backlog']} message(s) to deliver, "
               f"{daemon['outbox'].get('failed', 0)} failed")
    click.echo("health: " + ("healthy" if state.healthy else "UNHEALTHY: " + "; ".join(state.reasons)))


# ---------------------------------------------------------------- the daemon and its configuration


@main.command("run")
@click.option("--schedule", metavar="CRON", help="Cron expression in UTC, five fields or six with seconds first "
                                                  "(default: [daemon] schedule, WATCHER_SCHEDULE, or daily).")
@click.option("--http-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve /healthz and /metrics on this port ([daemon] http_port, WATCHER_HTTP_PORT).")
@click.option("--log-format", type=LOG_FORMAT_CHOICE, help="Log lines for people, or one JSON object per line.")
@pass_app
def run_command(app: AppContext, schedule: str | None, http_port: int | None, log_format: str | None) -> None:
    """Run the daemon: poll on schedule, catch up after downtime, ticket, notify, report health.

    Several replicas may run on one PostgreSQL database (one leads each run);
    on SQLite, one per database file. Stops cleanly on SIGTERM or SIGINT.
    """
    daemon_settings = dataclasses.replace(
        app.settings.daemon,
        schedule=schedule if schedule is not None else app.settings.daemon.schedule,
        http_port=http_port if http_port is not None else app.settings.daemon.http_port,
    )
    settings = dataclasses.replace(app.settings, daemon=daemon_settings)
    logs.configure_logging(log_format or app.log_format, logging.INFO, app.secrets, quiet_libraries=True)
    scheduler.make_trigger(settings.daemon.schedule)  # a bad schedule stops the start, before any lock
    engine = db.create_db_engine(settings.database_url)
    try:
        leadership = leader.leadership_for(engine)
        try:
            with leader.schema_lock(engine):
                db.ensure_schema(engine)
            scheduler.Daemon(settings, engine, leadership).serve_forever()
        finally:
            leadership.release()
    finally:
        engine.dispose()


@main.command("init")
@click.argument("path", default="watcher.toml", type=click.Path(dir_okay=False), required=False)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_app
def init_command(app: AppContext, path: str, force: bool) -> None:
    """Write the commented example configuration to PATH (default watcher.toml)."""
    written = configuration.write_example(path, force=force)
    click.echo(f"wrote {written}; edit it, then check it with: watcher --config {written} config check")


@main.group("config")
def config_group() -> None:
    """Configuration commands: check the configuration and show the effective settings."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_check(app: AppContext, as_json: bool) -> None:
    """Check every part of the configuration and print the effective settings, secrets masked."""
    checks = configuration.check(app.settings)
    effective = configuration.effective_settings(app.settings)
    if as_json:
        _emit_json({"ok": all(c.ok for c in checks), "checks": [c.to_json() for c in checks],
                    "settings": effective})
    else:
        source = app.settings.config_path or "no config file (defaults and WATCHER_* variables)"
        click.echo(f"configuration: {source}")
        for c in checks:
            mark = "ok     " if c.ok and not c.warning else ("warning" if c.ok else "FAILED ")
            click.echo(f"{mark}  {c.part}: {c.detail}")
        click.echo("\neffective settings:")
        click.echo(json.dumps(effective, indent=2, default=str))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} configuration problem(s): "
                                   + "; ".join(f"{c.part}: {c.detail}" for c in failed))


if __name__ == "__main__":  # pragma: no cover
    main()
