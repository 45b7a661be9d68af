"""Backfill: import many files (a folder, an archive of years) as one job.

A backfill takes files of any clouds in any order, ``.json`` or ``.json.gz``,
and imports them oldest first per cloud, each whole or not at all: a file
that fails is reported and the others go on, and a job that is stopped keeps
what it reported imported, so running it again imports the rest. A file whose (cloud,
date, SHA-256) is already stored is skipped after hashing, before its entries
are decoded. ``run`` reads (and hashes, and decodes the top level of) the next
file on a thread while it imports one.

On SQLite, ``run`` commits its imports a batch at a time (``BATCH_SECONDS``),
each file in a savepoint of the batch's transaction (a file that fails rolls
back its savepoint alone), and writes a batch's second file onwards without
the prefix spans' index by tag, built again before the batch commits: other
connections see the index throughout, and a run stopped mid-batch rolls the
whole batch back, index included. Maintained row by row (~800 span writes a
busy week, each at its tag's place), that index made a backfill of 780
synthetic weeks take 25.3 s where it had taken 17.4 s without the index;
built once per batch, ~0.1-0.3 s each time, it costs about nothing. A file is
reported, and counts as imported, once its batch is committed; the next run
imports the files of a batch that was stopped. PostgreSQL keeps a transaction
per file: there, batches that drop and build the index were no faster (29.5 s
against 27.6 s for the code before the index, side by side; the index built
again per batch costs what its upkeep does), and the drop locks the spans
against readers until the batch commits.

No alert storm: files are imported without the tickets/outbox hooks. After
the run, each cloud of the run whose newest publication has not had its hooks
gets them once, for that newest publication, compared with the publication
they last ran for (``hook_marks``): the newest one stored before the run, when
every earlier run finished. History imported by the run, or older than what
was stored, makes no tickets. A cloud whose hooks never ran gets them as a
first import would (what the ticket stage makes of a first publication, e.g.
a baseline), once, for its newest publication.

A run stopped between its last import and its hooks (killed, a crash, a
database error in the hooks) leaves them owed; the next run, whose files are
then all "already imported", runs them from the same starting point, so it
makes the tickets the stopped run would have made, and a run after a
complete one makes none.
"""
from __future__ import annotations

import datetime as dt
import gc
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import Connection, Engine

from . import db, hook_marks, parse, pipeline, store
from .errors import ParseError, WatcherError, translate_db_errors
from .parse import FILE_NAME_RE
from .settings import FILE_CLOUD_NAMES, Settings
from .store.sql import no_collector_pauses

#: Files a run imports between two collections of young objects (``Backfill.run``).
COLLECT_EVERY = 50
#: Seconds of imports a run commits together on SQLite (``Backfill.run``): the batch holds the database's write
#: lock, so a weekly import waiting for it (30 s at most) or a run stopped mid-batch loses little; the index
#: built again per batch costs ~0.1-0.3 s, so batches much shorter would cost more than they save.
BATCH_SECONDS = 5.0
#: Makes the hooks, given the plausibility checks the newest file failed (``--force``): ``pipeline.derived_work``.
HookMaker = Callable[..., Sequence[hook_marks.Hook]]


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

    def to_json(self, tickets: hook_marks.HookRun | None = None) -> dict[str, Any]:
        """``ImportResult.to_json`` plus the file, the error (None when it worked), and ``tickets``: what the
        run's ticket hooks made for its cloud, on the file they ran for (None on the others)."""
        base = self.result.to_json() if self.result is not None else {
            "outcome": "failed", "cloud": self.cloud, "date": self.file_date.isoformat() if self.file_date else None,
        }
        return {"file": self.file, **base, "error": self.error,
                "tickets": tickets.to_json() if tickets is not None else None}


@dataclass
class BackfillReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    #: the ticket hooks run after the run, one per cloud that owed them (this run's imports, or a stopped run's)
    hook_runs: list[hook_marks.HookRun] = field(default_factory=list)

    @property
    def tickets(self) -> dict[str, list[int]]:
        """The tickets made after the run, per cloud."""
        return {run.cloud: list(run.tickets) for run in self.hook_runs}

    def to_json(self) -> list[dict[str, Any]]:
        """One object per file; each cloud's hook run is told on the file of the publication it ran for
        (the cloud's last file of the run when none of them is that publication)."""
        holders: dict[int, hook_marks.HookRun] = {}
        for run in self.hook_runs:
            same_cloud = [i for i, o in enumerate(self.outcomes)
                          if (o.result.publication.cloud if o.result else o.cloud) == run.cloud]
            exact = [i for i in same_cloud if self.outcomes[i].result is not None
                     and self.outcomes[i].result.publication.id == run.publication.id]
            if exact or same_cloud:
                holders[(exact or same_cloud)[-1]] = run
        return [o.to_json(holders.get(i)) for i, o in enumerate(self.outcomes)]

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

    Split in two so that a face can draw progress between files; ``run`` does both (on SQLite, in batches).
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
        #: each cloud's newest publication, stored before the run or imported by it: what the plausibility
        #: check compares a file with (no query per file)
        self._newest: dict[str, store.PublicationInfo] = {}
        for publication in stored:
            self._note_newest(publication)
        #: the entry fingerprints of each cloud's file read last (``_read``, on the reading thread only)
        self._read_fingerprints: dict[str, frozenset[bytes]] = {}

    def import_file(self, item: BackfillFile, read: Future[pipeline.LocalFile] | None = None) -> FileOutcome:
        """Import one file in its own transaction; ``read``: its ``pipeline.read_local`` under way (see ``run``),
        else it is read here."""
        outcome = self._import(item, read)
        self.report.outcomes.append(outcome)
        return outcome

    def _import(self, item: BackfillFile, read: Future[pipeline.LocalFile] | None,
                within: Callable[[], Connection] | None = None) -> FileOutcome:
        """``within``: gives the batch's transaction to import in (asked only when there is a file to import)."""
        name = str(item.path)
        try:
            local = read.result() if read is not None else pipeline.read_local(self.settings, item.path)
            checked = pipeline.check_local_file(self.engine, self.settings, item.path, file_date=item.file_date,
                                                force=self.force, read=local, newest=self._newest.get)
            data = checked.body
            if item.cloud and item.file_date:
                known = self._known.get((item.cloud, item.file_date, local.sha256))
                if known is not None:
                    return FileOutcome(name, item.cloud, item.file_date, store.ImportResult(
                        "already imported", known, reason="the same file (SHA-256) is already stored for this date",
                    ), skipped=True)
            result = store.import_bytes(self.engine, data, name, file_date=item.file_date,
                                        expected_cloud=checked.cloud, on_imported=self._keep_forced(checked),
                                        decoded=local.decoded, within=within() if within else None)
        except WatcherError as exc:
            return FileOutcome(name, item.cloud, item.file_date, error=str(exc))
        if result.outcome == "imported":
            self._note_newest(result.publication)
        if checked.implausible:
            result = replace(result, notes=result.notes + checked.implausible)
        return FileOutcome(name, result.publication.cloud, result.publication.file_date, result)

    def _note_newest(self, publication: store.PublicationInfo) -> None:
        newest = self._newest.get(publication.cloud)
        if newest is None or publication.file_date > newest.file_date:
            self._newest[publication.cloud] = publication

    def finish(self) -> BackfillReport:
        """Run the hooks each cloud of the run owes, once: for its newest publication, since they last ran.

        ``make_hooks`` None leaves them owed (the next run with hooks makes the tickets).
        """
        if self.make_hooks is None:
            return self.report
        clouds = sorted({o.result.publication.cloud if o.result else o.cloud for o in self.report.outcomes} - {None})
        for cloud in clouds:
            imported = {o.result.publication.id for o in self.report.outcomes
                        if o.result is not None and o.result.outcome == "imported"}
            run = hook_marks.run_due(self.engine, self.settings, cloud, self._hooks_for, imported)
            if run is not None:
                self.report.hook_runs.append(run)
        return self.report

    def _hooks_for(self, implausible: Sequence[str]) -> Sequence[hook_marks.Hook]:
        return self.make_hooks(implausible=implausible)

    @staticmethod
    def _keep_forced(checked: pipeline.CheckedFile) -> store.ImportHook | None:
        """What ``--force`` let through is kept with the publication: its tickets may be made by a later run."""
        if not checked.implausible:
            return None
        return lambda conn, result: hook_marks.record_forced(conn, result.publication, checked.implausible)

    def run(self, files: Iterable[BackfillFile],
            on_file: Callable[[FileOutcome], None] | None = None) -> BackfillReport:
        """Import ``files`` in order, each read one file ahead on a thread, then ``finish``.

        Reading, inflating, hashing and decoding the top level of the next file
        need no database, and most of that (and the database's own work on this
        file: SQLite and the drivers release the GIL) runs in parallel.
        """
        # Each week's import starts from the prefix lists the week before stored. The cyclic collector,
        # off inside each import already (no_collector_pauses), is off for the whole run: with it on
        # between imports, each import was followed by a collection walking all it left alive (the kept
        # lists, the next file decoded ahead): ~7% of a busy week. The young objects are collected every
        # COLLECT_EVERY files instead, so the few cycles imports leave do not pile up.
        batched = self.engine.dialect.name == "sqlite"  # PostgreSQL: a transaction per file (the module's notes)
        with store.prefix_lists_kept(), no_collector_pauses(), _Batches(self.engine) as batches:
            for count, (item, read) in enumerate(read_ahead(files, self._read), 1):
                batches.done.append(self._import(item, read, batches.connection if batched else None))
                if not batched or batches.due():
                    self._committed(batches, on_file)
                if count % COLLECT_EVERY == 0:
                    gc.collect(0)
            self._committed(batches, on_file)
        return self.finish()

    def _committed(self, batches: _Batches, on_file: Callable[[FileOutcome], None] | None) -> None:
        """Commit the batch, then report its files (as failed, if the commit failed)."""
        try:
            outcomes = batches.commit()
        except WatcherError as exc:
            outcomes = [o if o.failed else FileOutcome(o.file, o.cloud, o.file_date, error=f"not stored: {exc}")
                        for o in batches.take()]
            # The newest publications the plausibility check compares files with were noted from imports now
            # rolled back: read them again.
            with self.engine.connect() as conn:
                stored = store.all_publications(conn)
            self._newest = {}
            for publication in stored:
                self._note_newest(publication)
        for outcome in outcomes:
            self.report.outcomes.append(outcome)
            if on_file is not None:
                on_file(outcome)

    def _read(self, item: BackfillFile) -> pipeline.LocalFile:
        """Read a file ahead (on ``read_ahead``'s thread, one file at a time, in order), and decode what its
        import will most likely decode: the entries that differ from the same cloud's file read before it
        (imported just before it). A file already stored is only read and hashed."""
        local = pipeline.read_local(self.settings, item.path)
        if local.document is None or (item.cloud, item.file_date, local.sha256) in self._known:
            return local
        document = parse.fingerprinted(local.document)
        previous = self._read_fingerprints.get(document.cloud)
        self._read_fingerprints[document.cloud] = frozenset(document.fingerprints or ())
        if previous is not None:  # the first file of a cloud may be known to the store: nothing to guess from
            document = parse.decoded_ahead(document, previous)
        return replace(local, document=document)


class _Batches:
    """The run's files not reported yet and, on SQLite, their batch's writing transaction (``BATCH_SECONDS``; a
    file imported without ``connection`` commits alone); leaving it rolls back a batch not committed (a run
    stopped by an error that is not a file's own, or by Ctrl-C)."""

    def __init__(self, engine: Engine, seconds: float | None = None) -> None:
        self._engine, self._seconds = engine, BATCH_SECONDS if seconds is None else seconds
        self._conn: Connection | None = None
        self._started = 0.0
        self._files = 0
        #: the files imported (or failed) in the open batch, reported when it is committed
        self.done: list[FileOutcome] = []

    def __enter__(self) -> _Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()  # rolls back what was not committed, the index's drop included
            self._conn = None

    def connection(self) -> Connection:
        """The batch's transaction for the next file: begun (the write lock taken) by a batch's first file; from
        its second file on, without the spans' index by tag (built again by ``commit``)."""
        if self._conn is None:
            conn = db.writer(self._engine).connect()
            try:
                with translate_db_errors("beginning a batch of imports"):  # e.g. another writer for over 30 s
                    conn.begin()
            except BaseException:
                conn.close()
                raise
            self._conn, self._started, self._files = conn, time.monotonic(), 0
        elif self._files == 1:
            with translate_db_errors("setting the prefix spans' index aside for a batch of imports"):
                store.drop_span_index(self._conn)
        self._files += 1
        return self._conn

    def due(self) -> bool:
        return self._conn is not None and time.monotonic() - self._started >= self._seconds

    def take(self) -> list[FileOutcome]:
        done, self.done = self.done, []
        return done

    def commit(self) -> list[FileOutcome]:
        """Build the index again and commit the batch: its files' outcomes. A failure rolls the batch back and
        raises (``StoreError``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                with translate_db_errors("committing a batch of imported files"):
                    store.build_span_index(conn)
                    conn.commit()
            finally:
                conn.close()
        return self.take()


def read_ahead(files: Iterable[BackfillFile], read: Callable[[BackfillFile], pipeline.LocalFile],
               ) -> Iterator[tuple[BackfillFile, Future[pipeline.LocalFile]]]:
    """Each file with its ``read`` under way on a thread, one file ahead of the one yielded.

    At most two files are in memory; a read's error is raised by its future, so the file it belongs
    to fails as it would have failed read in place.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-read") as reader:
        queued: deque[tuple[BackfillFile, Future[pipeline.LocalFile]]] = deque()
        for item in files:
            queued.append((item, reader.submit(read, item)))
            if len(queued) > 1:
                yield queued.popleft()
        while queued:
            yield queued.popleft()
