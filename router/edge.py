"""The one layer every HTTP request passes: request id, body bound, deadline, metrics, access log,
errors as problems — and the hot routes, served here as plain ASGI without FastAPI's stack.

`POST /v1/holds` and the public availability and seat-map reads are what a flash sale calls
thousands of times a second. Through FastAPI each request walked five middleware layers, route
matching, dependency solving and query/cookie parsing: ~45 % of a router worker under load
(docs/BENCHMARKS.md, "The HTTP hot path"). Here a hot route is a `HotRoute` — a template and an
async handler taking a `HotRequest` — matched by segments, its body read under the bound before
the handler runs, its answer sent as two ASGI messages. Every other route goes to the FastAPI
app, through the same request id, deadline, metrics and log. The handlers use the same helpers as
the FastAPI ones (`authorize`, `parse_body`, `idempotency_key`, `call_shard`: a `HotRequest` has
the `headers`, `app`, `scope` and `body()` they read), and `router/openapi.py` declares them.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) because it must not buffer streamed
bodies or spawn tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.logs import REQUEST_ID
from router.http_metrics import HTTP_REJECTED, RequestTally
from router.problems import PROBLEM_CONTENT_TYPE, ApiError, as_api_error, error_document

log = logging.getLogger("ticketing.access")

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_PATTERN = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
JSON_CONTENT_TYPE = b"application/json"


class BodyTooLarge(Exception):
    pass


# --- hot routes ------------------------------------------------------------------------------------


class Incoming(Protocol):
    """What the shared request helpers (router/deps.py, router/auth.py) read: a Starlette
    `Request` under FastAPI, a `HotRequest` on the edge's hot routes."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def app(self) -> Any: ...

    @property
    def scope(self) -> Scope: ...

    async def body(self) -> bytes: ...


class HotRequest:
    """What a hot handler reads: the parts of a Starlette `Request` the shared helpers use."""

    __slots__ = ("_body", "app", "headers", "path_params", "query_string", "request_id", "scope")

    def __init__(self, scope: Scope, app: Any, headers: dict[str, str], body: bytes,
                 path_params: dict[str, Any], request_id: str) -> None:
        self.scope = scope
        self.app = app
        self.headers = headers  # lower-case names, Latin-1 values, the first of repeated names
        self._body = body
        self.path_params = path_params
        self.query_string: bytes = scope.get("query_string", b"")
        self.request_id = request_id

    async def body(self) -> bytes:
        return self._body


@dataclass(frozen=True, slots=True)
class HotReply:
    status: int
    body: Any  # rendered with orjson
    headers: tuple[tuple[bytes, bytes], ...] = ()  # beyond content type, length and request id


Handler = Callable[[HotRequest], Awaitable[HotReply]]


@dataclass(frozen=True)
class HotRoute:
    """One operation served by the edge. `summary`, `tags` and `query` are for the OpenAPI
    document (router/openapi.py); `query` maps a query parameter to its JSON schema."""

    method: str
    path: str
    handler: Handler
    summary: str
    tags: tuple[str, ...]
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    @property
    def path_parameters(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.segments if part.startswith("{"))


class HotRoutes:
    """Routes matched by their literal segments; every `{parameter}` is a UUID."""

    def __init__(self, routes: list[HotRoute]) -> None:
        self.routes = routes
        # (segment count, last segment) → routes of that shape; `last` is literal in every hot route.
        self._by_shape: dict[tuple[int, str], list[HotRoute]] = {}
        for route in routes:
            if route.segments[-1].startswith("{"):
                raise ValueError(f"a hot route must end with a literal segment: {route.path}")
            self._by_shape.setdefault((len(route.segments), route.segments[-1]), []).append(route)

    def match(self, method: str, path: str) -> tuple[HotRoute | None, dict[str, str], bool]:
        """(route, raw path parameters, path matched some route) for `method` and `path`."""
        parts = path.strip("/").split("/")
        candidates = self._by_shape.get((len(parts), parts[-1]))
        if not candidates:
            return None, {}, False
        path_known = False
        for route in candidates:
            parameters: dict[str, str] = {}
            for literal, part in zip(route.segments, parts, strict=True):
                if literal.startswith("{"):
                    parameters[literal[1:-1]] = part
                elif literal != part:
                    break
            else:
                if route.method == method:
                    return route, parameters, True
                path_known = True
        return None, {}, path_known


def uuid_parameters(raw: dict[str, str]) -> dict[str, Any]:
    """Path parameters as UUIDs; 422 naming the parameter otherwise (as FastAPI answers)."""
    parsed: dict[str, Any] = {}
    for name, text in raw.items():
        try:
            parsed[name] = UUID(text)
        except ValueError:
            raise ApiError(422, "VALIDATION_ERROR", f"path.{name}: Input should be a valid UUID",
                           errors=[{"loc": ["path", name], "msg": "Input should be a valid UUID",
                                    "type": "uuid_parsing"}]) from None
    return parsed


# --- the edge ----------------------------------------------------------------------------------------


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        routes: HotRoutes,
        state_app: Any,
        *,
        body_bytes_max: int,
        deadline_s: float,
        checkout_deadline_s: float,
        export_deadline_s: float,
        retry_after_s: int,
        metrics_flush_interval_s: float,
        access_log: bool = True,
    ) -> None:
        self.app = app  # everything that is not a hot route (FastAPI's own stack)
        self.routes = routes
        self.state_app = state_app  # what `HotRequest.app` is: the FastAPI app, for `.state`
        self.body_bytes_max = body_bytes_max
        self.deadline_s = deadline_s
        self.checkout_deadline_s = checkout_deadline_s
        self.export_deadline_s = export_deadline_s
        self.retry_after_s = retry_after_s
        self.access_log = access_log
        self.tally = RequestTally(metrics_flush_interval_s)
        # Request ids made here: a random per-process prefix and a counter (32 hex characters),
        # unique across workers and restarts without a uuid4 (urandom) per request.
        self._id_prefix = os.urandom(8).hex()
        self._id_serial = itertools.count()

    def deadline_for(self, path: str) -> float | None:
        if path.endswith("/stream"):
            return None  # server-sent events live as long as the client listens
        if path.endswith("/checkout"):
            return self.checkout_deadline_s
        if path.endswith(".csv"):
            return self.export_deadline_s  # a streamed export of a large event takes longer than a request
        return self.deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        sent = headers.get("x-request-id")
        if sent is not None and REQUEST_ID_PATTERN.match(sent.encode("latin-1")):
            request_id = sent
        else:
            request_id = f"{self._id_prefix}{next(self._id_serial):016x}"
        scope["request_id"] = request_id
        REQUEST_ID.set(request_id)  # every log line of this request carries it (cluster/logs.py)
        route, raw_parameters, path_known = self.routes.match(scope["method"], scope["path"])
        state = [0]  # the status sent, 0 until the response starts
        self.tally.started()
        try:
            await self._answer(route, raw_parameters, path_known, scope, receive, send, headers, request_id, state)
        finally:
            template = route.path if route is not None else _template(scope)
            elapsed_s = time.perf_counter() - started
            self.tally.finished(template, scope["method"], state[0], elapsed_s)
            if self.access_log:
                log.info("request", extra={"request_id": request_id, "method": scope["method"], "route": template,
                                           "path": scope["path"], "status": state[0],
                                           "duration_ms": round(elapsed_s * 1000, 2)})

    async def _answer(self, route: HotRoute | None, raw_parameters: dict[str, str], path_known: bool,
                      scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str,
                      state: list[int]) -> None:
        """Serve the request under its deadline; whatever goes wrong is answered as a problem."""
        deadline = self.deadline_for(scope["path"])
        try:
            async with asyncio.timeout(deadline):
                if route is not None:
                    await self._serve_hot(route, raw_parameters, scope, receive, send, headers, request_id, state)
                elif path_known:
                    await self._problem(send, state, request_id,
                                        ApiError(405, "METHOD_NOT_ALLOWED", "Method Not Allowed"))
                else:
                    await self._forward(scope, receive, send, headers, request_id, state)
        except BodyTooLarge:
            HTTP_REJECTED.labels("body_too_large").inc()
            if not state[0]:
                await self._problem(send, state, request_id, ApiError(
                    413, "BODY_TOO_LARGE", f"body exceeds {self.body_bytes_max} bytes"))
        except TimeoutError:
            HTTP_REJECTED.labels("deadline").inc()
            if not state[0]:
                await self._problem(send, state, request_id, ApiError(
                    503, "DEADLINE_EXCEEDED", f"no answer within {deadline} s",
                    headers={"Retry-After": str(self.retry_after_s)}))
        except Exception as error:
            # FastAPI's ServerErrorMiddleware answered and logged a bug, then re-raised it for the
            # server's log: it is logged once, with the request id, and ends here.
            if not state[0]:
                await self._problem(send, state, request_id,
                                    as_api_error(error, request_id, scope["path"], self.retry_after_s))

    async def _serve_hot(self, route: HotRoute, raw_parameters: dict[str, str], scope: Scope, receive: Receive,
                         send: Send, headers: dict[str, str], request_id: str, state: list[int]) -> None:
        try:
            body = await self._read_body(headers, receive)
            request = HotRequest(scope, self.state_app, headers, body, uuid_parameters(raw_parameters), request_id)
            reply = await route.handler(request)
        except (BodyTooLarge, TimeoutError):
            raise
        except Exception as error:  # every outcome is an answer; a bug is a logged 500
            await self._problem(send, state, request_id,
                                as_api_error(error, request_id, scope["path"], self.retry_after_s))
            return
        payload = orjson.dumps(reply.body, option=orjson.OPT_NON_STR_KEYS)
        state[0] = reply.status
        await send({"type": "http.response.start", "status": reply.status, "headers": [
            (b"content-type", JSON_CONTENT_TYPE), (b"content-length", str(len(payload)).encode()),
            (REQUEST_ID_HEADER, request_id.encode()), *reply.headers]})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_bytes_max:
            raise BodyTooLarge
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the handler answers into the void
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.body_bytes_max:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
                       request_id: str, state: list[int]) -> None:
        """Any other route: FastAPI's stack, under the same body bound."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_bytes_max:
            raise BodyTooLarge
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_bytes_max:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        await self.app(scope, bounded_receive, tracked_send)

    async def _problem(self, send: Send, state: list[int], request_id: str, error: ApiError) -> None:
        body = error_document(error, request_id)
        headers = [(b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                   (REQUEST_ID_HEADER, request_id.encode())]
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
        state[0] = error.status
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
