"""The ASGI middleware every request passes first: request id, body bound, deadline, metrics, log.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) because it sits on the hot path of
every request and must not buffer bodies or spawn tasks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.http_metrics import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REJECTED, HTTP_REQUESTS
from router.problems import problem_body

log = logging.getLogger("ticketing.access")

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_PATTERN = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        body_bytes_max: int,
        deadline_s: float,
        checkout_deadline_s: float,
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max
        self.deadline_s = deadline_s
        self.checkout_deadline_s = checkout_deadline_s
        self.access_log = access_log
        # (route, method, status) → its labelled counter and histogram: `labels()` costs a lock
        # and a dict lookup per call, measurable at thousands of requests per second.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def deadline_for(self, path: str) -> float | None:
        if path.endswith("/stream"):
            return None  # server-sent events live as long as the client listens
        if path.endswith("/checkout"):
            return self.checkout_deadline_s
        return self.deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope["request_id"] = request_id
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 0}
        HTTP_IN_FLIGHT.inc()
        try:
            await self._serve(scope, receive, send, request_id, state)
        finally:
            HTTP_IN_FLIGHT.dec()
            self._observe(scope, state["status"], time.perf_counter() - started, request_id)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: str,
                     state: dict[str, Any]) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.body_bytes_max:
            HTTP_REJECTED.labels("body_too_large").inc()
            await _send_problem(send, state, request_id, 413, "BODY_TOO_LARGE",
                                f"body exceeds {self.body_bytes_max} bytes")
            return
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
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        deadline = self.deadline_for(scope["path"])
        try:
            async with asyncio.timeout(deadline):
                await self.app(scope, bounded_receive, tracked_send)
        except BodyTooLarge:
            HTTP_REJECTED.labels("body_too_large").inc()
            if not state["status"]:
                await _send_problem(send, state, request_id, 413, "BODY_TOO_LARGE",
                                    f"body exceeds {self.body_bytes_max} bytes")
        except TimeoutError:
            HTTP_REJECTED.labels("deadline").inc()
            if not state["status"]:
                await _send_problem(send, state, request_id, 503, "DEADLINE_EXCEEDED",
                                    f"no answer within {deadline} s", retry_after=True)

    def _observe(self, scope: Scope, status: int, elapsed_s: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        series = self._series.get((template, method, status))
        if series is None:
            series = (HTTP_REQUESTS.labels(template, method, str(status)), HTTP_LATENCY.labels(template, method))
            self._series[(template, method, status)] = series
        series[0].inc()
        series[1].observe(elapsed_s)
        if self.access_log:
            log.info(
                "request",
                extra={"request_id": request_id, "method": method, "route": template,
                       "path": scope["path"], "status": status, "duration_ms": round(elapsed_s * 1000, 2)},
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and REQUEST_ID_PATTERN.match(value):
            return str(value.decode())
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_problem(send: Send, state: dict[str, Any], request_id: str, status: int, code: str,
                        detail: str, *, retry_after: bool = False) -> None:
    import orjson

    body = orjson.dumps(problem_body(status, code, detail, request_id=request_id))
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER, request_id.encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    state["status"] = status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
