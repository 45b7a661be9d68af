"""The pipeline: drives one publication through the stages.

fetch -> parse -> store -> diff -> render -> notify. Each stage is a module;
this one only sequences them and passes typed values between them. Work derived
from a publication (tickets, the outbox) is created inside the import's
transaction through the store's ``on_imported`` hook, so it is committed with
the publication or not at all.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import httpx
from sqlalchemy import Connection, Engine

from . import fetch, hook_marks, notify, plausible, polls, redact, store, tickets
from .errors import FetchError, ImplausibleFileError, ParseError, StoreError, WatcherError, translate_db_errors
from .models import day_from_key, utcnow
from .parse import FILE_NAME_RE, Document, decode_document, file_cloud, parse_bytes, validate_prefixes
from .settings import FILE_CLOUD_NAMES, FetchSettings, Settings, check_cloud

log = logging.getLogger(__name__)

#: Stages that add work to an import's transaction (tickets register here).
DerivedWork = Callable[[Connection, store.ImportResult, Settings], None]


def derived_work(*, implausible: Sequence[str] = ()) -> list[DerivedWork]:
    """What runs inside every import's transaction, in order: tickets, then their outbox rows.

    ``implausible`` names the plausibility checks the file failed (the fetch
    stage knows); tickets of such a publication are held for review, and so
    are those of a publication that withdraws too many of the cloud's tags.
    """
    return [_ticket_hook(tuple(implausible)), notify.enqueue_for_import]


def _ticket_hook(implausible: tuple[str, ...]) -> DerivedWork:
    def hook(conn: Connection, result: store.ImportResult, settings: Settings) -> None:
        reasons = implausible + publication_problems(conn, result, settings)
        tickets.create_tickets(conn, result, settings, implausible=reasons)

    return hook


def publication_problems(conn: Connection, result: store.ImportResult, settings: Settings) -> tuple[str, ...]:
    """The plausibility checks an imported publication fails as a whole (today: tags withdrawn at once)."""
    withdrawn = sum(1 for change in result.changes if change.status == "withdrawn")
    if result.outcome != "imported" or result.previous_day is None or not withdrawn:
        return ()
    previous = store.publication_by_day(conn, result.publication.cloud, day_from_key(result.previous_day))
    limits = plausible.Limits.from_settings(settings.tickets)
    problem = plausible.withdrawn_share_problem(withdrawn, previous.tag_count if previous else None, limits)
    return (problem,) if problem else ()


def import_publication(
    engine: Engine,
    settings: Settings,
    data: bytes,
    source: str,
    *,
    file_date: dt.date | None = None,
    expected_cloud: str | None = None,
    implausible: Sequence[str] = (),
    decoded: tuple[Document, str] | None = None,
) -> store.ImportResult:
    """Store one file's bytes and everything derived from them, atomically (``decoded``: as ``import_bytes``).

    The hooks compare with the publication they last ran for (``hook_marks``),
    which is the one stored before this file unless a backfill stopped before
    its own hooks.
    """
    hooks = derived_work(implausible=implausible)

    def on_imported(conn: Connection, result: store.ImportResult) -> None:
        hook_marks.run_for_import(conn, result, settings, hooks)

    return store.import_bytes(
        engine, data, source, file_date=file_date, expected_cloud=expected_cloud, on_imported=on_imported,
        decoded=decoded,
    )


def cloud_of_file_name(name: str) -> str | None:
    """Our cloud name from ``ServiceTags_<Cloud>_<YYYYMMDD>.json[.gz]``; None when the name has no such part.

    A name that has the part but names no known cloud is a ParseError: the
    file could be anything.
    """
    match = FILE_NAME_RE.search(name)
    if match is None:
        return None
    cloud = FILE_CLOUD_NAMES.get(match["cloud"].lower())
    if cloud is None:
        raise ParseError(f"{name}: the file name names no known cloud ({match['cloud']!r})")
    return cloud


@dataclass(frozen=True)
class LocalFile:
    """A local file read once: its bytes, their SHA-256, and their top level decoded (what every check and the
    import need), with no database access, so that a backfill reads the next file while it imports this one."""

    path: Path
    body: bytes
    sha256: str
    #: None when the parser cannot read the top level: the import then decodes again and says precisely why
    document: Document | None

    @property
    def decoded(self) -> tuple[Document, str] | None:
        """For ``store.import_bytes``: the document and hash it would otherwise compute again."""
        return None if self.document is None else (self.document, self.sha256)


def read_local(settings: Settings, path: Path) -> LocalFile:
    """Read ``path`` under a download's guards (size cap, gzip-bomb guard, deadline), hash and decode it."""
    body = fetch.read_local_file(path, settings.fetch)
    hashing = store.Sha256(body)  # on a second thread while this one decodes
    try:
        document: Document | None = decode_document(body, str(path))
    except WatcherError:
        document = None
    return LocalFile(path, body, hashing.hexdigest(), document)


@dataclass(frozen=True)
class CheckedFile:
    """A local file's bytes after the checks a download gets, with the cloud it is and what ``--force`` let through."""

    body: bytes
    cloud: str | None
    implausible: tuple[str, ...]
    #: the file as read (hash, decoded top level), when it was read through ``read_local``
    read: LocalFile | None = None


def check_local_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    file_date: dt.date | None = None,
    force: bool = False,
    read: LocalFile | None = None,
    newest: Callable[[str], store.PublicationInfo | None] | None = None,
) -> CheckedFile:
    """Read a local file with every check a downloaded one gets.

    The same size cap and gzip-bomb guard as a download; the cloud in the file
    must be the one its name says; the plausibility check the poll runs (no
    tags, far fewer tags than the last publication) refuses the file unless
    ``force``, which lets it through with the reason (its tickets are held).
    ``read``: the file as ``read_local`` gave it already (else it is read here); ``newest``: a cloud's
    newest publication as the caller knows it (a backfill: stored before it or imported by it), else read here.
    """
    read = read if read is not None else read_local(settings, path)
    body = read.body
    named = cloud_of_file_name(path.name)
    document_cloud = _file_cloud(read.document, str(path))
    if named is not None and document_cloud is not None and named != document_cloud:
        raise ParseError(
            f"{path}: the file says it is the {document_cloud} cloud's, its name says {named}'s; nothing was imported"
        )
    cloud = named or document_cloud
    implausible: tuple[str, ...] = ()
    # A file the parser cannot read at all gets the parser's precise error from the import.
    if cloud is not None and document_cloud is not None and read.document is not None:
        if newest is not None:
            previous = newest(cloud)
        else:
            with engine.connect() as conn:
                previous = polls.newest_publication(conn, cloud)
        try:
            plausible.check_decoded_plausible(
                read.document.cloud, len(read.document.entries), body, cloud,
                previous.tag_count if previous else None, settings.fetch.min_tag_ratio,
            )
        except ImplausibleFileError as exc:
            if not force:
                # A malformed file says first what is malformed (the check above counts entries only).
                validate_prefixes(parse_bytes(body, str(path), file_date=file_date), str(path))
                raise ImplausibleFileError(
                    f"{path}: {exc}; nothing was imported (import with --force to import it with its tickets held)"
                ) from None
            implausible = (f"imported with --force despite: {exc}",)
            log.warning("%s: imported despite the plausibility check (--force): %s", path, exc)
        except FetchError as exc:
            raise ParseError(f"{path}: {exc}") from None
    return CheckedFile(body, cloud, implausible, read)


def import_file(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    file_date: dt.date | None = None,
    force: bool = False,
) -> store.ImportResult:
    """Import a local file, checked as a download is (``check_local_file``), with its tickets."""
    checked = check_local_file(engine, settings, path, file_date=file_date, force=force)
    result = import_publication(
        engine, settings, checked.body, str(path), file_date=file_date, expected_cloud=checked.cloud,
        implausible=checked.implausible, decoded=checked.read.decoded if checked.read else None,
    )
    return replace(result, notes=result.notes + checked.implausible) if checked.implausible else result


def _file_cloud(document: Document | None, source: str) -> str | None:
    """The cloud a decoded file says it belongs to, or None when the parser will have to say what is wrong."""
    if document is None:
        return None
    try:
        return file_cloud(document, source)
    except WatcherError:
        return None


# ---------------------------------------------------------------- poll

#: What one poll of one cloud came to:
#:
#: * ``new`` — a publication was imported;
#: * ``unchanged`` — new bytes, but the same content as the publication already stored for that date;
#: * ``skipped-known-url`` — the listed file was imported from that URL before; not downloaded;
#: * ``already-imported`` — downloaded, and a publication with the same SHA-256 is stored for the file's date
#:   (for any date when the file's name carries none); the same bytes under a new date are ``new``;
#: * ``quarantined`` — the file looked implausible; written aside, not imported;
#: * ``error`` — a ``WatcherError`` stopped the poll; nothing was imported.
PollOutcomeKind = Literal["new", "unchanged", "skipped-known-url", "already-imported", "quarantined", "error"]
POLL_OUTCOMES: tuple[PollOutcomeKind, ...] = (
    "new", "unchanged", "skipped-known-url", "already-imported", "quarantined", "error",
)



@dataclass(frozen=True)
class PollOutcome:
    """The result of polling one cloud. ``url`` is always redacted."""

    cloud: str
    outcome: PollOutcomeKind
    #: the file's URL, or the page / source asked when no file was found
    url: str
    file_date: dt.date | None
    started_at: dt.datetime
    finished_at: dt.datetime
    sha256: str | None = None
    #: the import's summary, when an import ran
    result: store.ImportResult | None = None
    #: the publication imported, or the one already stored that made the poll skip
    publication: store.PublicationInfo | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()
    quarantined_at: str | None = None
    poll_id: int | None = None

    @property
    def ok(self) -> bool:
        """True when the poll worked, whether or not it found new data."""
        return self.outcome in polls.SUCCESS_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        pub = self.publication
        return {
            "cloud": self.cloud,
            "outcome": self.outcome,
            "ok": self.ok,
            "url": self.url,
            "file_date": self.file_date.isoformat() if self.file_date else None,
            "sha256": self.sha256,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "error": self.error,
            "notes": list(self.notes),
            "quarantined_at": self.quarantined_at,
            "publication": None if pub is None else pub.to_json(),
            "import": None if self.result is None else self.result.to_json(),
            "poll_id": self.poll_id,
        }


@dataclass
class _Attempt:
    """What is known so far about one cloud's poll, so an error can still say where it happened."""

    cloud: str
    started_at: dt.datetime
    url: str
    file_date: dt.date | None = None
    sha256: str | None = None
    notes: list[str] = field(default_factory=list)

    def finish(self, outcome: PollOutcomeKind, finished_at: dt.datetime, **details: Any) -> PollOutcome:
        values: dict[str, Any] = {"file_date": self.file_date, "sha256": self.sha256, "notes": tuple(self.notes)}
        values.update(details)
        return PollOutcome(
            cloud=self.cloud, outcome=outcome, url=self.url, started_at=self.started_at,
            finished_at=finished_at, **values,
        )


def poll(
    engine: Engine,
    settings: Settings,
    clouds: list[str] | tuple[str, ...] | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    client: httpx.Client | None = None,
    now: Callable[[], dt.datetime] = utcnow,
) -> list[PollOutcome]:
    """Poll each cloud (default ``settings.clouds``) once; one outcome per cloud, every attempt recorded.

    ``url`` replaces Microsoft's download page (a mirror page or the file itself);
    ``force`` imports a file that fails the plausibility check. A failure of one
    cloud is recorded and reported; it does not stop the others.
    """
    if url is not None:
        settings = replace(settings, fetch=replace(settings.fetch, source_url=url))
    names = list(dict.fromkeys(check_cloud(c) for c in (clouds or settings.clouds)))
    if client is not None:
        return [_poll_cloud(engine, settings, cloud, client, force, now) for cloud in names]
    try:
        own_client = fetch.make_client(settings.fetch)
    except FetchError as exc:
        return [_save(engine, _start(settings.fetch, cloud, now).finish("error", now(), error=str(exc))) for cloud in names]
    with own_client:
        return [_poll_cloud(engine, settings, cloud, own_client, force, now) for cloud in names]


def _start(settings: FetchSettings, cloud: str, now: Callable[[], dt.datetime]) -> _Attempt:
    if settings.source_url:
        where = redact.redact_url(settings.source_url)
    else:
        try:
            where = fetch.page_url_for(cloud)
        except FetchError:
            where = ""  # a cloud that is not polled (germany): the error says so
    return _Attempt(cloud=cloud, started_at=now(), url=where)


def _poll_cloud(
    engine: Engine, settings: Settings, cloud: str, client: httpx.Client, force: bool, now: Callable[[], dt.datetime]
) -> PollOutcome:
    attempt = _start(settings.fetch, cloud, now)
    try:
        with translate_db_errors("polling"):  # the poll's own reads; the import names its errors itself
            outcome = _fetch_and_import(engine, settings, attempt, client, force, now)
        if outcome.ok:
            outcome = _owed_tickets(engine, settings, outcome)
    except WatcherError as exc:
        outcome = attempt.finish("error", now(), error=redact.redact_text(str(exc)))
    except Exception as exc:
        # A bug, not a condition: record the attempt so status shows it, then let it surface.
        _save(engine, attempt.finish("error", now(), error=f"internal error: {type(exc).__name__}"))
        raise
    return _save(engine, outcome)


def _fetch_and_import(
    engine: Engine, settings: Settings, attempt: _Attempt, client: httpx.Client, force: bool,
    now: Callable[[], dt.datetime],
) -> PollOutcome:
    cloud, fs = attempt.cloud, settings.fetch
    deadline = fetch.Deadline.start(fs.deadline_seconds)
    link = fetch.discover(cloud, fs, client, deadline)
    attempt.url, attempt.file_date = link.safe_url, link.file_date

    # A dated file listed on a page or in a folder is never rewritten under its name, so one imported
    # before need not be fetched again. A source that is the file itself was read already (discovery
    # had to, to tell it from a page), and may change under the same name: it goes by its bytes.
    if link.page_url is not None and link.file_date is not None and link.prefetched is None:
        with engine.connect() as conn:
            known = polls.publication_for_url(conn, cloud, link.safe_url)
        if known is not None:
            return attempt.finish("skipped-known-url", now(), publication=known)

    dl = fetch.download(link, fs, client, deadline)
    attempt.sha256 = dl.sha256
    with engine.connect() as conn:
        # A dated file is its own publication even when its bytes repeat an earlier week's (as the importer
        # has it); an undated one has only its bytes to go by, or it would be imported again every day.
        same = polls.publication_with_sha256(conn, cloud, dl.sha256, link.file_date)
        previous = polls.newest_publication(conn, cloud)
    if same is not None:
        attempt.file_date = attempt.file_date or same.file_date
        return attempt.finish("already-imported", now(), publication=same)

    implausible: tuple[str, ...] = ()
    try:
        plausible.check_plausible(dl.body, cloud, previous.tag_count if previous else None, fs.min_tag_ratio)
    except ImplausibleFileError as exc:
        if not force:
            path = fetch.quarantine(dl.body, _quarantine_name(link, dl.sha256), fs.quarantine_dir)
            return attempt.finish(
                "quarantined", now(), quarantined_at=str(path),
                error=f"{exc}; kept aside as {path} and not imported (poll with --force to import it)",
            )
        attempt.notes.append(f"imported despite the plausibility check (--force): {exc}")
        implausible = (str(exc),)  # its tickets are held for a reviewer

    file_date = link.file_date
    if file_date is None:
        file_date = now().astimezone(dt.timezone.utc).date()
        attempt.notes.append(
            f"the file name {link.file_name!r} carries no date; used today's date (UTC), {file_date}, as the file date"
        )
    attempt.file_date = file_date
    result = import_publication(
        engine, settings, dl.body, link.safe_url, file_date=file_date, expected_cloud=cloud, implausible=implausible
    )
    if result.outcome == "imported":
        kind: PollOutcomeKind = "new"
    else:  # another poller got there first (same bytes), or the same content for that date is stored
        kind = "already-imported" if result.publication.sha256 == dl.sha256 else "unchanged"
    return attempt.finish(kind, now(), result=result, publication=result.publication)


def _owed_tickets(engine: Engine, settings: Settings, outcome: PollOutcome) -> PollOutcome:
    """Make the tickets a stopped backfill owes for the cloud's newest publication (``hook_marks``).

    The poll's own imports run their hooks in their transaction; but a
    backfill stopped between its last import and its hooks leaves the newest
    publication without tickets, and the poll then finds its file already
    stored. A backfill still running when the poll comes gets its tickets
    from here up to its newest file so far, and its own hooks then supersede
    them: one ticket too many at worst, never one lost.
    """
    run = hook_marks.run_due(engine, settings, outcome.cloud,
                             lambda implausible: derived_work(implausible=implausible))
    if run is None:
        return outcome
    note = run.describe()
    log.warning("%s poll: %s", outcome.cloud, note)
    return replace(outcome, notes=outcome.notes + (note,))


def _quarantine_name(link: fetch.FileLink, sha256: str) -> str:
    # The digest keeps different suspicious files of one name apart; the body is already gunzipped.
    stem = (link.file_name or "download").removesuffix(".gz").removesuffix(".json") or "download"
    return f"{stem}.{sha256[:12]}.json"


def _save(engine: Engine, outcome: PollOutcome) -> PollOutcome:
    """Record the attempt; a failure to record turns the outcome into an error that says so."""
    try:
        poll_id = polls.record_poll(
            engine, cloud=outcome.cloud, started_at=outcome.started_at, finished_at=outcome.finished_at,
            url=outcome.url, outcome=outcome.outcome, error=outcome.error,
            publication_id=outcome.publication.id if outcome.publication else None, sha256=outcome.sha256,
        )
    except StoreError as exc:
        error = f"{outcome.error}; {exc}" if outcome.error else str(exc)
        outcome = replace(outcome, outcome="error", error=error)
        log.error("%s poll: %s", outcome.cloud, error)
        return outcome
    # INFO, failures too: the caller reports outcomes (the CLI on stderr, the daemon in its status).
    log.info("%s poll: %s %s%s", outcome.cloud, outcome.outcome, outcome.url, f": {outcome.error}" if outcome.error else "")
    return replace(outcome, poll_id=poll_id)
