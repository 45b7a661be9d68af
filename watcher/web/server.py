"""The HTTP listener: uvicorn with the guarantees an exposed port needs.

- It binds ``[web] http_host``, 127.0.0.1 unless asked: ``/healthz`` and
  ``/metrics`` carry no authentication.
- The socket is bound before anything starts, so a port in use fails the
  start with a clear error instead of a thread dying later.
- A request must arrive whole within ``read_timeout_seconds`` (uvicorn
  itself times out only idle keep-alive connections, not a first request or
  a half-sent one); idle keep-alive connections close after
  ``idle_timeout_seconds``; a request head is at most 16 KiB (h11's limit).
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

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError
from ..settings import WebSettings

log = logging.getLogger(__name__)

#: The largest request head accepted (request line and headers); more is a 400.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
#: How long a stop waits for requests in progress.
SHUTDOWN_SECONDS = 3.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read timeout and a one-line log of client resets."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the request is all here
            self._cancel_read_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection gets the same bound (keep-alive's timer covers only silence).
        if not self.transport.is_closing() and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if isinstance(exc, OSError):
            log.warning("client %s reset the connection (%s)", _peer(self.client),
                        exc.strerror or type(exc).__name__, extra={"event": "http", "outcome": "reset"})
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            log.info("closing the connection of %s: no complete request within %g s", _peer(self.client),
                     self.read_timeout, extra={"event": "http", "outcome": "timeout"})
            self.transport.close()


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
            http=functools.partial(GuardedH11Protocol, read_timeout=self.web.read_timeout_seconds),  # type: ignore[arg-type]
            loop="asyncio", ws="none", lifespan="off", log_config=None, access_log=False,
            server_header=False, proxy_headers=False,
            timeout_keep_alive=self.web.idle_timeout_seconds,  # type: ignore[arg-type]
            limit_concurrency=self.web.max_connections,
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
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
