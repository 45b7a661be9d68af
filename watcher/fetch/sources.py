"""Where the newest file is, and getting it: Microsoft's page, a mirror, a local file or folder.

``discover`` reads Microsoft's download page for the cloud (or the configured
``source_url``: a mirror page, the file itself, a ``file://`` URL, a local
file or a local folder) and picks the newest ``ServiceTags_<Cloud>_<YYYYMMDD>.json``
it links to; ``download`` fetches it; ``quarantine`` keeps a suspicious one aside.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import httpx

from ..errors import FetchError
from ..parse import UTF8_BOM
from ..redact import redact_url
from ..settings import CLOUD_FILE_NAMES, FetchSettings
from .http import READ_CHUNK, _CappedDecoder, _fetch, _is_remote, _Transient
from .links import (
    Deadline,
    Download,
    Fetched,
    FileLink,
    _date_from_name,
    _newest_first,
    _polled_cloud,
    _url_file_name,
    find_links,
    page_url_for,
)

log = logging.getLogger(__name__)


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


def read_local_file(path: Path, settings: FetchSettings) -> bytes:
    """A local file's JSON bytes under the guards a download has: the size cap on decoded bytes
    (gzip inflated in steps, so a bomb stops at the cap) and the deadline."""
    return _read_local_file(path, settings.max_bytes, Deadline.start(settings.deadline_seconds)).body


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
    return Fetched(final_url=path.absolute().as_uri(), body=body)



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
