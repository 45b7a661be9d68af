"""Tests of watcher.fetch against real parts: a local HTTP server standing in for
Microsoft (serving the real service-tag files from ../shared), a tiny forwarding
proxy, and the real files on disk. Only time is faked, where waiting is the point.
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import time
import tracemalloc
from pathlib import Path

import orjson
import pytest

from watcher.errors import FetchError, ImplausibleFileError, WatcherError
from watcher.fetch import (
    Deadline,
    Download,
    discover,
    download,
    find_links,
    make_client,
    page_url_for,
    parse_retry_after,
    quarantine,
)
from watcher.plausible import check_plausible
from watcher.settings import FetchSettings

from tests.conftest import SHARED
from tests.httpstub import (
    ForwardProxy,
    Origin,
    confirmation_page,
    details_page,
    drip,
    free_port,
    gzip_bomb,
    html_reply,
    real_file,
    redirect,
    reply,
    truncated,
)

PUBLIC_NEWEST = "ServiceTags_Public_20251028.json"
PUBLIC_OLDER = "ServiceTags_Public_20251013.json"
MS = "https://download.microsoft.com/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def deadline(sleeps: list[float]) -> Deadline:
    """A 20 s poll whose waits are recorded instead of slept."""
    return Deadline.start(20, sleep=sleeps.append)


def fetch_settings(**changes: object) -> FetchSettings:
    defaults: dict[str, object] = {"retries": 2, "backoff_seconds": 0.5, "timeout_seconds": 5.0}
    defaults.update(changes)
    return FetchSettings(**defaults)  # type: ignore[arg-type]


def poll(settings: FetchSettings, deadline: Deadline, cloud: str = "public") -> Download:
    """What the pipeline does: discover, then download."""
    with make_client(settings) as client:
        link = discover(cloud, settings, client, deadline)
        return download(link, settings, client, deadline)


def serve_public_files(origin: Origin) -> None:
    for name in (PUBLIC_OLDER, PUBLIC_NEWEST):
        origin.route(f"/files/{name}", reply(real_file(name)))


# --------------------------------------------------------------------------- pure parts


def test_page_url_for_each_polled_cloud() -> None:
    base = "https://www.microsoft.com/en-us/download/details.aspx?id="
    assert page_url_for("public") == base + "56519"
    assert page_url_for("usgov") == base + "57063"
    assert page_url_for("China") == base + "57062"


def test_germany_is_not_polled() -> None:
    with pytest.raises(FetchError, match="germany.*not polled"):
        page_url_for("germany")
    with pytest.raises(FetchError, match="germany"):
        discover("germany", fetch_settings(), None, Deadline.start(1))  # type: ignore[arg-type]


def test_find_links_reads_the_dlc_details_json_and_picks_the_newest() -> None:
    page = details_page([
        f"{MS}/{PUBLIC_OLDER}",
        f"{MS}/{PUBLIC_NEWEST}",
        f"{MS}/ServiceTags_China_20251103.json",  # newer, but another cloud
    ])
    links = find_links(page, "public", "https://www.microsoft.com/en-us/download/details.aspx?id=56519")
    assert [link.file_name for link in links] == [PUBLIC_NEWEST, PUBLIC_OLDER]
    newest = links[0]
    assert newest.url == f"{MS}/{PUBLIC_NEWEST}"  # escaped slashes undone by the JSON decoder
    assert newest.file_date == dt.date(2025, 10, 28)
    assert newest.cloud == "public"
    assert newest.page_url.endswith("id=56519")


def test_find_links_reads_plain_hrefs_relative_and_absolute() -> None:
    page = confirmation_page([
        f"{MS}/{PUBLIC_OLDER}",
        "/download/files/ServiceTags_Public_20251028.json?sv=1&amp;x=2",
        f"{MS}/ServiceTags_AzureGovernment_20260720.json",
    ])
    links = find_links(page, "public", "https://www.microsoft.com/en-us/download/confirmation.aspx?id=56519")
    assert [link.url for link in links] == [
        "https://www.microsoft.com/download/files/ServiceTags_Public_20251028.json?sv=1&x=2",
        f"{MS}/{PUBLIC_OLDER}",
    ]
    usgov = find_links(page, "usgov", "https://www.microsoft.com/")
    assert [link.file_name for link in usgov] == ["ServiceTags_AzureGovernment_20260720.json"]


def test_find_links_falls_back_to_bare_urls_in_the_text() -> None:
    page = (
        "<html><body><a href='/help'>help</a><script>var files = "
        f"['{MS}/ServiceTags_Public_20250804.json', \"{MS.replace('/', chr(92) + '/')}/{PUBLIC_NEWEST}\"];"
        f"</script> or copy {MS}/{PUBLIC_OLDER} by hand</body></html>"
    )
    links = find_links(page, "public", "https://www.microsoft.com/x")
    assert [link.file_name for link in links] == [PUBLIC_NEWEST, PUBLIC_OLDER, "ServiceTags_Public_20250804.json"]
    assert links[0].url == f"{MS}/{PUBLIC_NEWEST}"


def test_find_links_ignores_other_clouds_and_non_links() -> None:
    page = confirmation_page([f"{MS}/ServiceTags_China_20260720.json", "mailto:ServiceTags_Public_20251028.json"])
    assert find_links(page, "public", "https://www.microsoft.com/") == []
    assert find_links("<html>nothing here</html>", "public", "https://www.microsoft.com/") == []


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = dt.datetime(2025, 10, 28, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Tue, 28 Oct 2025 12:01:30 GMT", now) == 90.0
    assert parse_retry_after("Tue, 28 Oct 2025 11:00:00 GMT", now) == 0.0  # in the past: no wait
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_quarantine_writes_atomically_and_keeps_the_name_safe(tmp_path: Path) -> None:
    target = quarantine(b"suspicious", "../../etc/ServiceTags_Public_20251028.json", tmp_path / "q")
    assert target == tmp_path / "q" / "ServiceTags_Public_20251028.json"
    assert target.read_bytes() == b"suspicious"
    assert quarantine(b"again", target.name, tmp_path / "q").read_bytes() == b"again"
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [target.name]  # no temp files left


# --------------------------------------------------------------------------- page formats over HTTP


@pytest.mark.parametrize("page_format", [details_page, confirmation_page])
def test_discover_on_a_download_page_and_download_the_newest(origin: Origin, deadline: Deadline, page_format) -> None:
    serve_public_files(origin)
    origin.route("/details", html_reply(page_format([origin.url(f"/files/{PUBLIC_OLDER}"), origin.url(f"/files/{PUBLIC_NEWEST}")])))
    settings = fetch_settings(source_url=origin.url("/details"))
    dl = poll(settings, deadline)
    assert dl.link.file_name == PUBLIC_NEWEST
    assert dl.link.page_url == origin.url("/details")
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert dl.sha256 == hashlib.sha256(real_file(PUBLIC_NEWEST)).hexdigest()
    assert check_plausible(dl.body, "public", 3039, settings.min_tag_ratio) == 3039
    assert origin.hits(f"/files/{PUBLIC_OLDER}") == 0
    assert {headers["User-Agent"] for _, headers in origin.requests} == {settings.user_agent}


def test_page_404_is_a_clear_error(origin: Origin, deadline: Deadline) -> None:
    settings = fetch_settings(source_url=origin.url("/gone"))
    with pytest.raises(FetchError, match=r"HTTP 404 Not Found from http://127\.0\.0\.1:\d+/gone"):
        poll(settings, deadline)


def test_page_without_a_link_says_the_format_may_have_changed(origin: Origin, deadline: Deadline) -> None:
    origin.route("/details", html_reply(confirmation_page([f"{MS}/ServiceTags_China_20260720.json"])))
    with pytest.raises(FetchError) as caught:
        poll(fetch_settings(source_url=origin.url("/details")), deadline)
    message = str(caught.value)
    assert "no ServiceTags_Public_<date>.json link found on " + origin.url("/details") in message
    assert "format may have changed" in message


# --------------------------------------------------------------------------- retries


def test_500_then_success_is_retried(origin: Origin, deadline: Deadline, sleeps: list[float]) -> None:
    origin.route("/latest.json", reply(b"oops", 500, "text/plain"), reply(real_file(PUBLIC_NEWEST)))
    dl = poll(fetch_settings(source_url=origin.url("/latest.json"), backoff_seconds=0.5), deadline)
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert origin.hits("/latest.json") == 2
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.75  # backoff 0.5 s with jitter


def test_429_honours_retry_after(origin: Origin, deadline: Deadline, sleeps: list[float]) -> None:
    origin.route("/latest.json", reply(b"slow down", 429, "text/plain", {"Retry-After": "7"}), reply(real_file(PUBLIC_NEWEST)))
    dl = poll(fetch_settings(source_url=origin.url("/latest.json")), deadline)
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert sleeps == [7.0]


def test_retry_after_past_the_deadline_gives_up_without_sleeping(origin: Origin, deadline: Deadline, sleeps: list[float]) -> None:
    origin.route("/latest.json", reply(b"slow down", 429, "text/plain", {"Retry-After": "3600"}))
    with pytest.raises(FetchError, match=r"HTTP 429 .*waiting 3600 s would pass the 20 s poll deadline"):
        poll(fetch_settings(source_url=origin.url("/latest.json")), deadline)
    assert sleeps == []


def test_persistent_5xx_gives_up_after_the_retries(origin: Origin, deadline: Deadline, sleeps: list[float]) -> None:
    origin.route("/latest.json", reply(b"down", 503, "text/plain"))
    with pytest.raises(FetchError, match=r"HTTP 503 .*gave up after 3 attempts"):
        poll(fetch_settings(source_url=origin.url("/latest.json"), retries=2), deadline)
    assert origin.hits("/latest.json") == 3
    assert 0.25 <= sleeps[0] <= 0.75 and 0.5 <= sleeps[1] <= 1.5  # exponential: 0.5 s, then 1 s, jittered



def test_connection_refused(deadline: Deadline, sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}/latest.json"
    with pytest.raises(FetchError) as caught:
        poll(fetch_settings(source_url=url, retries=2), deadline)
    message = str(caught.value)
    assert f"could not fetch {url}: ConnectError" in message
    assert "gave up after 3 attempts" in message
    assert len(sleeps) == 2


# --------------------------------------------------------------------------- the body


def test_slow_drip_body_is_cut_off_at_the_deadline(origin: Origin) -> None:
    origin.route("/latest.json", drip(interval=0.05, for_seconds=5))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"deadline for this poll has passed") as caught:
        poll(fetch_settings(source_url=origin.url("/latest.json"), timeout_seconds=5), Deadline.start(1.0))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed  # the 5 s read timeout never fired; the deadline did
    assert "bytes received" in str(caught.value)


def test_truncated_body_is_an_error(origin: Origin, deadline: Deadline) -> None:
    body = real_file(PUBLIC_NEWEST)
    origin.route("/latest.json", truncated(body[:5000], claimed_length=len(body)))
    with pytest.raises(FetchError, match=r"truncated.*gave up after 2 attempts"):
        poll(fetch_settings(source_url=origin.url("/latest.json"), retries=1), deadline)
    assert origin.hits("/latest.json") == 2  # a cut-off download is worth one more try


def test_incomplete_gzip_is_an_error(origin: Origin, deadline: Deadline) -> None:
    packed = gzip.compress(real_file(PUBLIC_NEWEST))
    origin.route(f"/{PUBLIC_NEWEST}.gz", truncated(packed[: len(packed) // 2], claimed_length=None))
    with pytest.raises(FetchError, match="truncated: the gzip stream is incomplete"):
        poll(fetch_settings(source_url=origin.url(f"/{PUBLIC_NEWEST}.gz"), retries=0), deadline)


def test_gzip_file_and_gzip_encoding_are_decoded(origin: Origin, deadline: Deadline) -> None:
    packed = gzip.compress(real_file(PUBLIC_NEWEST))
    origin.route("/plain.json", reply(packed, headers={"Content-Encoding": "gzip"}))
    origin.route(f"/{PUBLIC_NEWEST}.gz", reply(packed, content_type="application/gzip"))
    for path in ("/plain.json", f"/{PUBLIC_NEWEST}.gz"):
        dl = poll(fetch_settings(source_url=origin.url(path)), deadline)
        assert dl.body == real_file(PUBLIC_NEWEST), path
    assert origin.requests[0][1]["Accept-Encoding"] == "gzip"


def test_html_where_json_should_be(origin: Origin, deadline: Deadline) -> None:
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{PUBLIC_NEWEST}")])))
    origin.route(f"/files/{PUBLIC_NEWEST}", html_reply("<!DOCTYPE html><html><body>Please sign in</body></html>"))
    dl = poll(fetch_settings(source_url=origin.url("/details")), deadline)
    with pytest.raises(FetchError, match="HTML page where the Public service-tag JSON was expected"):
        check_plausible(dl.body, "public", 3039, 0.8)


def test_json_of_the_wrong_cloud(origin: Origin, deadline: Deadline) -> None:
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{PUBLIC_NEWEST}")])))
    origin.route(f"/files/{PUBLIC_NEWEST}", reply(real_file("ServiceTags_China_20260720.json")))
    dl = poll(fetch_settings(source_url=origin.url("/details")), deadline)
    with pytest.raises(FetchError, match="for cloud 'China', expected 'Public'") as caught:
        check_plausible(dl.body, "public", None, 0.8)
    assert not isinstance(caught.value, ImplausibleFileError)


def test_oversized_body_is_cut_off(origin: Origin, deadline: Deadline) -> None:
    origin.route("/latest.json", reply(real_file(PUBLIC_NEWEST)))
    with pytest.raises(FetchError, match=r"exceeds the size cap of 1000000 decoded bytes"):
        poll(fetch_settings(source_url=origin.url("/latest.json"), max_bytes=1_000_000), deadline)


@pytest.mark.parametrize("how", ["content-encoding", "gz-file"])
def test_gzip_bomb_is_cut_off_at_the_cap(origin: Origin, deadline: Deadline, how: str) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1_000_000  # 200 MB of zeros in well under 1 MB on the wire
    if how == "content-encoding":
        origin.route("/latest.json", reply(bomb, headers={"Content-Encoding": "gzip"}))
    else:
        origin.route("/latest.json", reply(bomb, content_type="application/octet-stream"))
    settings = fetch_settings(source_url=origin.url("/latest.json"))  # default cap: 50 MB
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match=rf"exceeds the size cap of {50 * 1024 * 1024} decoded bytes"):
            poll(settings, deadline)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Inflating stops one byte past the cap; an unbounded inflate of one 64 kB chunk would add ~64 MB.
    assert peak < settings.max_bytes + 8 * 1024 * 1024, peak


def test_source_url_that_is_the_file_is_downloaded_once(origin: Origin, deadline: Deadline) -> None:
    origin.route("/mirror/latest.json", reply(b"\xef\xbb\xbf" + real_file(PUBLIC_NEWEST)))
    settings = fetch_settings(source_url=origin.url("/mirror/latest.json"))
    with make_client(settings) as client:
        link = discover("public", settings, client, deadline)
        assert (link.url, link.file_name, link.file_date, link.page_url) == (
            origin.url("/mirror/latest.json"), "latest.json", None, None,
        )
        dl = download(link, settings, client, deadline)
    assert origin.hits("/mirror/latest.json") == 1
    assert check_plausible(dl.body, "public", None, 0.8) == 3039


# --------------------------------------------------------------------------- redirects


def test_redirects_within_the_source_are_followed(origin: Origin, deadline: Deadline) -> None:
    origin.route("/details", redirect("/moved/details", 301))
    origin.route("/moved/details", html_reply(details_page([origin.url(f"/files/{PUBLIC_NEWEST}")])))
    origin.route(f"/files/{PUBLIC_NEWEST}", redirect("/blobs/abc123"))  # relative Location
    origin.route("/blobs/abc123", reply(real_file(PUBLIC_NEWEST)))
    dl = poll(fetch_settings(source_url=origin.url("/details")), deadline)
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert dl.link.page_url == origin.url("/moved/details")
    assert dl.final_url == origin.url("/blobs/abc123")


def test_redirect_loop_is_capped(origin: Origin, deadline: Deadline) -> None:
    origin.route("/a", redirect("/b"))
    origin.route("/b", redirect("/a"))
    with pytest.raises(FetchError, match=r"too many redirects \(more than 3\)"):
        poll(fetch_settings(source_url=origin.url("/a"), max_redirects=3), deadline)
    assert len(origin.requests) == 4


def test_redirect_to_another_host_is_refused(origin: Origin, deadline: Deadline) -> None:
    origin.route("/details", html_reply(details_page([origin.url(f"/files/{PUBLIC_NEWEST}")])))
    origin.route(f"/files/{PUBLIC_NEWEST}", redirect(f"https://evil.example.net/{PUBLIC_NEWEST}"))
    with pytest.raises(FetchError) as caught:
        poll(fetch_settings(source_url=origin.url("/details")), deadline)
    message = str(caught.value)
    assert f"refusing redirect from {origin.url(f'/files/{PUBLIC_NEWEST}')} to https://evil.example.net/" in message
    assert "host evil.example.net is not on the allow-list (127.0.0.1, download.microsoft.com, www.microsoft.com)" in message


def test_redirect_to_plain_http_is_refused(origin: Origin, deadline: Deadline) -> None:
    origin.route("/latest.json", redirect(f"http://download.microsoft.com/download/{PUBLIC_NEWEST}"))
    with pytest.raises(FetchError, match=r"refusing redirect .* to http://download\.microsoft\.com/.*only HTTPS"):
        poll(fetch_settings(source_url=origin.url("/latest.json")), deadline)


def test_link_to_another_plain_http_host_is_refused(origin: Origin, deadline: Deadline) -> None:
    other = Origin()  # a second server that must never be asked
    try:
        other.route(f"/{PUBLIC_NEWEST}", reply(real_file(PUBLIC_NEWEST)))
        foreign = f"http://localhost:{other.port}/{PUBLIC_NEWEST}"
        origin.route("/details", html_reply(confirmation_page([foreign])))
        with pytest.raises(FetchError, match=r"refusing file link http://localhost:\d+/.*only HTTPS"):
            poll(fetch_settings(source_url=origin.url("/details")), deadline)
        assert other.requests == []
    finally:
        other.close()


# --------------------------------------------------------------------------- plausibility of a served file


def test_implausibly_small_file_is_refused_and_can_be_quarantined(origin: Origin, deadline: Deadline, tmp_path: Path) -> None:
    full = orjson.loads(real_file(PUBLIC_NEWEST))
    small = orjson.dumps({**full, "values": full["values"][:100]})
    origin.route("/latest.json", reply(small))
    dl = poll(fetch_settings(source_url=origin.url("/latest.json")), deadline)
    with pytest.raises(ImplausibleFileError, match=r"only 100 service tags; the previous publication had 3039"):
        check_plausible(dl.body, "public", 3039, 0.8)
    kept = quarantine(dl.body, PUBLIC_NEWEST, tmp_path)
    assert kept.read_bytes() == small


# --------------------------------------------------------------------------- local sources


def test_local_folder_source_takes_the_newest_file_of_the_cloud(deadline: Deadline) -> None:
    dl = poll(fetch_settings(source_url=str(SHARED / "public")), deadline)
    assert dl.link.file_name == f"{PUBLIC_NEWEST}.gz"
    assert dl.link.file_date == dt.date(2025, 10, 28)
    assert dl.link.url == (SHARED / "public" / f"{PUBLIC_NEWEST}.gz").resolve().as_uri()
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert check_plausible(dl.body, "public", 3039, 0.8) == 3039


def test_local_folder_without_the_cloud_is_an_error(deadline: Deadline) -> None:
    with pytest.raises(FetchError, match=r"no ServiceTags_Public_<YYYYMMDD>\.json or \.json\.gz file in source folder .*usgov"):
        poll(fetch_settings(source_url=str(SHARED / "usgov")), deadline)


def test_file_url_source(deadline: Deadline) -> None:
    path = SHARED / "china" / "ServiceTags_China_20260713.json.gz"
    dl = poll(fetch_settings(source_url=path.as_uri()), deadline, cloud="china")
    assert dl.link.file_date == dt.date(2026, 7, 13)
    assert dl.body == real_file("ServiceTags_China_20260713.json")
    assert check_plausible(dl.body, "china", 327, 0.8) == 327


def test_missing_local_source_is_an_error(tmp_path: Path, deadline: Deadline) -> None:
    with pytest.raises(FetchError, match="does not exist"):
        poll(fetch_settings(source_url=str(tmp_path / "nope.json")), deadline)


# --------------------------------------------------------------------------- secrets


SECRET_PASSWORD = "hunter2-pw"
SECRET_TOKEN = "sv2025sig-TOPSECRET"


@pytest.mark.parametrize("situation", ["404", "no-link", "5xx", "refused", "redirect-away"])
def test_secrets_in_the_source_url_never_appear_in_messages_or_logs(
    origin: Origin, deadline: Deadline, caplog: pytest.LogCaptureFixture, situation: str
) -> None:
    port = free_port() if situation == "refused" else origin.port
    path = {"404": "/gone", "no-link": "/page", "5xx": "/down", "refused": "/x", "redirect-away": "/away"}[situation]
    origin.route("/page", html_reply("<html>no links</html>"))
    origin.route("/down", reply(b"", 503, "text/plain"))
    origin.route("/away", redirect(f"https://evil.example.net/?token={SECRET_TOKEN}"))
    source = f"http://watcher:{SECRET_PASSWORD}@127.0.0.1:{port}{path}?sig={SECRET_TOKEN}&id=1"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WatcherError) as caught:
        poll(fetch_settings(source_url=source, retries=1), deadline)
    message = str(caught.value)
    assert f"http://***@127.0.0.1:{port}{path}?sig=***&id=1" in message
    for text in (message, caplog.text):
        assert SECRET_PASSWORD not in text
        assert SECRET_TOKEN not in text


def test_links_and_downloads_show_only_redacted_urls(origin: Origin, deadline: Deadline) -> None:
    origin.route("/latest.json", reply(real_file(PUBLIC_NEWEST)))
    source = origin.url("/latest.json").replace("http://", f"http://watcher:{SECRET_PASSWORD}@") + f"?sig={SECRET_TOKEN}"
    dl = poll(fetch_settings(source_url=source), deadline)
    assert dl.link.url == source  # the real URL is kept for requesting it
    assert dl.link.safe_url == f"http://***@127.0.0.1:{origin.port}/latest.json?sig=***"
    for text in (repr(dl), repr(dl.link)):
        assert SECRET_PASSWORD not in text and SECRET_TOKEN not in text
    assert f"body=<{len(real_file(PUBLIC_NEWEST))} bytes>" in repr(dl)


def test_userinfo_is_sent_as_basic_auth_to_the_source(origin: Origin, deadline: Deadline) -> None:
    origin.route("/latest.json", reply(real_file(PUBLIC_NEWEST)))
    poll(fetch_settings(source_url=origin.url("/latest.json").replace("http://", f"http://watcher:{SECRET_PASSWORD}@")), deadline)
    assert origin.requests[0][1]["Authorization"].startswith("Basic ")


def test_bad_proxy_setting_is_a_clear_error_without_its_password() -> None:
    with pytest.raises(FetchError, match=r"cannot set up the HTTP client \(proxy ftp://\*\*\*@proxy\.corp:21\)") as caught:
        make_client(fetch_settings(proxy=f"ftp://user:{SECRET_PASSWORD}@proxy.corp:21"))
    assert SECRET_PASSWORD not in str(caught.value)


# --------------------------------------------------------------------------- proxies


def test_explicit_proxy_is_used(origin: Origin, proxy: ForwardProxy, deadline: Deadline) -> None:
    serve_public_files(origin)
    # mirror.test does not resolve: only a proxy can reach it.
    mirror = f"http://mirror.test:{origin.port}"
    origin.route("/details", html_reply(confirmation_page([f"{mirror}/files/{PUBLIC_NEWEST}"])))
    dl = poll(fetch_settings(source_url=f"{mirror}/details", proxy=proxy.url), deadline)
    assert dl.body == real_file(PUBLIC_NEWEST)
    assert proxy.seen == [f"{mirror}/details", f"{mirror}/files/{PUBLIC_NEWEST}"]


def test_proxy_from_the_environment_and_no_proxy(
    origin: Origin, proxy: ForwardProxy, deadline: Deadline, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.route("/latest.json", reply(real_file(PUBLIC_NEWEST)))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    poll(fetch_settings(source_url=f"http://mirror.test:{origin.port}/latest.json"), deadline)
    assert proxy.seen == [f"http://mirror.test:{origin.port}/latest.json"]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    poll(fetch_settings(source_url=origin.url("/latest.json")), deadline)
    assert len(proxy.seen) == 1  # went direct
    assert origin.hits("/latest.json") == 2


def test_explicit_proxy_wins_over_the_environment(
    origin: Origin, proxy: ForwardProxy, deadline: Deadline, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.route("/latest.json", reply(real_file(PUBLIC_NEWEST)))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    poll(fetch_settings(source_url=f"http://mirror.test:{origin.port}/latest.json", proxy=proxy.url), deadline)
    assert proxy.seen == [f"http://mirror.test:{origin.port}/latest.json"]
