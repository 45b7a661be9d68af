"""Who is asking: signed session cookies, CSRF tokens, bearer tokens, a trusted SSO header, a sign-in limit.

- The session cookie carries the user's name, a stamp of their password hash
  (a password change ends their sessions) and an expiry, signed with HMAC-SHA256
  under a key kept in the database (``users.session_key``): a restart keeps
  people signed in, and replicas on one database accept each other's cookies.
  It is read on first use, so the app starts (and ``/healthz`` answers 503)
  while the database is down. It is ``HttpOnly``, ``SameSite=Lax``, and
  ``Secure`` when the server speaks TLS.
- CSRF: every form carries ``csrf``, an HMAC of a random per-browser cookie;
  a POST whose token does not match is refused (403) before anything happens.
  A bearer-token request needs none (a browser never sends one by itself).
- Failed sign-ins are counted per user name and per address; over
  ``[web] login_attempts`` within ``login_window_seconds`` sign-in is refused
  without looking at the password.
- ``[web] trusted_proxy_header`` names a header carrying the user name, believed
  only from ``trusted_proxies``; the user must exist (their role applies).
"""
from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import Response

from .. import db, users
from ..errors import translate_db_errors
from ..settings import WebSettings
from ..users import UserInfo
from .reads import RequestReads

SESSION_COOKIE = "watcher_session"
CSRF_COOKIE = "watcher_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: A read for ``db.read_together``: (statement, parameters).
Read = tuple[Any, dict[str, Any]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LoginLimiter:
    """Failed sign-ins per key (user name, address) in a sliding window; thread-safe (sign-in runs in a pool)."""

    def __init__(self, attempts: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _recent(self, key: str) -> collections.deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= self.clock() - self.window:
            failures.popleft()
        return failures

    def blocked(self, *keys: str) -> bool:
        with self._lock:
            return any(len(self._recent(k)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._recent(key).append(self.clock())

    def succeeded(self, user_key: str) -> None:
        with self._lock:
            self._failures.pop(user_key, None)


@dataclass
class Authenticator:
    settings: WebSettings
    engine: Engine
    tls: bool
    limiter: LoginLimiter
    clock: Callable[[], float] = time.time
    #: where the per-request reads (who is signed in) go: the request's one connection (watcher.web.reads)
    reads: RequestReads | None = None
    _key: bytes | None = field(default=None, repr=False)
    _key_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, settings: WebSettings, engine: Engine) -> "Authenticator":
        return cls(settings=settings, engine=engine, tls=bool(settings.tls_cert and settings.tls_key),
                   limiter=LoginLimiter(settings.login_attempts, settings.login_window_seconds),
                   reads=RequestReads(engine))

    def request_reads(self) -> RequestReads:
        """The per-request reads (made here for an Authenticator built without ``create``)."""
        if self.reads is None:
            self.reads = RequestReads(self.engine)
        return self.reads

    @property
    def key(self) -> bytes:
        """The database's session key, read once (a database error propagates; the next request tries again)."""
        if self._key is None:
            with self._key_lock:
                if self._key is None:
                    self._key = users.session_key(self.engine)
        return self._key

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.key, payload, hashlib.sha256).digest())

    # ------------------------------------------------------------ sessions

    def session_value(self, user: UserInfo) -> str:
        payload = json.dumps({"u": user.name, "s": user.session_stamp,
                              "e": int(self.clock() + self.settings.session_hours * 3600)}).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def _session_user(self, value: str, along: Sequence[Read] = ()) -> tuple[UserInfo | None, list[list[Any]]]:
        encoded, _, signature = value.partition(".")
        try:
            payload = _unb64(encoded)
        except ValueError:
            return None, []
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None, []
        data = json.loads(payload)
        if data["e"] < self.clock():
            return None, []
        with self.request_reads().connect() as conn, translate_db_errors("reading who is signed in"):
            user_rows, *rows = db.read_together(conn, [users.find_user_read(data["u"]), *along])
        user = users.user_from(user_rows)
        if user is not None and hmac.compare_digest(user.session_stamp, data["s"]):
            return user, rows
        return None, []

    def start_session(self, response: Response, user: UserInfo) -> None:
        response.set_cookie(SESSION_COOKIE, self.session_value(user), max_age=int(self.settings.session_hours * 3600),
                            httponly=True, samesite="lax", secure=self.tls, path="/")

    def end_session(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.tls)

    def user(self, request: Request) -> UserInfo | None:
        """The signed-in user: by bearer token, by the trusted proxy's header, or by session cookie."""
        return self.user_reading(request)[0]

    def user_reading(self, request: Request, along: Sequence[Read] = ()) -> tuple[UserInfo | None, list[list[Any]]]:
        """The signed-in user (as ``user``) and the rows of ``along``, reads the page asks for whoever is signed in
        (statement, parameters): sent with the session's user look-up, one round trip for all on PostgreSQL
        (``db.read_together``; a page view's stamp is one, and each round trip costs more than its answer). No
        rows when nobody is signed in."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            with self.request_reads().connect() as conn:
                return self._with_rows(conn, users.user_of_token(conn, header[7:].strip()), along)
        proxy_header = self.settings.trusted_proxy_header
        if proxy_header and request.client and request.client.host in self.settings.trusted_proxies:
            name = request.headers.get(proxy_header)
            if name:
                with self.request_reads().connect() as conn:
                    return self._with_rows(conn, users.find_user(conn, name.strip()), along)
        cookie = request.cookies.get(SESSION_COOKIE)
        return self._session_user(cookie, along) if cookie else (None, [])

    @staticmethod
    def _with_rows(conn: Connection, user: UserInfo | None, along: Sequence[Read]) -> tuple[UserInfo | None,
                                                                                            list[list[Any]]]:
        if user is None or not along:
            return user, []
        with translate_db_errors("reading the page's stamp"):
            return user, db.read_together(conn, along)

    @staticmethod
    def by_bearer(request: Request) -> bool:
        return request.headers.get("authorization", "").lower().startswith("bearer ")

    # ------------------------------------------------------------ CSRF

    def csrf_seed(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF cookie value, and whether it is new (to be set on the response)."""
        seed = request.cookies.get(CSRF_COOKIE, "")
        if len(seed) == 43:  # 32 random bytes, base64url
            return seed, False
        return _b64(secrets.token_bytes(32)), True

    def csrf_token(self, seed: str) -> str:
        return self._sign(b"csrf|" + seed.encode())

    def set_csrf_cookie(self, response: Response, seed: str) -> None:
        response.set_cookie(CSRF_COOKIE, seed, httponly=True, samesite="lax", secure=self.tls, path="/")

    def csrf_ok(self, request: Request, token: str | None) -> bool:
        seed = request.cookies.get(CSRF_COOKIE, "")
        return bool(seed and token) and hmac.compare_digest(token or "", self.csrf_token(seed))

    # ------------------------------------------------------------ sign-in

    def sign_in(self, name: str, password: str, address: str) -> tuple[UserInfo | None, str]:
        """The user, or None and why not (wrong password, or too many failures)."""
        keys = (f"user:{name}", f"addr:{address}")
        if self.limiter.blocked(*keys):
            return None, "too many failed sign-ins: wait a while and try again"
        with self.engine.connect() as conn:
            user = users.authenticate(conn, name, password)
        if user is None:
            self.limiter.failed(*keys)
            return None, "wrong user name or password"
        self.limiter.succeeded(keys[0])
        return user, ""
