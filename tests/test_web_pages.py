"""The pages in-process: queue order and filters, snippet downloads, clear errors; the plot series (pure)."""
from __future__ import annotations

import datetime as dt
import html
import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.ticket_helpers import import_made, quietly, week
from tests.web_helpers import PASSWORD, Desk, make_desk
from watcher.settings import load_settings
from watcher import review, review_queue, ticket_detail, tickets, web
from watcher.store import series
from watcher.web import plots


@pytest.fixture
def client(db_url: str, engine: sa.Engine, tmp_path: Path) -> TestClient:
    desk: Desk = make_desk(db_url, engine, tmp_path)
    client = TestClient(web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings)))
    token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"csrf": token, "username": "vera", "password": PASSWORD})
    return client


def ticket_links(html: str) -> list[str]:
    return list(dict.fromkeys(part.split('"')[0] for part in html.split('<td><a href="/tickets/')[1:]))


def test_the_queue_puts_held_then_open_first_and_filters_by_state_watch_and_cloud(client: TestClient) -> None:
    assert ticket_links(client.get("/").text) == ["4", "3", "2", "1"]
    assert ticket_links(client.get("/?watch=east").text) == ["3", "1"]
    assert ticket_links(client.get("/?state=approved&watch=west").text) == ["2"]
    assert ticket_links(client.get("/?cloud=china").text) == []
    assert ticket_links(client.get("/?state=bogus").text) == []


def test_a_page_takes_one_pooled_connection_and_the_queue_follows_every_review_step(
    client: TestClient, engine: sa.Engine
) -> None:
    checkouts: list[int] = []
    sa.event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    first = client.get("/")
    assert first.status_code == 200 and len(checkouts) == 1  # the sign-in check and the page share it
    client.get("/tag?name=Storage.EastUS2")  # its sets seen first: counted and their sizes kept (a writer's)
    assert len(checkouts) == 3
    client.get("/publications")
    assert len(checkouts) == 4
    assert ticket_links(client.get("/?state=open").text) == ["3"]
    review.transition(engine, 3, "approve", "alice")  # the kept queue is keyed by the tickets' stamp
    assert ticket_links(client.get("/?state=open").text) == []
    assert ticket_links(client.get("/?state=approved").text)[0] == "3"


def test_the_queue_pages_the_decided_tickets_and_reads_the_same_tickets_as_the_library(
    client: TestClient, engine: sa.Engine
) -> None:
    with engine.connect() as conn:
        every = tickets.list_tickets(conn)
        first = review_queue.review_queue(conn, decided_limit=1)
        second = review_queue.review_queue(conn, decided_offset=1, decided_limit=1)
        east = review_queue.review_queue(conn, watch="east")
    assert [(r.id, r.state, r.title, r.watch, r.file_date) for r in first.live] == [
        (t.id, t.state, t.title, t.watch, t.file_date) for t in (every[3], every[2])]
    assert [r.id for r in first.decided] == [2] and (first.decided_total, first.older_offset) == (2, 1)
    assert first.newer_offset is None and first.watches == ["east", "west"] and first.clouds == ["public"]
    assert [r.id for r in second.decided] == [1] and (second.older_offset, second.newer_offset) == (None, 0)
    assert [r.id for r in east.live + east.decided] == [3, 1]
    # The page: one page of decided tickets (50 by default), newer and older links past it.
    assert ticket_links(client.get("/?offset=1").text) == ["4", "3", "1"]
    assert 'href="/?offset=0">newer</a>' in client.get("/?offset=1").text
    assert ticket_links(client.get("/?offset=5").text) == ["4", "3"]
    assert ticket_links(client.get("/?offset=junk").text) == ["4", "3", "2", "1"]


def test_a_kept_ticket_page_follows_a_review_step_taken_elsewhere(client: TestClient, engine: sa.Engine) -> None:
    before = client.get("/tickets/3").text
    assert 'id="ticket-state">open<' in before and "by the API" not in before
    assert "Waiting for review (2)" in client.get("/").text
    assert client.get("/tickets/3").text == before  # kept, and shown the same
    review.transition(engine, 3, "approve", "alice", "by the API")
    after = client.get("/tickets/3").text
    assert 'id="ticket-state">approved<' in after and "by the API" in after
    assert "Approved state of east" in after and "from ticket #3" in after
    assert "Waiting for review (1)" in client.get("/").text  # the kept queue follows too
    with engine.connect() as conn:
        stamp = ticket_detail.page_stamp(conn, 3)
    assert stamp.state == "approved" and stamp.own is not None and stamp.approved_id is not None


def test_snippets_download_per_phase_and_unknown_things_are_clear_404s(client: TestClient) -> None:
    snippet = client.get("/tickets/3/snippet/nftables?phase=remove")
    assert snippet.status_code == 200
    assert snippet.headers["content-disposition"] == 'attachment; filename="ticket-3-remove.nftables.txt"'
    assert "10.1.9.0/24" in snippet.text
    assert client.get("/tickets/3/snippet/nosuch").status_code == 404
    missing = client.get("/tickets/99")
    assert missing.status_code == 404 and "99" in missing.text
    assert client.get("/tag?name=NoSuchTag").status_code == 404
    assert client.get("/watch?name=nowhere").status_code == 404
    assert client.get("/tag/plot.svg?name=Storage.EastUS2&kind=pie").status_code == 404


def test_the_plot_is_svg_without_scripts_or_links_out(client: TestClient) -> None:
    svg = client.get("/tag/plot.svg?name=Storage.EastUS2&kind=space")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "default-src 'none'" in svg.headers["content-security-policy"]
    assert "<svg" in svg.text and "kozea.github.io" not in svg.text and "<script src" not in svg.text
    assert svg.headers["content-encoding"] == "gzip"  # the client asked for it; the plot is kept gzipped too
    plain = client.get("/tag/plot.svg?name=Storage.EastUS2&kind=space", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == svg.text
    unchanged = client.get("/tag/plot.svg?name=Storage.EastUS2&kind=space", headers={"If-None-Match": svg.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_the_kept_tag_page_and_plots_follow_a_new_publication(client: TestClient, engine: sa.Engine) -> None:
    def rows() -> int:
        return client.get("/tag?name=Storage.EastUS2").text.count("<tr><td>2025-")

    before, svg = rows(), client.get("/tag/plot.svg?name=Storage.EastUS2&kind=prefixes")
    assert before == 2 + 2  # two publications in the numbers, two versions
    import_made(engine, quietly(load_settings(None, {})), "20250115",
                week(storage_eastus2=("10.1.0.0/24", "10.1.9.0/24"), storage_westus=()), 3)
    assert rows() == 3 + 3
    named = html.unescape(re.search(r'id="plot-prefixes" data-kind="prefixes">\s*<noscript><img src="([^"]+)"',
                                    client.get("/tag?name=Storage.EastUS2").text)[1])
    assert named.endswith("&kind=prefixes&v=3-3")  # three publications, the newest has id 3
    lasting = client.get(named)
    assert lasting.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert lasting.text == client.get("/tag/plot.svg?name=Storage.EastUS2&kind=prefixes").text
    # The stamp the page had before the import still names the plot of then (it never changes) ...
    assert client.get(named.replace("v=3-3", "v=2-2")).text == svg.text
    # ... and one that names no kept plot gets the current one, not to be kept.
    unknown = client.get(named.replace("v=3-3", "v=9-9"))
    assert unknown.text == lasting.text and unknown.headers["cache-control"] == "private, no-cache"
    again = client.get("/tag/plot.svg?name=Storage.EastUS2&kind=prefixes", headers={"If-None-Match": svg.headers["etag"]})
    assert again.status_code == 200 and again.headers["etag"] != svg.headers["etag"] and again.text != svg.text


def test_the_tag_page_carries_its_series_for_the_browsers_plots(client: TestClient) -> None:
    page = client.get("/tag?name=Storage.EastUS2").text
    carried = json.loads(re.search(r'<script type="application/json" id="tag-series">(.*?)</script>', page, re.S)[1])
    assert carried["tag"] == "Storage.EastUS2" and carried["dates"] == ["2025-01-01", "2025-01-08"]
    assert len(carried["v4_prefixes"]) == len(carried["v6_networks_64"]) == 2 and carried["changed"] == [0, 1]
    named = re.findall(r'<script src="([^"]+)"|<link rel="stylesheet" href="([^"]+)"', page)
    paths = [html.unescape(a or b) for a, b in named]
    assert {p.split("?")[0] for p in paths} == {"/static/desk.js", "/static/desk.css", "/static/tagplot.js",
                                                "/static/vendor/uPlot-1.6.32.iife.min.js",
                                                "/static/vendor/uPlot-1.6.32.min.css"}
    for path in paths:  # vendored, named with their digests: the page loads nothing from elsewhere, and once
        answer = client.get(path)
        assert answer.status_code == 200 and "immutable" in answer.headers["cache-control"], path


def test_a_tags_first_view_reads_its_series_with_the_sign_in_on_postgresql(
        client: TestClient, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher import db

    separate: list[str] = []
    read_series = series._read_series
    monkeypatch.setattr(series, "_read_series", lambda conn, cloud, name: separate.append("read") or
                        read_series(conn, cloud, name))
    first = client.get("/tag?name=Storage.EastUS2").text
    # PostgreSQL: the dates and versions came in the sign-in's round trip; elsewhere they are read on their own.
    assert separate == ([] if db.pipelined(engine) else ["read"])
    with engine.connect() as conn:
        expected = series.tag_series(conn, "public", "Storage.EastUS2")
    assert [e.date.isoformat() for e in expected.entries] == ["2025-01-01", "2025-01-08"]
    assert all(f"<tr><td>{e.date}</td><td>{e.change_number}</td><td>{e.prefix_count}</td>" in first
               for e in expected.entries)
    separate.clear()
    assert client.get("/tag?name=Storage.EastUS2").text == first and separate == []  # kept: the stamp alone
    other_case = client.get("/tag?name=storage.eastus2")  # not as stored: found as before, the same rows
    assert other_case.status_code == 200 and all(
        f"<tr><td>{e.date}</td><td>{e.change_number}</td>" in other_case.text for e in expected.entries)
    assert client.get("/tag?name=Storage.Nowhere").status_code == 404


def test_the_carried_series_cannot_end_its_script_element() -> None:
    points = plots.tag_series([dt.date(2025, 1, 1)], [plots.VersionPoint(dt.date(2025, 1, 1), (1, 0, 256, 0), 1, 0)])
    hostile = "</script><img src=x onerror=alert(1)>&'"
    text = str(plots.plot_data_markup(hostile, points))
    assert not set("<>&'") & set(text)
    assert json.loads(text)["tag"] == hostile and json.loads(text)["v4_addresses"] == [256]


def test_tag_series_has_one_point_per_publication_with_the_version_in_force() -> None:
    days = [dt.date(2025, 1, d) for d in (1, 8, 15, 22)]
    versions = [plots.VersionPoint(dt.date(2025, 1, 8), plots.family_sizes(("10.0.0.0/24", "10.0.0.0/25",
                                                                             "2001:db8::/48")), 3, 0),
                plots.VersionPoint(dt.date(2025, 1, 22), plots.family_sizes(()), 0, 3)]
    points = plots.tag_series(days, versions)
    assert [(p.date.day, p.v4_prefixes, p.v6_prefixes, p.v4_addresses, p.v6_networks_64, p.changed) for p in points] == [
        (1, 0, 0, 0, 0, False), (8, 2, 1, 256, 65536, True), (15, 2, 1, 256, 65536, False), (22, 0, 0, 0, 0, True)]
    # Versions that start between publications (the last of them is in force at the next one, which did not
    # start it), given in any order.
    between = [plots.VersionPoint(dt.date(2025, 1, 12), (7, 0, 7, 0), 7, 0),
               plots.VersionPoint(dt.date(2025, 1, 10), (5, 0, 5, 0), 5, 0), *versions]
    assert [(p.date.day, p.v4_prefixes, p.changed) for p in plots.tag_series(days[::-1], between)] == [
        (1, 0, False), (8, 2, True), (15, 7, False), (22, 0, True)]
    with pytest.raises(ValueError, match="unknown plot"):
        plots.plot_svg("x", points, "pie")


def test_a_plot_draws_a_dot_per_point_until_they_would_smear_then_lines_and_the_changes_alone() -> None:
    def points(count: int) -> list[plots.SeriesPoint]:
        return [plots.SeriesPoint(dt.date(2021, 1, 4) + dt.timedelta(weeks=i), 100 + i, 3, 25_600 + i, 65_536, i % 4 == 0)
                for i in range(count)]

    few, many = plots.MAX_POINTS_WITH_DOTS, plots.MAX_POINTS_WITH_DOTS + 1
    for kind in plots.PLOT_KINDS:
        assert plots.plot_svg("x", points(few), kind).count('class="dot ') == 2 * few
        drawn = plots.plot_svg("x", points(many), kind)
        assert drawn.count('class="line reactive nofill"') == 2  # both lines, and no line through the changes
        changes = sum(1 for p in points(many) if p.changed)
        assert drawn.count('class="dot ') == changes == 16  # a dot at each change, none elsewhere
        busy = [p._replace(changed=True) for p in points(many)]  # dots at every point would smear
        drawn = plots.plot_svg("x", busy, kind)
        assert 'class="dot ' not in drawn and f"({many} of {many} publications changed it)" in drawn



def test_a_space_too_large_for_a_float_to_tell_apart_still_plots():
    # A hostile file may publish 2000::/3 (2**61 /64 networks) or larger: values a float cannot tell apart.
    for v6 in ((2**53, 2**53 + 1), (2**64, 2**64 + 1), (2**61, 2**61), (2**125, 2**125 + 7)):
        points = [plots.SeriesPoint(dt.date(2025, 1, 1) + dt.timedelta(weeks=i), 2, 1, 512, n, True)
                  for i, n in enumerate(v6)]
        assert plots.plot_svg("Hostile", points, "space").count("<circle") == 4  # a dot per publication and family

def test_the_tag_pages_rows_are_written_as_the_template_wrote_them_and_escaped() -> None:
    from watcher.store.records import HistoryEntry
    from watcher.web.pages import publication_options, series_rows, version_rows

    points = [plots.SeriesPoint(dt.date(2025, 1, 1), 2, 1, 512, 65_536, True),
              plots.SeriesPoint(dt.date(2025, 1, 8), 2, 1, 512, 65_536, False)]
    assert series_rows(points) == ("<tr><td>2025-01-01</td><td>2</td><td>1</td><td>512</td><td>65536</td>"
                                   "<td>changed</td></tr><tr><td>2025-01-08</td><td>2</td><td>1</td><td>512</td>"
                                   "<td>65536</td><td></td></tr>")
    entries = [HistoryEntry(dt.date(2025, 1, 1), True, 7, 3, 3, 0, ()),
               HistoryEntry(dt.date(2025, 1, 8), False, None, 0, 0, 3, ("<b>odd</b>", "number reset"))]
    assert version_rows(entries) == (
        '<tr><td>2025-01-01</td><td>7</td><td>3</td><td class="plus">+3</td><td class="minus">−0</td><td></td></tr>'
        '<tr><td>2025-01-08</td><td>withdrawn</td><td>0</td><td class="plus">+0</td><td class="minus">−3</td>'
        "<td>&lt;b&gt;odd&lt;/b&gt;; number reset</td></tr>")
    days = ["2025-01-01", "2025-01-08"]
    assert publication_options(days, "2025-01-08") == "<option>2025-01-01</option><option selected>2025-01-08</option>"
    assert publication_options(days, "") == "<option>2025-01-01</option><option>2025-01-08</option>"
    # Only a whole date of the list is marked: part of one, or anything else a query string holds, is not.
    for other in ("2025-01-0", "<option>", "2025-01-01</option><option>2025-01-08"):
        assert publication_options(days, other) == "<option>2025-01-01</option><option>2025-01-08</option>"
    assert publication_options([], "2025-01-08") == ""


def test_family_sizes_count_overlaps_once_and_ipv6_in_64s() -> None:
    assert plots.family_sizes(["10.0.0.0/24", "10.0.0.128/25", "10.0.1.0/24", "192.168.0.1/32"]) == (4, 0, 513, 0)
    assert plots.family_sizes(["2001:db8::/48", "2001:db8::/56", "2001:db8:1::/64"]) == (0, 3, 0, 65537)
    assert plots.family_sizes(["2001:db8::1/128"]) == (0, 1, 0, 1)  # less than a /64 is still some space


def test_publication_gaps_longer_than_the_stale_bound_are_marked(client: TestClient) -> None:
    from watcher.web.pages import publication_gaps

    days = [dt.date(2025, 1, 1), dt.date(2025, 1, 8), dt.date(2025, 1, 29), dt.date(2025, 2, 5)]
    assert publication_gaps(days, 8) == {dt.date(2025, 1, 29): 21}
    assert publication_gaps(days[:1], 8) == {}
    assert "missed publications" not in client.get("/publications").text  # the desk's weeks are 7 days apart


def test_the_queue_marks_hold_until_a_live_ticket_becomes_overdue() -> None:
    from watcher.review_queue import OVERDUE_AFTER, QueueRow, ReviewQueue

    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

    def row(ticket_id: int, state: str, updated: dt.datetime) -> QueueRow:
        return QueueRow(ticket_id, state, "change", "w", "public", start.date(), "t", updated.replace(tzinfo=None))

    live = [row(1, "open", start), row(2, "hold", start + dt.timedelta(days=3))]
    queue = ReviewQueue(live, [row(3, "approved", start)], 1, 0, 50, ["w"], ["public"])
    first_due = start + OVERDUE_AFTER
    assert queue.marks_hold_until(start) == first_due and not live[0].overdue(first_due)
    assert live[0].overdue(first_due + dt.timedelta(seconds=1))
    assert queue.marks_hold_until(first_due + dt.timedelta(seconds=1)) == first_due + dt.timedelta(days=3)
    assert queue.marks_hold_until(first_due + dt.timedelta(days=4)) is None  # both overdue: for good
    assert row(3, "approved", start).overdue_after() is None


def test_the_warm_up_makes_the_live_tickets_pages_and_their_tags_before_any_request(
        db_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from watcher import render
    from watcher.store import series

    from watcher import store, watches

    desk = make_desk(db_url, engine, tmp_path)
    app = web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings))
    with engine.connect() as conn:
        live = [t.id for t in tickets.list_tickets(conn) if t.state in tickets.LIVE_STATES]
        changed = {t["tag"] for i in live for t in tickets.get_ticket(conn, i).context["tags"]}
        watched = {t for w in watches.resolve_watches(desk.settings, {"public": store.present_tag_names(conn, "public")})
                   for t in w.tag_names}
    assert sorted(live) == [3, 4] and changed
    # The watches name tags no live ticket changes (the registries' ACR tags): kept as well.
    assert {"AzureContainerRegistry.EastUS2", "AzureContainerRegistry.WestUS"} <= watched - changed
    # A live ticket past its removal delay shows "removals after" an approval now would set, to the minute, and
    # its kept page is keyed by it: the warm-up and the views below must fall in one minute (they take well under
    # 20 s), or the views would make the pages again for the next minute, as they should.
    second = dt.datetime.now().second
    if second >= 40:
        time.sleep(60.5 - second)
    with caplog.at_level("INFO", logger="watcher.web.app"):
        done = web.warm_up(app, 60)
    assert done["tickets"] == 2 and done["tags"] == len(changed | watched) and "error" not in done
    assert done["sizes_left_tags"] == 0 and done["sizes_counted_sets"] > 0  # every stored set counted and kept
    assert any(r.getMessage().startswith("warmed up in ") and "tickets 2" in r.getMessage() for r in caplog.records)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM contents WHERE v4_prefixes IS NULL")).scalar() == 0

    def made_again(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("made again: the warm-up should have kept it")

    # Kept: the live tickets' pages and their tags' pages (which carry their plots' numbers) are served without
    # being made again; the server draws no plot for a browser with JavaScript.
    monkeypatch.setattr(render, "render_formats", made_again)
    monkeypatch.setattr(tickets, "get_ticket", made_again)
    monkeypatch.setattr(series, "tag_series", made_again)
    monkeypatch.setattr(plots, "plot_svg", made_again)
    monkeypatch.setattr(review_queue, "review_queue", made_again)
    client = TestClient(app)
    token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"csrf": token, "username": "vera", "password": PASSWORD})
    assert client.get("/").status_code == 200
    for ticket_id in live:
        page = client.get(f"/tickets/{ticket_id}")
        assert page.status_code == 200 and "Rule snippets" in page.text
    for name in changed | watched:
        page = client.get(f"/tag?name={name}")
        assert page.status_code == 200 and 'id="tag-series"' in page.text


def test_a_warm_up_that_fails_or_is_switched_off_leaves_the_start_and_the_pages_as_they_were(
        db_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    desk = make_desk(db_url, engine, tmp_path)
    app = web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings))
    assert web.warm_up(app, 0) == {}

    def broken(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("the database went away"))

    monkeypatch.setattr(review_queue, "review_queue", broken)
    with caplog.at_level("INFO", logger="watcher.web.app"):
        done = web.warm_up(app, 60)
    assert done["error"] == "OperationalError"
    assert any(r.levelname == "WARNING" and "warm-up stopped by OperationalError" in r.getMessage()
               for r in caplog.records)
    monkeypatch.undo()
    client = TestClient(app)
    token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"csrf": token, "username": "vera", "password": PASSWORD})
    assert ticket_links(client.get("/").text) == ["4", "3", "2", "1"]
    assert client.get("/tickets/3").status_code == 200
