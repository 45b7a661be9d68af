"""Figure 10: backfill of the synthetic five-year history into an empty database, as ``watcher import`` does it.

The synthetic weeks of the three clouds (``synthetic.Generator``, untimed), shaped
like the real 2019–2025 archive (``synthetic.like_the_archive``: busy churn for
the first 80% of the weeks, the old layout for the first 36%), are written as
``.json`` files into one scratch folder. Timed side by side:

* the baseline: ``json.loads(path.read_bytes())`` of every file in the folder;
* the backfill: ``backfill.Backfill(...).run(backfill.find_files([folder]))``,
  the library job behind ``watcher import FOLDER`` (files found and ordered,
  read, hashed, imported oldest first per cloud, one transaction each; the
  ticket hooks run, with no watches configured);
* the baseline again; the figure is backfill ÷ mean baseline.

10a: three clouds into SQLite (target ≤ 2.0) and PostgreSQL (≤ 3.0).
10b: the SQLite file after a backfill of the Public cloud's weeks alone (target ≤ 64 MB at 260 weeks).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Sequence

import orjson

from watcher import backfill
from watcher.settings import Settings

from .common import Backends, Figure, RealFile, Summary, sandwich
from .synthetic import Generator, like_the_archive

CLOUDS = ("public", "usgov", "china")
TARGETS = {"sqlite": 2.0, "postgresql": 3.0}
SIZE_TARGET = 64 * 1024 * 1024
TITLE = "Backfill of the synthetic history (three clouds) into an empty database ÷ json.loads of the same files"


def write_history(folder: Path, bases: dict[str, RealFile], weeks: int, seed: int) -> list[Path]:
    """The synthetic weeks of each cloud in ``bases``, as ServiceTags_<Cloud>_<date>.json files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cloud, base in bases.items():
        start = dt.datetime.strptime(base.date, "%Y%m%d").date()
        shape = like_the_archive(start, weeks)
        for synthetic in Generator(orjson.loads(base.data), cloud, start, seed, **shape).weeks(weeks):
            path = folder / synthetic.name
            path.write_bytes(synthetic.data)
            paths.append(path)
    return paths


def _loads(paths: Sequence[Path]) -> None:
    for path in paths:
        json.loads(path.read_bytes())


def run_backfill(backends: Backends, backend: str, folder: Path, paths: Sequence[Path]) -> dict[str, Any]:
    """One timed backfill of ``folder`` into a fresh database: seconds, baseline seconds, size, outcome counts."""
    with backends.fresh(backend) as database:
        settings = Settings(database_url=database.url)
        engine = database.engine

        def job() -> backfill.BackfillReport:
            runner = backfill.Backfill(engine, settings)
            return runner.run(backfill.find_files([folder]))

        seconds, loads_seconds, report = sandwich(lambda: _loads(paths), job)
        if report.failed or report.count("imported") != len(paths):
            raise RuntimeError(f"synthetic backfill on {backend}: {report.summary()}")
        return {"seconds": seconds, "loads_seconds": loads_seconds, "files": len(paths),
                "bytes": sum(p.stat().st_size for p in paths), "size": database.size()}


def measure(backends: Backends, names: Sequence[str], bases: dict[str, RealFile], weeks: int, seed: int,
            scratch: Path, log) -> list[Figure]:
    folder = scratch / "backfill-history"
    log(f"figure 10: writing {weeks} synthetic weeks of {', '.join(bases)} (untimed)")
    paths = write_history(folder, bases, weeks, seed)
    public_folder = scratch / "backfill-public"
    public_paths = write_history(public_folder, {"public": bases["public"]}, weeks, seed)
    result = []
    for backend in names:
        log(f"figure 10a: backfill of {len(paths)} files on {backend}")
        outcome = run_backfill(backends, backend, folder, paths)
        ratio = outcome["seconds"] / outcome["loads_seconds"]
        result.append(Figure(
            "10a", f"{TITLE} ({weeks} weeks)", backend, "ratio", Summary(ratio, ratio, ratio, 1), TARGETS[backend],
            note=f"{outcome['files']} files, {outcome['bytes'] / 1e6:.0f} MB: backfill {outcome['seconds']:.1f} s, "
                 f"json.loads {outcome['loads_seconds']:.1f} s",
            extra=outcome,
        ))
    if "sqlite" in names:
        log(f"figure 10b: backfill of {len(public_paths)} Public files on sqlite (size)")
        outcome = run_backfill(backends, "sqlite", public_folder, public_paths)
        target = SIZE_TARGET * weeks / 260  # the target scales with the weeks (64 MB at 260)
        result.append(Figure(
            "10b", f"SQLite file after a backfill of {weeks} weeks of the Public cloud", "sqlite", "bytes",
            Summary.of([outcome["size"]]), target,
            note=f"{outcome['seconds'] / outcome['loads_seconds']:.2f}× json.loads for the Public cloud alone",
            extra=outcome,
        ))
    return result
