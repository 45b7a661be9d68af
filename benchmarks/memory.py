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
DAEMON_TARGET_BYTES = 120 * 1024 * 1024


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


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _daemon_at_rest(url: str, public_dir: Path, log) -> int:
    """Start ``watcher run`` on the newest Public file, wait for its first run, rest, read VmRSS."""
    import signal
    import time

    import sqlalchemy as sa

    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "WATCHER_DATABASE_URL": url,
        "WATCHER_SOURCE_URL": public_dir.resolve().as_uri(),
        "WATCHER_CLOUDS": "public",
        "WATCHER_SCHEDULE": "0 0 1 1 *",  # the catch-up at start is the only run
    })
    process = subprocess.Popen([sys.executable, "-m", "watcher.cli", "run"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {process.stderr.read()[-2000:]}")
            try:
                with engine.connect() as conn:
                    done = conn.execute(sa.text("SELECT count(*) FROM daemon_runs WHERE finished_at IS NOT NULL")).scalar()
            except sa.exc.SQLAlchemyError:
                done = 0  # the schema is not there yet
            if done:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the daemon's first run did not finish within 300 s")
        time.sleep(5)  # at rest: the run is over, the scheduler waits
        return _rss_bytes(process.pid)
    finally:
        engine.dispose()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def measure_daemon(backends: Backends, public_dir: Path, log) -> list[Figure]:
    """Figure 7b: resident memory of ``watcher run`` after its first run imported the newest Public file."""
    figures = []
    for backend in backends.names:
        with backends.fresh(backend) as database:
            rss = _daemon_at_rest(database.url, public_dir, log)
        log(f"  daemon at rest on {backend}: {rss / 2**20:.0f} MiB")
        figures.append(Figure(
            "7b", "Daemon memory at rest (VmRSS 5 s after its first run imported the newest Public file)", backend,
            "bytes", Summary.of([rss]), DAEMON_TARGET_BYTES, strict=True,
        ))
    return figures


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
