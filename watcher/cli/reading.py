"""Getting publications in and reading them: import, publications, history, diff, show, lookup, watches."""
from __future__ import annotations

import datetime as dt
import sys

import click
from sqlalchemy import Connection

from .. import backfill, store
from ..watches import resolve_watches, watched_tags
from . import views
from .app import (
    AppContext, at_option, cloud_option, echo_lines, emit_json, exact_option, json_option, pass_app, present,
    say_resolved,
)

PUBLICATION_HELP = "Publication: YYYYMMDD, YYYY-MM-DD, latest or previous."


class _plain:
    """A stand-in for click.progressbar when output is not a terminal."""

    def __init__(self, items: list[backfill.BackfillFile]):
        self.items = items

    def __enter__(self) -> list[backfill.BackfillFile]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


@click.command("import")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--date", "file_date", type=click.DateTime(["%Y%m%d", "%Y-%m-%d"]),
              help="Publication date, for a file whose name does not carry one.")
@json_option
@click.option("--force", is_flag=True, help="Import a file that fails the plausibility check (its tickets are held).")
@pass_app
def import_command(
    app: AppContext, paths: tuple[str, ...], file_date: dt.datetime | None, as_json: bool, force: bool
) -> None:
    """Import service-tag files (.json or .json.gz) or folders of them, oldest first per cloud.

    Each file is imported whole or not at all; a file that fails is reported
    and the others go on (exit status 1 if any failed). Run it again after a
    stop: what was imported stays, and files already stored are skipped.
    Tickets are made once per cloud, for its newest publication, after the run;
    a run stopped before them leaves them owed, and the next run makes them.
    """
    files = backfill.find_files(paths, file_date.date() if file_date else None)
    if not files:
        raise click.ClickException("no ServiceTags_<Cloud>_<YYYYMMDD>.json files found in " + ", ".join(paths))
    job = backfill.Backfill(app.engine, app.settings, force=force)
    show_bar = sys.stderr.isatty() and not as_json and len(files) > 1
    with click.progressbar(files, label="importing", file=sys.stderr, show_pos=True) if show_bar else _plain(files) as bar:
        def told(outcome: backfill.FileOutcome) -> None:
            if not as_json:
                click.echo(views.describe_file_outcome(outcome), err=outcome.failed)

        report = job.run(bar, on_file=told)
    if as_json:
        emit_json(report.to_json())
    else:
        for run in report.hook_runs:
            click.echo(run.describe())
    if report.failed:
        # One file: its own error, as any command's; many: the summary naming the files that failed.
        alone = report.outcomes[0].error if len(report.outcomes) == 1 else None
        click.echo(f"Error: {alone or report.summary()}", err=True)
        sys.exit(1)
    if not as_json and len(files) > 1:
        click.echo(report.summary(), err=True)


@click.command("publications")
@cloud_option
@json_option
@pass_app
def publications_command(app: AppContext, cloud: str, as_json: bool) -> None:
    """List the imported publications of a cloud, oldest first."""
    cloud = cloud.lower()
    with app.engine.connect() as conn:
        pubs = store.publications(conn, cloud)
    present(as_json, lambda: [p.to_json() for p in pubs], lambda: views.publication_lines(cloud, pubs))


@click.command("history")
@click.argument("tag")
@click.option("--since", "since_ref", metavar="PUB", help="Start at the version in force at this publication.")
@exact_option
@cloud_option
@json_option
@pass_app
def history_command(app: AppContext, tag: str, since_ref: str | None, exact: bool, cloud: str, as_json: bool) -> None:
    """Show each version of TAG: date, changeNumber, prefix count, +added/-removed, metadata changes."""
    cloud = cloud.lower()
    resolved = None
    with app.engine.connect() as conn:
        name, entries = store.history(conn, cloud, tag)
        if since_ref is not None:
            resolved = store.resolve_at(conn, cloud, since_ref, exact=exact)
            entries = store.entries_since(entries, resolved.publication.file_date)
    if resolved is not None:
        say_resolved(resolved)
    asked = resolved.resolved_from if resolved else None
    present(as_json, lambda: [e.to_json(name, asked) for e in entries], lambda: views.history_lines(entries))


def _watched_tags(app: AppContext, conn: Connection, cloud: str) -> list[str]:
    tags, warnings = watched_tags(app.settings, cloud, store.present_tag_names(conn, cloud))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if not tags:
        raise click.ClickException(
            "no watched tags: name tags, use --all, or list registries in the config file (--config)"
        )
    return tags


@click.command("diff")
@click.argument("tags", nargs=-1, metavar="[TAG...]")
@click.option("--from", "from_ref", default="previous", show_default=True, metavar="PUB", help=PUBLICATION_HELP)
@click.option("--to", "to_ref", default="latest", show_default=True, metavar="PUB", help="Publication to compare with.")
@cloud_option
@click.option("--all", "all_tags", is_flag=True, help="Every tag that changed, not just the watched ones.")
@exact_option
@json_option
@pass_app
def diff_command(app: AppContext, tags: tuple[str, ...], from_ref: str, to_ref: str, cloud: str,
                 all_tags: bool, exact: bool, as_json: bool) -> None:
    """What changed for tags between two publications (default: previous -> latest, the watched tags)."""
    cloud = cloud.lower()
    if tags and all_tags:
        raise click.UsageError("name tags or use --all, not both")
    with app.engine.connect() as conn:
        first = store.resolve_at(conn, cloud, from_ref, exact=exact)
        last = store.resolve_at(conn, cloud, to_ref, exact=exact)
        old, new = first.publication, last.publication
        names = None if all_tags else (list(tags) or _watched_tags(app, conn, cloud))
        changes = store.diff_publications(conn, cloud, old, new, names)
    say_resolved(first, last)
    asked = (first.resolved_from, last.resolved_from)
    present(as_json, lambda: [c.to_json(old, new, asked) for c in changes],
            lambda: views.diff_lines(old, new, changes))


@click.command("show")
@click.argument("tag")
@at_option(PUBLICATION_HELP)
@exact_option
@cloud_option
@json_option
@pass_app
def show_command(app: AppContext, tag: str, at_ref: str, exact: bool, cloud: str, as_json: bool) -> None:
    """Print TAG's prefixes as published at a publication (a date: the one on or before it)."""
    cloud = cloud.lower()
    with app.engine.connect() as conn:
        resolved = store.resolve_at(conn, cloud, at_ref, exact=exact)
        pub = resolved.publication
        snap = store.snapshot(conn, cloud, tag, pub)
    say_resolved(resolved)
    if snap is None:
        raise click.ClickException(f"tag {tag!r} was not published in the {cloud} file of {pub.file_date}")
    if as_json:  # to_json() as emit_json prints it, written from the stored text (see views.snapshot_json)
        click.echo(views.snapshot_json(snap, resolved.resolved_from))
    else:
        echo_lines(views.snapshot_lines(snap))


@click.command("lookup")
@click.argument("ip")
@at_option("Publication to search.")
@click.option("--all-time", is_flag=True, help="Every tag that ever held IP, with its first and last publication.")
@cloud_option
@json_option
@pass_app
def lookup_command(app: AppContext, ip: str, at_ref: str, all_time: bool, cloud: str, as_json: bool) -> None:
    """Which tags' prefixes contain IP, and since when (or, with --all-time, ever)."""
    cloud = cloud.lower()
    if all_time:
        with app.engine.connect() as conn:
            holders = store.lookup_all_time(conn, cloud, ip)
        present(as_json, lambda: [h.to_json() for h in holders], lambda: views.holder_lines(ip, cloud, holders))
        return
    with app.engine.connect() as conn:
        pub = store.resolve_publication(conn, cloud, at_ref)
        hits = store.lookup(conn, cloud, ip, pub)
    present(as_json, lambda: [h.to_json() for h in hits], lambda: views.lookup_lines(ip, pub, hits))


@click.command("watches")
@json_option
@pass_app
def watches_command(app: AppContext, as_json: bool) -> None:
    """The tags the configured registries resolve to, per registry."""
    clouds = {r.cloud for r in app.settings.registries} | set(app.settings.clouds)
    with app.engine.connect() as conn:
        names = {c: store.present_tag_names(conn, c) for c in clouds}
    watches = resolve_watches(app.settings, names)
    present(as_json, lambda: [w.to_json() for w in watches], lambda: views.watch_lines(watches))


COMMANDS = (import_command, publications_command, history_command, diff_command, show_command, lookup_command,
            watches_command)
