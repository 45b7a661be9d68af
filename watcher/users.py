"""Who may use the review desk: users with a role, scrypt password hashes, and API bearer tokens.

Roles, each including the one before: ``viewer`` reads, ``approver`` also takes
review steps, ``admin`` also manages users (from the CLI). Passwords are kept
as scrypt hashes (``hashlib.scrypt``, no extra dependency) in the PHC-like form
``scrypt$n$r$p$salt$hash``; a bearer token is shown once and kept as its
SHA-256 (it is long and random, so a slow hash would buy nothing).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import db
from .errors import NotFoundError, WatcherError
from .models import ApiToken, ServerSecret, User, utcnow

ROLES = ("viewer", "approver", "admin")
#: Roles that may take review steps (approve, reject, release, applied).
REVIEWERS = ("approver", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# scrypt cost: n=2**14, r=8 takes ~16 MiB and a few tens of ms: slow for a guesser, quick for a sign-in.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
TOKEN_PREFIX = "wt_"
SESSION_KEY_NAME = "session_key"


class UserError(WatcherError):
    """A user name, role or password that cannot be used."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    created_at: dt.datetime
    updated_at: dt.datetime
    password_hash: str = ""

    @property
    def may_review(self) -> bool:
        return self.role in REVIEWERS

    @property
    def session_stamp(self) -> str:
        """Changes when the password changes: a session signed with the old one stops working."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    check_password(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        found = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, _unb64(digest))


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(f"user name {name!r} must be 1-100 letters, digits, '.', '_', '@' or '-', "
                        "starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or len(password) > MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _user(row: Any) -> UserInfo:
    return UserInfo(id=row.id, name=row.name, role=row.role, created_at=db_time(row.created_at),
                    updated_at=db_time(row.updated_at), password_hash=row.password_hash)


def db_time(value: dt.datetime) -> dt.datetime:
    """SQLite gives naive datetimes back; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def add_user(engine: Engine, name: str, role: str, password: str, now: Callable[[], dt.datetime] = utcnow) -> UserInfo:
    check_name(name)
    check_role(role)
    hashed = hash_password(password)
    at = now()
    try:
        with db.writer(engine).begin() as conn:
            conn.execute(insert(User.__table__), {"name": name, "role": role, "password_hash": hashed,
                                                  "created_at": at, "updated_at": at})
            return get_user(conn, name)
    except IntegrityError:
        raise UserError(f"user {name!r} exists already") from None


def get_user(conn: Connection, name: str) -> UserInfo:
    found = find_user(conn, name)
    if found is None:
        raise NotFoundError(f"no user named {name!r}")
    return found


#: Built once: every signed-in request runs it, and building a statement (and its cache key) costs more than
#: SQLite's answer (~0.2 ms of a page's few).
_FIND_USER = select(User.__table__).where(User.__table__.c.name == bindparam("name"))


def find_user(conn: Connection, name: str) -> UserInfo | None:
    return user_from(conn.execute(*find_user_read(name)).all())


def find_user_read(name: str) -> tuple[Any, dict[str, Any]]:
    """The read of ``find_user`` (statement, parameters), for ``db.read_together``."""
    return _FIND_USER, {"name": name}


def user_from(rows: Sequence[Any]) -> UserInfo | None:
    """``find_user`` from the rows of its read."""
    return _user(rows[0]) if rows else None


def list_users(conn: Connection) -> list[UserInfo]:
    return [_user(r) for r in conn.execute(select(User.__table__).order_by(User.__table__.c.name))]


def remove_user(engine: Engine, name: str) -> None:
    with db.writer(engine).begin() as conn:
        user = get_user(conn, name)
        conn.execute(delete(ApiToken.__table__).where(ApiToken.__table__.c.user_id == user.id))
        conn.execute(delete(User.__table__).where(User.__table__.c.id == user.id))


def set_password(engine: Engine, name: str, password: str, now: Callable[[], dt.datetime] = utcnow) -> UserInfo:
    hashed = hash_password(password)
    with db.writer(engine).begin() as conn:
        user = get_user(conn, name)
        conn.execute(update(User.__table__).where(User.__table__.c.id == user.id)
                     .values(password_hash=hashed, updated_at=now()))
        return get_user(conn, name)


def authenticate(conn: Connection, name: str, password: str) -> UserInfo | None:
    """The user if the password is theirs; None otherwise (a missing user costs the same hash time)."""
    user = find_user(conn, name) if NAME_RE.match(name) else None
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(engine: Engine, name: str, now: Callable[[], dt.datetime] = utcnow) -> str:
    """A new bearer token for ``name``: returned once, stored only as its hash."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.writer(engine).begin() as conn:
        user = get_user(conn, name)
        conn.execute(insert(ApiToken.__table__), {"user_id": user.id, "token_hash": _token_hash(token),
                                                  "created_at": now()})
    return token


def user_of_token(conn: Connection, token: str) -> UserInfo | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    tokens, users = ApiToken.__table__, User.__table__
    row = conn.execute(select(users).join(tokens, tokens.c.user_id == users.c.id)
                       .where(tokens.c.token_hash == _token_hash(token))).first()
    return _user(row) if row else None


def read_password(text: str) -> str:
    """The password from stdin text: its first line, without the line end."""
    lines = text.splitlines()
    if not lines:
        raise UserError("give the password on stdin (one line)")
    return check_password(lines[0])


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

__all__ = ["ROLES", "REVIEWERS", "UserError", "UserInfo", "add_user", "authenticate", "check_name",
           "find_user", "get_user", "hash_password", "list_users", "new_token", "read_password", "remove_user",
           "set_password", "user_of_token", "verify_password"]


def session_key(engine: Engine, now: Callable[[], dt.datetime] = utcnow) -> bytes:
    """The key that signs session cookies and CSRF tokens: made once, kept in the database.

    Every process on the database reads the same key, so a restart keeps people
    signed in and replicas accept each other's cookies. Two processes starting
    together may both try to make it: the primary key lets one insert win, and
    the other reads the winner's key.
    """
    secrets_table = ServerSecret.__table__
    query = select(secrets_table.c.value).where(secrets_table.c.name == SESSION_KEY_NAME)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        try:
            with db.writer(engine).begin() as conn:
                conn.execute(insert(secrets_table), {"name": SESSION_KEY_NAME, "created_at": now(),
                                                     "value": _b64(secrets.token_bytes(32))})
        except IntegrityError:
            pass  # another process made it first: theirs is read below
        with engine.connect() as conn:
            found = conn.execute(query).scalar_one()
    return _unb64(found)
