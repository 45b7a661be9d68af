"""The watcher's HTTP face: one ASGI app (Starlette) served by uvicorn.

``watcher serve`` runs it on its own; ``watcher run`` serves it next to the
daemon on ``[daemon] http_port``. Today it answers ``/healthz`` and
``/metrics``; the feeds and the review desk grow here. Its pages call the
library (health, status, ...), never SQL of their own.

- ``app``: the routes and what each answers;
- ``server``: the listener with its guarantees (loopback by default, read and
  idle timeouts, a connection limit, one log line per client reset).
"""
from .app import DaemonView, create_app, standalone_view, warm_up
from .server import HttpServer, bind

__all__ = ["DaemonView", "HttpServer", "bind", "create_app", "standalone_view", "warm_up"]
