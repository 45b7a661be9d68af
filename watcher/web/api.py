"""The JSON API under ``/api/v1``: the same library calls and the same shapes as the CLI's ``--json``.

Every request needs a user (bearer token, session cookie or trusted proxy
header); reading is for every role, review steps for approvers and admins
(viewers get 403). A POST signed in by cookie carries its CSRF token in the
``X-CSRF-Token`` header; a bearer-token POST needs none.

    GET  /api/v1/tickets[?state=]            watcher tickets list --json
    GET  /api/v1/tickets/{id}                watcher tickets show ID --json
    POST /api/v1/tickets/{id}/{step}         approve|reject|release|applied, body {"comment": ..., "additions_only": bool}
    GET  /api/v1/state[?watch=&cloud=&at=]   watcher state list|show --json
    GET  /api/v1/lookup?address=[&cloud=&at=] watcher lookup --json
    GET  /api/v1/publications[?cloud=]       watcher publications --json
    GET  /api/v1/diff[?from=&to=&cloud=&tag=...&all=1]  watcher diff --json
    GET  /api/v1/tags/{name}/history[?cloud=]  watcher history --json
    GET  /api/v1/health                      watcher status --json
    GET  /api/v1/openapi.json                this API's OpenAPI 3 document (no sign-in needed)

Each route's endpoint carries its OpenAPI operation as its docstring (watcher.web.openapi).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import jsontext, overview, review, state as states, store, tickets
from .. import ticket_detail as details
from ..errors import NotFoundError, StoreError, TransitionError, WatcherError
from ..settings import CLOUD_FILE_NAMES, Settings
from ..users import UserInfo
from ..watches import watched_tags
from . import openapi
from .auth import CSRF_HEADER, Authenticator

log = logging.getLogger(__name__)

REVIEW_STEPS = ("approve", "reject", "release", "applied")


class ApiError(Exception):
    """An answer other than 200, with its status and message (translated to JSON at the edge)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(status: int, data: Any) -> Response:
    return Response(jsontext.dumps(data) + "\n", status_code=status, media_type="application/json")


def error_status(exc: WatcherError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, TransitionError):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 400


# ---------------------------------------------------------------- library reads, shaped as the CLI's --json


def cloud_of(value: str | None) -> str:
    cloud = (value or "public").lower()
    if cloud not in CLOUD_FILE_NAMES:
        raise ApiError(400, f"unknown cloud {cloud!r} (known: {', '.join(sorted(CLOUD_FILE_NAMES))})")
    return cloud


def ticket_detail(engine: Engine, settings: Settings, ticket_id: int) -> dict[str, Any]:
    """``watcher tickets show ID --json``."""
    return details.ticket_detail(engine, settings, ticket_id).to_json()


def ticket_list(engine: Engine, state: str | None) -> list[dict[str, Any]]:
    if state is not None and state not in tickets.STATES:
        raise ApiError(400, f"unknown state {state!r} (known: {', '.join(tickets.STATES)})")
    with engine.connect() as conn:
        return [t.to_json() for t in tickets.list_tickets(conn, state)]


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return states.as_utc(dt.datetime.fromisoformat(value))
    except ValueError:
        raise ApiError(400, f"{value!r} is not an ISO date or time") from None


def state_json(engine: Engine, watch: str | None, cloud: str, at_text: str | None) -> Any:
    """``watcher state show WATCH --json``, or without a watch ``watcher state list --json``."""
    given = parse_time(at_text)
    at = given or dt.datetime.now(dt.timezone.utc)
    with engine.connect() as conn:
        if watch:
            return states.require(conn, cloud, watch, given).to_json(at)
        return [s.to_json(at) for s in states.all_current(conn, given)]


def review_step(engine: Engine, settings: Settings, user: UserInfo, ticket_id: int, step: str, comment: str,
                additions_only: bool) -> dict[str, Any]:
    if not user.may_review:
        raise ApiError(403, f"{user.name} is a {user.role}: review steps need an approver or admin")
    if step not in REVIEW_STEPS:
        raise ApiError(404, f"unknown review step {step!r} (known: {', '.join(REVIEW_STEPS)})")
    if additions_only:
        if step != "approve":
            raise ApiError(400, "additions_only goes with approve")
        with engine.connect() as conn:
            if tickets.get_ticket(conn, ticket_id, view=False).state != "hold":
                raise TransitionError("additions only is for held tickets; approve an open ticket as a whole")
        step = "approve-adds"
    review.transition(engine, ticket_id, step, user.name, comment, settings=settings.tickets, announce=settings)
    return ticket_detail(engine, settings, ticket_id)


def diff_json(engine: Engine, settings: Settings, query: Any) -> list[dict[str, Any]]:
    cloud = cloud_of(query.get("cloud"))
    names = query.getlist("tag")
    all_tags = query.get("all") in ("1", "true", "yes")
    if names and all_tags:
        raise ApiError(400, "name tags or ask for all, not both")
    with engine.connect() as conn:
        old = store.resolve_publication(conn, cloud, query.get("from") or "previous")
        new = store.resolve_publication(conn, cloud, query.get("to") or "latest")
        if not names and not all_tags:
            names, _warnings = watched_tags(settings, cloud, store.present_tag_names(conn, cloud))
            if not names:
                raise ApiError(400, "no watched tags: name tags (tag=...) or ask for all=1")
        changes = store.diff_publications(conn, cloud, old, new, None if all_tags else list(names))
    return [c.to_json(old, new) for c in changes]


def health_json(engine: Engine, settings: Settings) -> dict[str, Any]:
    """``watcher status --json``."""
    with engine.connect() as conn:
        return overview.status_report(conn, settings, dt.datetime.now(dt.timezone.utc)).to_json()


# ---------------------------------------------------------------- routes


def routes(settings: Settings, engine: Engine, auth: Authenticator) -> list[Route]:
    def endpoint(handler: Callable[[Request, UserInfo], Any], doc: str, *,
                 changes: bool = False) -> Callable[[Request], Any]:
        async def answer(request: Request) -> Response:
            body = await request.body() if changes else b""
            try:
                user = await run_in_threadpool(auth.user, request)
                if user is None:
                    raise ApiError(401, "sign in, or send Authorization: Bearer TOKEN (watcher users token NAME)")
                if changes and not auth.by_bearer(request) and not auth.csrf_ok(request, request.headers.get(CSRF_HEADER)):
                    raise ApiError(403, "missing or wrong CSRF token (X-CSRF-Token)")
                if changes:
                    request.state.body = _json_body(body)
                return json_response(200, await run_in_threadpool(handler, request, user))
            except ApiError as exc:
                return json_response(exc.status, {"error": str(exc)})
            except WatcherError as exc:
                return json_response(error_status(exc), {"error": str(exc)})
            except SQLAlchemyError as exc:
                log.warning("%s: database error %s", request.url.path, type(exc).__name__)
                return json_response(503, {"error": "database unavailable"})

        answer.__doc__ = doc  # the operation in the OpenAPI document
        return answer

    def ticket_id(request: Request) -> int:
        return int(request.path_params["ticket_id"])

    def post_step(request: Request, user: UserInfo) -> Any:
        body = request.state.body
        return review_step(engine, settings, user, ticket_id(request), request.path_params["step"],
                           str(body.get("comment", "")), bool(body.get("additions_only", False)))

    def lookup(request: Request, user: UserInfo) -> Any:
        address = request.query_params.get("address")
        if not address:
            raise ApiError(400, "give ?address=IP")
        cloud = cloud_of(request.query_params.get("cloud"))
        with engine.connect() as conn:
            pub = store.resolve_publication(conn, cloud, request.query_params.get("at") or "latest")
            return [h.to_json() for h in store.lookup(conn, cloud, address, pub)]

    def publications(request: Request, user: UserInfo) -> Any:
        with engine.connect() as conn:
            return [p.to_json() for p in store.publications(conn, cloud_of(request.query_params.get("cloud")))]

    def history(request: Request, user: UserInfo) -> Any:
        with engine.connect() as conn:
            name, entries = store.history(conn, cloud_of(request.query_params.get("cloud")),
                                          request.path_params["name"])
        return [e.to_json(name) for e in entries]

    q = lambda request, key: request.query_params.get(key)  # noqa: E731
    api = [
        Route("/api/v1/tickets", endpoint(lambda r, u: ticket_list(engine, q(r, "state")), openapi.TICKETS)),
        Route("/api/v1/tickets/{ticket_id:int}",
              endpoint(lambda r, u: ticket_detail(engine, settings, ticket_id(r)), openapi.TICKET)),
        Route("/api/v1/tickets/{ticket_id:int}/{step}", endpoint(post_step, openapi.TICKET_STEP, changes=True),
              methods=["POST"]),
        Route("/api/v1/state", endpoint(lambda r, u: state_json(engine, q(r, "watch"), cloud_of(q(r, "cloud")),
                                                                 q(r, "at")), openapi.STATE)),
        Route("/api/v1/lookup", endpoint(lookup, openapi.LOOKUP)),
        Route("/api/v1/publications", endpoint(publications, openapi.PUBLICATIONS)),
        Route("/api/v1/diff", endpoint(lambda r, u: diff_json(engine, settings, r.query_params), openapi.DIFF)),
        Route("/api/v1/tags/{name:path}/history", endpoint(history, openapi.HISTORY)),
        Route("/api/v1/health", endpoint(lambda r, u: health_json(engine, settings), openapi.HEALTH)),
    ]

    def openapi_document(request: Request) -> Response:
        return json_response(200, described)

    openapi_document.__doc__ = openapi.OPENAPI
    api.append(Route(openapi.OPENAPI_PATH, openapi_document, methods=["GET"]))
    described = openapi.document(api)  # made once: the routes do not change while the app runs
    return api


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the body must be JSON, e.g. {\"comment\": \"...\"}") from None
    if not isinstance(data, dict) or not isinstance(data.get("comment", ""), str):
        raise ApiError(400, "the body must be a JSON object with a string \"comment\"")
    return data
