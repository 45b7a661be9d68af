"""What fetching deals in, and reading download pages: pure, no I/O.

The value types of a poll (``Fetched``, ``FileLink``, ``Download``, ``Deadline``),
which clouds are polled and where their pages are, what a service-tag file is
called, and ``find_links``: Microsoft has changed the download page format
several times, so it understands the embedded ``window.__DLCDetails__`` JSON,
plain ``href`` links and, as a last resort, bare download URLs in the page text.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Callable, Iterable, Iterator

from ..errors import FetchError
from ..redact import redact_url
from ..settings import CLOUD_FILE_NAMES

#: Microsoft's download page of a cloud's service-tag file.
PAGE_URL_TEMPLATE = "https://www.microsoft.com/en-us/download/details.aspx?id={download_id}"
#: Our cloud name -> Microsoft download id. ``germany`` was retired and is not polled.
DOWNLOAD_IDS = {"public": 56519, "usgov": 57063, "china": 57062}

#: Last-resort pattern for download URLs in page text (any cloud; filtered afterwards).
BARE_DOWNLOAD_URL = re.compile(
    r"https://download\.microsoft\.com/download/[^\s\"'<>\\]*?ServiceTags_[A-Za-z]+_\d{8}\.json"
)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, repr=False)
class Fetched:
    """A body already read, kept so that ``download`` need not fetch it twice."""

    final_url: str
    body: bytes
    content_type: str = ""


@dataclass(frozen=True, repr=False)
class FileLink:
    """Where the newest service-tag file of a cloud is.

    ``url`` may carry the configured source's credentials (it is what gets
    requested); store and show ``safe_url`` instead.
    """

    cloud: str                      # our name: public / usgov / china
    url: str                        # http(s) or file:// URL of the file
    file_name: str                  # ServiceTags_Public_20251028.json
    file_date: dt.date | None       # from the file name; None if the name has no date
    page_url: str | None            # the page it was found on, if any
    # Set when discovery had to download the file to learn it was the file (a source URL).
    prefetched: Fetched | None = field(default=None, repr=False, compare=False)

    @property
    def safe_url(self) -> str:
        """``url`` with userinfo and query values masked: for the database, logs and messages."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        page = redact_url(self.page_url) if self.page_url else None
        return (
            f"FileLink(cloud={self.cloud!r}, url={self.safe_url!r}, file_name={self.file_name!r}, "
            f"file_date={self.file_date!r}, page_url={page!r})"
        )


@dataclass(frozen=True, repr=False)
class Download:
    """A downloaded file: decoded (gunzipped) JSON bytes and their digest."""

    link: FileLink
    final_url: str
    body: bytes
    sha256: str

    def __repr__(self) -> str:
        return (
            f"Download(link={self.link!r}, final_url={redact_url(self.final_url)!r}, "
            f"body=<{len(self.body)} bytes>, sha256={self.sha256!r})"
        )


@dataclass(frozen=True)
class Deadline:
    """The monotonic end of one poll; it also owns sleeping so tests can inject it."""

    seconds: float
    ends_at: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @classmethod
    def start(
        cls,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> "Deadline":
        return cls(seconds=seconds, ends_at=clock() + seconds, clock=clock, sleep=sleep)

    def remaining(self) -> float:
        return self.ends_at - self.clock()

    def check(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise FetchError(f"gave up {doing}: the {self.seconds:g} s deadline for this poll has passed")


# --------------------------------------------------------------------------- URLs and names


def page_url_for(cloud: str) -> str:
    """Microsoft's download page for ``cloud`` (raises FetchError for clouds not polled)."""
    return PAGE_URL_TEMPLATE.format(download_id=DOWNLOAD_IDS[_polled_cloud(cloud)])


def _polled_cloud(cloud: str) -> str:
    name = cloud.lower()
    if name == "germany":
        raise FetchError("cloud 'germany' is not polled: Microsoft retired Azure Germany and publishes no file for it")
    if name not in DOWNLOAD_IDS:
        raise FetchError(f"unknown cloud {cloud!r} (polled clouds: {', '.join(DOWNLOAD_IDS)})")
    return name


def _file_name_pattern(cloud: str) -> re.Pattern[str]:
    """``ServiceTags_<Cloud>_<YYYYMMDD>.json`` (optionally ``.gz``) of exactly this cloud."""
    file_cloud = re.escape(CLOUD_FILE_NAMES[cloud])
    return re.compile(rf"ServiceTags_{file_cloud}_(\d{{8}})\.json(?:\.gz)?", re.IGNORECASE)


def _date_from_name(name: str, cloud: str) -> dt.date | None:
    match = _file_name_pattern(cloud).fullmatch(name)
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def _url_file_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _newest_first(links: Iterable[FileLink]) -> list[FileLink]:
    # sorted() is stable, so among equal dates the page's first link stays first.
    return sorted(links, key=lambda link: link.file_date or dt.date.min, reverse=True)


# --------------------------------------------------------------------------- page parsing (pure)


def find_links(html_text: str, cloud: str, base_url: str) -> list[FileLink]:
    """Links to ``cloud``'s service-tag file on a download page, newest first.

    Tries the page formats Microsoft has used, most structured first, and falls
    back to the next only when the previous one found nothing for this cloud.
    """
    cloud = _polled_cloud(cloud)
    for extract in (_dlc_details_urls, _href_urls, _bare_urls):
        links = _links_for_cloud(extract(html_text), cloud, base_url)
        if links:
            return links
    return []


def _links_for_cloud(raw_urls: Iterable[str], cloud: str, base_url: str) -> list[FileLink]:
    seen: set[str] = set()
    links = []
    for raw in raw_urls:
        # HTMLParser already resolved entities in hrefs; JSON and bare URLs carry none.
        url = urllib.parse.urljoin(base_url, raw.strip())
        if urllib.parse.urlsplit(url).scheme not in ("http", "https") or url in seen:
            continue
        name = _url_file_name(url)
        date = _date_from_name(name, cloud)
        if date is None:
            continue  # another cloud's file, or not a service-tag file at all
        seen.add(url)
        links.append(FileLink(cloud=cloud, url=url, file_name=name, file_date=date, page_url=base_url))
    return _newest_first(links)


_DLC_ASSIGNMENT = re.compile(r"__DLCDetails__\s*=\s*")


def _dlc_details_urls(text: str) -> Iterator[str]:
    """``window.__DLCDetails__ = {...}``: decode the object and collect ``downloadFile[].url``."""
    decoder = json.JSONDecoder()
    for match in _DLC_ASSIGNMENT.finditer(text):
        start = text.find("{", match.end())
        if start < 0:
            continue
        try:
            # raw_decode stops at the object's end, so the rest of the script does not matter.
            details, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        yield from _download_file_urls(details)


def _download_file_urls(node: Any) -> Iterator[str]:
    # The object's nesting has changed between page versions; look for downloadFile anywhere.
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "downloadFile" and isinstance(value, list):
                yield from (f["url"] for f in value if isinstance(f, dict) and isinstance(f.get("url"), str))
            else:
                yield from _download_file_urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _download_file_urls(item)


class _HrefCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _href_urls(text: str) -> list[str]:
    """``confirmation.aspx`` style: plain ``<a href=...>`` links."""
    collector = _HrefCollector()
    collector.feed(text)
    collector.close()
    return collector.hrefs


def _bare_urls(text: str) -> list[str]:
    """Last resort: download URLs anywhere in the text (JSON-escaped slashes undone)."""
    return BARE_DOWNLOAD_URL.findall(text.replace("\\/", "/"))

