"""cProfile of one incremental import: where the time of a weekly import goes.

``python -m benchmarks.profile [--backend sqlite] [--week 20251006] [--top 30]``
imports the Public files up to the one before ``--week`` (untimed) into a fresh
database, then profiles the import of that week and prints the top functions
by own time and by cumulative time.
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
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    use_repo_migrations()
    from watcher import store

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
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(args.top)
        print(f"--- by {order}")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
