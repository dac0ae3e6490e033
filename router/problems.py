"""Every error the API returns, as ``application/problem+json`` with a stable machine ``code``.

The tree, by status:

- 401 UNAUTHENTICATED — missing, malformed, expired or wrongly signed bearer token.
- 403 FORBIDDEN — the token's role may not call this route.
  403 SALE_NOT_OPEN, PRESALE_CODE_INVALID, QUEUE_TOKEN_REQUIRED — the sale refuses this buyer now.
- 404 NOT_FOUND (unknown path), EVENT_NOT_FOUND, HOLD_NOT_FOUND, ORDER_NOT_FOUND,
  TICKET_NOT_FOUND — also for other people's holds, orders and tickets (never reveal existence).
- 405 METHOD_NOT_ALLOWED.
- 409 SEATS_UNAVAILABLE (+ ``unavailable``), INSUFFICIENT_INVENTORY (+ ``available``),
  LIMIT_EXCEEDED, HOLD_NOT_ACTIVE, TICKET_ALREADY_USED (+ ``first_checked_in_at``, ``gate``),
  QUEUE_NOT_ENABLED, IDEMPOTENCY_REQUEST_IN_FLIGHT, ORDER_ALREADY_REFUNDED, EVENT_CANCELLED.
- 410 HOLD_EXPIRED, TICKET_VOID.
- 402 PAYMENT_DECLINED; 502 PAYMENT_GATEWAY_ERROR.
- 413 BODY_TOO_LARGE; 415 UNSUPPORTED_MEDIA_TYPE.
- 422 VALIDATION_ERROR (+ ``errors``: each names the field by ``loc``), IDEMPOTENCY_KEY_REUSED,
  TICKET_INVALID.
- 429 RATE_LIMITED (+ ``Retry-After``).
- 503 SHARD_UNAVAILABLE (+ ``Retry-After``) — also when a database or Redis connection fails
  under a route that reads them directly; NOT_READY (+ ``components``), DEADLINE_EXCEEDED.
- 500 INTERNAL_ERROR — a bug; logged with the request id, never with a stack trace in the body.

Every problem carries ``request_id`` (as the ``X-Request-Id`` header does). ``detail`` is written
for the client: never a database, driver or Ray message. Those go to the log with the request id
(`ApiError.reason`). Expected outcomes raise `ApiError`; anything else is a programmer error and
becomes a logged 500.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shards.pools import CONNECTION_ERRORS as DATABASE_CONNECTION_ERRORS

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://ticketing.example/problems/"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
# The OpenAPI `responses` entry of every documented error status (the schema is `Problem` below).
PROBLEM: dict[str, Any] = {"description": "A problem document (RFC 9457) with a stable `code`.",
                           "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}}
# A client-facing detail for failures whose real message is internal (logged, never sent).
UNAVAILABLE_DETAIL = "the shard could not complete this request; nothing was changed, retry later"
# Failures of a connection to Postgres or Redis (or of a pool's deadline) under a route that reads
# them directly: an outage, answered like one (503 + Retry-After), not a bug (500). Which driver
# errors mean "Postgres is not reachable" is for shards/ to say (`shards.pools.CONNECTION_ERRORS`).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError, TimeoutError, *DATABASE_CONNECTION_ERRORS, redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

TITLES: dict[str, str] = {
    "UNAUTHENTICATED": "Authentication required",
    "FORBIDDEN": "Not allowed",
    "NOT_FOUND": "Not found",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "VALIDATION_ERROR": "Invalid request",
    "BODY_TOO_LARGE": "Request body too large",
    "UNSUPPORTED_MEDIA_TYPE": "Unsupported media type",
    "RATE_LIMITED": "Too many requests",
    "SHARD_UNAVAILABLE": "Shard unavailable",
    "NOT_READY": "Not ready",
    "DEADLINE_EXCEEDED": "Request deadline exceeded",
    "INTERNAL_ERROR": "Internal error",
    "EVENT_NOT_FOUND": "Event not found",
    "HOLD_NOT_FOUND": "Hold not found",
    "ORDER_NOT_FOUND": "Order not found",
    "TICKET_NOT_FOUND": "Ticket not found",
    "SEATS_UNAVAILABLE": "Seats unavailable",
    "INSUFFICIENT_INVENTORY": "Not enough tickets left",
    "LIMIT_EXCEEDED": "Per-person limit exceeded",
    "SALE_NOT_OPEN": "Sale not open",
    "PRESALE_CODE_INVALID": "Presale code invalid",
    "QUEUE_TOKEN_REQUIRED": "Queue token required",
    "QUEUE_NOT_ENABLED": "Queue not enabled",
    "HOLD_EXPIRED": "Hold expired",
    "HOLD_NOT_ACTIVE": "Hold not active",
    "IDEMPOTENCY_KEY_REUSED": "Idempotency key reused",
    "IDEMPOTENCY_REQUEST_IN_FLIGHT": "Request with this idempotency key in flight",
    "PAYMENT_DECLINED": "Payment declined",
    "PAYMENT_GATEWAY_ERROR": "Payment gateway error",
    "TICKET_ALREADY_USED": "Ticket already used",
    "TICKET_INVALID": "Ticket invalid",
    "TICKET_VOID": "Ticket void",
    "ORDER_ALREADY_REFUNDED": "Order already refunded",
    "EVENT_CANCELLED": "Event cancelled",
}


class ApiError(Exception):
    """An expected outcome that the API reports as a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        reason: str = "",
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason  # what really happened, for the log only (a driver or Ray message)
        self.extra = extra


class ProblemError(BaseModel):
    loc: list[str]
    msg: str
    type: str


class _ProblemBase(BaseModel):
    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="A URI naming the problem type")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="For people; never a database or driver message")
    request_id: str = Field(description="Also in the X-Request-Id header; quote it in support requests")
    errors: list[ProblemError] | None = Field(None, description="VALIDATION_ERROR: each invalid field by `loc`")


# The problem document's schema for OpenAPI (application/problem+json), `code` being one of TITLES.
ProblemCode: Any = Literal.__getitem__(tuple(TITLES))
Problem = create_model("Problem", __base__=_ProblemBase,
                       code=(ProblemCode, Field(description="Stable machine code; see router/problems.py")))


def problem_body(status: int, code: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "detail": detail or TITLES.get(code, code),
        "code": code,
    }
    body.update(extra)
    return body


def problem_response(
    status: int, code: str, detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        orjson.dumps(problem_body(status, code, detail, **extra)),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    # Keep only what a client can act on; pydantic's `input` and `ctx` may echo large or
    # unserialisable values back.
    return [
        {"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg", "")),
         "type": str(item.get("type", ""))}
        for item in error.errors()
    ]


def _request_id(request: Request) -> str:
    return str(request.scope.get("request_id", ""))


def as_api_error(error: Exception, request_id: str, path: str, retry_after_s: int) -> ApiError:
    """What the client is told about `error`, raised under `path`; the real cause goes to the log.

    The one mapping of the edge's own handlers (router/edge.py) and of FastAPI's (below): an
    `ApiError` as raised, a lost connection to Postgres or Redis as 503 with Retry-After, anything
    else as a logged 500.
    """
    if isinstance(error, ApiError):
        if error.reason:
            log.warning("%s %s: %s", error.status, error.code, error.reason, extra={"request_id": request_id})
        return error
    if isinstance(error, CONNECTION_ERRORS):
        log.warning("connection failed under %s: %s: %s", path, type(error).__name__, str(error)[:300],
                    extra={"request_id": request_id})
        return ApiError(503, "SHARD_UNAVAILABLE", UNAVAILABLE_DETAIL, headers={"Retry-After": str(retry_after_s)})
    log.error("unhandled error", exc_info=error, extra={"request_id": request_id})
    return ApiError(500, "INTERNAL_ERROR", "internal error; quote the request id")


def error_document(error: ApiError, request_id: str) -> bytes:
    return orjson.dumps(problem_body(error.status, error.code, error.detail, request_id=request_id, **error.extra))


def install_error_handlers(app: FastAPI, retry_after_s: int = 1) -> None:
    async def _mapped(request: Request, error: Exception) -> Response:
        request_id = _request_id(request)
        api_error = as_api_error(error, request_id, request.url.path, retry_after_s)
        return Response(error_document(api_error, request_id), status_code=api_error.status,
                        media_type=PROBLEM_CONTENT_TYPE, headers=api_error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        errors = _validation_errors(error)
        detail = "; ".join(f"{'.'.join(item['loc'])}: {item['msg']}" for item in errors[:5])
        return problem_response(422, "VALIDATION_ERROR", detail, errors=errors, request_id=_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE"}.get(error.status_code, "VALIDATION_ERROR")
        headers = dict(error.headers) if error.headers else None
        return problem_response(error.status_code, code, str(error.detail), headers=headers,
                                request_id=_request_id(request))

    mapped: tuple[type[Exception], ...] = (ApiError, *CONNECTION_ERRORS, Exception)
    for error_class in mapped:
        app.add_exception_handler(error_class, _mapped)
