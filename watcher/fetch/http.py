"""Every HTTP request of a poll goes through one careful path.

Redirects are followed by hand and only to allowed hosts over HTTPS (or to the
operator's own source origin); connection errors / 5xx / 429 are retried with
capped exponential backoff (honouring ``Retry-After``); the body is read as a
stream against a monotonic deadline and a cap on *decoded* bytes (gzip is
inflated incrementally, so a gzip bomb is cut off at the cap). Every URL that
goes into a message or a log line passes through ``watcher.redact`` first.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import FetchError
from ..redact import RedactingFilter, redact_text, redact_url
from ..settings import FetchSettings
from .links import Deadline, Fetched

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 64 * 1024
INFLATE_STEP = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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

