"""Redaction: the one set of rules that keeps secrets out of logs, messages and the database.

Secrets reach text through URLs (sources and mirrors carry tokens in the
query, proxies and destinations carry passwords in the userinfo) and through
messages of libraries we do not control (httpx logs every request's URL,
apprise quotes its destination). Fetch, the log handler and notifications
used to carry three sets of rules; they now all call this module, and where
the rules differed the strictest one holds:

- userinfo (``user:password@``) in any ``scheme://`` URL is masked whole;
- every query value is masked except the few known to be harmless (``id``,
  the download page's number), whatever its key is called;
- a fragment is dropped;
- a ``key=value`` pair with a token-like key is masked even outside a URL;
- every known secret string (passwords and tokens from the settings, the
  pieces of an apprise URL its privacy form hides) is masked wherever it
  appears, URL-quoted or not.

The functions are pure and never raise: an unparseable URL is hidden whole.
"""
from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Iterable

MASK = "***"
#: Query keys whose values are never secret (the Microsoft download page's ``id``).
SAFE_QUERY_KEYS = frozenset({"id"})
#: The shortest known secret that is masked as a plain string; shorter ones would mask ordinary words
#: (the URL rules above cover short passwords and tokens where they sit in a URL).
MIN_SECRET_LENGTH = 3

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_KEYED_SECRET = re.compile(
    r"(?P<key>[?&](?:token|key|secret|password|passwd|pass|pwd|sig|signature|apikey|api_key"
    r"|access_token|client_secret|code)=)(?P<value>[^&\s]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """Mask what may be a secret in one URL: userinfo, query values (except ``id``), fragment.

    Plain paths come back unchanged.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@" + netloc.rpartition("@")[2]
    query = "&".join(_redact_query_item(item) for item in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_query_item(item: str) -> str:
    key, sep, _value = item.partition("=")
    if key.lower() in SAFE_QUERY_KEYS:
        return item
    return f"{key}={MASK}" if sep else MASK


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted, token-like ``key=value`` pairs and every known secret masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _KEYED_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in ordered_secrets(secrets):
        text = text.replace(secret, MASK)
    return text


def ordered_secrets(secrets: Iterable[str]) -> tuple[str, ...]:
    """The secrets worth masking, each also URL-quoted, longest first (so no fragment of one is left)."""
    found = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
    found |= {urllib.parse.quote(s, safe="") for s in list(found)}
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with :func:`redact_text`.

    On the watcher's log handler it covers every logger; on a library's logger
    (httpx) it also covers handlers the watcher did not install.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = ordered_secrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format in a library's record: keep the raw text
            message = str(record.msg)
        record.msg = redact_text(message, self.secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True
