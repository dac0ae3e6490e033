"""A truthful `/openapi.json`: every operation's body, headers, success model and problems.

Handlers parse their own bodies and check their own tokens (faster than FastAPI dependencies,
measured), so FastAPI cannot see what an operation reads. `CONTRACTS` says it instead, one row per
operation, and `tests/unit/test_openapi.py` checks each row against the handler's source (it calls
`authorize`, `idempotency_key`, `rate_limit`, `parse_body` exactly when its row says so), so the
table cannot drift from the code silently. The schemathesis suite then fuzzes every operation from
this document and checks every response against it.

Problems every operation may answer: 503 (the edge's deadline, an unavailable shard) and, with
parameters or a body, 422; with a body, 413 and 415; authenticated operations 401 and 403
(bearer JWT); rate-limited ones 429. Each problem is `application/problem+json` (`Problem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from router import responses as r
from router import webhooks_api as wh
from router.deps import IDEMPOTENCY_KEY_CHARS_MAX, IDEMPOTENCY_KEY_PATTERN
from router.edge import REQUEST_ID_PATTERN, HotRoute, HotRoutes
from router.problems import PROBLEM, Problem
from router.queue_tokens import TOKEN_CHARS_MAX

SCHEMA_REF = "#/components/schemas/{model}"
BEARER = "bearer"


@dataclass(frozen=True)
class Contract:
    status: int  # of success
    model: type[BaseModel] | None  # the success body; None when not JSON (see MEDIA)
    authenticated: bool = False
    body: str | None = None  # the body model's name in the handler's module (what it passes parse_body)
    idempotent: bool = False  # reads Idempotency-Key
    queue_token: bool = False  # reads X-Queue-Token
    rate_limited: bool = False
    errors: tuple[int, ...] = ()  # problems of this operation beyond the common ones
    body_optional: bool = False  # the body may be left out (the waiting room's join)
    anonymous: bool = False  # authenticated only for some parameters (the listing's `organizer`)


CONTRACTS: dict[tuple[str, str], Contract] = {
    ("POST", "/v1/holds"): Contract(201, r.Hold, True, "HoldCreate", True, True, True, (404, 409)),
    ("GET", "/v1/holds/{hold_id}"): Contract(200, r.Hold, True, errors=(404,)),
    ("DELETE", "/v1/holds/{hold_id}"): Contract(200, r.Hold, True, idempotent=True, rate_limited=True,
                                                errors=(404, 409)),
    ("POST", "/v1/holds/{hold_id}/checkout"): Contract(201, r.CheckoutResult, True, "CheckoutBody", True,
                                                       rate_limited=True, errors=(402, 404, 409, 410, 502)),
    ("POST", "/v1/events"): Contract(201, r.Event, True, "EventCreate"),
    ("GET", "/v1/events"): Contract(200, r.EventPage, True, anonymous=True),
    ("GET", "/v1/events/{event_id}"): Contract(200, r.Event, errors=(404,)),
    ("PATCH", "/v1/events/{event_id}"): Contract(200, r.Event, True, "EventPatch", errors=(404, 409)),
    ("GET", "/v1/events/{event_id}/availability"): Contract(200, r.Availability, errors=(404,)),
    ("GET", "/v1/events/{event_id}/seats"): Contract(200, r.SeatMap, errors=(404,)),
    ("GET", "/v1/events/{event_id}/seats/stream"): Contract(200, None, errors=(404,)),
    ("GET", "/v1/events/{event_id}/revocations"): Contract(200, r.RevocationPage, True, errors=(404,)),
    ("GET", "/v1/events/{event_id}/sales"): Contract(200, r.SalesReport, True, errors=(404,)),
    ("GET", "/v1/events/{event_id}/audit"): Contract(200, r.AuditPage, True, errors=(404,)),
    ("GET", "/v1/events/{event_id}/orders.csv"): Contract(200, None, True, errors=(404,)),
    ("GET", "/v1/events/{event_id}/attendees.csv"): Contract(200, None, True, errors=(404,)),
    ("POST", "/v1/events/{event_id}/queue"): Contract(200, r.QueueStatus, True, "QueueJoin", errors=(404, 409, 429),
                                                     body_optional=True),
    ("GET", "/v1/events/{event_id}/queue"): Contract(200, r.QueueStatus, True, errors=(404, 409)),
    ("GET", "/v1/me"): Contract(200, r.Me, True),
    ("GET", "/v1/me/tickets"): Contract(200, r.TicketPage, True),
    ("GET", "/v1/orders/{order_id}"): Contract(200, r.Order, True, errors=(404,)),
    ("POST", "/v1/orders/{order_id}/refund"): Contract(200, r.Order, True, idempotent=True, rate_limited=True,
                                                       errors=(404, 409, 502)),
    ("GET", "/v1/tickets/{ticket_id}"): Contract(200, r.Ticket, True, errors=(404,)),
    ("GET", "/v1/tickets/{ticket_id}/qr.png"): Contract(200, None, True, errors=(404,)),
    ("GET", "/v1/tickets/{ticket_id}/qr.svg"): Contract(200, None, True, errors=(404,)),
    ("POST", "/v1/tickets/{ticket_id}/transfer"): Contract(201, r.Ticket, True, "TransferBody", True,
                                                           rate_limited=True, errors=(404, 409, 410)),
    ("POST", "/v1/checkins"): Contract(200, r.Checkin, True, "CheckinBody", errors=(404, 409, 410)),
    ("GET", "/v1/ticket-keys"): Contract(200, r.TicketKeys),
    ("POST", "/v1/webhooks"): Contract(201, wh.WebhookBody, True, "WebhookCreate"),
    ("GET", "/v1/webhooks"): Contract(200, wh.WebhookList, True),
    ("DELETE", "/v1/webhooks/{webhook_id}"): Contract(200, wh.WebhookBody, True, errors=(404,)),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Contract(200, wh.DeliveryList, True, errors=(404,)),
    ("GET", "/healthz"): Contract(200, r.Health),
    ("GET", "/readyz"): Contract(200, r.Ready),
}
# Success bodies that are not JSON.
MEDIA: dict[str, dict[str, Any]] = {
    "/v1/events/{event_id}/seats/stream": {"text/event-stream": {"schema": {"type": "string"}}},
    "/v1/tickets/{ticket_id}/qr.png": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    "/v1/tickets/{ticket_id}/qr.svg": {"image/svg+xml": {"schema": {"type": "string"}}},
    "/v1/events/{event_id}/orders.csv": {"text/csv": {"schema": {"type": "string"}}},
    "/v1/events/{event_id}/attendees.csv": {"text/csv": {"schema": {"type": "string"}}},
}


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


REQUEST_ID = _header("X-Request-Id", "Echoed in the response and in problems when it matches the pattern; "
                     "otherwise the router makes one",
                     {"type": "string", "pattern": REQUEST_ID_PATTERN.pattern.decode()})
IDEMPOTENCY_KEY = _header("Idempotency-Key", "Same key + same user + same body → the first response again",
                          {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_CHARS_MAX,
                           "pattern": IDEMPOTENCY_KEY_PATTERN.pattern})
QUEUE_TOKEN = _header("X-Queue-Token", "The waiting room's admission token (queue-mode events)",
                      {"type": "string", "minLength": 1, "maxLength": TOKEN_CHARS_MAX, "pattern": r"^[A-Za-z0-9_.-]+$"})
RESPONSE_HEADERS = {"X-Request-Id": {"description": "The request's id", "schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}}


def install_openapi(app: FastAPI, hot_routes: HotRoutes) -> None:
    """Serve the document built here (once, then cached) at /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, hot_routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def handlers(app: FastAPI, hot_routes: HotRoutes) -> dict[tuple[str, str], Any]:
    """(method, path) → the function serving it, FastAPI's documented routes and the edge's."""
    endpoints = {(method, route.path): route.endpoint for route in app.routes
                 if isinstance(route, APIRoute) and route.include_in_schema for method in route.methods or ()}
    endpoints.update({(route.method, route.path): route.handler for route in hot_routes.routes})
    return endpoints


def _hot_operation(route: HotRoute) -> dict[str, Any]:
    """A hot route's operation as FastAPI would have written it (CONTRACTS adds the rest)."""
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", "format": "uuid", "title": name.replace("_", " ").title()}}
                  for name in route.path_parameters]
    parameters += [{"name": query, "in": "query", "required": False, "schema": schema}
                   for query, schema in route.query.items()]
    path_words = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    operation_id = f"{route.handler.__name__}_{path_words}"
    return {"tags": list(route.tags), "summary": route.summary, "parameters": parameters, "responses": {},
            "operationId": f"{operation_id}_{route.method.lower()}"}


def build(app: FastAPI, hot_routes: HotRoutes) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    for route in hot_routes.routes:
        document["paths"].setdefault(route.path, {})[route.method.lower()] = _hot_operation(route)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's; our 422 is a Problem
        schemas.pop(name, None)
    document["components"]["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    _add_model(schemas, Problem)
    endpoints = handlers(app, hot_routes)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            contract = CONTRACTS.get((method.upper(), path))
            if contract is not None:
                body = endpoints[method.upper(), path].__globals__[contract.body] if contract.body else None
                _apply(schemas, path, operation, contract, body)
    return document


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put `model` and its nested models in components; returns the `$ref` to it."""
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    name = schema.get("title", model.__name__)
    for component, definition in [*schema.pop("$defs", {}).items(), (name, schema)]:
        if schemas.setdefault(component, definition) != definition:  # two models, one name
            raise ValueError(f"two different schemas are named {component!r} in the OpenAPI document")
    return {"$ref": SCHEMA_REF.format(model=name)}


def _apply(schemas: dict[str, Any], path: str, operation: dict[str, Any], contract: Contract,
           body: type[BaseModel] | None) -> None:
    parameters = operation.setdefault("parameters", [])
    # A malformed path or query parameter, body or key is a 422; a malformed X-Request-Id is replaced.
    has_input = bool(parameters) or contract.body is not None or contract.idempotent
    parameters.append(REQUEST_ID)
    if contract.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    if contract.queue_token:
        parameters.append(QUEUE_TOKEN)
    if body is not None:
        operation["requestBody"] = {"required": not contract.body_optional, "content": {
            "application/json": {"schema": _add_model(schemas, body)}}}
    if contract.authenticated:
        # `{}` first: no token at all is also accepted (OpenAPI's optional security).
        operation["security"] = [{}, {BEARER: []}] if contract.anonymous else [{BEARER: []}]
    responses = operation.setdefault("responses", {})
    success = responses.pop(str(contract.status), None) or responses.pop("200", {})
    content = MEDIA.get(path) or {"application/json": {"schema": _add_model(schemas, contract.model)
                                                       if contract.model else {}}}
    responses[str(contract.status)] = {"description": success.get("description", "Success"), "content": content}
    for status in _problem_statuses(contract, has_input=has_input):
        responses[str(status)] = {**PROBLEM, "description": responses.get(str(status), PROBLEM)["description"]}
    for status, response in responses.items():
        response["headers"] = {**RESPONSE_HEADERS, **(RETRY_AFTER if status in ("429", "503") else {})}
        if status >= "400":
            response["content"] = PROBLEM["content"]


def _problem_statuses(contract: Contract, *, has_input: bool) -> set[int]:
    statuses = {503, *contract.errors}
    if has_input:
        statuses.add(422)
    if contract.body is not None:
        statuses |= {413, 415}
    if contract.authenticated:
        statuses |= {401, 403}
    if contract.rate_limited:
        statuses.add(429)
    return statuses
