"""Users and sign-in: the ``watcher users`` commands, scrypt hashes, tokens, the session cookie, CSRF,
the failed sign-in limit, viewers refused, and the trusted SSO header."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.responses import Response
from starlette.testclient import TestClient

from tests.daemon_helpers import base_env
from tests.test_web import Served
from tests.web_helpers import PASSWORD, Desk, make_desk
from watcher import users, web
from watcher.cli import main
from watcher.settings import WebSettings
from watcher.web.auth import Authenticator, LoginLimiter


@pytest.fixture
def desk(db_url: str, engine: sa.Engine, tmp_path: Path) -> Desk:
    return make_desk(db_url, engine, tmp_path)


def client_for(desk: Desk, **web_settings) -> TestClient:
    settings = replace(desk.settings, web=replace(desk.settings.web, **web_settings))
    return TestClient(web.create_app(settings, desk.engine, web.standalone_view(settings)))


def csrf_of(html: str) -> str:
    return html.split('name="csrf" value="')[1].split('"')[0]


def sign_in(client: TestClient, name: str, password: str = PASSWORD):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "username": name, "password": password},
                       follow_redirects=False)


def run(desk: Desk, *args: str, stdin: str = ""):
    env = {"WATCHER_DATABASE_URL": desk.db_url, "WATCHER_CONFIG": str(desk.config)}
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def test_users_commands_add_list_passwd_token_remove(desk: Desk) -> None:
    added = run(desk, "users", "add", "carol", "--role", "viewer", stdin="s3cret-enough\n")
    assert added.exit_code == 0 and "carol added (viewer)" in added.output
    listed = desk.cli("users", "list", "--json")
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "approver"), ("bob", "approver"), ("carol", "viewer"),
                                                        ("root", "admin"), ("vera", "viewer")]
    assert "password_hash" not in listed[0]
    with desk.engine.connect() as conn:
        stored = users.get_user(conn, "carol").password_hash
        assert stored.startswith("scrypt$16384$8$1$") and "s3cret" not in stored
        assert users.authenticate(conn, "carol", "s3cret-enough") is not None
        assert users.authenticate(conn, "carol", "wrong-password") is None
        assert users.authenticate(conn, "nobody", "s3cret-enough") is None

    assert run(desk, "users", "passwd", "carol", stdin="another-secret\n").exit_code == 0
    with desk.engine.connect() as conn:
        assert users.authenticate(conn, "carol", "s3cret-enough") is None
        assert users.authenticate(conn, "carol", "another-secret").name == "carol"

    token = run(desk, "users", "token", "carol").output.strip()
    assert token.startswith("wt_") and len(token) > 40
    with desk.engine.connect() as conn:
        assert users.user_of_token(conn, token).name == "carol"
        stored_tokens = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert token not in stored_tokens and len(stored_tokens) == 5

    assert run(desk, "users", "remove", "carol").exit_code == 0
    with desk.engine.connect() as conn:
        assert users.find_user(conn, "carol") is None and users.user_of_token(conn, token) is None


def test_bad_user_input_is_a_clear_error_and_changes_nothing(desk: Desk) -> None:
    before = desk.cli("users", "list", "--json")
    cases = [
        (("users", "add", "dave", "--role", "viewer"), "short\n", "8 to 1024 characters"),
        (("users", "add", "dave", "--role", "viewer"), "", "password on stdin"),
        (("users", "add", "<img src=x>", "--role", "viewer"), "long-enough-pw\n", "must be 1-100 letters"),
        (("users", "add", "alice", "--role", "admin"), "long-enough-pw\n", "exists already"),
        (("users", "remove", "nobody"), "", "no user named 'nobody'"),
        (("users", "token", "nobody"), "", "no user named 'nobody'"),
        (("users", "passwd", "alice"), "short\n", "8 to 1024 characters"),
    ]
    for args, stdin, message in cases:
        result = run(desk, *args, stdin=stdin)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    wrong_role = run(desk, "users", "add", "dave", "--role", "superuser", stdin="long-enough-pw\n")
    assert wrong_role.exit_code == 2
    assert desk.cli("users", "list", "--json") == before
    with desk.engine.connect() as conn:
        assert users.authenticate(conn, "alice", PASSWORD) is not None


def test_sign_in_sets_an_httponly_lax_cookie_and_sign_out_ends_it(desk: Desk) -> None:
    client = client_for(desk)
    first = client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    login_page = client.get("/login")
    assert 'name="username"' in login_page.text and 'type="password"' in login_page.text
    signed = sign_in(client, "alice")
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert "watcher_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; under TLS it is Secure (next test)
    queue = client.get("/")
    assert queue.status_code == 200 and "alice (approver)" in queue.text
    out = client.post("/logout", data={"csrf": csrf_of(queue.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_under_tls_the_session_cookie_is_secure(desk: Desk) -> None:
    auth = Authenticator.create(WebSettings(tls_cert="c.pem", tls_key="k.pem"), desk.engine)
    response = Response()
    with desk.engine.connect() as conn:
        auth.start_session(response, users.get_user(conn, "alice"))
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_a_forged_or_stale_session_and_a_post_without_csrf_are_refused(desk: Desk) -> None:
    client = client_for(desk)
    token = csrf_of(client.get("/login").text)
    no_csrf = client.post("/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert no_csrf.status_code == 403 and "watcher_session" not in no_csrf.headers.get("set-cookie", "")
    assert sign_in(client, "alice").status_code == 303
    no_token = client.post("/tickets/3/action", data={"step": "approve", "comment": "x"})
    assert no_token.status_code == 403
    assert desk.cli("tickets", "show", "3", "--json")["state"] == "open"
    # A password change ends the sessions signed before it.
    users.set_password(desk.engine, "alice", "a-new-password")
    assert client.get("/", follow_redirects=False).status_code == 303
    # A cookie with a forged signature is no session.
    client.cookies.set("watcher_session", "eyJ1IjoiYWxpY2UifQ.forged")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert token  # the login form carried one


def test_failed_sign_ins_are_limited_per_user_and_per_address(desk: Desk) -> None:
    client = client_for(desk, login_attempts=3)
    for _ in range(3):
        assert sign_in(client, "alice", "wrong-password").status_code == 401
    blocked = sign_in(client, "alice")  # the right password, but too late
    assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
    # The address is blocked too, for any user name.
    assert sign_in(client, "bob").status_code == 429

    limiter = LoginLimiter(2, 60.0, clock=lambda: now[0])
    now = [0.0]
    limiter.failed("user:a", "addr:1")
    limiter.failed("user:a", "addr:2")
    assert limiter.blocked("user:a") and not limiter.blocked("addr:1")
    now[0] = 61.0
    assert not limiter.blocked("user:a")


def test_a_viewer_sees_no_review_forms_and_a_forged_post_gets_403(desk: Desk) -> None:
    client = client_for(desk)
    assert sign_in(client, "vera").status_code == 303
    page = client.get("/tickets/3")
    assert page.status_code == 200 and "approve" not in page.text.split("<h2>Changes")[0]
    forged = client.post("/tickets/3/action", data={"csrf": csrf_of(page.text), "step": "approve", "comment": "x"})
    assert forged.status_code == 403 and "viewers cannot change anything" in forged.text
    assert desk.cli("tickets", "show", "3", "--json")["state"] == "open"


def test_an_approver_approves_by_form_and_the_trail_names_them(desk: Desk) -> None:
    client = client_for(desk)
    assert sign_in(client, "alice").status_code == 303
    page = client.get("/tickets/3")
    assert 'value="approve"' in page.text
    done = client.post("/tickets/3/action", data={"csrf": csrf_of(page.text), "step": "approve",
                                                  "comment": "<b>fine</b>"}, follow_redirects=False)
    assert done.status_code == 303
    after = client.get("/tickets/3").text
    assert "&lt;b&gt;fine&lt;/b&gt;" in after and "<b>fine</b>" not in after
    shown = desk.cli("tickets", "show", "3", "--json")
    assert shown["state"] == "approved" and shown["events"][-1]["by"] == "alice"


def test_the_trusted_proxy_header_counts_only_from_the_trusted_addresses(desk: Desk) -> None:
    trusted = client_for(desk, trusted_proxy_header="X-Forwarded-User", trusted_proxies=("testclient",))
    page = trusted.get("/", headers={"X-Forwarded-User": "bob"})
    assert page.status_code == 200 and "bob (approver)" in page.text
    assert trusted.get("/", headers={"X-Forwarded-User": "mallory"}, follow_redirects=False).status_code == 303
    untrusted = client_for(desk, trusted_proxy_header="X-Forwarded-User", trusted_proxies=("10.0.0.1",))
    assert untrusted.get("/", headers={"X-Forwarded-User": "bob"}, follow_redirects=False).status_code == 303


def test_a_session_from_one_server_process_works_on_a_replica_and_after_a_restart(desk: Desk) -> None:
    """Two ``watcher serve`` processes on one database (replicas behind a load balancer) sign with the
    database's key: a cookie and CSRF token from one are accepted by the other, and by a restarted one."""
    env = base_env(desk.db_url, WATCHER_CONFIG=str(desk.config))
    first, second = Served(env, "--port", "0"), Served(env, "--port", "0")
    try:
        with httpx.Client(base_url=first.url) as at_first:
            assert sign_in(at_first, "alice").status_code == 303
            cookies = dict(at_first.cookies)
            token = csrf_of(at_first.get("/").text)
        with httpx.Client(base_url=second.url, cookies=cookies) as at_second:
            queue = at_second.get("/", follow_redirects=False)
            assert queue.status_code == 200 and "alice (approver)" in queue.text
            approved = at_second.post("/tickets/3/action", data={"csrf": token, "step": "approve",
                                                                 "comment": "checked on the replica"})
            assert (approved.status_code, approved.headers["location"]) == (303, "/tickets/3"), approved.text
        assert desk.cli("tickets", "show", "3", "--json")["state"] == "approved"
        first.stop()
        restarted = Served(env, "--port", "0")
        try:
            with httpx.Client(base_url=restarted.url, cookies=cookies) as after_restart:
                assert "alice (approver)" in after_restart.get("/", follow_redirects=False).text
        finally:
            restarted.stop()
    finally:
        for served in (first, second):
            if served.process.poll() is None:
                served.stop()
    with desk.engine.connect() as conn:
        assert len(users.session_key(desk.engine)) == 32
        assert conn.execute(sa.text("SELECT count(*) FROM server_secrets")).scalar() == 1
    assert not [line for line in first.stderr + second.stderr if users._b64(users.session_key(desk.engine)) in line]
