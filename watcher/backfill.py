"""Backfill: import many files (a folder, an archive of years) as one job.

A backfill takes files of any clouds in any order, ``.json`` or ``.json.gz``,
and imports them oldest first per cloud, each in its own transaction: a file
that fails is reported and the others go on, and a job that is stopped keeps
what it imported, so running it again imports the rest. A file whose (cloud,
date, SHA-256) is already stored is skipped after hashing, before decoding.

No alert storm: files are imported without the tickets/outbox hooks. After
the run, each cloud whose newest publication came in with this run gets the
hooks once, for that newest publication, compared with the newest publication
stored before the run; history imported by the run, or older than what was
stored, makes no tickets. A cloud with nothing stored before the run gets
the hooks as a first import would (what the ticket stage makes of a first
publication, e.g. a baseline), once, for its newest publication.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Connection, Engine

from . import db, diff as diffs, pipeline, store
from .errors import ParseError, WatcherError, translate_db_errors
from .parse import FILE_NAME_RE
from .settings import FILE_CLOUD_NAMES, Settings

#: What runs once per cloud after a run (the pipeline's tickets and outbox hooks).
RunHook = Callable[[Connection, store.ImportResult, Settings], None]
#: Makes the hooks, given the plausibility checks the newest file failed (``--force``): ``pipeline.derived_work``.
HookMaker = Callable[..., Sequence[RunHook]]


@dataclass(frozen=True)
class BackfillFile:
    """A file to import; ``cloud`` and ``file_date`` as its name (or ``--date``) gives them."""

    path: Path
    cloud: str | None
    file_date: dt.date | None

    @property
    def order(self) -> tuple[str, str, str]:
        # Undated files last: their date is only known once the importer refuses or accepts them.
        return (self.file_date.isoformat() if self.file_date else "9999", self.cloud or "", str(self.path))


def find_files(paths: Iterable[str | Path], file_date: dt.date | None = None) -> list[BackfillFile]:
    """The files named, and the service-tag files inside folders named, oldest first per cloud.

    ``file_date`` is the date of files whose names carry none. A path that does
    not exist is a ``ParseError`` (nothing is imported).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and FILE_NAME_RE.search(p.name))
        elif path.exists():
            found.append(path)
        else:
            raise ParseError(f"no such file or folder: {raw}")
    files = [describe_file(p, file_date) for p in dict.fromkeys(found)]
    return sorted(files, key=lambda f: f.order)


def describe_file(path: Path, file_date: dt.date | None = None) -> BackfillFile:
    """Cloud and date from a ``ServiceTags_<Cloud>_<YYYYMMDD>.json[.gz]`` name (``file_date`` wins)."""
    match = FILE_NAME_RE.search(path.name)
    cloud = FILE_CLOUD_NAMES.get(match.group("cloud").lower()) if match else None
    day = file_date
    if day is None and match:
        try:
            day = dt.datetime.strptime(match.group("date"), "%Y%m%d").date()
        except ValueError:
            day = None
    return BackfillFile(path, cloud, day)


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file: its import's result, or the error that stopped it."""

    file: str
    cloud: str | None = None
    file_date: dt.date | None = None
    result: store.ImportResult | None = None
    error: str | None = None
    #: skipped by (cloud, date, SHA-256) before decoding
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        """``ImportResult.to_json`` plus the file and the error (None when it worked)."""
        base = self.result.to_json() if self.result is not None else {
            "outcome": "failed", "cloud": self.cloud, "date": self.file_date.isoformat() if self.file_date else None,
        }
        return {"file": self.file, **base, "error": self.error}


@dataclass
class BackfillReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    #: tickets made after the run, per cloud
    tickets: dict[str, list[int]] = field(default_factory=dict)

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.failed]

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.result is not None and o.result.outcome == outcome)

    def summary(self) -> str:
        parts = [f"{self.count('imported')} imported", f"{self.count('already imported')} already imported"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed: " + ", ".join(o.file for o in self.failed))
        return "; ".join(parts)


class Backfill:
    """One run over many files: ``import_file`` for each (oldest first per cloud), then ``finish``.

    Split in two so that a face can draw progress between files; ``run`` does both.
    """

    def __init__(self, engine: Engine, settings: Settings, make_hooks: HookMaker | None = pipeline.derived_work,
                 *, force: bool = False) -> None:
        """``make_hooks`` None: import history only, no tickets; ``force``: import files that fail the
        plausibility check (the newest one's tickets are then held, with the reason)."""
        self.engine, self.settings, self.make_hooks, self.force = engine, settings, make_hooks, force
        self.report = BackfillReport()
        with engine.connect() as conn:
            stored = store.all_publications(conn)
        self._known = {(p.cloud, p.file_date, p.sha256): p for p in stored}
        #: the newest publication of each cloud before the run: what its tickets compare with
        self._newest_before: dict[str, store.PublicationInfo] = {}
        for p in stored:  # by cloud and date: the last one wins
            self._newest_before[p.cloud] = p
        self._imported: dict[str, set[int]] = {}
        #: per publication id imported with --force: the checks it failed
        self._implausible: dict[int, tuple[str, ...]] = {}

    def import_file(self, item: BackfillFile) -> FileOutcome:
        outcome = self._import(item)
        self.report.outcomes.append(outcome)
        return outcome

    def _import(self, item: BackfillFile) -> FileOutcome:
        name = str(item.path)
        try:
            checked = pipeline.check_local_file(self.engine, self.settings, item.path, file_date=item.file_date,
                                                force=self.force)
            data = checked.body
            if item.cloud and item.file_date:
                known = self._known.get((item.cloud, item.file_date, hashlib.sha256(data).hexdigest()))
                if known is not None:
                    return FileOutcome(name, item.cloud, item.file_date, store.ImportResult(
                        "already imported", known, reason="the same file (SHA-256) is already stored for this date",
                    ), skipped=True)
            result = store.import_bytes(self.engine, data, name, file_date=item.file_date,
                                        expected_cloud=checked.cloud)
        except WatcherError as exc:
            return FileOutcome(name, item.cloud, item.file_date, error=str(exc))
        if checked.implausible:
            result = replace(result, notes=result.notes + checked.implausible)
        if result.outcome == "imported":
            self._imported.setdefault(result.publication.cloud, set()).add(result.publication.id)
            if checked.implausible:
                self._implausible[result.publication.id] = checked.implausible
        return FileOutcome(name, result.publication.cloud, result.publication.file_date, result)

    def finish(self) -> BackfillReport:
        """Run the hooks once per cloud whose newest publication this run imported."""
        if self.make_hooks is None:
            return self.report
        for cloud, ids in sorted(self._imported.items()):
            before = self._newest_before.get(cloud)
            with db.writer(self.engine).begin() as conn:
                newest = store.resolve_publication(conn, cloud, "latest")
                if newest.id not in ids or (before is not None and newest.file_date <= before.file_date):
                    continue
                result = run_result(conn, before, newest)
                hooks = self.make_hooks(implausible=self._implausible.get(newest.id, ()))
                with translate_db_errors(f"making the tickets of {cloud} {newest.file_date}"):
                    for hook in hooks:
                        hook(conn, result, self.settings)
        return self.report

    def run(self, files: Iterable[BackfillFile],
            on_file: Callable[[FileOutcome], None] | None = None) -> BackfillReport:
        for item in files:
            outcome = self.import_file(item)
            if on_file is not None:
                on_file(outcome)
        return self.finish()


def run_result(conn: Connection, before: store.PublicationInfo | None,
               newest: store.PublicationInfo) -> store.ImportResult:
    """The run as if it were one import: from the newest publication before it (if any) to the newest after it."""
    if before is None:  # the cloud's first publications: as a first import, nothing to compare with
        return store.ImportResult("imported", newest)
    changes = store.diff_publications(conn, newest.cloud, before, newest)
    return store.ImportResult(
        "imported", newest,
        changes=tuple(_tag_change(c) for c in changes),
        anomalies=diffs.publication_anomalies(before.change_number, newest.change_number),
        previous_day=before.day,
    )


def _tag_change(change: diffs.TagDiff) -> store.TagChange:
    return store.TagChange(
        tag=change.tag, status=change.status, added=len(change.added), removed=len(change.removed),
        change_number_before=change.before.change_number if change.before else None,
        change_number_after=change.after.change_number if change.after else None,
        anomalies=change.anomalies,
    )
