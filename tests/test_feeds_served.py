"""Feeds served by ``watcher serve`` as a process, polled with httpx, through a watch's life: baseline, approval,
addition phase, removal date (the server's clock moved through ``WATCHER_FEEDS_CLOCK_FILE``), the next ticket;
tokens, conditional requests, consumer tracking, the export folder, nginx over it, and 503 without a database."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from email.utils import format_datetime
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.daemon_helpers import base_env, watcher_command
from tests.httpstub import free_port
from tests.test_web import Served
from tests.ticket_helpers import import_made, make_settings, utc, week
from watcher import review
from watcher.web.feeds import FRESH_SECONDS, STALE_SECONDS

#: How long a test waits for the server to see a change (within STALE_SECONDS) and to write its fetch records
#: (every FRESH_SECONDS).
SETTLE = max(FRESH_SECONDS, STALE_SECONDS) + 0.3

CONFIG = """
[[registries]]
name = "myreg"
regions = ["eastus2"]
data_endpoint = true

[feeds]
auto_applied = true
stale_after_hours = 48
"""


class Feeds:
    """The server, its clock file, and the CLI on the same database and config."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.config = tmp_path / "watcher.toml"
        self.config.write_text(CONFIG)
        self.clock = tmp_path / "now.txt"
        self.clock.write_text("")
        self.env = base_env(db_url, WATCHER_CONFIG=str(self.config), WATCHER_FEEDS_CLOCK_FILE=str(self.clock))
        self.server = Served(self.env, "--port", "0")
        self.client = httpx.Client(base_url=self.server.url, timeout=10)

    def at(self, *when: int) -> None:
        self.clock.write_text(utc(*when).isoformat())
        time.sleep(SETTLE)  # the server reads the approved states again within STALE_SECONDS

    def cli(self, *args: str, code: int = 0) -> str:
        time.sleep(SETTLE)  # the server's fetch records are written in batches
        done = subprocess.run(watcher_command(*args), env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done.stdout + done.stderr

    def get(self, path: str, token: str | None, **headers: str) -> httpx.Response:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.get(path, headers=headers)

    def close(self) -> None:
        self.client.close()
        if self.server.process.poll() is None:
            self.server.stop()


@pytest.fixture
def served_feeds(db_url: str, tmp_path: Path) -> Iterator[Feeds]:
    feeds = Feeds(db_url, tmp_path)
    try:
        yield feeds
    finally:
        feeds.close()


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"paloalto:{token}".encode()).decode()


def test_a_feed_follows_the_approved_state_through_both_phases_and_knows_who_has_it(served_feeds, engine, tmp_path):
    feeds = served_feeds
    settings = make_settings()
    fw1 = json.loads(feeds.cli("feeds", "consumer", "add", "fw-1", "--watch", "myreg", "--json"))
    fw2 = json.loads(feeds.cli("feeds", "consumer", "add", "fw-2", "--json"))
    assert fw1["name"] == "fw-1" and fw1["watches"] == ["myreg"] and fw1["token"].startswith("wf_")
    assert fw1["token"] not in feeds.cli("feeds", "consumer", "list")
    with engine.connect() as conn:  # stored hashed, never as given
        stored = conn.execute(sa.text("SELECT token_hash FROM feed_consumers ORDER BY name")).scalars().all()
    assert stored[0] == hashlib.sha256(fw1["token"].encode()).hexdigest() and fw1["token"] not in stored

    # Credentials: missing, wrong, wrong scheme: 401 and counted; basic auth (the password) and bearer both work.
    assert feeds.get("/feeds/myreg.txt", None).status_code == 401
    assert feeds.get("/feeds/myreg.txt", "wf_wrong").status_code == 401
    refused = feeds.client.get("/feeds/myreg.txt", headers={"Authorization": basic("nope")})
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    # Nothing approved yet: no list at all, never an empty one.
    nothing = feeds.get("/feeds/myreg.txt", fw1["token"])
    assert nothing.status_code == 404 and "no approved state" in nothing.text
    assert feeds.get("/feeds/other.txt", fw2["token"]).status_code == 404
    assert feeds.get("/feeds/other.txt", fw1["token"]).status_code == 403  # fw-1 pulls myreg only

    import_made(engine, settings, "20250101", week())
    assert feeds.get("/feeds/myreg.txt", fw1["token"]).status_code == 404  # the baseline ticket is open only
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    feeds.at(2025, 1, 3)
    first = feeds.client.get("/feeds/myreg.txt", headers={"Authorization": basic(fw1["token"])})
    assert first.status_code == 200, first.text
    assert first.text == "10.1.0.0/22\n10.3.0.0/24\n"
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    assert first.headers["etag"].startswith('"') and first.headers["x-feed-entries"] == "2"
    assert first.headers["last-modified"] == format_datetime(utc(2025, 1, 2), usegmt=True)
    assert "max-age=" in first.headers["cache-control"]
    etag = first.headers["etag"]

    # Conditional requests and HEAD.
    assert feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-None-Match": etag}).status_code == 304
    assert feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-None-Match": '"other"'}).status_code == 200
    since = feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-Modified-Since": first.headers["last-modified"]})
    assert since.status_code == 304 and since.headers["etag"] == etag
    older = format_datetime(utc(2025, 1, 1), usegmt=True)
    assert feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-Modified-Since": older}).status_code == 200
    head = feeds.client.head("/feeds/myreg.txt", headers={"Authorization": f"Bearer {fw1['token']}"})
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(first.content))

    # Every format.
    assert feeds.get("/feeds/myreg/v4.txt", fw1["token"]).text == first.text
    v6 = feeds.get("/feeds/myreg/v6.txt", fw1["token"])
    assert v6.status_code == 200 and v6.text == "" and v6.headers["x-feed-empty"]
    assert feeds.get("/feeds/myreg/Storage.EastUS2.txt", fw1["token"]).text == "10.1.0.0/22\n"
    assert feeds.get("/feeds/myreg/AzureContainerRegistry.EastUS2.txt", fw1["token"]).text == "10.3.0.0/24\n"
    md5 = feeds.get("/feeds/myreg.txt.md5", fw1["token"])
    assert md5.text == hashlib.md5(first.content).hexdigest() + "\n"
    checkpoint = feeds.get("/feeds/myreg.checkpoint.json", fw1["token"]).json()
    assert checkpoint["version"] == "1.0" and checkpoint["description"]
    assert [(o["name"], o["ranges"]) for o in checkpoint["objects"]] == [
        ("myreg", ["10.1.0.0/22", "10.3.0.0/24"]), ("myreg.AzureContainerRegistry.EastUS2", ["10.3.0.0/24"]),
        ("myreg.Storage.EastUS2", ["10.1.0.0/22"])]
    assert all(len(o["id"]) == 36 and o["description"] for o in checkpoint["objects"])
    as_json = feeds.get("/feeds/myreg.json", fw1["token"])
    assert as_json.content.decode() == feeds.cli("state", "show", "myreg", "--json", "--at", "2025-01-03T00:00:00Z")
    commented = feeds.get("/feeds/myreg.txt?header=1", fw1["token"])
    assert commented.text.startswith("# watcher feed myreg") and commented.text.endswith(first.text)
    assert commented.headers["etag"] != etag

    # A publication with a change: the feed stays as approved until the ticket is approved.
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.9.0/24")), 2)
    feeds.at(2025, 1, 9)
    assert feeds.get("/feeds/myreg.txt", fw1["token"]).text == first.text
    review.transition(engine, 2, "approve", "bob", now=lambda: utc(2025, 1, 10))
    feeds.at(2025, 1, 11)  # the addition phase: old and new together
    adding = feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-None-Match": etag})
    assert adding.status_code == 200 and adding.text == "10.1.0.0/22\n10.1.9.0/24\n10.3.0.0/24\n"
    assert adding.headers["x-feed-phase"] == "first" and adding.headers["x-feed-ticket"] == "2"
    assert feeds.get("/feeds/myreg/Storage.EastUS2.txt", fw1["token"]).text == "10.1.0.0/22\n10.1.9.0/24\n"
    feeds.get("/feeds/myreg.txt", fw2["token"])
    assert json.loads(feeds.cli("tickets", "show", "2", "--json"))["state"] == "approved"  # not the final list yet

    feeds.at(2025, 1, 15, 0, 0, 1)  # past the removal date: the new list alone
    final = feeds.get("/feeds/myreg.txt", fw1["token"], **{"If-None-Match": adding.headers["etag"]})
    assert final.status_code == 200 and final.text == "10.1.0.0/23\n10.1.2.0/24\n10.1.9.0/24\n10.3.0.0/24\n"
    assert final.headers["last-modified"] == format_datetime(utc(2025, 1, 15), usegmt=True)
    status = {s["name"]: s for s in json.loads(feeds.cli("feeds", "status", "--json"))}
    assert status["fw-1"]["current"] is True and status["fw-2"]["current"] is False
    assert status["fw-1"]["last_fetch"]["version"] == final.headers["etag"]
    assert json.loads(feeds.cli("tickets", "show", "2", "--json"))["state"] == "approved"  # fw-2 lacks it
    assert feeds.get("/feeds/myreg.txt", fw2["token"], **{"If-None-Match": final.headers["etag"]}).status_code == 304
    shown = json.loads(feeds.cli("tickets", "show", "2", "--json"))
    assert shown["state"] == "applied"  # every consumer of the watch has the final list
    assert [(p["consumer"], p["complete"]) for p in shown["pulled_by"]] == [("fw-1", True), ("fw-2", True)]
    assert "pulled by fw-1 at 2025-01-15 00:00 UTC, fw-2 at 2025-01-15 00:00 UTC" in feeds.cli("tickets", "show", "2")
    assert all(s["current"] for s in json.loads(feeds.cli("feeds", "status", "--json")))

    # The next ticket: open, so the feed still serves ticket 2's list.
    import_made(engine, settings, "20250122", week(storage_eastus2=("10.1.0.0/24",)), 3)
    feeds.at(2025, 1, 23)
    assert feeds.get("/feeds/myreg.txt", fw1["token"]).headers["x-feed-ticket"] == "2"
    assert feeds.get("/feeds/myreg.txt", fw1["token"]).text == final.text

    # Counted refusals, and per-consumer last fetch in /metrics.
    metrics = feeds.client.get("/metrics").text
    assert "watcher_feed_denied_total 3" in metrics
    assert 'watcher_feed_consumer_last_fetch_timestamp_seconds{consumer="fw-1"} ' in metrics
    assert fw1["token"] not in feeds.server.log_text() and fw2["token"] not in feeds.server.log_text()

    # The export folder holds the same bytes as the server serves.
    folder = tmp_path / "export"
    assert "file(s) written" in feeds.cli("feeds", "export", str(folder))
    exported = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                      if p.is_file() and p.name != "nginx-etags.map")
    assert "myreg.txt" in exported and "myreg.txt.md5" in exported and "myreg/Storage.EastUS2.txt" in exported
    for relative in exported:
        served = feeds.get(f"/feeds/{relative}", fw1["token"])
        assert served.status_code == 200 and served.content == (folder / relative).read_bytes(), relative
    assert (folder / "myreg.txt").stat().st_mtime == utc(2025, 1, 15).timestamp()
    assert not list(folder.rglob(".tmp-*"))


def test_consumer_commands_refuse_bad_input_and_remove_revokes(served_feeds, engine):
    feeds = served_feeds
    assert "unknown feed 'nosuch'" in feeds.cli("feeds", "consumer", "add", "fw-1", "--watch", "nosuch", code=1)
    assert "consumer name" in feeds.cli("feeds", "consumer", "add", "bad name", code=1)
    token = json.loads(feeds.cli("feeds", "consumer", "add", "fw-1", "--json"))["token"]
    assert "exists already" in feeds.cli("feeds", "consumer", "add", "fw-1", code=1)
    assert "fw-1" in feeds.cli("feeds", "consumer", "list")
    assert feeds.get("/feeds/myreg.txt", token).status_code == 404  # known consumer, nothing approved
    feeds.cli("feeds", "consumer", "remove", "fw-1")
    assert "no feed consumer 'fw-1'" in feeds.cli("feeds", "consumer", "remove", "fw-1", code=1)
    assert feeds.get("/feeds/myreg.txt", token).status_code == 401


@pytest.fixture
def postgres_schema_url(postgres_admin_url: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of this test's own (the database a replica would share) and its URL."""
    import uuid

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema, f"{postgres_admin_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_database_gone_mid_run_is_503_never_an_empty_list(postgres_schema_url, postgres_admin_url, tmp_path):
    """PostgreSQL loses the watcher's schema while the server runs: every feed answers 503 (keep the last copy)."""
    from watcher import db

    schema, url = postgres_schema_url
    engine = db.open_database(url)
    feeds = Feeds(url, tmp_path)
    try:
        token = json.loads(feeds.cli("feeds", "consumer", "add", "fw-1", "--json"))["token"]
        import_made(engine, make_settings(), "20250101", week())
        review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
        feeds.at(2025, 1, 3)
        assert feeds.get("/feeds/myreg.txt", token).status_code == 200
        engine.dispose()
        admin = sa.create_engine(postgres_admin_url)
        with admin.begin() as conn:  # the schema goes, and comes back empty: no tables, no approved state
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        time.sleep(SETTLE)
        for path in ("/feeds/myreg.txt", "/feeds/myreg/v6.txt", "/feeds/myreg.json"):
            gone = feeds.get(path, token)
            assert gone.status_code == 503 and gone.headers["retry-after"] and "last good copy" in gone.text, path
        assert feeds.server.process.poll() is None  # still serving, ready for the database's return
    finally:
        feeds.close()
        engine.dispose()


def test_nginx_serving_the_export_gives_the_same_bodies_etags_and_last_modified(served_feeds, engine, tmp_path):
    feeds = served_feeds
    token = json.loads(feeds.cli("feeds", "consumer", "add", "fw-1", "--json"))["token"]
    import_made(engine, make_settings(), "20250101", week())
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    feeds.at(2025, 1, 3)
    folder = tmp_path / "export"
    feeds.cli("feeds", "export", str(folder))
    with nginx_serving(folder, tmp_path) as url, httpx.Client(base_url=url, timeout=10) as static:
        for relative in ("myreg.txt", "myreg/v4.txt", "myreg/Storage.EastUS2.txt", "myreg.checkpoint.json",
                         "myreg.json", "myreg.txt.md5"):
            ours, theirs = feeds.get(f"/feeds/{relative}", token), static.get(f"/feeds/{relative}")
            assert theirs.status_code == 200 and theirs.content == ours.content, relative
            for header in ("etag", "last-modified", "content-type", "cache-control"):
                assert theirs.headers[header] == ours.headers[header], (relative, header)
            # nginx never answers 304 by ETag (its map may be one export behind): the whole file, not a wrong 304.
            assert static.get(f"/feeds/{relative}", headers={"If-None-Match": ours.headers["etag"]}).status_code == 200
            assert static.get(f"/feeds/{relative}",
                              headers={"If-Modified-Since": ours.headers["last-modified"]}).status_code == 304


class nginx_serving:  # noqa: N801 - a context manager read as a phrase
    """nginx over ``folder`` with the README's configuration, on a free loopback port."""

    def __init__(self, folder: Path, tmp_path: Path) -> None:
        self.folder, self.work = folder, tmp_path / "nginx"

    def __enter__(self) -> str:
        from watcher import feeds

        self.work.mkdir()
        port = free_port()
        server = feeds.nginx_config(str(self.folder), listen=f"127.0.0.1:{port}", cache_seconds=300, public=False)
        (self.work / "nginx.conf").write_text(
            f"daemon off;\nuser root;\npid {self.work}/nginx.pid;\n"  # user root: the folder is in pytest's private tmp
            f"error_log {self.work}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n"
            f"  client_body_temp_path {self.work}; proxy_temp_path {self.work}; fastcgi_temp_path {self.work};\n"
            f"  uwsgi_temp_path {self.work}; scgi_temp_path {self.work};\n{server}}}\n")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen([nginx, "-p", str(self.work), "-c", str(self.work / "nginx.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                return url
            except httpx.HTTPError:
                if self.process.poll() is not None:
                    raise AssertionError(self.process.stdout.read().decode())
                time.sleep(0.1)
        raise AssertionError("nginx did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_watcher_run_keeps_the_export_folder_in_step_with_approvals(db_url, engine, tmp_path):
    """The daemon process, with ``[feeds] export_dir``: the folder follows an approval made by another process."""
    from tests.daemon_helpers import DaemonProcess

    folder, empty = tmp_path / "export", tmp_path / "no-files"
    empty.mkdir()
    config = tmp_path / "watcher.toml"
    config.write_text(CONFIG.replace("[feeds]\n", f'[feeds]\nexport_dir = "{folder}"\n')
                      + '[daemon]\nschedule = "0 3 1 1 *"\nrun_deadline_seconds = 0.5\n[fetch]\nretries = 0\n')
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    review.transition(engine, 1, "approve", "alice")
    daemon = DaemonProcess(base_env(db_url, WATCHER_CONFIG=str(config), WATCHER_SOURCE_URL=str(empty)))
    target = folder / "myreg.txt"
    try:
        daemon.wait_for(lambda: target.is_file() and target.read_bytes() == b"10.1.0.0/22\n10.3.0.0/24\n",
                        "the first export")
        import_made(engine, settings, "20250108", week(acr_eastus2=("10.3.0.0/24", "10.3.1.0/24")), 2)
        started = time.monotonic()
        review.transition(engine, 2, "approve", "bob")
        daemon.wait_for(lambda: target.read_bytes() == b"10.1.0.0/22\n10.3.0.0/23\n", "the approval exported")
        assert time.monotonic() - started < 1.0
        daemon.wait_for(lambda: (folder / "myreg.txt.md5").read_text()
                        == hashlib.md5(target.read_bytes()).hexdigest() + "\n", "the .md5 after its file", 2)
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.kill()


def test_routine_polls_on_one_keep_alive_connection_pipelined_then_idle_closed(db_url, engine, tmp_path):
    """The fast path (answers from the HTTP protocol itself) keeps HTTP's rules: pipelined requests answered in
    order, the connection kept alive, then closed once idle for idle_timeout_seconds."""
    import socket

    config = tmp_path / "watcher.toml"
    config.write_text(CONFIG + "\n[web]\nidle_timeout_seconds = 1.0\nread_timeout_seconds = 1.0\n")
    server = Served(base_env(db_url, WATCHER_CONFIG=str(config)), "--port", "0")
    try:
        import_made(engine, make_settings(), "20250101", week())
        review.transition(engine, 1, "approve", "alice")
        done = subprocess.run(watcher_command("feeds", "consumer", "add", "fw-1", "--json"), capture_output=True,
                              text=True, timeout=60, env=base_env(db_url, WATCHER_CONFIG=str(config)))
        token = json.loads(done.stdout)["token"]
        request = f"GET /feeds/myreg.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        first = httpx.get(f"{server.url}/feeds/myreg.txt", headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200  # read from the database: from now on answered from memory
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(request * 3)  # pipelined
            received = b""
            while received.count(b"HTTP/1.1 200 OK") < 3 or not received.endswith(first.content):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            assert received.count(first.content) == 3 and received.count(first.headers["etag"].encode()) == 3
            sock.sendall(request)  # still open: kept alive
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            started = time.monotonic()
            sock.settimeout(5)
            while sock.recv(65536):
                pass
            assert 0.5 < time.monotonic() - started < 4  # closed once idle for 1 s
    finally:
        if server.process.poll() is None:
            server.stop()
