"""The feeds' fast path (``FeedService.fast``, answered by the HTTP protocol itself) says byte for byte what the
app's route says, for every kind of routine request; what it cannot answer from memory it passes on (None)."""
from __future__ import annotations

import base64
import datetime as dt

from starlette.testclient import TestClient

from tests.ticket_helpers import import_made, make_settings, utc, week
from watcher import feed_consumers, review, web

DATE = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_the_fast_path_answers_as_the_route_does(engine):
    settings = make_settings()
    import_made(engine, settings, "20250101", week())
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    _, token = feed_consumers.add(engine, "fw-1", [], ["myreg"], dt.datetime.now(dt.timezone.utc))
    app = web.create_app(settings, engine, web.standalone_view(settings))
    fast = app.state.feed_fast_path
    client = TestClient(app)
    bearer = {"authorization": f"Bearer {token}"}
    # Nothing read yet: the fast path passes the request on rather than answer without the database.
    assert fast(b"GET", "myreg.txt", b"", list(_raw(bearer).items()), DATE) is None
    first = client.get("/feeds/myreg.txt", headers=bearer)
    assert first.status_code == 200 and first.text == "10.1.0.0/22\n10.3.0.0/24\n"
    basic = {"authorization": "Basic " + base64.b64encode(f"pa:{token}".encode()).decode()}
    cases = [
        ("GET", "myreg.txt", "", bearer),
        ("GET", "myreg.txt", "", basic),
        ("HEAD", "myreg.txt", "", bearer),
        ("GET", "myreg/v4.txt", "", bearer),
        ("GET", "myreg.checkpoint.json", "", bearer),
        ("GET", "myreg.txt.md5", "", bearer),
        ("GET", "myreg.txt", "header=1", bearer),
        ("GET", "myreg.txt", "", {**bearer, "if-none-match": first.headers["etag"]}),
        ("GET", "myreg.txt", "", {**bearer, "if-modified-since": first.headers["last-modified"]}),
        ("GET", "myreg.txt", "", {**bearer, "if-modified-since": "Fri, 03 Jan 2025 10:00:00 GMT"}),
        ("GET", "myreg.txt", "", {**bearer, "if-none-match": '"other"'}),
        ("GET", "nosuch.txt", "", bearer),
        ("GET", "myreg.exe", "", bearer),
        ("GET", "myreg.txt", "", {}),
    ]
    for method, path, query, headers in cases:
        raw = fast(method.encode(), path, query.encode(), list(_raw(headers).items()), DATE)
        assert raw is not None, (method, path, headers)
        status, got, body = parse(raw)
        url = f"/feeds/{path}" + (f"?{query}" if query else "")
        expected = client.request(method, url, headers=headers)
        assert status == expected.status_code, (method, path, headers)
        assert body == (b"" if method == "HEAD" else expected.content), (method, path)
        assert got.pop("date") == DATE[0][1].decode()
        assert got == dict(expected.headers), (method, path, headers)
    # A token the process has not seen needs the database: passed on (the route answers 401).
    assert fast(b"GET", "myreg.txt", b"", [(b"authorization", b"Bearer wf_unknown")], DATE) is None
    assert client.get("/feeds/myreg.txt", headers={"authorization": "Bearer wf_unknown"}).status_code == 401


def _raw(headers: dict[str, str]) -> dict[bytes, bytes]:
    return {name.lower().encode(): value.encode() for name, value in headers.items()}


def test_public_feeds_answer_without_credentials_and_record_no_consumer(engine):
    import dataclasses

    settings = make_settings()
    settings = dataclasses.replace(settings, feeds=dataclasses.replace(settings.feeds, public=True))
    import_made(engine, settings, "20250101", week())
    review.transition(engine, 1, "approve", "alice", now=lambda: utc(2025, 1, 2))
    app = web.create_app(settings, engine, web.standalone_view(settings))
    client = TestClient(app)
    answer = client.get("/feeds/myreg.txt")
    assert answer.status_code == 200 and answer.text == "10.1.0.0/22\n10.3.0.0/24\n"
    assert answer.headers["cache-control"].startswith("public, ")
    status, headers, body = parse(app.state.feed_fast_path(b"GET", "myreg.txt", b"", [], DATE))
    assert (status, body) == (200, answer.content) and headers["etag"] == answer.headers["etag"]
    with engine.connect() as conn:
        assert feed_consumers.consumers(conn) == []
