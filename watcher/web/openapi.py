"""The API's description: an OpenAPI 3 document at ``/api/v1/openapi.json``, made by Starlette's SchemaGenerator.

Each ``/api/v1`` endpoint carries its operation as YAML in its docstring (the
texts below, attached by ``api.routes``); the generator walks the app's routes,
so a route is described where it is declared. ``undocumented`` names any API
route without one (the tests keep it empty). The answers' shapes are the CLI's
``--json`` (README's table), so the schemas here name their main fields and
leave the rest open rather than repeat every value's ``to_json``.
"""
from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

from .. import tickets
from ..settings import CLOUD_FILE_NAMES

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"

_ERRORS = """
  "400": {$ref: "#/components/responses/BadRequest"}
  "401": {$ref: "#/components/responses/Unauthorized"}
  "503": {$ref: "#/components/responses/Unavailable"}
"""
_CLOUD = """
  - {name: cloud, in: query, required: false, schema: {type: string, enum: [@CLOUDS@], default: public},
     description: "the cloud (public unless given)"}
"""
_AT = """
  - {name: at, in: query, required: false, schema: {type: string},
     description: "an ISO date or time: the answer as it was then (default: now / the latest publication)"}
"""


def _op(text: str) -> str:
    """A docstring for SchemaGenerator: a line of prose, then ``---`` and the operation's YAML (with the
    ticket states and clouds the code knows, so the document cannot fall behind them)."""
    text = text.replace("@STATES@", ", ".join(tickets.STATES)).replace("@CLOUDS@", ", ".join(CLOUD_FILE_NAMES))
    return "The operation, as OpenAPI YAML.\n---\n" + text


TICKETS = _op("""
operationId: listTickets
summary: The tickets (watcher tickets list --json)
tags: [tickets]
parameters:
  - {name: state, in: query, required: false, description: "only tickets in this state",
     schema: {type: string, enum: [@STATES@]}}
responses:
  "200":
    description: the tickets, newest first
    content: {application/json: {schema: {type: array, items: {$ref: "#/components/schemas/TicketSummary"}}}}
""" + _ERRORS)

TICKET = _op("""
operationId: showTicket
summary: One ticket with its changes, state lists, trail and snippets (watcher tickets show ID --json)
tags: [tickets]
parameters:
  - {name: ticket_id, in: path, required: true, schema: {type: integer}}
responses:
  "200":
    description: the ticket
    content: {application/json: {schema: {$ref: "#/components/schemas/TicketDetail"}}}
  "404": {$ref: "#/components/responses/NotFound"}
""" + _ERRORS)

TICKET_STEP = _op("""
operationId: reviewTicket
summary: Take a review step on a ticket (approver or admin)
description: >
  approve (whole, or with additions_only for a held ticket), reject, release (a held ticket) or applied.
  The signed-in user is the actor in the trail; [tickets] four_eyes applies. A request signed in by session
  cookie sends the page's CSRF token in X-CSRF-Token; a bearer-token request needs none.
tags: [tickets]
parameters:
  - {name: ticket_id, in: path, required: true, schema: {type: integer}}
  - {name: step, in: path, required: true, schema: {type: string, enum: [approve, reject, release, applied]}}
  - {name: X-CSRF-Token, in: header, required: false, schema: {type: string},
     description: "only with a session cookie"}
requestBody:
  required: false
  content:
    application/json:
      schema: {$ref: "#/components/schemas/ReviewStep"}
      example: {comment: "checked with the storage team"}
responses:
  "200":
    description: "the ticket after the step (as GET /api/v1/tickets/{ticket_id})"
    content: {application/json: {schema: {$ref: "#/components/schemas/TicketDetail"}}}
  "403": {$ref: "#/components/responses/Forbidden"}
  "404": {$ref: "#/components/responses/NotFound"}
  "409": {$ref: "#/components/responses/Conflict"}
""" + _ERRORS)

STATE = _op("""
operationId: approvedState
summary: The approved state of every watch, or of one (watcher state list|show --json)
tags: [state]
parameters:
  - {name: watch, in: query, required: false, schema: {type: string}, description: "one watch's state"}
""" + _CLOUD + _AT + """
responses:
  "200":
    description: "one state (with watch), else a list of them"
    content:
      application/json:
        schema:
          oneOf:
            - {$ref: "#/components/schemas/ApprovedState"}
            - {type: array, items: {$ref: "#/components/schemas/ApprovedState"}}
  "404": {$ref: "#/components/responses/NotFound"}
""" + _ERRORS)

LOOKUP = _op("""
operationId: lookupAddress
summary: Which tags hold an address or prefix, and since when (watcher lookup --json)
tags: [history]
parameters:
  - {name: address, in: query, required: true, schema: {type: string}, description: "an IPv4 or IPv6 address or prefix"}
""" + _CLOUD + _AT + """
responses:
  "200":
    description: the tags holding it
    content: {application/json: {schema: {type: array, items: {$ref: "#/components/schemas/Open"}}}}
  "404": {$ref: "#/components/responses/NotFound"}
""" + _ERRORS)

PUBLICATIONS = _op("""
operationId: listPublications
summary: The imported publications, with missed ones (watcher publications --json)
tags: [history]
parameters:
""" + _CLOUD + """
responses:
  "200":
    description: the publications, oldest first
    content: {application/json: {schema: {type: array, items: {$ref: "#/components/schemas/Publication"}}}}
""" + _ERRORS)

DIFF = _op("""
operationId: diffPublications
summary: What changed between two publications (watcher diff --json)
tags: [history]
parameters:
  - {name: from, in: query, required: false, schema: {type: string, default: previous},
     description: "a publication (date, changeNumber, previous, latest)"}
  - {name: to, in: query, required: false, schema: {type: string, default: latest}}
  - {name: tag, in: query, required: false, style: form, explode: true, schema: {type: array, items: {type: string}},
     description: "tags to compare (default the watched ones)"}
  - {name: all, in: query, required: false, schema: {type: string, enum: ["1", "true", "yes"]},
     description: "every tag"}
""" + _CLOUD + """
responses:
  "200":
    description: one entry per changed tag
    content: {application/json: {schema: {type: array, items: {$ref: "#/components/schemas/Open"}}}}
  "404": {$ref: "#/components/responses/NotFound"}
""" + _ERRORS)

HISTORY = _op("""
operationId: tagHistory
summary: Every stored version of a tag (watcher history NAME --json)
tags: [history]
parameters:
  - {name: name, in: path, required: true, schema: {type: string}, description: "the tag, e.g. Storage.WestUS"}
""" + _CLOUD + """
responses:
  "200":
    description: the tag's versions, oldest first
    content: {application/json: {schema: {type: array, items: {$ref: "#/components/schemas/Open"}}}}
  "404": {$ref: "#/components/responses/NotFound"}
""" + _ERRORS)

HEALTH = _op("""
operationId: health
summary: The watcher's health and status (watcher status --json)
tags: [health]
responses:
  "200":
    description: the status report
    content: {application/json: {schema: {$ref: "#/components/schemas/Open"}}}
""" + _ERRORS)

OPENAPI = _op("""
operationId: openapi
summary: This document (needs no sign-in)
tags: [health]
security: []
responses:
  "200":
    description: the OpenAPI document of /api/v1
    content: {application/json: {schema: {type: object}}}
""")


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


BASE_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Azure service-tag watcher review desk API",
        "version": "1",
        "description": "The answers are the CLI's --json for the same question. Every operation needs a user: "
                       "a bearer token (`watcher users token NAME`), or a signed-in browser session.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"session": []}],
    "tags": [{"name": "tickets"}, {"name": "state"}, {"name": "history"}, {"name": "health"}],
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token from `watcher users token NAME`"},
            "session": {"type": "apiKey", "in": "cookie", "name": "watcher_session",
                        "description": "the review desk's sign-in cookie (POSTs then need X-CSRF-Token)"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Open": {"type": "object", "additionalProperties": True,
                     "description": "the CLI's --json for the same question"},
            "ReviewStep": {"type": "object", "additionalProperties": False, "properties": {
                "comment": {"type": "string", "description": "recorded in the trail"},
                "additions_only": {"type": "boolean", "default": False,
                                   "description": "approve only the additions of a held ticket"}}},
            "TicketSummary": {"type": "object", "additionalProperties": True, "properties": {
                "id": {"type": "integer"}, "uid": {"type": "string"}, "state": {"type": "string"},
                "watch": {"type": "string"}, "registry": {"type": "string"}, "cloud": {"type": "string"},
                "date": {"type": "string", "format": "date"}, "title": {"type": "string"},
                "kind": {"type": "string"}, "superseded_by": {"type": "integer", "nullable": True},
                "held_for": {"type": "array", "items": {"type": "string"}},
                "removals_allowed": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"}}},
            "TicketDetail": {"type": "object", "additionalProperties": True,
                             "description": "the ticket summary's fields and its changes, state lists, trail"},
            "ApprovedState": {"type": "object", "additionalProperties": True},
            "Publication": {"type": "object", "additionalProperties": True},
        },
        "responses": {
            "BadRequest": _error("a parameter or body that cannot be used"),
            "Unauthorized": _error("no signed-in user and no valid bearer token"),
            "Forbidden": _error("a viewer asked for a change, or a session POST without its CSRF token"),
            "NotFound": _error("no such ticket, watch, tag or publication"),
            "Conflict": _error("the ticket is not in a state for that step"),
            "Unavailable": _error("the database is unavailable"),
        },
    },
}


def api_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    return [r for r in routes if getattr(r, "path", "").startswith(API_PREFIX + "/")]


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of the ``/api/v1`` routes among ``routes`` (their docstrings' YAML)."""
    base = {**BASE_DOCUMENT, "paths": {}}
    return SchemaGenerator(base).get_schema(api_routes(routes))


def undocumented(routes: list[BaseRoute]) -> list[str]:
    """``METHOD PATH`` of each API route whose endpoint carries no operation."""
    generator = SchemaGenerator(BASE_DOCUMENT)
    return [f"{e.http_method.upper()} {e.path}" for e in generator.get_endpoints(api_routes(routes))
            if not generator.parse_docstring(e.func)]
