"""The desk's static files (its stylesheet and scripts, and the vendored uPlot), served from memory.

They are a few small files that ship inside the package and never change while the server runs: read once
when the app is made, each kept with its gzip form and an ETag. Starlette's ``StaticFiles`` stats and streams
the file through a worker thread on every request (4-17 ms each for the tag page's five files in a new
process, more than the page itself). The pages name each file with its digest (``url``: ``desk.css?v=…``), so a
browser keeps what they name for good and asks for nothing more on later views; an upgrade changes the digest,
hence the URL. Files under ``vendor/`` carry their version in their name as well. Asked for without the current
digest, a file is sent to be revalidated (a 304 on its ETag).
"""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

#: Smaller than this, gzip saves too little to be worth a header.
GZIP_FROM = 1024


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str
    digest: str    # what ``url`` puts in the query: the file's URL changes when the file does
    lasting: bool  # versioned in its name: kept by the browser for good


def load_assets(folder: Path) -> dict[str, Asset]:
    """Every file under ``folder``, by its path below it ("desk.css", "vendor/uPlot-1.6.32.min.css")."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        body = path.read_bytes()
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type in ("application/javascript", "image/svg+xml"):
            media_type += "; charset=utf-8"
        gzipped = gzip.compress(body, 9, mtime=0) if len(body) >= GZIP_FROM else None
        digest = hashlib.sha256(body).hexdigest()
        found[name] = Asset(body, gzipped, media_type, f'"{digest[:32]}"', digest[:12], name.startswith("vendor/"))
    return found


class PackagedFiles:
    """An ASGI app for ``Mount("/static", ...)``: GET and HEAD of the files ``load_assets`` read, 404 otherwise."""

    def __init__(self, folder: Path, mounted_at: str = "/static") -> None:
        self.assets = load_assets(folder)
        self.mounted_at = mounted_at

    def url(self, name: str) -> str:
        """The path a page names the file by: with its digest, so that it may be kept for good."""
        asset = self.assets.get(name)
        if asset is None:  # a template's typo fails where it is, not as a 404 in a browser
            raise KeyError(f"no static file {name!r}")
        return f"{self.mounted_at}/{name}?v={asset.digest}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.respond(scope)
        await response(scope, receive, send)

    def respond(self, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"})
        asset = self.assets.get(scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/"))
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404)
        named = asset.lasting or scope.get("query_string", b"") == f"v={asset.digest}".encode()
        request_headers = dict(scope["headers"])
        zipped = asset.gzipped is not None and accepts_gzip(request_headers.get(b"accept-encoding", b"").decode("latin-1"))
        # Each encoding is its own representation, with its own strong validator.
        etag = asset.etag[:-1] + '-gzip"' if zipped else asset.etag
        headers = {"ETag": etag, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "public, max-age=31536000, immutable" if named else "no-cache"}
        if etag in if_none_match(request_headers.get(b"if-none-match", b"").decode("latin-1")):
            return Response(status_code=304, headers=headers)
        if zipped:
            return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
        return Response(asset.body, media_type=asset.media_type, headers=headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (``gzip;q=0`` refuses it; ``*`` takes it)."""
    weights = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def if_none_match(header: str) -> set[str]:
    """The entity tags an If-None-Match header lists, weak ones as their strong form (a cache may weaken them)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
