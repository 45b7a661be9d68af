"""cProfile of one incremental import: where the time of a weekly import goes.

``python -m benchmarks.profile [--backend sqlite] [--week 20251006] [--top 30]``
imports the Public files up to the one before ``--week`` (untimed) into a fresh
database, then profiles the import of that week and prints the top functions
by own time and by cumulative time.

``python -m benchmarks.profile --tickets [--backend sqlite]`` profiles the timed
part of figure 5 instead: rendering every ticket of the 20251028 publication in
every format and delivering them to a local json:// receiver.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

from .common import DEFAULT_DATA, DEFAULT_POSTGRES_URL, Backends, read_files, use_repo_migrations, workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--week", default="20250811", help="date of the Public file to profile (YYYYMMDD)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tickets", action="store_true", help="profile figure 5 (render + deliver) instead")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    use_repo_migrations()
    from watcher import store

    if args.tickets:
        return _tickets(args)
    files = read_files(DEFAULT_DATA / "public")
    index = next((i for i, f in enumerate(files) if f.date == args.week), None)
    if not index:
        raise SystemExit(f"--week must be the date of a Public file after the first: {[f.date for f in files[1:]]}")
    with workdir() as scratch:
        backends = Backends([args.backend], scratch, args.postgres_url)
        try:
            with backends.fresh(args.backend) as database:
                for file in files[:index]:
                    store.import_bytes(database.engine, file.data, file.name)
                target = files[index]
                profiler = cProfile.Profile()
                profiler.enable()
                result = store.import_bytes(database.engine, target.data, target.name)
                profiler.disable()
        finally:
            backends.close()
    print(f"{target.name} on {args.backend}: {result.outcome}, {len(result.changed_tags)} tags changed")
    _print(profiler, args.top)
    return 0


def _print(profiler: cProfile.Profile, top: int) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(top)
        print(f"--- by {order}")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


def _tickets(args: argparse.Namespace) -> int:
    from watcher import notify, render, tickets

    from . import delivery

    files = delivery.files_for(DEFAULT_DATA, quick=False)
    receiver = delivery.Receiver()
    settings = delivery.settings_for(receiver)
    notify.destinations(settings)
    try:
        with workdir() as scratch:
            backends = Backends([args.backend], scratch, args.postgres_url)
            try:
                with backends.fresh(args.backend) as database:
                    for file in files:
                        delivery._import(database, settings, file)
                    with database.engine.connect() as conn:
                        found = tickets.list_tickets(conn)
                    parts = {}
                    for part in ("render", "deliver"):
                        profiler = cProfile.Profile()
                        profiler.enable()
                        if part == "render":
                            for ticket in found:
                                for fmt in delivery.FORMATS:
                                    render.render(settings, fmt, tickets.view(ticket))
                        else:
                            sent = notify.deliver_due(database.engine, settings)
                        profiler.disable()
                        parts[part] = profiler
            finally:
                backends.close()
    finally:
        receiver.close()
    print(f"{files[-1].name} on {args.backend}: {len(found)} tickets × {len(delivery.FORMATS)} formats; "
          f"{len(sent)} messages, {receiver.count()} received")
    for part, profiler in parts.items():
        print(f"=== {part}")
        _print(profiler, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
