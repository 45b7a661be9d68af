"""The desk's static files served from memory (``watcher.web.assets``): types, validators, gzip, caching, refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from watcher.web.assets import PackagedFiles

STATIC = Path(__file__).resolve().parents[1] / "watcher" / "web" / "static"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=[Mount("/static", app=PackagedFiles(STATIC))]))


def test_every_packaged_file_is_served_as_it_is_on_disk(client: TestClient) -> None:
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {"desk.css", "tagplot.js", "vendor/uPlot-1.6.32.iife.min.js"} <= {p.relative_to(STATIC).as_posix() for p in files}
    for path in files:
        name = path.relative_to(STATIC).as_posix()
        answer = client.get(f"/static/{name}", headers={"Accept-Encoding": "identity"})
        assert answer.status_code == 200 and answer.content == path.read_bytes(), name
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/desk.css").headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/static/tagplot.js").headers["content-type"].endswith("javascript; charset=utf-8")


def test_a_file_is_revalidated_with_its_etag_and_sent_gzipped_when_asked(client: TestClient) -> None:
    plain = client.get("/static/vendor/uPlot-1.6.32.iife.min.js", headers={"Accept-Encoding": "identity"})
    zipped = client.get("/static/vendor/uPlot-1.6.32.iife.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert zipped.content == plain.content  # httpx undoes the gzip: the same file
    again = client.get("/static/vendor/uPlot-1.6.32.iife.min.js",
                       headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    stale = client.get("/static/desk.css", headers={"If-None-Match": plain.headers["etag"]})
    assert stale.status_code == 200  # another file's tag is not this one's


def test_files_named_with_their_digest_or_a_version_are_kept_for_good_others_revalidated(client: TestClient) -> None:
    files = client.app.routes[0].app  # the PackagedFiles the pages name files with
    named = files.url("desk.js")
    assert named.startswith("/static/desk.js?v=") and len(named.rsplit("=", 1)[1]) == 12
    assert client.get(named).headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/static/desk.js").headers["cache-control"] == "no-cache"  # named otherwise: revalidated
    assert client.get("/static/desk.js?v=000000000000").headers["cache-control"] == "no-cache"  # an older digest
    assert client.get("/static/vendor/uPlot-1.6.32.min.css").headers["cache-control"] == \
        "public, max-age=31536000, immutable"  # its version is in its name
    with pytest.raises(KeyError, match="no static file 'nosuch.css'"):
        files.url("nosuch.css")


@pytest.mark.parametrize("path", ["/static/nosuch.css", "/static/%2e%2e/pages.py", "/static/vendor", "/static/",
                                  "/static/vendor/%2e%2e/%2e%2e/pages.py"])
def test_what_is_not_a_packaged_file_is_not_found(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404 and "import" not in answer.text


@pytest.mark.parametrize("path", ["/../pages.py", "/vendor/../../pages.py", "//etc/passwd", "/../../../../etc/passwd"])
def test_a_path_that_climbs_reaches_no_file_whatever_the_client_sends(path: str) -> None:
    # httpx would tidy these paths before sending them: the app is asked directly, as a raw request reaches it.
    files = PackagedFiles(STATIC)
    answer = files.respond({"type": "http", "method": "GET", "path": f"/static{path}", "root_path": "/static",
                            "headers": [], "query_string": b""})
    assert answer.status_code == 404 and answer.body == b"Not Found"


def test_the_gzip_form_has_its_own_validator_and_a_refused_encoding_is_not_sent(client: TestClient) -> None:
    plain = client.get("/static/desk.css", headers={"Accept-Encoding": "identity"})
    zipped = client.get("/static/desk.css", headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"] == plain.headers["etag"][:-1] + '-gzip"'
    refused = client.get("/static/desk.css", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers and refused.headers["etag"] == plain.headers["etag"]
    assert "content-encoding" in client.get("/static/desk.css", headers={"Accept-Encoding": "*"}).headers
    # A list of validators, or a weakened one (a proxy may weaken them), still gets its 304.
    for tags in (f'"other", {zipped.headers["etag"]}', "W/" + zipped.headers["etag"]):
        again = client.get("/static/desk.css", headers={"Accept-Encoding": "gzip", "If-None-Match": tags})
        assert again.status_code == 304, tags
    assert client.get("/static/desk.css", headers={"Accept-Encoding": "gzip",
                                                   "If-None-Match": plain.headers["etag"]}).status_code == 200


def test_only_get_and_head_are_answered(client: TestClient) -> None:
    assert client.head("/static/desk.css").status_code == 200
    refused = client.post("/static/desk.css")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
