"""Figure 8: a long synthetic history imported week by week.

Each week the three clouds' synthetic files are generated (untimed), then
``json.loads`` of the three, the three imports, and ``json.loads`` again are
timed; a week's normalised cost is import ÷ loads. The figure compares the
median normalised cost of the last weeks with that of the first weeks (the
initial full import, week 0, is left out).
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
from typing import Any, Sequence

import orjson

from watcher import store

from .common import Backends, Figure, RealFile, Summary, timed
from .synthetic import Generator

CLOUDS = ("public", "usgov", "china")
WINDOW = 50
SIZE_TARGET = 300 * 1024 * 1024


def run(backends: Backends, backend: str, bases: dict[str, RealFile], weeks: int, seed: int, log) -> dict[str, Any]:
    generators = {}
    for cloud, base in bases.items():
        start = dt.datetime.strptime(base.date, "%Y%m%d").date()
        generators[cloud] = Generator(orjson.loads(base.data), cloud, start, seed).weeks(weeks)
    rows: list[dict[str, Any]] = []
    with backends.fresh(backend) as database:
        engine = database.engine
        for week in range(weeks):
            files = [next(gen) for gen in generators.values()]

            def loads() -> None:
                for f in files:
                    json.loads(f.data)

            def imports() -> None:
                for f in files:
                    result = store.import_bytes(engine, f.data, f.name)
                    if result.outcome != "imported":
                        raise RuntimeError(f"synthetic {f.name}: {result.outcome} ({result.reason})")

            before, _ = timed(loads)
            seconds, _ = timed(imports)
            after, _ = timed(loads)
            loads_seconds = (before + after) / 2
            rows.append({
                "week": week, "seconds": seconds, "loads_seconds": loads_seconds, "ratio_loads": seconds / loads_seconds,
                "changed_tags": sum(f.changed_tags for f in files), "added": sum(f.added for f in files),
                "removed": sum(f.removed for f in files), "new_tags": sum(f.new_tags for f in files),
                "withdrawn": sum(f.withdrawn for f in files),
            })
            if week and week % 50 == 0:
                log(f"  synthetic week {week}/{weeks} on {backend}: {seconds * 1000:.0f} ms, "
                    f"{seconds / loads_seconds:.2f}× json.loads")
        size = database.size()
    return {"rows": rows, "size": size}


def figures(backend: str, outcome: dict[str, Any], weeks: int) -> list[Figure]:
    rows = outcome["rows"][1:]  # week 0 is the first, full import
    window = max(1, min(WINDOW, len(rows) // 2))
    first, last = rows[:window], rows[-window:]
    normalised = statistics.median(r["ratio_loads"] for r in last) / statistics.median(r["ratio_loads"] for r in first)
    raw = statistics.median(r["seconds"] for r in last) / statistics.median(r["seconds"] for r in first)
    first_ms = statistics.median(r["seconds"] for r in first) * 1000
    last_ms = statistics.median(r["seconds"] for r in last) * 1000
    churn = (f"median week: {statistics.median(r['changed_tags'] for r in rows):.0f} tags changed, "
             f"+{statistics.median(r['added'] for r in rows):.0f}/-{statistics.median(r['removed'] for r in rows):.0f} "
             f"prefixes (3 clouds)")
    return [
        Figure("8a", f"Synthetic {weeks} weeks: import time of the last {window} ÷ first {window} weeks",
               backend, "ratio", Summary(normalised, normalised, normalised, 1), 1.3,
               note=f"each week ÷ its json.loads; medians {first_ms:.0f} ms → {last_ms:.0f} ms "
                    f"(raw ratio {raw:.2f}); {churn}",
               extra={"window": window, "first_ms": first_ms, "last_ms": last_ms, "raw_ratio": raw}),
        Figure("8b", f"Synthetic {weeks} weeks: final database size", backend, "bytes",
               Summary.of([outcome["size"]]), SIZE_TARGET, strict=True),
    ]


def measure(backends: Backends, names: Sequence[str], bases: dict[str, RealFile], weeks: int, seed: int,
            log) -> tuple[list[Figure], dict[str, Any]]:
    result_figures: list[Figure] = []
    details: dict[str, Any] = {}
    for backend in names:
        outcome = run(backends, backend, bases, weeks, seed, log)
        result_figures.extend(figures(backend, outcome, weeks))
        details[backend] = outcome
    return result_figures, details
