"""The API's OpenAPI document at /api/v1/openapi.json: every /api/v1 route of the app is in it, with its methods,
parameters, the review steps' JSON body and the bearer scheme; openapi-spec-validator finds it valid OpenAPI 3."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.web_helpers import Desk, make_desk
from watcher import tickets, web
from watcher.settings import CLOUD_FILE_NAMES
from watcher.web import api, openapi


@pytest.fixture
def desk(db_url: str, engine: sa.Engine, tmp_path: Path) -> Desk:
    return make_desk(db_url, engine, tmp_path)


def app_api_operations(app) -> set[tuple[str, str]]:
    """(path as OpenAPI writes it, method) of each /api/v1 route the app serves."""
    found = set()
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/v1/"):
            path = re.sub(r":\w+}", "}", route.path)
            found |= {(path, m.lower()) for m in route.methods if m != "HEAD"}
    return found


def test_the_document_lists_every_api_route_and_is_valid_openapi_3(desk: Desk) -> None:
    app = web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings))
    client = TestClient(app)
    answer = client.get("/api/v1/openapi.json")  # no sign-in: the document holds no data
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = json.loads(answer.text)
    assert document["openapi"].startswith("3.")
    validate(document)

    operations = app_api_operations(app)
    assert len(operations) >= 10
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == operations
    assert openapi.undocumented(app.routes) == []

    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "a token from `watcher users token NAME`"}
    assert {"bearer": []} in document["security"]
    step = document["paths"]["/api/v1/tickets/{ticket_id}/{step}"]["post"]
    steps = next(p for p in step["parameters"] if p["name"] == "step")
    assert steps["in"] == "path" and tuple(steps["schema"]["enum"]) == api.REVIEW_STEPS
    body = step["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ReviewStep"}
    assert set(document["components"]["schemas"]["ReviewStep"]["properties"]) == {"comment", "additions_only"}
    assert {"200", "401", "403", "404", "409"} <= set(step["responses"])
    states = document["paths"]["/api/v1/tickets"]["get"]["parameters"][0]["schema"]["enum"]
    assert tuple(states) == tickets.STATES
    lookup = document["paths"]["/api/v1/lookup"]["get"]["parameters"]
    assert [(p["name"], p["required"]) for p in lookup] == [("address", True), ("cloud", False), ("at", False)]
    assert next(p for p in lookup if p["name"] == "cloud")["schema"]["enum"] == list(CLOUD_FILE_NAMES)


def test_each_documented_get_without_required_parameters_answers_with_a_bearer_token(desk: Desk) -> None:
    client = TestClient(web.create_app(desk.settings, desk.engine, web.standalone_view(desk.settings)))
    document = client.get("/api/v1/openapi.json").json()
    asked = 0
    for path, item in document["paths"].items():
        operation = item.get("get")
        if operation is None or any(p.get("required") for p in operation.get("parameters", [])):
            continue
        answer = client.get(path, headers={"Authorization": f"Bearer {desk.tokens['vera']}"})
        assert answer.status_code == 200, (path, answer.text)
        asked += 1
    assert asked == 6  # tickets, state, publications, diff, health, openapi.json
