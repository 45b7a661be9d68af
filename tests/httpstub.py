"""Local stand-ins for Microsoft: a scripted HTTP server, a forwarding proxy, page formats.

Shared by the fetch and pipeline tests (their fixtures live in conftest.py).
Every server listens on 127.0.0.1 on a free port and runs in a daemon thread.
"""
from __future__ import annotations

import functools
import gzip
import http.client
import json
import socket
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

#: The real service-tag files (conftest.SHARED; repeated here so that conftest can import this module).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "servicetags"

# --------------------------------------------------------------------------- real files


@functools.lru_cache(maxsize=None)
def real_file(name: str) -> bytes:
    """The gunzipped bytes of a real service-tag file, e.g. ``ServiceTags_Public_20251028.json``."""
    folder = {"Public": "public", "AzureGovernment": "usgov", "China": "china"}[name.split("_")[1]]
    return gzip.decompress((SHARED / folder / f"{name}.gz").read_bytes())


@functools.lru_cache(maxsize=None)
def gzip_bomb() -> bytes:
    """200 MB of zeros, gzipped (about 200 kB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()


# --------------------------------------------------------------------------- a scripted HTTP server

Responder = Callable[[BaseHTTPRequestHandler], None]


def reply(body: bytes, status: int = 200, content_type: str = "application/json", headers: dict | None = None) -> Responder:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    return respond


def html_reply(text: str, status: int = 200) -> Responder:
    return reply(text.encode(), status, "text/html; charset=utf-8")


def redirect(location: str, status: int = 302) -> Responder:
    return reply(b"", status, "text/plain", {"Location": location})


def truncated(body: bytes, claimed_length: int | None) -> Responder:
    """Send ``body`` and hang up, maybe after announcing a longer Content-Length."""

    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if claimed_length is not None:
            h.send_header("Content-Length", str(claimed_length))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    return respond


def drip(interval: float, for_seconds: float) -> Responder:
    """One byte every ``interval`` seconds: never stalls long enough for a read timeout."""

    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        stop = time.monotonic() + for_seconds
        while time.monotonic() < stop:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(interval)

    return respond


class Origin:
    """A real HTTP server on 127.0.0.1 whose answers each test scripts per path."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Responder]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.request_times: list[float] = []  # time.monotonic() of each request, in order
        self._lock = threading.Lock()
        self.server = _quiet_server(self._handler_class())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *responders: Responder) -> None:
        """Answer ``path`` with the responders in turn; the last one repeats."""
        self.routes[path] = list(responders)

    def hits(self, path: str) -> int:
        return sum(1 for seen, _ in self.requests if urllib.parse.urlsplit(seen).path == path)

    def _next_responder(self, path: str) -> Responder | None:
        with self._lock:
            queue = self.routes.get(path)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.request_times.append(time.monotonic())
                origin.requests.append((self.path, dict(self.headers)))
                responder = origin._next_responder(urllib.parse.urlsplit(self.path).path)
                try:
                    if responder is None:
                        html_reply("<html><body>Not found</body></html>", 404)(self)
                    else:
                        responder(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on purpose (cap, deadline)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _quiet_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    return server


class ForwardProxy:
    """A tiny plain-HTTP forward proxy: takes absolute-URI requests, relays them to the origin."""

    def __init__(self, origin: Origin) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen.append(self.path)  # an absolute URI, e.g. http://mirror.test:1234/page
                target = urllib.parse.urlsplit(self.path)
                path = target.path + (f"?{target.query}" if target.query else "")
                # Whatever host was asked for, the origin answers: mirror.test does not resolve.
                upstream = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
                upstream.request("GET", path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _quiet_server(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()



def details_page(urls: list[str]) -> str:
    """The ``details.aspx`` format: the file list as JSON inside a script."""
    details = {
        "dlcDetailsView": {
            "downloadTitle": "Azure IP Ranges and Service Tags – Public Cloud",
            "tricky": "braces } and { in a string, and a fake \"downloadFile\": []",
            "downloadFile": [{"name": u.rsplit("/", 1)[-1], "url": u, "size": "4.1 MB"} for u in urls],
        }
    }
    script = json.dumps(details).replace("/", "\\/")  # JSON-escaped slashes, as on the real page
    return (
        "<!DOCTYPE html><html><head><script>window.__DLCDetails__ = "
        f"{script};window.__other__ = {{\"x\": [1, 2}};</script></head>"
        "<body><div id=\"root\">Loading…</div></body></html>"
    )


def confirmation_page(urls: list[str]) -> str:
    """The ``confirmation.aspx`` format: plain links."""
    anchors = "".join(f'<a href="{u}" class="mscom-link failoverLink">click here</a>' for u in urls)
    return f"<html><body><p>Your download should start.</p>{anchors}<a href='/en-us/'>Home</a></body></html>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

