"""Find and download the newest Azure service-tag file of one cloud.

Flow of one poll (the pipeline drives it; this module has no database code)::

    deadline = Deadline.start(settings.deadline_seconds)
    with make_client(settings) as client:
        link = discover(cloud, settings, client, deadline)     # where is the newest file?
        ...skip if link.url was imported already...
        dl = download(link, settings, client, deadline)        # decoded JSON bytes + sha256
        check_plausible(dl.body, cloud, previous_tag_count, settings.min_tag_ratio)

``discover`` reads Microsoft's download page for the cloud (or the configured
``source_url``: a mirror page, the file itself, a ``file://`` URL, a local
file or a local folder) and picks the newest ``ServiceTags_<Cloud>_<YYYYMMDD>.json``
it links to. Microsoft has changed the page format several times, so
``find_links`` understands the embedded ``window.__DLCDetails__`` JSON, plain
``href`` links and, as a last resort, bare download URLs in the page text.

Every HTTP request goes through one careful path: redirects are followed by
hand and only to allowed hosts over HTTPS, connection errors / 5xx / 429 are
retried with capped exponential backoff (honouring ``Retry-After``), the body
is read as a stream against a monotonic deadline and a cap on *decoded* bytes
(gzip is inflated incrementally, so a gzip bomb is cut off at the cap).

Only ``FetchError`` / ``ImplausibleFileError`` leave this module, and every URL
that goes into a message or a log line passes through ``watcher.redact`` first.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx
import orjson

from .errors import FetchError, ImplausibleFileError
from .redact import RedactingFilter, redact_text, redact_url
from .settings import CLOUD_FILE_NAMES, FetchSettings

log = logging.getLogger(__name__)

#: Microsoft's download page of a cloud's service-tag file.
PAGE_URL_TEMPLATE = "https://www.microsoft.com/en-us/download/details.aspx?id={download_id}"
#: Our cloud name -> Microsoft download id. ``germany`` was retired and is not polled.
DOWNLOAD_IDS = {"public": 56519, "usgov": 57063, "china": 57062}

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
READ_CHUNK = 64 * 1024
INFLATE_STEP = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Query parameters whose values are safe to show (Microsoft's ``details.aspx?id=N``).
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


# --------------------------------------------------------------------------- URL policy


@dataclass(frozen=True)
class _UrlPolicy:
    """Which URLs we may request: the trusted source origin, or HTTPS to an allowed host."""

    allowed_hosts: frozenset[str]
    trusted_origin: tuple[str, str, int] | None

    def check(self, url: str, why: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if self.trusted_origin is not None and _origin(url) == self.trusted_origin:
            return
        if parts.scheme != "https":
            raise FetchError(f"refusing {why} {redact_url(url)}: only HTTPS is allowed there, not {parts.scheme or 'no scheme'}")
        host = (parts.hostname or "").rstrip(".")
        if host not in self.allowed_hosts:
            raise FetchError(
                f"refusing {why} {redact_url(url)}: host {host or '(none)'} is not on the allow-list "
                f"({', '.join(sorted(self.allowed_hosts))})"
            )


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 0)
    return (parts.scheme, (parts.hostname or "").rstrip("."), port or default_port)


def _url_policy(settings: FetchSettings) -> _UrlPolicy:
    hosts = {h.lower().rstrip(".") for h in settings.allowed_hosts}
    trusted = None
    source = settings.source_url
    if source and _is_remote(source):
        # The operator chose this origin (maybe a plain-HTTP internal mirror); trust it.
        trusted = _origin(source)
        if trusted:
            hosts.add(trusted[1])
    return _UrlPolicy(frozenset(hosts), trusted)


def _is_remote(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


# --------------------------------------------------------------------------- HTTP


_LIBRARY_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")


def _redact_library_logs() -> None:
    # A logger's filters do not apply to its children, so each logger that writes gets one.
    existing = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("httpx", "httpcore")]
    for name in {*_LIBRARY_LOGGERS, *existing}:
        library_log = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in library_log.filters):
            library_log.addFilter(RedactingFilter())


def make_client(settings: FetchSettings) -> httpx.Client:
    """An httpx client: TLS verified, no automatic redirects, proxies from env or settings."""
    _redact_library_logs()
    try:
        return httpx.Client(
            headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip"},
            timeout=httpx.Timeout(settings.timeout_seconds),
            follow_redirects=False,  # followed by hand, against the allow-list
            verify=True,
            trust_env=True,  # HTTPS_PROXY / NO_PROXY; an explicit proxy below wins
            proxy=settings.proxy,
        )
    except (ValueError, TypeError, httpx.HTTPError) as exc:
        proxy = redact_url(settings.proxy) if settings.proxy else "from the environment"
        raise FetchError(f"cannot set up the HTTP client (proxy {proxy}): {redact_text(str(exc))}") from None


class _Transient(Exception):
    """A failure worth retrying (connection error, 5xx, 429, cut-off body). Never escapes."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Redirect:
    location: str


def _fetch(url: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline, why: str) -> Fetched:
    """GET ``url``, following allowed redirects and retrying transient failures."""
    policy = _url_policy(settings)
    current, reason = url, why
    for _hop in range(settings.max_redirects + 1):
        policy.check(current, reason)
        result = _fetch_with_retries(current, settings, client, deadline)
        if isinstance(result, Fetched):
            return result
        target = urllib.parse.urljoin(current, result.location)
        log.info("following redirect %s -> %s", redact_url(current), redact_url(target))
        current, reason = target, f"redirect from {redact_url(current)} to"
    raise FetchError(f"too many redirects (more than {settings.max_redirects}) starting at {redact_url(url)}")


def _fetch_with_retries(
    url: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline
) -> Fetched | _Redirect:
    attempts = settings.retries + 1
    for attempt in range(attempts):
        deadline.check(f"fetching {redact_url(url)}")
        try:
            return _fetch_once(url, settings, client, deadline)
        except _Transient as exc:
            if attempt + 1 >= attempts:
                raise FetchError(f"{exc} (gave up after {attempts} attempts)") from None
            delay = exc.retry_after if exc.retry_after is not None else _backoff(settings.backoff_seconds, attempt)
            if delay >= deadline.remaining():
                raise FetchError(
                    f"{exc}; not retrying: waiting {delay:g} s would pass the {deadline.seconds:g} s poll deadline"
                ) from None
            log.warning("%s; retrying in %.1f s (attempt %d of %d)", exc, delay, attempt + 2, attempts)
            deadline.sleep(delay)
    raise AssertionError("unreachable")  # the loop either returns or raises


def _backoff(base: float, attempt: int) -> float:
    # Jitter keeps several watchers from hammering Microsoft in lock-step.
    return base * (2**attempt) * random.uniform(0.5, 1.5)


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _fetch_once(url: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline) -> Fetched | _Redirect:
    # Each read may wait at most until the poll's deadline, not a full timeout past it.
    timeout = max(0.001, min(settings.timeout_seconds, deadline.remaining()))
    try:
        request = client.build_request("GET", url, timeout=httpx.Timeout(timeout))
        response = client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise _Transient(f"could not fetch {redact_url(url)}: {_describe(exc)}") from None
    except httpx.HTTPError as exc:  # e.g. an invalid URL
        raise FetchError(f"could not fetch {redact_url(url)}: {_describe(exc)}") from None
    try:
        return _handle_response(response, url, settings, deadline)
    finally:
        response.close()


def _handle_response(response: httpx.Response, url: str, settings: FetchSettings, deadline: Deadline) -> Fetched | _Redirect:
    status = response.status_code
    if status in REDIRECT_STATUSES and response.headers.get("location"):
        return _Redirect(response.headers["location"])
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"), dt.datetime.now(dt.timezone.utc))
        raise _Transient(f"HTTP {status} {response.reason_phrase} from {redact_url(url)}", retry_after)
    if status != 200:
        raise FetchError(f"HTTP {status} {response.reason_phrase} from {redact_url(url)}")
    body = _read_http_body(response, url, settings.max_bytes, deadline)
    return Fetched(final_url=url, body=body, content_type=response.headers.get("content-type", ""))


def _read_http_body(response: httpx.Response, url: str, max_bytes: int, deadline: Deadline) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", ""):
        raise FetchError(f"{redact_url(url)} was sent with unsupported Content-Encoding {encoding!r}")
    decoder = _CappedDecoder(redact_url(url), max_bytes, gzipped=True if "gzip" in encoding else None)
    received = 0
    try:
        for chunk in response.iter_raw():
            received += len(chunk)
            decoder.feed(chunk)
            # Checked per chunk: a body dripping in slower than any read timeout still ends here.
            deadline.check(f"downloading {redact_url(url)} ({received} bytes received)")
    except httpx.RemoteProtocolError as exc:
        raise _Transient(f"download of {redact_url(url)} was truncated: {_describe(exc)}") from None
    except httpx.TransportError as exc:
        raise _Transient(f"download of {redact_url(url)} failed after {received} bytes: {_describe(exc)}") from None
    expected = response.headers.get("content-length", "")
    if expected.isdigit() and received < int(expected):
        raise _Transient(f"download of {redact_url(url)} was truncated: got {received} of {expected} bytes")
    return decoder.finish()


def _describe(exc: BaseException) -> str:
    text = redact_text(str(exc)) or "no details"
    return f"{type(exc).__name__}: {text}"


class _CappedDecoder:
    """Collects a body, inflating gzip on the fly, and refuses more than ``max_bytes`` decoded.

    ``gzipped=None`` sniffs the gzip magic, so ``.json.gz`` files sent without
    Content-Encoding are inflated too.
    """

    def __init__(self, what: str, max_bytes: int, gzipped: bool | None) -> None:
        self._what = what
        self._max = max_bytes
        self._gzipped = gzipped
        self._pending = b""  # bytes held back until the magic can be sniffed
        self._inflater: Any = None
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        if self._gzipped is None:
            self._pending += data
            if len(self._pending) < len(GZIP_MAGIC):
                return
            data, self._pending = self._pending, b""
            self._gzipped = data.startswith(GZIP_MAGIC)
        if self._gzipped:
            self._inflate(data)
        else:
            self._keep(data)

    def finish(self) -> bytes:
        if self._pending:
            self._keep(self._pending)
            self._pending = b""
        if self._gzipped and (self._inflater is None or not self._inflater.eof):
            raise _Transient(f"download of {self._what} was truncated: the gzip stream is incomplete")
        return b"".join(self._parts)

    def _inflate(self, data: bytes) -> None:
        try:
            while data:
                if self._inflater is None or self._inflater.eof:
                    if self._inflater is not None and not data.startswith(GZIP_MAGIC):
                        return  # padding after the last gzip member; nothing more to decode
                    self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                # Small steps, never past one byte over the cap: a bomb stops here, and memory
                # stays near the cap (zlib briefly holds twice what one call returns).
                out = self._inflater.decompress(data, min(INFLATE_STEP, self._max - self._size + 1))
                self._keep(out)
                data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise FetchError(f"{self._what} is not valid gzip: {exc}") from None

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            raise FetchError(f"{self._what} exceeds the size cap of {self._max} decoded bytes; download stopped")
        self._parts.append(data)


# --------------------------------------------------------------------------- discovery


def discover(cloud: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline) -> FileLink:
    """Where the newest file of ``cloud`` is: Microsoft's page, or the configured source."""
    cloud = _polled_cloud(cloud)
    source = settings.source_url
    if not source:
        return _discover_on_page(page_url_for(cloud), cloud, settings, client, deadline)
    if _is_remote(source):
        return _discover_remote_source(source, cloud, settings, client, deadline)
    return _discover_local(_local_path(source), cloud)


def _discover_on_page(page_url: str, cloud: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline) -> FileLink:
    page = _fetch(page_url, settings, client, deadline, why="download page")
    return _newest_link_on_page(page, cloud)


def _discover_remote_source(source: str, cloud: str, settings: FetchSettings, client: httpx.Client, deadline: Deadline) -> FileLink:
    fetched = _fetch(source, settings, client, deadline, why="source URL")
    if not _looks_like_file(fetched):
        return _newest_link_on_page(fetched, cloud)
    name = _url_file_name(fetched.final_url) or _url_file_name(source)
    return FileLink(
        cloud=cloud,
        url=source,
        file_name=name,
        file_date=_date_from_name(name, cloud),
        page_url=None,
        prefetched=fetched,
    )


def _looks_like_file(fetched: Fetched) -> bool:
    # Gzip was already inflated while reading, so a .json.gz also starts with "{" here.
    if fetched.body.removeprefix(UTF8_BOM).lstrip()[:1] == b"{":
        return True
    return "json" in fetched.content_type.lower()


def _newest_link_on_page(page: Fetched, cloud: str) -> FileLink:
    links = find_links(_page_text(page), cloud, page.final_url)
    if not links:
        raise FetchError(
            f"no ServiceTags_{CLOUD_FILE_NAMES[cloud]}_<date>.json link found on {redact_url(page.final_url)}; "
            "the download page format may have changed"
        )
    newest = links[0]
    log.info("newest %s file on %s: %s", cloud, redact_url(page.final_url), newest.file_name)
    return newest


def _page_text(page: Fetched) -> str:
    charset = "utf-8"
    match = re.search(r"charset=([\w-]+)", page.content_type, re.IGNORECASE)
    if match:
        charset = match.group(1)
    try:
        return page.body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return page.body.decode("utf-8", errors="replace")


def _local_path(source: str) -> Path:
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file:// source {redact_url(source)} names a remote host; only local files are supported")
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # one letter would be a Windows drive
        raise FetchError(f"unsupported source URL {redact_url(source)} (use http(s)://, file:// or a local path)")
    return Path(source)


def _discover_local(path: Path, cloud: str) -> FileLink:
    if path.is_dir():
        return _newest_in_folder(path, cloud)
    if path.is_file():
        path = path.resolve()
        return FileLink(cloud, path.as_uri(), path.name, _date_from_name(path.name, cloud), page_url=None)
    raise FetchError(f"source {path} does not exist")


def folder_files(source: str | None, cloud: str) -> list[FileLink]:
    """Every dated file of ``cloud`` in a local source folder, oldest first, one per date.

    Empty when the source is not a local folder (Microsoft's page, a mirror, one file).
    """
    if not source or _is_remote(source):
        return []
    path = _local_path(source)
    if not path.is_dir():
        return []
    one_per_date = {link.file_date: link for link in reversed(_links_in_folder(path, _polled_cloud(cloud)))}
    return [one_per_date[date] for date in sorted(one_per_date)]


def _links_in_folder(folder: Path, cloud: str) -> list[FileLink]:
    folder = folder.resolve()
    try:
        entries = [p for p in folder.iterdir() if p.is_file()]
    except OSError as exc:
        raise FetchError(f"cannot list source folder {folder}: {exc.strerror or exc}") from None
    return [
        FileLink(cloud, p.as_uri(), p.name, date, page_url=folder.as_uri())
        for p in sorted(entries, key=lambda p: (p.name.endswith(".gz"), p.name))  # plain .json first on a tie
        if (date := _date_from_name(p.name, cloud)) is not None
    ]


def _newest_in_folder(folder: Path, cloud: str) -> FileLink:
    candidates = _links_in_folder(folder, cloud)
    if not candidates:
        raise FetchError(
            f"no ServiceTags_{CLOUD_FILE_NAMES[cloud]}_<YYYYMMDD>.json or .json.gz file in source folder {folder.resolve()}"
        )
    return _newest_first(candidates)[0]


# --------------------------------------------------------------------------- download


def download(link: FileLink, settings: FetchSettings, client: httpx.Client, deadline: Deadline) -> Download:
    """Fetch the file ``link`` points to; the body comes back gunzipped and size-capped."""
    if link.prefetched is not None:
        fetched = link.prefetched
    elif urllib.parse.urlsplit(link.url).scheme == "file":
        fetched = _read_local_file(_local_path(link.url), settings.max_bytes, deadline)
    else:
        fetched = _fetch(link.url, settings, client, deadline, why="file link")
    body = fetched.body
    log.info("downloaded %s: %d bytes", redact_url(fetched.final_url), len(body))
    return Download(link=link, final_url=fetched.final_url, body=body, sha256=hashlib.sha256(body).hexdigest())


def _read_local_file(path: Path, max_bytes: int, deadline: Deadline) -> Fetched:
    decoder = _CappedDecoder(str(path), max_bytes, gzipped=None)
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(READ_CHUNK):
                decoder.feed(chunk)
                deadline.check(f"reading {path}")
        body = decoder.finish()
    except OSError as exc:
        raise FetchError(f"cannot read source file {path}: {exc.strerror or exc}") from None
    except _Transient as exc:  # nothing to retry for a local file
        raise FetchError(str(exc)) from None
    return Fetched(final_url=path.as_uri(), body=body)


# --------------------------------------------------------------------------- plausibility


def check_plausible(body: bytes, cloud: str, previous_tag_count: int | None, min_ratio: float) -> int:
    """Check a downloaded body before import; returns its number of service tags.

    HTML or non-JSON, or another cloud's file -> FetchError (we downloaded the
    wrong thing). Right cloud but missing/too few tags -> ImplausibleFileError
    (keep it aside with ``quarantine``).
    """
    expected = CLOUD_FILE_NAMES.get(cloud.lower())
    if expected is None:
        raise FetchError(f"unknown cloud {cloud!r}")
    text = body.removeprefix(UTF8_BOM)
    if text.lstrip()[:1] == b"<":
        raise FetchError(
            f"got an HTML page where the {expected} service-tag JSON was expected "
            "(a changed download link, a login page or a proxy's error page?)"
        )
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FetchError(f"the downloaded {expected} file is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImplausibleFileError(f"the downloaded {expected} file is JSON but not an object")
    actual = data.get("cloud")
    if not isinstance(actual, str) or actual.lower() != expected.lower():
        raise FetchError(f"the downloaded file is for cloud {actual!r}, expected {expected!r}")
    values = data.get("values")
    if not isinstance(values, list):
        raise ImplausibleFileError(f"the downloaded {expected} file has no 'values' list of service tags")
    count = len(values)
    if count == 0:
        raise ImplausibleFileError(f"the downloaded {expected} file lists no service tags")
    if previous_tag_count and count < min_ratio * previous_tag_count:
        raise ImplausibleFileError(
            f"the downloaded {expected} file has only {count} service tags; the previous publication had "
            f"{previous_tag_count} (at least {min_ratio:.0%} of that, "
            f"{math.ceil(min_ratio * previous_tag_count)}, is expected)"
        )
    return count


def quarantine(body: bytes, name: str, directory: str | os.PathLike[str]) -> Path:
    """Write ``body`` aside as ``directory/name`` for a human to inspect (atomically)."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "download"
    folder = Path(directory)
    target = folder / safe_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Temp file in the same folder + rename: readers never see half a file.
        fd, temp_name = tempfile.mkstemp(prefix=f".{safe_name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise FetchError(f"cannot quarantine {safe_name} in {folder}: {exc.strerror or exc}") from None
    log.warning("quarantined a suspicious download as %s", target)
    return target
