"""``python -m benchmarks``: run every figure, print the table, write the JSON."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .common import (
    DEFAULT_DATA, DEFAULT_POSTGRES_URL, REPO, Backends, Figure, dumps, pending, read_files, use_repo_migrations, workdir,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
BACKENDS = ("sqlite", "postgresql")
QUICK_FILES, QUICK_WEEKS, QUICK_REPEAT = 3, 6, 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the watcher against baselines run side by side; print a table and write JSON.",
    )
    p.add_argument("--quick", action="store_true",
                   help=f"tiny input: the first {QUICK_FILES} Public files, {QUICK_WEEKS} synthetic weeks, "
                        f"{QUICK_REPEAT} repetition (unless given)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgresql")
    p.add_argument("--repeat", type=int, default=None, help="repetitions of each timed figure (default 5)")
    p.add_argument("--skip-synthetic", action="store_true", help="leave out the synthetic long history (figure 8)")
    p.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory child processes (figure 7)")
    p.add_argument("--skip-tickets", action="store_true",
                   help="leave out rendering and delivering a publication's tickets (figure 5)")
    p.add_argument("--skip-states", action="store_true",
                   help="leave out state list and rendering an AzureCloud-sized ticket (figure 9)")
    p.add_argument("--only", default=None,
                   help="comma-separated figure numbers to run (e.g. 5,9); the others are left out")
    p.add_argument("--weeks", type=int, default=None, help="weeks of synthetic history (default 260)")
    p.add_argument("--synthetic-backends", default="sqlite",
                   help="backends to import the synthetic history into (default sqlite; add postgresql if time allows)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic churn")
    p.add_argument("--skip-backfill", action="store_true",
                   help="leave out the backfill of the synthetic history into an empty database (figure 10)")
    p.add_argument("--backfill-backends", default=None,
                   help="backends to backfill the synthetic history into (default: --backends)")
    p.add_argument("--files", type=int, default=None, help="use only the first N Public files")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding public/, usgov/ and china/")
    p.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                   help="server to create a scratch schema on (dropped afterwards)")
    p.add_argument("--workdir", default=None, help="parent folder for scratch SQLite files (default: system temp)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    return p


def _split(value: str) -> list[str]:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    repeat = args.repeat or (QUICK_REPEAT if args.quick else 5)
    weeks = args.weeks or (QUICK_WEEKS if args.quick else 260)
    limit = args.files or (QUICK_FILES if args.quick else None)
    names = _split(args.backends)
    synthetic_names = [n for n in _split(args.synthetic_backends)]
    backfill_names = _split(args.backfill_backends) if args.backfill_backends else names
    if args.only is not None:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        known = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}
        if not wanted or wanted - known:
            raise SystemExit(f"--only takes figure numbers from {', '.join(sorted(known, key=int))}")
        args.skip_tickets |= "5" not in wanted
        args.skip_states |= "9" not in wanted
        args.skip_memory |= "7" not in wanted
        args.skip_synthetic |= "8" not in wanted
        args.skip_backfill |= "10" not in wanted
        skip_real = not wanted & {"1", "2", "3", "4", "6"}
    else:
        skip_real = False
    if repeat < 1 or weeks < 3:
        raise SystemExit("--repeat must be at least 1 and --weeks at least 3")

    migrations = use_repo_migrations()
    import watcher

    from . import delivery, history, memory, realfiles, states
    from .report import growth_table, table

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    public = read_files(args.data / "public", limit)
    if len(public) < 2:
        raise SystemExit("need at least two Public files")
    figures: list[Figure] = []
    document: dict[str, Any] = {}
    with workdir(args.workdir) as scratch:
        extra_names = [n for n in synthetic_names + backfill_names if n not in names]
        backends = Backends(names + list(dict.fromkeys(extra_names)), scratch, args.postgres_url)
        backends.names = names
        try:
            meta = {
                "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "quick": args.quick, "repeat": repeat, "backends": names, "weeks": weeks,
                "synthetic_backends": [] if args.skip_synthetic else synthetic_names, "seed": args.seed,
                "public_files": [f.name for f in public],
                "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                "watcher_package": str(Path(watcher.__file__).parent), "migrations": migrations,
                "versions": {b: backends.server_version(b) for b in dict.fromkeys(names + synthetic_names)},
                "baseline": "json.loads (stdlib) of the same decompressed bytes, timed right before and after",
            }
            if not skip_real:
                log(f"figures 1-4, 6: {len(public)} Public files × {repeat} repetitions on {', '.join(names)}")
            if skip_real:
                real = {"figures": [], "growth": {}}
            else:
                real = realfiles.measure(backends, public, repeat, log)
            figures.extend(real["figures"])
            if not args.skip_tickets:
                log(f"figure 5: tickets rendered and delivered to json:// × {repeat} repetitions on {', '.join(names)}")
                figures.extend(delivery.measure(backends, args.data, args.quick, repeat, log))
            else:
                figures.append(pending("5", delivery.TITLE, "skipped (--skip-tickets)"))
            if not args.skip_states:
                log(f"figure 9: state list of 20 watches + an AzureCloud-sized ticket in every format × {repeat}")
                figures.extend(states.measure(backends, args.data, repeat, log))
            else:
                figures.append(pending("9", states.TITLE, "skipped (--skip-states)"))
            if not args.skip_memory:
                log("figure 7: peak memory")
                paths = sorted((args.data / "public").glob("ServiceTags_*.json.gz"))[: len(public)]
                figures.extend(memory.measure(backends, paths, log))
                figures.extend(memory.measure_daemon(backends, args.data / "public", log))
            else:
                figures.append(pending("7b", "Daemon memory at rest", "skipped (--skip-memory)"))
            synthetic: dict[str, Any] = {}
            if not args.skip_synthetic:
                log(f"figure 8: {weeks} synthetic weeks on {', '.join(synthetic_names)}")
                bases = {cloud: read_files(args.data / cloud)[-1] for cloud in history.CLOUDS}
                synthetic_figures, synthetic = history.measure(backends, synthetic_names, bases, weeks, args.seed, log)
                figures.extend(synthetic_figures)
            else:
                figures.append(pending("8", "Synthetic long history", "skipped (--skip-synthetic)"))
            if not args.skip_backfill:
                from . import backfill as backfill_figure

                bases = {cloud: read_files(args.data / cloud)[-1] for cloud in backfill_figure.CLOUDS}
                figures.extend(backfill_figure.measure(backends, backfill_names, bases, weeks, args.seed, scratch, log))
            else:
                figures.append(pending("10", "Backfill of the synthetic history", "skipped (--skip-backfill)"))
        finally:
            backends.close()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    figures.sort(key=lambda f: (_order(f.id), f.id, BACKENDS.index(f.backend) if f.backend in BACKENDS else 9))
    document = {
        "meta": meta,
        "figures": [f.as_dict() for f in figures],
        "growth": real["growth"],
        "synthetic": {b: {"size": o["size"], "weeks": o["rows"]} for b, o in synthetic.items()},
    }
    printed = table(figures)
    print(printed)
    print()
    print(growth_table(real["growth"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(document) + "\n")
    failed = sum(1 for f in figures if f.status == "FAIL")
    print(f"\n{sum(1 for f in figures if f.status == 'PASS')} PASS, {failed} FAIL, "
          f"{sum(1 for f in figures if f.status == 'PENDING')} pending; {meta['seconds']} s; JSON: {args.out}")
    return 0


def _order(figure_id: str) -> int:
    """The figure's number: its leading digits (4a1, a variant of 4a, sorts with 4, not as 41)."""
    digits = re.match(r"\d*", figure_id).group()
    return int(digits or 99)
