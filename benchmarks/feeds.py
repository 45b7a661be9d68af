"""Feeds: ``watcher serve`` against nginx serving the exported file, same load generator, same run.

    python -m benchmarks.feeds [--seconds 3] [--clients 50] [--prefixes 1000] [--db URL] [--out FILE]

A watch with a 1,000-prefix approved list; ``watcher serve`` (tokens on: each answer authenticates and records
the fetch) and nginx (the README's configuration over ``watcher feeds export``) on loopback. The load generator
(asyncio, one process) keeps ``--clients`` keep-alive connections busy for ``--seconds`` per case and counts
complete answers: 200s (plain GET) and 304s (``If-Modified-Since``, which both answer; the watcher's
``If-None-Match`` 304s too). Target: the watcher's answers per second >= 0.25x nginx's. Then the time from an
approval to the served feed's new ETag and to the export folder's new file (the daemon's exporter), target < 1 s.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.factory import build_file, file_name  # noqa: E402
from watcher import db, feed_consumers, feeds, pipeline, review  # noqa: E402
from watcher.settings import FeedSettings, RegistryWatch, Settings  # noqa: E402

LAUNCHER = "import sys; from watcher.cli import main; sys.exit(main(prog_name='watcher'))"


def prefixes(count: int, offset: int = 0) -> list[str]:
    """``count`` /24s with a gap after each (nothing collapses), in public space (private space is held as bogons)."""
    return [f"20.{(i + offset) // 100}.{2 * ((i + offset) % 100)}.0/24" for i in range(count)]


def publication(count: int, extra: int = 0) -> dict[str, list[str]]:
    return {"AzureContainerRegistry.EastUS2": ["20.250.0.0/24"], "Storage.EastUS2": prefixes(count + extra)}


async def _client(host: str, port: int, request: bytes, stop_at: float, counts: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if match and status != 304:
                await reader.readexactly(int(match[1]))
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


def load(url: str, path: str, clients: int, seconds: float, headers: dict[str, str]) -> dict[str, Any]:
    """Answers per second with ``clients`` keep-alive connections for ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    counts: dict[int, int] = {}

    async def run() -> float:
        started = time.monotonic()
        await asyncio.gather(*(_client(host, int(port), request, started + seconds, counts) for _ in range(clients)))
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    return {"per_second": round(sum(counts.values()) / elapsed, 1), "statuses": counts, "seconds": round(elapsed, 2)}


def nginx(folder: Path, work: Path, port: int) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    server = feeds.nginx_config(str(folder), listen=f"127.0.0.1:{port}")
    (work / "nginx.conf").write_text(
        f"daemon off;\nuser root;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n"
        f"  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};\n"
        f"  uwsgi_temp_path {work}; scgi_temp_path {work};\n{server}}}\n")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen([binary, "-p", str(work), "-c", str(work / "nginx.conf")])


def wait_up(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="feeds-bench-"))
    url = args.db or f"sqlite:///{work / 'watcher.db'}"
    settings = Settings(database_url=url, registries=(RegistryWatch("bench", ("eastus2",)),),
                        feeds=FeedSettings(export_dir=str(work / "export")))
    engine = db.open_database(url)
    processes: list[subprocess.Popen] = []
    exporter = None
    try:
        pipeline.import_publication(engine, settings, build_file(publication(args.prefixes)), file_name("20250101"))
        review.transition(engine, 1, "approve", "bench")
        _, token = feed_consumers.add(engine, "fw-bench", [], ["bench"], dt.datetime.now(dt.timezone.utc))
        exporter = feeds.Exporter(settings, engine, lambda: dt.datetime.now(dt.timezone.utc), interval=0.1)
        exporter.start()
        config = work / "watcher.toml"
        config.write_text('[[registries]]\nname = "bench"\nregions = ["eastus2"]\n[web]\nmax_connections = 1000\n')
        env = {"PYTHONPATH": str(REPO), "WATCHER_DATABASE_URL": url, "WATCHER_CONFIG": str(config),
               "PATH": "/usr/bin:/bin"}
        served = subprocess.Popen([sys.executable, "-c", LAUNCHER, "serve", "--port", "0"], env=env,
                                  stdout=subprocess.PIPE, text=True)
        processes.append(served)
        ours = served.stdout.readline().strip().removeprefix("listening on ")
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            nginx_port = probe.getsockname()[1]
        processes.append(nginx(work / "export", work / "nginx", nginx_port))
        theirs = f"http://127.0.0.1:{nginx_port}"
        wait_up(theirs)
        auth = {"Authorization": f"Bearer {token}"}
        first = httpx.get(f"{ours}/feeds/bench.txt", headers=auth)
        assert first.status_code == 200 and first.content == (work / "export" / "bench.txt").read_bytes()
        entries = int(first.headers["x-feed-entries"])
        since = {"If-Modified-Since": first.headers["last-modified"]}
        results: dict[str, Any] = {"entries": entries, "clients": args.clients, "seconds": args.seconds}
        cases = {
            "200": ({**auth}, {}),
            "304": ({**auth, **since}, since),
        }
        for name, (our_headers, their_headers) in cases.items():
            results[f"watcher_{name}"] = load(ours, "/feeds/bench.txt", args.clients, args.seconds, our_headers)
            results[f"nginx_{name}"] = load(theirs, "/feeds/bench.txt", args.clients, args.seconds, their_headers)
            results[f"ratio_{name}"] = round(results[f"watcher_{name}"]["per_second"]
                                             / results[f"nginx_{name}"]["per_second"], 3)
        results["watcher_304_if_none_match"] = load(ours, "/feeds/bench.txt", args.clients, args.seconds,
                                                    {**auth, "If-None-Match": first.headers["etag"]})
        # An approval reaching the served feed and the export folder.
        pipeline.import_publication(engine, settings, build_file(publication(args.prefixes, extra=1)),
                                    file_name("20250108"))
        started = time.monotonic()
        review.transition(engine, 2, "approve", "bench")
        served_at = exported_at = None
        with httpx.Client(headers=auth) as client:
            while (served_at is None or exported_at is None) and time.monotonic() - started < 10:
                if served_at is None and client.get(f"{ours}/feeds/bench.txt").headers["etag"] != first.headers["etag"]:
                    served_at = time.monotonic() - started
                if exported_at is None and (work / "export" / "bench.txt").read_bytes() != first.content:
                    exported_at = time.monotonic() - started
                time.sleep(0.005)
        results["state_change_to_served_seconds"] = served_at and round(served_at, 3)
        results["state_change_to_export_seconds"] = exported_at and round(exported_at, 3)
        results["pass"] = (results["ratio_200"] >= 0.25 and results["ratio_304"] >= 0.25
                           and served_at is not None and served_at < 1 and exported_at is not None and exported_at < 1)
        print(json.dumps(results, indent=2))
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0 if results["pass"] else 1
    finally:
        if exporter is not None:
            exporter.stop()
        for process in processes:
            process.terminate()
            process.wait(10)
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
