"""Figure 7: peak memory of importing files, measured in a child process.

The child (``python -m benchmarks.memory URL FILE...``) reads each gzipped file
in turn, imports it and prints its peak resident set size (VmHWM) as JSON; a
second child that only imports the modules and ``json.loads`` one file gives
the floor to compare with.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .common import REPO, Backends, Figure, Summary

TARGET_BYTES = 250 * 1024 * 1024


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM from /proc, or ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(argv: Sequence[str]) -> int:
    from .common import use_repo_migrations

    use_repo_migrations()
    from watcher import db, store
    from watcher.parse import read_file_bytes

    mode, url, *paths = argv
    if mode == "baseline":
        json.loads(read_file_bytes(Path(paths[0])))
    else:
        engine = db.open_database(url)
        for path in paths:
            data = read_file_bytes(Path(path))
            store.import_bytes(engine, data, Path(path).name.removesuffix(".gz"))
            del data
        engine.dispose()
    print(json.dumps({"peak_rss": peak_rss_bytes()}))
    return 0


def _run_child(mode: str, url: str, paths: Sequence[Path]) -> dict[str, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode, url, *map(str, paths)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(backends: Backends, paths: Sequence[Path], log) -> list[Figure]:
    figures = []
    baseline = _run_child("baseline", "-", paths[:1])
    for backend in backends.names:
        with backends.fresh(backend) as database:
            result = _run_child("import", database.url, paths)
        log(f"  peak memory importing {len(paths)} files on {backend}: {result['peak_rss'] / 2**20:.0f} MiB")
        figures.append(Figure(
            "7a", f"Peak memory importing all {len(paths)} Public files (child process, VmHWM)", backend, "bytes",
            Summary.of([result["peak_rss"]]), TARGET_BYTES, strict=True,
            note=f"a child that only json.loads one file peaks at {baseline['peak_rss'] / 2**20:.0f} MiB",
        ))
    return figures


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
