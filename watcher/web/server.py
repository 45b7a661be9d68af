"""The HTTP listener: uvicorn with the guarantees an exposed port needs.

- It binds ``[web] http_host``, 127.0.0.1 unless asked: ``/healthz`` and
  ``/metrics`` carry no authentication.
- The socket is bound before anything starts, so a port in use fails the
  start with a clear error instead of a thread dying later.
- A request must arrive whole within ``read_timeout_seconds`` (uvicorn
  itself times out only idle keep-alive connections, not a first request or
  a half-sent one); idle keep-alive connections close after
  ``idle_timeout_seconds``; a request head is at most 16 KiB.
  The event loop holds no thread per connection, so a slow client costs a
  socket, and that only for the read timeout.
- Over ``max_connections`` open connections, requests get 503 at once.
- A client that resets its connection is one log line (through the
  watcher's handler, so in the configured format), never a traceback.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
from typing import Any, Callable, Iterator

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import ConfigError
from ..settings import WebSettings

log = logging.getLogger(__name__)

#: The largest request head accepted (request line and headers); more is a 400.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
#: How long a stop waits for requests in progress.
SHUTDOWN_SECONDS = 3.0


#: The feeds' fast path: (method, path under /feeds/, query, headers, the server's default headers) -> the whole
#: HTTP/1.1 response, or None when the request needs the app (watcher.web.feeds.FeedService.fast).
FastPath = Callable[[bytes, str, bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]], "bytes | None"]


class _HeadTooLarge(Exception):
    """A request head over MAX_REQUEST_HEAD_BYTES (the parser turns it into a 400)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read timeout, a bound on the request head, a one-line log of client
    resets, and the feeds' fast path.

    The fast path: a poller's GET or HEAD of ``/feeds/...`` that the feed service can answer from memory is
    answered right here, without an ASGI cycle (a task, a scope and Starlette's routing cost more than the
    answer): that is what lets one process serve feeds at a useful fraction of nginx's rate. Anything else, or
    a feed request that needs the database, takes the normal path through the app.
    """

    def __init__(self, *args: Any, read_timeout: float, fast_path: FastPath | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.fast_path = fast_path
        # One watchdog timer per connection, re-armed only when it fires (not per request: pollers' rate):
        # it cuts a request that is not whole within read_timeout, and an idle keep-alive connection.
        self._watchdog: asyncio.TimerHandle | None = None
        self._busy_since: float | None = None   # a request has begun and is not whole yet
        self._idle_since: float | None = None   # the last response is complete and no request has begun
        self._head_bytes = 0          # received while the current request's head is incomplete
        self._head_size = 0           # URL and header bytes the parser has handed over
        self._head_complete = False
        self._answered_fast = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._busy_since = self.loop.time()  # the first request too must arrive within read_timeout
        self._watchdog = self.loop.call_at(self._busy_since + self.read_timeout, self._watch)

    def data_received(self, data: bytes) -> None:
        if not self._head_complete:
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._head_complete and self._head_bytes > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
            self.send_400_response("Request head too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self._busy_since is None:
            self._busy_since = self.loop.time()
        self._idle_since = None

    def on_url(self, url: bytes) -> None:
        self._grow_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_REQUEST_HEAD_BYTES:
            raise _HeadTooLarge  # the parser raises HttpParserCallbackError: uvicorn answers 400 and closes

    def on_headers_complete(self) -> None:
        self._head_complete, self._head_bytes = True, 0
        if self.fast_path is not None and self.url.startswith(b"/feeds/"):
            response = self._fast_response()
            if response is not None:
                self.transport.write(response)
                self._answered_fast = True
                return
        super().on_headers_complete()

    def _fast_response(self) -> bytes | None:
        parser = self.parser
        if (self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
                or parser.get_method() not in (b"GET", b"HEAD") or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive() or parser.should_upgrade()
                or (self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency)):
            return None
        parsed = httptools.parse_url(self.url)
        path = parsed.path.decode("ascii")
        if "%" in path:
            return None
        try:
            return self.fast_path(parser.get_method(), path[len("/feeds/"):], parsed.query or b"",  # type: ignore[misc]
                                  self.headers, self.server_state.default_headers)
        except Exception:  # the app's path answers it, and reports what went wrong there
            log.debug("the feeds' fast path passed a request on", exc_info=True)
            return None

    def on_body(self, body: bytes) -> None:
        if not self._answered_fast:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_complete, self._busy_since = False, None  # the request is all here
        if self._answered_fast:
            # The response is written: what uvicorn's on_response_complete does, but for its keep-alive timer
            # (the watchdog covers idleness; the fast path is taken only with nothing pipelined or paused).
            self._answered_fast = False
            self.server_state.total_requests += 1
            self._idle_since = self.loop.time()
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._busy_since is None:
            self._idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if isinstance(exc, OSError):
            log.warning("client %s reset the connection (%s)", _peer(self.client),
                        exc.strerror or type(exc).__name__, extra={"event": "http", "outcome": "reset"})
        super().connection_lost(exc)

    def _watch(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._busy_since is not None:
            deadline = self._busy_since + self.read_timeout
            if now >= deadline:
                log.info("closing the connection of %s: no complete request within %g s", _peer(self.client),
                         self.read_timeout, extra={"event": "http", "outcome": "timeout"})
                self.transport.close()
                return
        elif self._idle_since is not None:
            deadline = self._idle_since + self.timeout_keep_alive
            if now >= deadline:
                self.transport.close()  # an idle keep-alive connection, as uvicorn's own timer closes it
                return
        else:
            deadline = now + self.read_timeout  # a response is being made: look again later
        self._watchdog = self.loop.call_at(deadline, self._watch)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), or a ConfigError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server that reports when it listens and leaves exiting to the caller.

    uvicorn re-raises a captured SIGTERM after its graceful shutdown (the
    process then dies of the signal); ``watcher serve`` exits 0 instead.
    """

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit and self._on_ready is not None:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # in a thread (``watcher run``): the daemon's main thread takes the signals
            return

        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name, extra={"event": "stop"})
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class HttpServer:
    """The app served on a bound socket: in the calling thread (``serve``) or a background one (``start``)."""

    def __init__(self, app: Any, web: WebSettings, sock: socket.socket) -> None:
        self.app = app
        self.web = web
        self.sock = sock
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def tls(self) -> bool:
        return bool(self.web.tls_cert and self.web.tls_key)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"

    def _config(self) -> uvicorn.Config:
        if bool(self.web.tls_cert) != bool(self.web.tls_key):
            raise ConfigError("[web] tls_cert and tls_key go together: set both for HTTPS, or neither")
        config = uvicorn.Config(
            self.app,
            http=functools.partial(GuardedHttpToolsProtocol, read_timeout=self.web.read_timeout_seconds,  # type: ignore[arg-type]
                                   fast_path=getattr(getattr(self.app, "state", None), "feed_fast_path", None)),
            loop="auto", ws="none", lifespan="off", log_config=None, access_log=False,
            server_header=False, proxy_headers=False,
            timeout_keep_alive=self.web.idle_timeout_seconds,  # type: ignore[arg-type]
            limit_concurrency=self.web.max_connections,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,  # type: ignore[arg-type]
            ssl_certfile=self.web.tls_cert, ssl_keyfile=self.web.tls_key,
        )
        try:
            config.load()
        except (OSError, ValueError) as exc:  # an unreadable or mismatched certificate or key
            raise ConfigError(f"cannot set up HTTPS with {self.web.tls_cert}: {exc}") from None
        return config

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT (from the main thread) or ``stop``."""
        self._server = _Server(self._config(), on_ready)
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, timeout: float = 10.0) -> None:
        """Serve on a background thread; returns once it listens."""
        ready = threading.Event()
        config = self._config()  # errors surface here, in the caller's thread
        self._server = _Server(config, ready.set)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="watcher-http", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ConfigError(f"the HTTP server on {self.url} did not start within {timeout:g} s")
        log.info("serving HTTP on %s: /healthz, /metrics", self.url, extra={"event": "start"})

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_SECONDS + 2)
        self.sock.close()
