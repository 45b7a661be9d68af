"""Figure 9: ``state list`` for 20 watches, and every format of an AzureCloud-sized ticket, ÷ json.loads.

Set-up per repetition and backend (untimed): a fresh database; the last two
real Public files imported with 19 registries and an extra-tags watch of
``AzureCloud`` (about 13,000 prefixes); the first file's baseline tickets
approved; the AzureCloud watch's change ticket of the second file approved.

Timed, between two runs of ``json.loads`` of the last file: the approved state
of every watch as ``state list --json`` and ``GET /api/v1/state`` write it
(``state.all_current``, ``to_json`` and the faces' ``jsontext.dumps``), and
``render.render_ticket`` of the AzureCloud ticket in every format from one view
(``render.render_formats``; snippets for the add phase, the larger one), after
one untimed warm-up render (templates compile once per process).

A repetition times ``ROUNDS`` such sandwiches in a row and keeps the median of
their ratios: one call takes ~15 ms, and on a machine shared with other jobs a
single one moved by a third either way (0.33–1.00 in one run of five).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from watcher import jsontext, pipeline, render, review, state, tickets
from watcher.models import utcnow
from watcher.settings import RegistryWatch, Settings

from .common import Backends, Database, Figure, RealFile, Summary, read_files, sandwich

TITLE = "state list of 20 watches + every format of an AzureCloud-sized ticket ÷ json.loads"
TARGET = 0.5
REGIONS = ("eastus", "eastus2", "westus2", "westeurope", "northeurope", "centralus", "uksouth", "germanywestcentral",
           "southcentralus", "westus3", "francecentral", "japaneast", "australiaeast", "canadacentral", "swedencentral",
           "koreacentral", "brazilsouth", "southeastasia", "eastasia")
REGISTRIES = tuple(RegistryWatch(f"contoso{i:02d}", (region,), data_endpoint=True) for i, region in enumerate(REGIONS))
FORMATS = (*render.TICKET_FORMATS, *render.RULE_FORMATS)
ROUNDS = 5


@dataclass
class Run:
    ratio: float            # the median of the rounds' ratios
    seconds: float          # the median round's seconds and json.loads seconds
    loads_seconds: float
    first_ratio: float      # the first round's ratio alone (the figure as one call measured it before)
    watches: int
    prefixes: int
    rendered_bytes: int


def settings() -> Settings:
    return Settings(registries=REGISTRIES, extra_tags=("AzureCloud",))


def azurecloud_ticket(engine: Any, files: Sequence[RealFile]) -> tuple[Settings, Any]:
    """The settings of the 20 watches and the live AzureCloud change ticket of the last two ``files``: every
    ticket of the first file approved, then the last one imported."""
    config = settings()
    pipeline.import_publication(engine, config, files[-2].data, files[-2].name)
    with engine.connect() as conn:
        for ticket in tickets.list_tickets(conn, "open"):
            review.transition(engine, ticket.id, "approve", "benchmark")
    pipeline.import_publication(engine, config, files[-1].data, files[-1].name)
    with engine.connect() as conn:
        live = [t for t in tickets.list_tickets(conn) if t.watch == "(extra tags)" and t.state in ("open", "hold")]
    if len(live) != 1:
        raise RuntimeError(f"{files[-1].name} made no AzureCloud ticket; figures 9 and the ticket page need one")
    return config, live[0]


def run_once(database: Database, files: Sequence[RealFile]) -> Run:
    engine = database.engine
    config, ticket = azurecloud_ticket(engine, files)
    if ticket.state == "hold":
        review.transition(engine, ticket.id, "release", "benchmark")
    review.transition(engine, ticket.id, "approve", "benchmark")

    def subject() -> tuple[str, int, int]:
        now = utcnow()
        with engine.connect() as conn:
            listed = jsontext.dumps([s.to_json(now) for s in state.all_current(conn)])
            found = tickets.get_ticket(conn, ticket.id)
            size = sum(len(text) for text in render.render_formats(conn, config, found, FORMATS, "add").values())
        return listed, sum(len(t.prefixes) for t in found.target.values()), size

    subject()  # templates compile once per process: the daemon and a warm CLI do not pay it per ticket
    rounds = [sandwich(lambda: json.loads(files[-1].data), subject) for _ in range(ROUNDS)]
    listed, prefixes, size = rounds[0][2]
    watches = len(json.loads(listed))  # checked after the timing: the faces do not read back what they wrote
    if watches != 20:
        raise RuntimeError(f"expected 20 watches with an approved state, got {watches}")
    seconds, loads, _ = sorted(rounds, key=lambda r: r[0] / r[1])[len(rounds) // 2]
    return Run(seconds / loads, seconds, loads, rounds[0][0] / rounds[0][1], watches, prefixes, size)


def measure(backends: Backends, data: Path, repeat: int, log) -> list[Figure]:
    files = read_files(data / "public")[-2:]
    runs = backends.alternate(
        repeat, lambda database: run_once(database, files),
        lambda run: (f"{run.watches} watches, {run.prefixes} prefixes, median of {ROUNDS} rounds "
                     f"{run.seconds * 1000:.0f} ms = {run.ratio:.2f}× json.loads (first round {run.first_ratio:.2f}×)"),
        log)
    result = []
    for backend, reps in runs.items():
        if not reps:
            continue
        loads = statistics.median(r.loads_seconds for r in reps)
        note = (f"{reps[0].watches} watches listed; the AzureCloud ticket ({reps[0].prefixes} prefixes) in "
                f"{len(FORMATS)} formats, {reps[0].rendered_bytes} bytes; median "
                f"{statistics.median(r.seconds for r in reps) * 1000:.0f} ms; json.loads {loads * 1000:.0f} ms; "
                f"median of {ROUNDS} rounds per repetition (first rounds alone: median "
                f"{statistics.median(r.first_ratio for r in reps):.2f})")
        result.append(Figure("9", TITLE, backend, "ratio", Summary.of([r.ratio for r in reps]), TARGET, note=note,
                             extra={"formats": list(FORMATS), "watches": reps[0].watches,
                                    "prefixes": reps[0].prefixes, "rounds": ROUNDS,
                                    "first_round_ratios": [r.first_ratio for r in reps]}))
    return result
