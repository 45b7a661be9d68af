"""One database connection per request for the pages' reads.

A page asks who is signed in, then reads what it shows: each ``engine.connect()`` is a checkout from the pool
(and on PostgreSQL a round trip or more around it). ``RequestReads.connect`` hands out the connection the
request already holds, so the sign-in check and the page share one. Requests run in Starlette's thread pool,
one request per thread at a time: the held connection is kept per thread.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")


class RequestReads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # on PostgreSQL its reads run in autocommit (``db.create_db_engine``)
        self._held = threading.local()

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """The request's connection if it holds one (taken at its first use), else one of its own for this block."""
        if not getattr(self._held, "holding", False):
            with self.engine.connect() as conn:
                yield conn
            return
        if self._held.conn is None:
            self._held.conn = self.engine.connect()
        yield self._held.conn

    def within(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work`` holding one connection: every ``connect`` inside it gets that one. It is taken at the first
        ``connect``, so a request that reads nothing (no session cookie: off to the sign-in page) takes none."""
        if getattr(self._held, "holding", False):
            return work(*args)
        self._held.holding, self._held.conn = True, None
        try:
            return work(*args)
        finally:
            conn, self._held.holding, self._held.conn = self._held.conn, False, None
            if conn is not None:
                conn.close()
