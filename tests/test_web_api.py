"""The JSON API under /api/v1: each answer equals the CLI's --json for the same question; roles and four-eyes apply."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.web_helpers import Desk, make_desk
from watcher import web


@pytest.fixture
def desk(db_url: str, engine: sa.Engine, tmp_path: Path) -> Desk:
    return make_desk(db_url, engine, tmp_path)


@pytest.fixture
def client(desk: Desk) -> TestClient:
    return TestClient(web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings)))


def without_clock(data):
    """The value without its "now" (the moment of asking)."""
    if isinstance(data, dict):
        return {k: without_clock(v) for k, v in data.items() if k != "now"}
    if isinstance(data, list):
        return [without_clock(v) for v in data]
    return data


def get(client: TestClient, desk: Desk, path: str, who: str = "vera"):
    answer = client.get(path, headers={"Authorization": f"Bearer {desk.tokens[who]}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_read_endpoint_answers_what_the_cli_prints_with_json(desk: Desk, client: TestClient) -> None:
    same = [
        ("/api/v1/tickets", ("tickets", "list", "--json")),
        ("/api/v1/tickets?state=hold", ("tickets", "list", "--state", "hold", "--json")),
        ("/api/v1/tickets/4", ("tickets", "show", "4", "--json")),
        ("/api/v1/state", ("state", "list", "--json")),
        ("/api/v1/state?watch=east", ("state", "show", "east", "--json")),
        ("/api/v1/lookup?address=10.1.9.7", ("lookup", "10.1.9.7", "--json")),
        ("/api/v1/publications", ("publications", "--json")),
        ("/api/v1/diff", ("diff", "--json")),
        ("/api/v1/diff?all=1&from=20250101", ("diff", "--all", "--from", "20250101", "--json")),
        ("/api/v1/tags/Storage.EastUS2/history", ("history", "Storage.EastUS2", "--json")),
    ]
    for path, command in same:
        assert get(client, desk, path) == desk.cli(*command), path
    # Not only the same values: the same bytes (both write with watcher.jsontext), the approvers' names included.
    for path, command in same[2:5]:
        answer = client.get(path, headers={"Authorization": f"Bearer {desk.tokens['vera']}"})
        assert answer.text == desk.cli(*command, raw=True), path
    # The health view is judged at the moment of asking; apart from the clock it is the CLI's.
    api, cli = get(client, desk, "/api/v1/health"), desk.cli("status", "--json")
    assert without_clock(api) == without_clock(cli) and api["clouds"][0]["newest_publication"]["date"] == "2025-01-08"
    # The lookup hit is real, so the comparison above compared something.
    assert [h["tag"] for h in get(client, desk, "/api/v1/lookup?address=10.1.9.7")] == ["Storage.EastUS2"]


def test_without_a_user_the_api_answers_401_and_bad_questions_get_clear_errors(desk: Desk, client: TestClient) -> None:
    assert client.get("/api/v1/tickets").status_code == 401
    assert client.get("/api/v1/tickets", headers={"Authorization": "Bearer wt_forged"}).status_code == 401
    auth = {"Authorization": f"Bearer {desk.tokens['vera']}"}
    missing = client.get("/api/v1/tickets/99", headers=auth)
    assert missing.status_code == 404 and "99" in missing.json()["error"]
    assert client.get("/api/v1/tickets?state=nonsense", headers=auth).status_code == 400
    assert client.get("/api/v1/lookup", headers=auth).status_code == 400
    not_ip = client.get("/api/v1/lookup?address=not-an-ip", headers=auth)  # the store calls it not found
    assert not_ip.status_code == 404 and "'not-an-ip' is not an IP address" in not_ip.json()["error"]
    assert client.get("/api/v1/publications?cloud=mars", headers=auth).status_code == 400


def test_an_approver_approves_with_a_comment_and_a_viewer_gets_403(desk: Desk, client: TestClient) -> None:
    before = desk.cli("state", "show", "east", "--json")
    refused = client.post("/api/v1/tickets/3/approve", json={"comment": "looks fine"},
                          headers={"Authorization": f"Bearer {desk.tokens['vera']}"})
    assert refused.status_code == 403 and "viewer" in refused.json()["error"]
    assert desk.cli("tickets", "show", "3", "--json")["state"] == "open"

    done = client.post("/api/v1/tickets/3/approve", json={"comment": "looks fine"},
                       headers={"Authorization": f"Bearer {desk.tokens['alice']}"})
    assert done.status_code == 200, done.text
    assert done.json() == desk.cli("tickets", "show", "3", "--json")
    assert done.json()["state"] == "approved"
    last = done.json()["events"][-1]
    assert (last["by"], last["action"], last["comment"]) == ("alice", "approve", "looks fine")
    after = desk.cli("state", "show", "east", "--json")
    assert before["ticket"] == 1 and after["ticket"] == 3 and "10.1.9.0/24" in after["effective"]["v4"]

    again = client.post("/api/v1/tickets/3/approve", json={}, headers={"Authorization": f"Bearer {desk.tokens['bob']}"})
    assert again.status_code == 409 and "approved" in again.json()["error"]


def test_a_held_ticket_takes_additions_only_release_and_reject(desk: Desk, client: TestClient) -> None:
    alice = {"Authorization": f"Bearer {desk.tokens['alice']}"}
    adds = client.post("/api/v1/tickets/4/approve", json={"comment": "adds", "additions_only": True}, headers=alice)
    assert adds.status_code == 200 and adds.json()["state"] == "hold"
    assert adds.json()["events"][-1]["action"] == "approve-adds"
    released = client.post("/api/v1/tickets/4/release", json={"comment": "checked"}, headers=alice)
    assert released.json()["state"] == "open"
    bad = client.post("/api/v1/tickets/4/reject", content=b"not json", headers=alice)
    assert bad.status_code == 400 and desk.cli("tickets", "show", "4", "--json")["state"] == "open"
    rejected = client.post("/api/v1/tickets/4/reject", json={"comment": "no"}, headers=alice)
    assert rejected.json()["state"] == "rejected"
    assert client.post("/api/v1/tickets/4/frobnicate", json={}, headers=alice).status_code == 404


def test_four_eyes_applies_to_the_signed_in_user(db_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    desk = make_desk(db_url, engine, tmp_path, "[tickets]\nfour_eyes = true\n")
    client = TestClient(web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings)))
    alice = {"Authorization": f"Bearer {desk.tokens['alice']}"}
    bob = {"Authorization": f"Bearer {desk.tokens['bob']}"}
    assert client.post("/api/v1/tickets/4/approve", json={"additions_only": True}, headers=alice).status_code == 200
    refused = client.post("/api/v1/tickets/4/release", json={}, headers=alice)
    assert refused.status_code == 409 and "four-eyes" in refused.json()["error"]
    assert client.post("/api/v1/tickets/4/release", json={}, headers=bob).json()["state"] == "open"


def test_a_cookie_signed_post_needs_the_csrf_header(desk: Desk, client: TestClient) -> None:
    login_page = client.get("/login")
    token = login_page.text.split('name="csrf" value="')[1].split('"')[0]
    signed = client.post("/login", data={"csrf": token, "username": "alice", "password": "correct horse battery"},
                         follow_redirects=False)
    assert signed.status_code == 303
    assert client.get("/api/v1/tickets").status_code == 200
    assert client.post("/api/v1/tickets/3/approve", json={}).status_code == 403
    done = client.post("/api/v1/tickets/3/approve", json={}, headers={"X-CSRF-Token": token})
    assert done.status_code == 200 and done.json()["events"][-1]["by"] == "alice"
