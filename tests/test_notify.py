"""Notifications through the outbox, against real receivers on localhost: an SMTP server (aiosmtpd) for
mailto://, an HTTP server for json://, and the Mosquitto broker for mqtt://. Delivered once, retried with
backoff when a receiver is down, never lost across a crash, and no secret from a URL shows anywhere."""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import json
import logging
import socket
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner

from tests.ticket_helpers import approve_baselines, import_made, import_real_pair, make_settings, quietly, utc, week
from watcher import db, notify, render, review, tickets
from watcher.cli import main
from watcher.models import OutboxMessage
from watcher.settings import RegistryWatch

JSON_SECRET = "s3cr3tT0kenXq"
MAIL_SECRET = "pAssw0rdZk9"


def soon() -> dt.datetime:
    """A moment just after now: the outbox rows are queued at the real time of the import."""
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JsonReceiver:
    """A tiny HTTP server that records each JSON body posted to it."""

    def __init__(self, port: int):
        self.port = port
        self.bodies: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                bodies.append({"auth": self.headers.get("Authorization"), **json.loads(data)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def json_receiver():
    receiver = JsonReceiver(free_port())
    yield receiver
    receiver.stop()


class MailSink:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    sink = MailSink()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == MAIL_SECRET.encode()
        return AuthResult(success=ok)

    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), authenticator=authenticate,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def mqtt_topic():
    topic = f"watcher-test/{uuid.uuid4().hex}"
    received: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, msg: received.append(msg.payload)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", 1883)
    client.subscribe(topic, qos=1)
    client.loop_start()
    assert subscribed.wait(5), "the local Mosquitto broker at 127.0.0.1:1883 did not answer"
    yield topic, received
    client.loop_stop()
    client.disconnect()


def wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


FOUR_AND_FIVE = ("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.5.0/24")


def held_ticket_week(engine, settings) -> None:
    """Ticket 2: a change held against the approved baseline (ticket 1, approved, never notified)."""
    import_made(engine, quietly(settings), "20250101", week())
    approve_baselines(engine)
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.3.0/24", "10.1.4.0/24")), 2)


def outbox_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM outbox ORDER BY id"))]


def test_delivered_once_to_mail_json_and_mqtt_without_leaking_secrets(engine, db_url, tmp_path, smtp_server,
                                                                     json_receiver, mqtt_topic, caplog):
    caplog.set_level(logging.DEBUG)
    smtp_port, mailbox = smtp_server
    topic, mqtt_messages = mqtt_topic
    json_receiver.start()
    urls = (
        f"json://user:{JSON_SECRET}@127.0.0.1:{json_receiver.port}/hook",
        f"mailto://bob:{MAIL_SECRET}@127.0.0.1:{smtp_port}?from=watcher@example.com&to=secops@example.com",
        f"mqtt://127.0.0.1:1883/{topic}",
    )
    settings = make_settings(urls=urls)
    import_real_pair(engine, settings)
    with engine.connect() as conn:
        (ticket,) = tickets.list_tickets(conn, "hold")
    assert len(outbox_rows(engine)) == 3  # queued with the ticket, one row per destination

    results = notify.deliver_due(engine, settings)
    assert sorted(r.state for r in results) == ["sent", "sent", "sent"], results
    wait_for(lambda: mqtt_messages)
    assert notify.deliver_due(engine, settings, now=soon() + dt.timedelta(days=3650)) == []  # never again, whatever the time

    (posted,) = json_receiver.bodies
    assert posted["title"].startswith("[watcher ticket 2] [HOLD] [OVERDUE] myreg.azurecr.io")
    assert ticket.uid in posted["message"] and "ON HOLD" in posted["message"]
    assert posted["attachments"][0]["filename"] == "watcher-ticket-2.md"
    (mail,) = mailbox.messages
    assert "[watcher ticket 2]" in mail["Subject"]
    html = mail.get_body(("html",)).get_content()
    assert "2603:1030:40f:8000::/49" in html and "<h1>" in html
    assert [part.get_filename() for part in mail.iter_attachments()] == ["watcher-ticket-2.md"]
    wait_for(lambda: len(mqtt_messages) > 1, 0.5)
    assert len(mqtt_messages) == 1 and b"[watcher ticket 2]" in mqtt_messages[0]

    # Nothing anywhere shows the secrets: logs, the database, CLI output, renders, errors.
    runner = CliRunner()
    env = {"WATCHER_NOTIFY_URLS": " ".join(urls)}
    outputs = [runner.invoke(main, ["--db", db_url, *args], env=env).output
               for args in (["notify", "status"], ["notify", "status", "--json"], ["tickets", "show", "2"],
                            ["tickets", "show", "2", "--json"], ["notify", "test"], ["notify"])]
    assert outputs[0] == "0 pending, 0 sending, 3 sent, 0 failed\n", outputs[0]
    status = json.loads(outputs[1])
    assert status["counts"] == {"pending": 0, "sending": 0, "sent": 3, "failed": 0}
    labels = sorted(m["destination"] for m in status["messages"])
    assert [label.partition("://")[0] for label in labels] == ["json", "mailto", "mqtt"]
    assert labels[0].startswith("json://user:****@127.0.0.1") and labels[1].startswith("mailto://bob:****@127.0.0.1")
    assert outputs[4].count("ok ") == 3, outputs[4]
    with engine.connect() as conn:
        renders = [render.render_ticket(conn, settings, ticket, fmt) for fmt in render.FORMATS]
        dump = [str(tuple(r)) for table in ("tickets", "ticket_events", "outbox")
                for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    haystack = "\n".join([caplog.text, *outputs, *renders, *dump, repr(notify.destinations(settings))])
    assert "apprise output for json://user:****@" in caplog.text  # apprise's log was captured, masked
    for secret in (JSON_SECRET, MAIL_SECRET):
        assert secret not in haystack


def test_down_destination_gets_the_ticket_once_it_is_back(engine, json_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"json://user:{JSON_SECRET}@127.0.0.1:{json_receiver.port}/"
    settings = make_settings(urls=(url,), backoff_seconds=60)
    held_ticket_week(engine, settings)
    start = soon()

    (first,) = notify.deliver_due(engine, settings, now=start)  # nothing listens yet
    assert first.state == "pending" and first.attempts == 1 and "Connection error" in first.error
    (row,) = outbox_rows(engine)
    assert row["state"] == "pending" and row["last_error"]
    # The backoff counts from when the failure was recorded, a moment after ``start``.
    assert notify.deliver_due(engine, settings, now=start + dt.timedelta(seconds=59)) == []  # backing off
    (second,) = notify.deliver_due(engine, settings, now=start + dt.timedelta(seconds=61))
    assert second.state == "pending" and second.attempts == 2
    assert notify.deliver_due(engine, settings, now=start + dt.timedelta(seconds=61 + 119)) == []  # 120 s now

    json_receiver.start()
    (third,) = notify.deliver_due(engine, settings, now=start + dt.timedelta(seconds=61 + 121))
    assert third.state == "sent" and third.attempts == 3
    assert notify.deliver_due(engine, settings, now=start + dt.timedelta(days=30)) == []
    assert len(json_receiver.bodies) == 1 and "[watcher ticket 2]" in json_receiver.bodies[0]["title"]
    assert JSON_SECRET not in caplog.text and JSON_SECRET not in first.error


def test_a_result_relaxes_its_own_commit_and_the_connection_keeps_its_setting(engine, json_receiver):
    """On PostgreSQL each claim and result statement turns synchronous_commit off for its own transaction only."""
    json_receiver.start()
    base = f"json://127.0.0.1:{json_receiver.port}"
    settings = make_settings(urls=(f"{base}/", f"{base}/b"))
    held_ticket_week(engine, settings)
    assert [r.state for r in notify.deliver_due(engine, settings, now=soon())] == ["sent", "sent"]
    assert [r["state"] for r in outbox_rows(engine)] == ["sent", "sent"]
    if engine.dialect.name == "postgresql":
        for name in ("take_pg", "record_sent_and_take", "record_pending_and_take", "record_failed_and_take"):
            assert "set_config" in str(notify._claim_statements()[name].compile(dialect=engine.dialect)), name
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_gives_up_after_max_attempts_and_says_so(engine, db_url):
    url = f"json://user:{JSON_SECRET}@127.0.0.1:{free_port()}/"
    settings = make_settings(urls=(url,), max_attempts=2, backoff_seconds=1)
    held_ticket_week(engine, settings)
    now = soon()
    assert notify.deliver_due(engine, settings, now=now)[0].state == "pending"
    assert notify.deliver_due(engine, settings, now=now + dt.timedelta(seconds=2))[0].state == "failed"
    assert notify.deliver_due(engine, settings, now=now + dt.timedelta(days=1)) == []
    result = CliRunner().invoke(main, ["--db", db_url, "notify", "status", "--json"], env={"WATCHER_NOTIFY_URLS": url})
    status = json.loads(result.output)
    assert status["counts"]["failed"] == 1
    (message,) = status["messages"]
    assert message["state"] == "failed" and message["attempts"] == 2 and message["configured"]
    assert message["destination"].startswith("json://user:****@") and JSON_SECRET not in result.output


def test_nothing_is_lost_across_a_crash(engine, db_url, json_receiver):
    json_receiver.start()
    settings = make_settings(urls=(f"json://127.0.0.1:{json_receiver.port}/",))
    held_ticket_week(engine, settings)
    engine.dispose()  # the importing process ends before sending anything

    second = db.open_database(db_url)
    try:
        now = soon()
        # A second process claims the row and dies while sending: the row stays claimed...
        claim = notify._claim(second, [notify.destination_key(settings.notify.urls[0])], now,
                              notify.DEFAULT_LEASE, [])
        assert claim is not None and outbox_rows(second)[0]["state"] == "sending"
        assert notify.deliver_due(second, settings, now=now + dt.timedelta(minutes=1)) == []
        # ...until its lease runs out; then a fresh process delivers it, once.
        third = db.open_database(db_url)
        (done,) = notify.deliver_due(third, settings, now=now + notify.DEFAULT_LEASE)
        third.dispose()
        assert done.state == "sent"
        assert notify.deliver_due(second, settings, now=now + dt.timedelta(days=1)) == []
        assert len(json_receiver.bodies) == 1
    finally:
        second.dispose()


@pytest.mark.parametrize("claimers", [2, 4])
def test_a_row_is_claimed_by_one_process_only(db_url, engine, claimers):
    """Claimers with engines of their own (as separate processes have) race for the same due rows at once:
    each row is won by exactly one of them."""
    urls = tuple(f"json://127.0.0.1:9/{n}" for n in range(6))
    settings = make_settings(urls=urls)
    held_ticket_week(engine, settings)
    keys = [notify.destination_key(u) for u in urls]
    now = soon()
    engines = [db.open_database(db_url) for _ in range(claimers)]
    start = threading.Barrier(claimers)
    won: list[list[int]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []

    def claim_all(n: int) -> None:
        try:
            start.wait(10)
            while (claim := notify._claim(engines[n], keys, now, notify.DEFAULT_LEASE, [])) is not None:
                won[n].append(claim.id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(claimers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for other in engines:
            other.dispose()
    assert not errors, errors
    claimed = [row_id for ids in won for row_id in ids]
    assert len(claimed) == len(set(claimed)), won  # no row was won twice
    # A claimer that keeps losing races gives up after a few tries; whatever it left is still due, once.
    while (claim := notify._claim(engine, keys, now, notify.DEFAULT_LEASE, [])) is not None:
        claimed.append(claim.id)
    assert sorted(claimed) == [r["id"] for r in outbox_rows(engine)] and len(claimed) == 6
    assert {r["state"] for r in outbox_rows(engine)} == {"sending"}


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def test_a_batch_longer_than_the_lease_stamps_each_claim_when_it_is_made(engine, monkeypatch):
    """Two sends of 10 minutes each (lease: 15): while the second one is under way, a concurrent
    ``watcher notify`` must not take its row over as if the claim were 20 minutes old."""
    urls = ("json://127.0.0.1:9/a", "json://127.0.0.1:9/b")
    settings = make_settings(urls=urls)
    held_ticket_week(engine, settings)
    keys = [notify.destination_key(u) for u in urls]
    start = soon()
    clock = [start]
    taken_over = []

    def slow_send(destination, message):
        clock[0] += dt.timedelta(minutes=10)
        if len(taken_over) == 0 and outbox_rows(engine)[0]["state"] == "sent":  # during the second send
            taken_over.append(notify._claim(engine, keys, clock[0], notify.DEFAULT_LEASE, []))
        return notify.SendResult(True, "", "")

    monkeypatch.setattr(notify, "send", slow_send)
    results = notify.deliver_due(engine, settings, now=start, clock=lambda: clock[0])
    assert [r.state for r in results] == ["sent", "sent"]
    assert taken_over == [None]
    table = OutboxMessage.__table__
    with engine.connect() as conn:  # through the table's types: SQLite's raw text would give strings
        first, second = (r._mapping for r in conn.execute(sa.select(table).order_by(table.c.id)))
    assert _utc(first["claimed_at"]) == start and _utc(first["sent_at"]) == start + dt.timedelta(minutes=10)
    assert _utc(second["claimed_at"]) == start + dt.timedelta(minutes=10)
    assert _utc(second["sent_at"]) == start + dt.timedelta(minutes=20)


def test_destinations_are_stored_under_a_slow_salted_key_not_a_plain_hash_of_the_url(engine):
    url = f"json://user:{JSON_SECRET}@127.0.0.1:9/hook"
    settings = make_settings(urls=(url,))
    held_ticket_week(engine, settings)
    [row] = outbox_rows(engine)
    plain = hashlib.sha256(url.encode()).hexdigest()  # what a dictionary attack on the password would match
    assert row["destination"] != plain and len(row["destination"]) == 64
    assert row["destination"] == hashlib.scrypt(url.encode(), salt=b"watcher-destination-v1", n=2**14, r=8, p=1,
                                                dklen=32).hex()
    assert notify.destination_key(f"  {url} ") == row["destination"]  # stable, whitespace aside


def test_invalid_url_is_reported_masked(engine):
    settings = make_settings(urls=("bogus://user:hunter2secret@host/path",))
    (destination,) = notify.destinations(settings)
    assert not destination.valid and "hunter2secret" not in destination.label
    (result,) = notify.send_test(settings)
    assert not result.ok and "hunter2secret" not in result.error


def test_messages_follow_the_state_superseded_rejected_approved_and_one_removal_reminder(engine, json_receiver):
    json_receiver.start()
    registry = RegistryWatch("myreg", ("eastus2",), data_endpoint=True, firewalls=("nftables",))
    settings = make_settings(registry, urls=(f"json://127.0.0.1:{json_receiver.port}/",))
    held_ticket_week(engine, settings)  # ticket 2, held
    now = soon()
    assert [r.state for r in notify.deliver_due(engine, settings, now=now)] == ["sent"]
    # A newer publication supersedes ticket 2: ticket 3 is announced, ticket 2 as superseded (no work to do).
    import_made(engine, settings, "20250115", week(storage_eastus2=FOUR_AND_FIVE), 3)
    assert len(notify.deliver_due(engine, settings, now=now)) == 2
    titles = [b["title"] for b in json_receiver.bodies]
    assert titles[1].startswith("[watcher ticket 3] ") and "[SUPERSEDED" not in titles[1]
    assert titles[2].startswith("[watcher ticket 2] [SUPERSEDED by ticket 3, nothing to apply]")
    review.transition(engine, 3, "reject", "carol", "not yet", announce=settings)
    notify.deliver_due(engine, settings, now=now)
    assert json_receiver.bodies[-1]["title"].startswith("[watcher ticket 3] [REJECTED, nothing to apply]")
    assert "REJECTED: nothing to apply" in json_receiver.bodies[-1]["message"]
    # The change comes back with the next publication; its approval names the removal date, then reminds once.
    import_made(engine, settings, "20250122", week(storage_eastus2=FOUR_AND_FIVE + ("10.1.6.0/24",)), 4)
    notify.deliver_due(engine, settings, now=now)
    review.transition(engine, 4, "approve", "dave", announce=settings, now=lambda: utc(2025, 1, 23))
    assert len(notify.deliver_due(engine, settings, now=utc(2025, 1, 23, 1))) == 1  # the reminder waits
    approved = json_receiver.bodies[-1]
    assert approved["title"].startswith("[watcher ticket 4] [APPROVED: apply the additions now, the removals on "
                                        "2025-01-29]"), approved["title"]
    assert "dave" in approved["message"]
    count = len(json_receiver.bodies)
    assert notify.deliver_due(engine, settings, now=utc(2025, 1, 28)) == []  # not before the removal date
    (reminder,) = notify.deliver_due(engine, settings, now=utc(2025, 1, 29, 0, 1))
    assert reminder.state == "sent" and len(json_receiver.bodies) == count + 1
    assert json_receiver.bodies[-1]["title"].startswith("[watcher ticket 4] [REMOVALS DUE 2025-01-29")
    assert notify.deliver_due(engine, settings, now=utc(2026, 1, 1)) == []  # one reminder only
    # Only work to do carries snippets: an open ticket and an approval the add phase, the reminder the remove phase.
    names = [[a["filename"] for a in body["attachments"]] for body in json_receiver.bodies]
    assert names[0] == ["watcher-ticket-2.md", "watcher-ticket-2-nftables-add.nft"]  # open
    assert names[2] == ["watcher-ticket-2.md"] and names[3] == ["watcher-ticket-3.md"]  # superseded, rejected
    assert names[-2] == ["watcher-ticket-4.md", "watcher-ticket-4-nftables-add.nft"]
    assert names[-1] == ["watcher-ticket-4.md", "watcher-ticket-4-nftables-remove.nft"]
    with engine.connect() as conn:
        remove = render.render_ticket(conn, settings, tickets.get_ticket(conn, 4), "nftables", "remove")
    assert base64.b64decode(json_receiver.bodies[-1]["attachments"][1]["base64"]).decode() == remove


LONG_NOTES = (
    "the publication's changeNumber went backwards for AzureContainerRegistry.EastUS2 while its prefixes grew by "
    "more than the configured share, which a genuine Microsoft file has never done",
    "the file was served from a host outside the allow-list before a redirect brought it back to "
    "download.microsoft.com, so its origin is not what the schedule expected",
)


def mail_attachments(mail) -> dict[str, str]:
    """Each attached file's text; every one is typed as text, so a mail client shows it."""
    parts = list(mail.iter_attachments())
    assert all(p.get_content_maintype() == "text" for p in parts), [p.get_content_type() for p in parts]
    return {part.get_filename(): part.get_payload(decode=True).decode("utf-8") for part in parts}


def test_mails_carry_the_snippets_of_the_configured_firewalls_and_keep_list_items_on_one_line(engine, db_url,
                                                                                               tmp_path, smtp_server):
    smtp_port, mailbox = smtp_server
    url = f"mailto://bob:{MAIL_SECRET}@127.0.0.1:{smtp_port}?from=watcher@example.com&to=secops@example.com"
    registry = RegistryWatch("myreg", ("eastus2",), data_endpoint=True, firewalls=("nftables", "paloalto"))
    settings = make_settings(registry, urls=(url,))
    config = tmp_path / "watcher.toml"
    config.write_text('[[registries]]\nname = "myreg"\nregions = ["eastus2"]\ndata_endpoint = true\n'
                      'firewalls = ["nftables", "paloalto"]\n[tickets]\nbogon_exemptions = ["10.0.0.0/8"]\n')

    def rendered(ticket_id: int, fmt: str, phase: str = "add") -> str:
        result = CliRunner().invoke(main, ["--db", db_url, "--config", str(config), "tickets", "render",
                                           str(ticket_id), "--format", fmt, "--phase", phase])
        assert result.exit_code == 0, result.output
        return result.output

    def expected(ticket_id: int) -> dict[str, str]:
        return {f"watcher-ticket-{ticket_id}-nftables-add.nft": rendered(ticket_id, "nftables"),
                f"watcher-ticket-{ticket_id}-paloalto-add.txt": rendered(ticket_id, "paloalto")}

    # The baseline (open) ticket: its message carries the add phase of both kinds, as `tickets render` prints it.
    import_made(engine, settings, "20250101", week())
    assert [r.state for r in notify.deliver_due(engine, settings)] == ["sent"]
    files = mail_attachments(mailbox.messages[-1])
    assert list(files) == ["watcher-ticket-1.md", *expected(1)]
    assert {name: files[name] for name in expected(1)} == expected(1)
    assert "10.1.0.0/22," in files["watcher-ticket-1-nftables-add.nft"]  # the four /24s, aggregated
    approve_baselines(engine)

    # A held change with long reasons: no snippets (nothing is approved), and its plain text keeps each item whole.
    import_made(engine, settings, "20250108", week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24",
                                                                   "10.1.4.0/24")), 2, implausible=LONG_NOTES)
    with engine.connect() as conn:
        held = tickets.get_ticket(conn, 2)
    assert held.state == "hold" and all(len(note) > 150 for note in LONG_NOTES)
    notify.deliver_due(engine, settings)
    mail = mailbox.messages[-1]
    assert list(mail_attachments(mail)) == ["watcher-ticket-2.md"]
    lines = mail.get_body(("plain",)).get_content().splitlines()
    for reason in held.context["hold"]["reasons"]:
        assert f"- {reason}" in lines, reason
    assert any(LONG_NOTES[0] in line for line in lines) and "- 10.1.4.0/24" in lines and "- 10.1.3.0/24" in lines
    assert "-" not in lines and "- " not in lines  # no bullet left without its item
    with engine.connect() as conn:  # the ticket's own HTML keeps its <code>: only the mail's body is reshaped
        assert "<code>10.1.4.0/24</code>" in render.render_ticket(conn, settings, held, "html")

    # Its additions approved: the add phase is attached; rejected: nothing to apply, no snippets.
    review.transition(engine, 2, "approve-adds", "dave", announce=settings)
    notify.deliver_due(engine, settings)
    files = mail_attachments(mailbox.messages[-1])
    assert list(files) == ["watcher-ticket-2.md", *expected(2)]
    assert {name: files[name] for name in expected(2)} == expected(2)
    assert "10.1.4.0/24" in files["watcher-ticket-2-paloalto-add.txt"]
    review.transition(engine, 2, "reject", "carol", "not yet", announce=settings)
    notify.deliver_due(engine, settings)
    assert "[REJECTED" in mailbox.messages[-1]["Subject"]
    assert list(mail_attachments(mailbox.messages[-1])) == ["watcher-ticket-2.md"]
    assert len(mailbox.messages) == 4


def test_the_attachment_files_are_removed_after_sending(smtp_server, tmp_path, monkeypatch):
    smtp_port, mailbox = smtp_server
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where TMPDIR points (/data in the container)
    url = f"mailto://bob:{MAIL_SECRET}@127.0.0.1:{smtp_port}?from=watcher@example.com&to=secops@example.com"
    (destination,) = notify.destinations(make_settings(urls=(url,)))
    message = notify.Message("t", "b", "<p>b</p>", "watcher-ticket-9.md", "# 9\n",
                             snippets=(("watcher-ticket-9-nftables-add.nft", "flush set inet watcher x\n"),))
    assert notify.send(destination, message).ok
    assert mail_attachments(mailbox.messages[-1]) == {"watcher-ticket-9.md": "# 9\n",
                                                      "watcher-ticket-9-nftables-add.nft": "flush set inet watcher x\n"}
    assert list(scratch.iterdir()) == []
