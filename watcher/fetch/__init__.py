"""Find and download the newest Azure service-tag file of one cloud.

Flow of one poll (the pipeline drives it; this package has no database code)::

    deadline = Deadline.start(settings.deadline_seconds)
    with make_client(settings) as client:
        link = discover(cloud, settings, client, deadline)     # where is the newest file?
        ...skip if link.url was imported already...
        dl = download(link, settings, client, deadline)        # decoded JSON bytes + sha256
        plausible.check_plausible(dl.body, cloud, previous_tag_count, settings.min_tag_ratio)

``links`` holds the value types and the page parsing (pure), ``http`` the one
careful HTTP path (URL policy, retries, capped reading, gzip), ``sources`` the
discovery, download and quarantine. Only ``FetchError`` / ``ImplausibleFileError``
leave this package, and every URL in a message or a log line is redacted first.
"""
from __future__ import annotations

from ..plausible import check_plausible  # noqa: F401  (kept importable as fetch.check_plausible)
from ..redact import redact_text, redact_url  # noqa: F401  (the one set of redaction rules)
from .http import make_client, parse_retry_after
from .links import (
    DOWNLOAD_IDS,
    PAGE_URL_TEMPLATE,
    Deadline,
    Download,
    Fetched,
    FileLink,
    find_links,
    page_url_for,
)
from .sources import discover, download, folder_files, quarantine, read_local_file

__all__ = [
    "DOWNLOAD_IDS",
    "PAGE_URL_TEMPLATE",
    "Deadline",
    "Download",
    "Fetched",
    "FileLink",
    "check_plausible",
    "discover",
    "download",
    "find_links",
    "folder_files",
    "make_client",
    "page_url_for",
    "parse_retry_after",
    "quarantine",
    "read_local_file",
    "redact_text",
    "redact_url",
]
