"""Figure 5: render every ticket of a publication and deliver them all to a local json:// receiver.

Set-up per repetition and backend (untimed): a fresh database; the real
Public files of ``DATES`` imported through ``pipeline.import_publication``
with settings that watch ``REGISTRIES``, so that the tickets and their outbox
rows are created inside the last file's import transaction, as in production;
anything queued by the earlier files is delivered before the last import.

Timed, between two runs of ``json.loads`` of the last file: reading the
publication's tickets, every ticket and rule format of each from one view
(``render.render_formats``), and ``notify.deliver_due`` sending every queued message to an HTTP
server on 127.0.0.1 (a process of its own) through apprise's ``json://``.
The receiver's count of posts is checked against the tickets × destinations.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from watcher import notify, pipeline, render, review, tickets
from watcher.settings import NotifySettings, RegistryWatch, Settings

from .common import Backends, Database, Figure, RealFile, Summary, read_files, sandwich

#: The last date is the publication measured: its Public file changes Storage.<region> in eight regions.
DATES = ("20251006", "20251013", "20251028")
QUICK_DATES = DATES[-2:]
#: Five registries over the regions that 20251028 changes (and one it does not, uksouth), data endpoints on.
REGISTRIES = (
    RegistryWatch("contosoprod", ("eastus2", "centralus"), data_endpoint=True),
    RegistryWatch("contosoeu", ("westeurope", "germanynorth", "austriaeast"), data_endpoint=True),
    RegistryWatch("fabrikam", ("eastus", "westus2"), data_endpoint=True),
    RegistryWatch("tailspin", ("southcentralus", "eastus2"), data_endpoint=True),
    RegistryWatch("northwind", ("westus2", "westeurope", "uksouth"), data_endpoint=True),
)
#: Two destinations on the one receiver: every ticket is sent twice.
PATHS = ("/", "/second")
FORMATS = (*render.TICKET_FORMATS, *render.RULE_FORMATS)
TARGET = 4.0


class Receiver:
    """An HTTP server on 127.0.0.1 (a free port), in a process of its own, that counts the JSON bodies posted to it.

    A real destination never shares the watcher's interpreter; in a thread of
    this process it would compete with the sender for the GIL. See ``receiver.py``.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.receiver"], stdout=subprocess.PIPE,
                                        cwd=Path(__file__).resolve().parent.parent, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.strip().isdigit():
            self.process.kill()
            raise RuntimeError(f"the json:// receiver did not start: {line!r}")
        self.port = int(line)

    def _request(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def reset(self) -> None:
        self._request("POST", "/__reset")

    @property
    def titles(self) -> list[str]:
        return self._request("GET", "/__stats")["titles"]

    @property
    def bytes(self) -> int:
        return self._request("GET", "/__stats")["bytes"]

    def count(self) -> int:
        return len(self.titles)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()


def settings_for(receiver: Receiver) -> Settings:
    return Settings(
        registries=REGISTRIES,
        notify=NotifySettings(urls=tuple(f"json://127.0.0.1:{receiver.port}{p}" for p in PATHS),
                              max_attempts=1, backoff_seconds=3600.0),
    )


def _import(database: Database, settings: Settings, file: RealFile):
    result = pipeline.import_publication(database.engine, settings, file.data, file.name)
    if result.outcome != "imported":
        raise RuntimeError(f"{file.name}: {result.outcome} ({result.reason})")
    return result


@dataclass
class Run:
    """One repetition on one backend."""

    ratio: float
    seconds: float
    loads_seconds: float
    render_seconds: float
    deliver_seconds: float
    tickets: int
    messages: int
    renders: int
    rendered_bytes: int
    posted_bytes: int
    held: int


def run_once(database: Database, files: Sequence[RealFile], settings: Settings, receiver: Receiver) -> Run:
    engine = database.engine
    for file in files[:-1]:
        _import(database, settings, file)
    early = notify.deliver_due(engine, settings)  # the earlier weeks' baseline tickets
    if any(r.state != "sent" for r in early):
        raise RuntimeError(f"delivering the earlier weeks' messages failed: {early}")
    with engine.connect() as conn:  # approved baselines: the last file makes change tickets against them
        baselines = [t.id for t in tickets.list_tickets(conn, "open") if t.kind == "baseline"]
    for ticket_id in baselines:
        review.transition(engine, ticket_id, "approve", "benchmark")
    last = files[-1]
    result = _import(database, settings, last)
    publication_id = result.publication.id
    with engine.connect() as conn:
        ids = tickets.tickets_of_publication(conn, publication_id)
    expected = len(ids) * len(PATHS)
    if not ids:
        raise RuntimeError(f"{last.name} created no ticket for the watched registries; figure 5 needs some")
    receiver.reset()
    split: dict[str, float] = {}

    def subject() -> tuple[int, int, list[notify.DeliveryResult]]:
        start = time.perf_counter()
        renders = size = 0
        with engine.connect() as conn:
            found = tickets.list_tickets(conn, ids=tickets.tickets_of_publication(conn, publication_id))
            for ticket in found:  # every format of a ticket from one view, as the ticket page and notify do
                texts = render.render_formats(conn, settings, ticket, FORMATS)
                size += sum(len(text) for text in texts.values())
                renders += len(texts)
        rendered = time.perf_counter()
        delivered = notify.deliver_due(engine, settings)
        split["render"], split["deliver"] = rendered - start, time.perf_counter() - rendered
        return renders, size, delivered

    seconds, loads, (renders, size, delivered) = sandwich(lambda: json.loads(last.data), subject)
    states = [r.state for r in delivered]
    if states.count("sent") != expected or len(states) != expected:
        raise RuntimeError(f"expected {expected} messages sent, got {states} ({[r.error for r in delivered][:3]})")
    got = receiver.count()
    if got != expected:
        raise RuntimeError(f"the receiver got {got} messages, expected {expected}")
    refs = {title.split("]", 1)[0] + "]" for title in receiver.titles}
    if refs != {f"[watcher ticket {i}]" for i in ids}:
        raise RuntimeError(f"the receiver got messages for {sorted(refs)}, expected tickets {ids}")
    with engine.connect() as conn:
        held = sum(1 for t in tickets.list_tickets(conn, ids=ids) if t.held)
    return Run(ratio=seconds / loads, seconds=seconds, loads_seconds=loads, render_seconds=split["render"],
               deliver_seconds=split["deliver"], tickets=len(ids), messages=got, renders=renders,
               rendered_bytes=size, posted_bytes=receiver.bytes, held=held)


def files_for(data: Path, quick: bool) -> list[RealFile]:
    dates = QUICK_DATES if quick else DATES
    by_date = {f.date: f for f in read_files(data / "public")}
    missing = [d for d in dates if d not in by_date]
    if missing:
        raise FileNotFoundError(f"figure 5 needs the Public files of {', '.join(missing)} in {data / 'public'}")
    return [by_date[d] for d in dates]


def measure(backends: Backends, data: Path, quick: bool, repeat: int, log) -> list[Figure]:
    try:
        files = files_for(data, quick)
    except FileNotFoundError as exc:
        return [Figure("5", TITLE, "-", "-", status="PENDING", note=f"skipped: {exc}")]
    receiver = Receiver()
    try:
        settings = settings_for(receiver)
        notify.destinations(settings)  # apprise's plugin registry is loaded once per process, as in the daemon
        runs = backends.alternate(
            repeat, lambda database: run_once(database, files, settings, receiver),
            lambda run: (f"{run.tickets} tickets, {run.messages} messages, "
                         f"render {run.render_seconds * 1000:.0f} ms + deliver {run.deliver_seconds * 1000:.0f} ms "
                         f"= {run.ratio:.2f}× json.loads"),
            log)
    finally:
        receiver.close()
    return figures(runs, files)


TITLE = "Render all tickets of a publication + deliver to a local json:// receiver ÷ json.loads"


def figures(runs: dict[str, list[Run]], files: Sequence[RealFile]) -> list[Figure]:
    result = []
    for backend, reps in runs.items():
        if not reps:
            continue
        first = reps[0]

        def med(attr: str) -> float:
            return statistics.median(getattr(r, attr) for r in reps)

        note = (f"{files[-1].date}: {first.tickets} tickets ({first.held} held) × {len(FORMATS)} formats rendered, "
                f"{first.messages} messages to {len(PATHS)} json:// destinations; median render "
                f"{med('render_seconds') * 1000:.0f} ms + deliver {med('deliver_seconds') * 1000:.0f} ms "
                f"({med('deliver_seconds') / first.messages * 1000:.1f} ms/message); json.loads "
                f"{med('loads_seconds') * 1000:.0f} ms")
        result.append(Figure(
            "5", TITLE, backend, "ratio", Summary.of([r.ratio for r in reps]), TARGET, note=note,
            extra={
                "publication": files[-1].name, "files_imported": [f.name for f in files],
                "registries": [{"name": r.name, "regions": list(r.regions), "data_endpoint": r.data_endpoint}
                               for r in REGISTRIES],
                "destinations": len(PATHS), "formats": list(FORMATS),
                "tickets": first.tickets, "held": first.held, "messages": first.messages, "renders": first.renders,
                "rendered_bytes": first.rendered_bytes, "posted_bytes": first.posted_bytes,
                "seconds": Summary.of([r.seconds for r in reps]).as_dict(),
                "render_seconds": Summary.of([r.render_seconds for r in reps]).as_dict(),
                "deliver_seconds": Summary.of([r.deliver_seconds for r in reps]).as_dict(),
                "loads_seconds": Summary.of([r.loads_seconds for r in reps]).as_dict(),
            },
        ))
    return result
