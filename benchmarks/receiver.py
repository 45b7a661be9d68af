"""The json:// destination of figure 5, run as its own process: ``python -m benchmarks.receiver``.

It prints the port it listens on (127.0.0.1, chosen by the system), then counts
the JSON bodies posted to it; ``GET /__stats`` returns the titles and bytes
received, ``POST /__reset`` forgets them.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    lock = threading.Lock()
    state: dict[str, Any] = {"titles": [], "bytes": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                if self.path == "/__reset":
                    state["titles"], state["bytes"] = [], 0
                else:
                    state["titles"].append(str(json.loads(data).get("title", "")))
                    state["bytes"] += len(data)
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(state).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
