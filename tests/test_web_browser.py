"""The review desk in a real browser: Playwright driving Debian's Chromium against ``watcher serve`` as a process,
on SQLite and PostgreSQL. Screenshots of the queue, a ticket and a tag page are saved under the test's tmp path."""
from __future__ import annotations

import re
from urllib.parse import quote
from xml.etree import ElementTree
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.daemon_helpers import base_env
from tests.test_web import Served
from tests.ticket_helpers import import_made, quietly, week
from tests.web_helpers import PASSWORD, Desk, make_desk
from watcher import tickets

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Markup where a page echoes what it was given: a tag cannot carry it any more (the parser refuses such names).
MARKUP = "<img src=x onerror=alert(1)>"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def desk(db_url: str, engine: sa.Engine, tmp_path: Path) -> Desk:
    made = make_desk(db_url, engine, tmp_path)
    # A third publication that changes only an unwatched tag: one more point on every plot, no new ticket.
    import_made(engine, quietly(made.settings), "20250115",
                {**week(storage_eastus2=("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.9.0/24"),
                        storage_westus=(), other=("10.9.0.0/24", "10.9.1.0/24"))}, 3)
    with engine.connect() as conn:
        assert len(tickets.list_tickets(conn)) == 4
    return made


@pytest.fixture
def server(desk: Desk) -> Iterator[Served]:
    served = Served(base_env(desk.db_url, WATCHER_CONFIG=str(desk.config)), "--port", "0")
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.stop()


class Watched:
    """A page with its console errors, page errors and dialogs recorded (an alert() would be a dialog)."""

    def __init__(self, browser: Browser, base_url: str, javascript: bool = True) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900},
                                           permissions=["clipboard-read", "clipboard-write"],
                                           java_script_enabled=javascript)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))

    def sign_in(self, name: str) -> None:
        self.page.goto("/")
        assert self.page.url.endswith("/login?next=/")
        self.page.get_by_label("User name").fill(name)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="sign in").click()
        self.page.wait_for_url(re.compile(r"/$"))

    def csrf(self) -> str:
        return self.page.locator('input[name="csrf"]').first.get_attribute("value") or ""


def points_per_series(svg: str) -> list[int]:
    """The dots pygal drew for each series of a line chart (a series may span several groups)."""
    counts: dict[int, int] = {}
    for group in ElementTree.fromstring(svg).iter(f"{SVG}g"):
        found = re.fullmatch(r"series serie-(\d+) color-\d+", group.get("class", ""))
        if found:
            dots = [c for c in group.iter(f"{SVG}circle") if "dot" in c.get("class", "")]
            counts[int(found[1])] = counts.get(int(found[1]), 0) + len(dots)
    return [counts[k] for k in sorted(counts)]


def test_an_approver_signs_in_approves_with_a_comment_and_reads_the_tag_pages(
    browser: Browser, server: Served, desk: Desk, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    alice = Watched(browser, server.url)
    alice.sign_in("alice")
    page = alice.page

    # The queue: held first, then open, marked; then the decided ones.
    waiting = page.locator("table.tickets").first.locator("tbody tr")
    assert [waiting.nth(i).locator("td").first.inner_text() for i in range(waiting.count())] == ["#4", "#3"]
    assert waiting.first.locator(".badge.hold").count() == 1
    page.screenshot(path=str(shots / "queue.png"), full_page=True)

    # The ticket: approve with a comment, see the state and the trail change.
    page.get_by_role("link", name="#3").click()
    assert page.locator("#ticket-state").inner_text() == "open"
    assert page.locator("ul.added li").first.inner_text() == "+ 10.1.9.0/24"
    page.get_by_label("comment for approve").fill(f"checked <b>against</b> the portal {MARKUP}")
    page.get_by_role("button", name="approve", exact=True).click()
    page.wait_for_url(re.compile(r"/tickets/3$"))
    assert page.locator("#ticket-state").inner_text() == "approved"
    last = page.locator("#trail li").last.inner_text()
    assert "alice: approve open → approved" in last and "checked <b>against</b> the portal" in last
    page.screenshot(path=str(shots / "ticket.png"), full_page=True)
    # Each snippet has a copy button (the vendored script) and downloads.
    page.locator("details.snippet summary", has_text="nftables").click()
    snippet = page.locator("details.snippet", has_text="nftables")
    snippet.get_by_role("button", name="copy").click()
    expect(snippet.get_by_role("button", name="copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == snippet.locator("pre").inner_text()
    assert snippet.get_by_role("link", name="download (remove)").get_attribute("href") == \
        "/tickets/3/snippet/nftables?phase=remove"
    assert desk.cli("state", "show", "east", "--json")["ticket"] == 3

    # A POST without the CSRF token fails and changes nothing.
    forged = page.request.post(f"{server.url}/tickets/4/action", form={"step": "reject", "comment": "x"})
    assert forged.status == 403
    assert desk.cli("tickets", "show", "4", "--json")["state"] == "hold"

    # A held ticket: its hold reason, and its removals in red with the date they may go.
    page.goto("/tickets/4")
    assert "100% of IPv4 space removed" in page.locator("section.hold").inner_text()
    removed = page.locator("ul.removed li").first
    assert removed.inner_text().startswith("− 10.2.0.0/24 after ")
    assert removed.evaluate("e => getComputedStyle(e).color") == "rgb(176, 42, 55)"
    assert page.get_by_role("button", name="approve additions only").count() == 1
    page.screenshot(path=str(shots / "held-ticket.png"), full_page=True)

    # The tag page: uPlot draws both plots in the browser, one point per publication in each, the changes (the
    # two publications that started a version) marked; the versions are listed.
    page.goto("/tag?name=Storage.EastUS2&cloud=public")
    for kind in ("prefixes", "space"):
        figure = page.locator(f"figure#plot-{kind}[data-points]")
        figure.wait_for()
        assert (figure.get_attribute("data-points"), figure.get_attribute("data-changes")) == ("3", "2"), kind
        assert figure.locator("canvas").count() == 1 and figure.locator("img").count() == 0
        lines = page.evaluate("k => window.tagPlots[k].data.slice(1).map(c => c.length)", kind)
        assert lines == [3, 3], kind
    assert page.locator("#series tbody tr").count() == 3
    page.screenshot(path=str(shots / "tag.png"), full_page=True)
    page.select_option('select[name="from"]', "2025-01-01")
    page.select_option('select[name="to"]', "2025-01-15")
    page.get_by_role("button", name="compare").click()
    assert page.locator("ul.added li").inner_text() == "+ 10.1.9.0/24"

    # Markup the pages echo (a comment on the trail, an asked-for tag name) renders as text, never as an element.
    page.goto("/tickets/3")
    assert MARKUP in page.locator("#trail li").last.inner_text()
    assert page.locator('img[src="x"]').count() == 0
    unknown = page.request.get(f"{server.url}/tag?name={quote(MARKUP)}&cloud=public")  # a 404 page that names it
    assert unknown.status == 404 and MARKUP not in unknown.text() and "&lt;img src=x onerror=alert(1)&gt;" in unknown.text()
    assert alice.problems == []
    alice.context.close()


def test_without_javascript_the_tag_page_shows_the_plots_drawn_on_the_server(browser: Browser, server: Served) -> None:
    reader = Watched(browser, server.url, javascript=False)
    reader.sign_in("vera")
    page = reader.page
    page.goto("/tag?name=Storage.EastUS2&cloud=public")
    for kind in ("prefixes", "space"):
        image = page.locator(f"figure#plot-{kind} img")
        image.wait_for()
        assert page.evaluate("i => i.complete && i.naturalWidth", image.element_handle()) > 0
        svg = page.request.get(f"{server.url}{image.get_attribute('src')}").text()
        assert points_per_series(svg) == [3, 3], kind  # pygal: a dot per publication in each series
    assert page.locator("figure.plot canvas").count() == 0 and page.locator("#series tbody tr").count() == 3
    assert reader.problems == []
    reader.context.close()


def test_a_viewer_gets_no_review_buttons_and_a_forged_post_gets_403(browser: Browser, server: Served,
                                                                     desk: Desk) -> None:
    vera = Watched(browser, server.url)
    vera.sign_in("vera")
    vera.page.goto("/tickets/4")
    assert vera.page.locator("form.action").count() == 0
    assert vera.page.get_by_role("button", name=re.compile("approve|reject|release")).count() == 0
    forged = vera.page.request.post(f"{server.url}/tickets/4/action",
                                    form={"csrf": vera.csrf(), "step": "reject", "comment": "sneaky"})
    assert forged.status == 403
    assert desk.cli("tickets", "show", "4", "--json")["state"] == "hold"
    assert vera.problems == []
    vera.context.close()


def test_a_long_snippet_shows_its_first_lines_and_copy_takes_the_whole_text(browser: Browser, server: Served,
                                                                             desk: Desk) -> None:
    many = [f"10.1.{2 * i}.0/24" for i in range(70)]  # apart: nothing collapses
    import_made(desk.engine, quietly(desk.settings), "20250122", week(storage_eastus2=many, storage_westus=()), 4)
    with desk.engine.connect() as conn:
        (ticket,) = [t for t in tickets.list_tickets(conn) if t.watch == "east" and t.state in tickets.LIVE_STATES]
    alice = Watched(browser, server.url)
    alice.sign_in("alice")
    page = alice.page
    page.goto(f"/tickets/{ticket.id}")
    page.locator("details.snippet summary", has_text="nftables").click()
    snippet = page.locator("details.snippet", has_text="nftables")
    whole = page.request.get(f"{server.url}/tickets/{ticket.id}/snippet/nftables?phase=add").text()
    shown = snippet.locator("pre").inner_text()
    assert "copy and download take them all" in snippet.inner_text()
    assert len(shown.splitlines()) == 40 and whole.startswith(shown) and len(whole.splitlines()) > 40
    snippet.get_by_role("button", name="copy").click()
    expect(snippet.get_by_role("button", name="copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == whole
    assert alice.problems == []
    alice.context.close()
