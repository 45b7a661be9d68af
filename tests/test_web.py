"""``watcher serve`` as a real process on a free port, asked with httpx: /healthz, /metrics, and the listener's
guarantees (loopback by default, read and idle timeouts, a connection limit, one log line per client reset)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.daemon_helpers import base_env, watcher_command
from tests.httpstub import free_port
from tests.test_health import parse_metrics
from watcher import health, web
from watcher.settings import Settings

LISTENING = re.compile(r"^listening on (?P<scheme>https?)://(?P<host>[0-9.]+):(?P<port>\d+)$")


class Served:
    """``watcher serve`` in a subprocess: its one stdout line, its JSON log lines, its threads."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(watcher_command("--log-format", "json", "serve", *args), env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready, f"no 'listening' line within 30 s; log:\n{self.log_text()}"
        self.first_line = self.process.stdout.readline().rstrip("\n")
        match = LISTENING.match(self.first_line)
        assert match, (self.first_line, self.log_text())
        self.host, self.port = match["host"], int(match["port"])
        self.url = f"{match['scheme']}://{self.host}:{self.port}"

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def log_text(self) -> str:
        return "".join(self.stderr)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stderr)]

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(15)
        rest = self.process.stdout.read()
        return code, rest


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text('clouds = ["china"]\n[daemon]\nschedule = "0 3 * * *"\n'
                    "[web]\nread_timeout_seconds = 1.0\nidle_timeout_seconds = 1.0\nmax_connections = 4\n")
    return path


@pytest.fixture
def served(db_url: str, config: Path) -> Iterator[Served]:
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config)), "--port", "0")
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def listening_addresses(port: int) -> set[str]:
    """The local addresses a socket listens on at ``port`` (from /proc/net/tcp, state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
    return found


def half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    return sock


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_serve_prints_one_line_and_answers_healthz_and_metrics_then_stops_on_sigterm(served: Served) -> None:
    assert served.host == "127.0.0.1"
    healthz = httpx.get(f"{served.url}/healthz", timeout=10)
    assert healthz.status_code == 200 and healthz.headers["content-type"] == "application/json"
    body = healthz.json()
    assert set(body) == {"healthy", "reasons", "consecutive_failed_runs", "last_run", "last_successful_run_at",
                         "leader", "schedule", "next_run"}
    assert body["healthy"] is True and body["schedule"] == "0 3 * * *" and body["next_run"].endswith("03:00:00+00:00")
    metrics = httpx.get(f"{served.url}/metrics", timeout=10)
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert parse_metrics(metrics.text)["watcher_healthy"] == {"": 1}
    missing = httpx.get(f"{served.url}/nothing", timeout=10)
    assert missing.status_code == 404 and "/healthz" in missing.text
    code, rest = served.stop()
    assert code == 0 and rest == ""  # exactly one line on stdout
    assert "Traceback" not in served.log_text()
    assert '"warmed up in ' in served.log_text()  # before it listened: the pages' reads run once, and so on


def test_serve_binds_loopback_unless_told(db_url: str, config: Path) -> None:
    port = free_port()
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config)), "--port", str(port))
    try:
        assert server.first_line == f"listening on http://127.0.0.1:{port}"
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        server.stop()
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config), WATCHER_HTTP_HOST="0.0.0.0"), "--port", str(port))
    try:
        assert listening_addresses(port) == {"0.0.0.0"}
    finally:
        server.stop()
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config)), "--host", "0.0.0.0", "--port", str(port))
    try:  # the option, as the environment variable
        assert server.first_line == f"listening on http://0.0.0.0:{port}" and listening_addresses(port) == {"0.0.0.0"}
    finally:
        server.stop()


def test_a_half_sent_request_is_cut_off_at_the_read_timeout_and_holds_no_thread(served: Served) -> None:
    before = served.threads()
    started = time.monotonic()
    idle = [half_sent(served.port) for _ in range(3)]
    try:
        assert served.threads() <= before + 1  # no thread per connection
        assert all(closed_by_server(sock, 5) for sock in idle)
        assert 0.8 < time.monotonic() - started < 5  # read_timeout_seconds = 1
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    timeouts = [e for e in served.log_lines() if e.get("outcome") == "timeout"]
    assert len(timeouts) == 3 and "no complete request within 1 s" in timeouts[0]["message"]


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(served: Served) -> None:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_by_server(sock, 5)
        assert time.monotonic() - started < 4
    finally:
        sock.close()


def test_over_the_connection_limit_requests_get_503_until_connections_close(served: Served) -> None:
    idle = [half_sent(served.port) for _ in range(4)]  # max_connections = 4
    try:
        time.sleep(0.2)
        assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def test_a_client_reset_is_one_log_line_in_the_configured_format(served: Served) -> None:
    sock = half_sent(served.port)
    time.sleep(0.1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("reset" in line for line in served.stderr):
        time.sleep(0.05)
    resets = [line for line in served.stderr if "reset" in line]
    assert len(resets) == 1, served.log_text()
    entry = json.loads(resets[0])
    assert entry["outcome"] == "reset" and entry["level"] == "warning" and "127.0.0.1:" in entry["message"]
    assert "Traceback" not in served.log_text() and all(line.startswith("{") for line in served.stderr)


def test_a_port_in_use_is_a_clear_error(db_url: str, config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(watcher_command("serve", "--port", str(port)), capture_output=True, text=True,
                                env=base_env(db_url, WATCHER_CONFIG=str(config)), timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"Error: cannot serve HTTP on 127.0.0.1:{port}: Address already in use"


def test_with_a_certificate_and_key_it_serves_https(db_url: str, config: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    config.write_text(config.read_text() + f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config)), "--port", "0")
    try:
        assert server.url.startswith("https://127.0.0.1:")
        answer = httpx.get(f"{server.url}/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
        assert answer.status_code == 200 and answer.json()["healthy"] is True
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)  # no plain HTTP on the TLS port
    finally:
        assert server.stop()[0] == 0


def test_half_a_tls_setting_is_refused(db_url: str, config: Path) -> None:
    config.write_text(config.read_text() + 'tls_cert = "/nonexistent/cert.pem"\n')
    result = subprocess.run(watcher_command("serve", "--port", "0"), capture_output=True, text=True,
                            env=base_env(db_url, WATCHER_CONFIG=str(config)), timeout=60)
    assert result.returncode == 1 and "tls_cert and tls_key go together" in result.stderr


def test_healthz_says_the_database_is_unavailable_with_503() -> None:
    gone = sa.create_engine(f"postgresql+psycopg://watcher@127.0.0.1:{free_port()}/none?connect_timeout=2")
    settings = Settings(clouds=("china",))
    app = web.create_app(settings, gone, web.standalone_view(settings))
    for path in ("/healthz", "/metrics"):
        answer = ask(app, path)
        assert answer.status_code == 503 and answer.json() == {"healthy": False, "reasons": ["database unavailable"]}


def test_healthz_is_503_when_unhealthy(engine: sa.Engine) -> None:
    settings = Settings(clouds=("china",))
    start = dt_now()
    for _ in range(3):
        run = health.record_run_start(engine, start, "schedule")
        health.record_run_finish(engine, run, start, False, "china: HTTP 500")
    app = web.create_app(settings, engine, web.standalone_view(settings))
    answer = ask(app, "/healthz")
    assert answer.status_code == 503 and answer.json()["reasons"] == ["the last 3 runs failed"]
    assert answer.json()["leader"] == "none in this process (watcher serve)"


def ask(app: Any, path: str) -> httpx.Response:
    """One request to the ASGI app in this process (the database faults are easier to make here)."""

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(get())


def dt_now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def test_a_request_head_over_16_kib_is_a_400_whether_sent_at_once_or_dribbled(served: Served) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(big)
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
        assert closed_by_server(sock, 5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(17):  # never ends its header line: refused once the head passes 16 KiB
            sock.sendall(b"a" * 1024)
            time.sleep(0.01)
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:  # under the bound: answered
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (15 * 1024) + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
