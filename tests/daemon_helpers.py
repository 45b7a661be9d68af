"""The daemon as a real process: start ``watcher run``, read its JSON log, signal it; a json:// receiver.

The process imports this checkout's ``watcher`` (PYTHONPATH), whose migrations and templates live inside it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from tests.conftest import REPO
from tests.httpstub import Origin, details_page, real_file, reply
from watcher import pipeline
from watcher.settings import Settings

CHINA_OLD = "ServiceTags_China_20260713.json"
CHINA_NEW = "ServiceTags_China_20260720.json"
#: This checkout's CLI (PYTHONPATH), whatever checkout the package was installed from.
LAUNCHER = "import sys; from watcher.cli import main; sys.exit(main(prog_name='watcher'))"


def watcher_command(*args: str) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, *args]


def base_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_") and "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", WATCHER_DATABASE_URL=db_url)
    env.update(extra)
    return env


def today_name() -> str:
    """A China file named for today: fresh, so staleness does not mix into what a test looks at."""
    return f"ServiceTags_China_{dt.datetime.now(dt.timezone.utc):%Y%m%d}.json"


def serve_new_china_file(origin: Origin, *, before: list | None = None) -> str:
    """The download page lists today's China file (the real 2026-07-20 content); returns the page URL.

    ``before``: responders answering the page first (errors, say); the page repeats after them.
    """
    name = today_name()
    origin.route(f"/files/{name}", reply(real_file(CHINA_NEW)))
    page = reply(details_page([origin.url(f"/files/{name}")]).encode(), content_type="text/html; charset=utf-8")
    origin.route("/details", *(before or []), page)
    return origin.url("/details")


def seed_old_china(engine: sa.Engine) -> None:
    pipeline.import_publication(engine, Settings(clouds=("china",)), real_file(CHINA_OLD), CHINA_OLD)


def write_config(path: Path, *, registries: bool = True, **daemon: Any) -> Path:
    """Config for the China cloud: one registry whose tag changes between the two real files."""
    lines = ['clouds = ["china"]']
    if registries:
        lines += ["[[registries]]", 'name = "contoso"', 'cloud = "china"', 'regions = ["chinanorth3"]',
                  'tags = ["AzureCloud.chinanorth3"]']
    lines += ["[fetch]", "retries = 0", "timeout_seconds = 5.0", "deadline_seconds = 20.0",
              f'quarantine_dir = "{path.parent / "quarantine"}"']
    lines += ["[notify]", "backoff_seconds = 1.0"]
    values = {"run_deadline_seconds": 0.5, "retry_backoff_seconds": 1.0, **daemon}
    lines += ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """``watcher run`` in a subprocess with JSON logs collected from stderr."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path | None = None, prefix: list[str] | None = None,
                 command: list[str] | None = None):
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        argv = command or watcher_command("--log-format", "json", "run", *args)
        self.process = subprocess.Popen((prefix or []) + argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return [e for e in list(self.lines) if event is None or e.get("event") == event]

    def wait_for(self, predicate: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"waited {seconds:.0f} s for {what}; daemon exit {self.process.poll()}; log:\n"
                             + "".join(self.raw[-40:]))

    def finished_runs(self) -> list[dict[str, Any]]:
        return [e for e in self.events("run") if e["message"].startswith("run finished")]

    def terminate(self, seconds: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds until exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(seconds)
        elapsed = time.monotonic() - started
        self._reader.join(2)
        return code, elapsed

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def log_text(self) -> str:
        return "".join(self.raw)


def table_count(engine: sa.Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} {where}")).scalar_one()


def rows(engine: sa.Engine, query: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(query))]


class JsonReceiver:
    """An HTTP server recording each JSON body apprise's json:// posts to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                bodies.append(json.loads(data))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, secret: str = "t0kenSecret") -> str:
        return f"json://user:{secret}@127.0.0.1:{self.port}/hook"

    def titles(self) -> list[str]:
        return [b.get("title", "") for b in list(self.bodies)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
