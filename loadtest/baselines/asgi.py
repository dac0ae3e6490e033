"""The ASGI shell every database baseline shares: no framework, one handler, the product's auth.

A request is read, authenticated (a buyer's HS256 bearer token, verified and cached by the
router's own `TokenVerifier`), parsed with orjson into a `HoldRequest`, handed to the design's
`HoldStore`, and answered with API.md's 201 hold body or a problem+json refusal. ``GET /healthz``
tells the benchmark the server is up. Each uvicorn worker runs one `HoldsApp`; its store opens
its pools at ASGI start-up and closes them at shutdown.

Configuration comes from the environment, set by `loadtest.baselines.serve` (uvicorn imports
the app by name in each worker, so there is no other way in): ``BENCH_PG_DSN``,
``BENCH_REDIS_URL``, ``BENCH_JWT_SECRET``, ``BENCH_POOL_SIZE`` and ``BENCH_UNSAFE`` (the negative
control of the test suite: a design with its protection switched off; never set by the bench).
"""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson
from redis.exceptions import RedisError

ENV_DSN = "BENCH_PG_DSN"
ENV_REDIS_URL = "BENCH_REDIS_URL"
ENV_JWT_SECRET = "BENCH_JWT_SECRET"
ENV_POOL_SIZE = "BENCH_POOL_SIZE"
ENV_UNSAFE = "BENCH_UNSAFE"

# API.md's bounds, as the product applies them with its default settings.
BODY_BYTES_MAX = 64 * 1024
HOLD_QUANTITY_MAX = 10
IDEMPOTENCY_KEY_CHARS_MAX = 255
SECTION_CHARS_MAX = 64
CURRENCY = "EUR"

# What a store's database or Redis raises when it cannot answer: 503, as the product answers.
UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, OSError, TimeoutError)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class BaselineConfig:
    dsn: str
    redis_url: str
    jwt_secret: str
    pool_size: int
    unsafe: bool

    @classmethod
    def from_environment(cls) -> BaselineConfig:
        return cls(os.environ.get(ENV_DSN, ""), os.environ.get(ENV_REDIS_URL, ""), os.environ[ENV_JWT_SECRET],
                   int(os.environ.get(ENV_POOL_SIZE, "8")), os.environ.get(ENV_UNSAFE, "") == "1")


class Refusal(Exception):
    """An expected outcome that is not a hold: answered as problem+json with a stable code."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


@dataclass(frozen=True, slots=True)
class HoldRequest:
    hold_id: uuid.UUID
    user_id: str
    idempotency_key: str | None
    event_id: uuid.UUID
    section: str
    quantity: int
    best_available: bool
    expires_at: datetime.datetime


class HoldStore(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        """The 201 body of a new (or replayed) hold; raises `Refusal` otherwise."""
        ...


def parse_hold(body: bytes, user_id: str, key: str | None, hold_seconds: int) -> HoldRequest:
    """The two request shapes the benchmark sends (GA quantity, best-available seats), checked
    as strictly as API.md asks; anything else is a 422."""
    try:
        document = orjson.loads(body)
        event_id = uuid.UUID(document["event_id"])
        section, quantity = document["section"], document["quantity"]
        best_available = document.get("best_available", False)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise Refusal(422, "VALIDATION_ERROR", "expected event_id, section and quantity") from None
    if not isinstance(section, str) or not 0 < len(section) <= SECTION_CHARS_MAX or "\x00" in section:
        raise Refusal(422, "VALIDATION_ERROR", "section must be a short string")
    if type(quantity) is not int or not 1 <= quantity <= HOLD_QUANTITY_MAX:
        raise Refusal(422, "VALIDATION_ERROR", f"quantity must be between 1 and {HOLD_QUANTITY_MAX}")
    if not isinstance(best_available, bool):
        raise Refusal(422, "VALIDATION_ERROR", "best_available must be a boolean")
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=hold_seconds)
    return HoldRequest(uuid.uuid4(), user_id, key, event_id, section, quantity, best_available, expires_at)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hold_body(hold_id: uuid.UUID, event_id: uuid.UUID, section: str, expires_at: datetime.datetime,
              seats: list[str | None], price_cents: int) -> dict[str, Any]:
    """API.md's 201 body: one item per ticket (``seat`` null for GA)."""
    return {"id": str(hold_id), "event_id": str(event_id), "status": "held", "expires_at": iso(expires_at),
            "items": [{"seat": seat, "section": section, "price_cents": price_cents} for seat in seats],
            "quantity": len(seats), "total_cents": price_cents * len(seats), "currency": CURRENCY}


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "VALIDATION_ERROR", "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_BYTES_MAX:
            raise Refusal(413, "PAYLOAD_TOO_LARGE", f"body over {BODY_BYTES_MAX} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def problem(refusal: Refusal) -> bytes:
    return orjson.dumps({"type": "about:blank", "title": refusal.code, "status": refusal.status,
                         "detail": refusal.detail, "code": refusal.code, **refusal.extra})


class HoldsApp:
    """One worker's ASGI application around one `HoldStore`."""

    def __init__(self, make_store: Callable[[BaselineConfig], HoldStore], hold_seconds: int) -> None:
        self.make_store = make_store
        self.hold_seconds = hold_seconds
        self.store: HoldStore | None = None
        self.verifier: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        from cluster.settings import Settings
        from router.auth import TokenVerifier

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                config = BaselineConfig.from_environment()
                self.verifier = TokenVerifier(Settings(jwt_secret=config.jwt_secret))
                self.store = self.make_store(config)
                await self.store.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.store is not None:
                    await self.store.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
            return
        if scope["method"] != "POST" or scope["path"] != "/v1/holds":
            await respond(send, 404, problem(Refusal(404, "NOT_FOUND", "no such route")), b"application/problem+json")
            return
        try:
            user_id, key = self._authorize(scope["headers"])
            request = parse_hold(await read_body(receive), user_id, key, self.hold_seconds)
            if self.store is None:
                raise Refusal(503, "SHARD_UNAVAILABLE", "not started")
            answer = await self.store.hold(request)
        except UNAVAILABLE as error:
            refusal = Refusal(503, "SHARD_UNAVAILABLE", type(error).__name__)
            await respond(send, 503, problem(refusal), b"application/problem+json")
            return
        except Refusal as refusal:
            await respond(send, refusal.status, problem(refusal), b"application/problem+json")
            return
        await respond(send, 201, orjson.dumps(answer))

    def _authorize(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
        """The buyer's user id (the router's token check and role rule) and the Idempotency-Key."""
        from router.auth import BUYERS
        from router.problems import ApiError

        authorization, key = b"", None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"idempotency-key":
                key = value.decode("latin-1")
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "UNAUTHENTICATED", "missing bearer token")
        try:
            principal = self.verifier.verify(token.strip())
        except ApiError as error:
            raise Refusal(401, "UNAUTHENTICATED", str(error)) from None
        if principal.role not in BUYERS:
            raise Refusal(403, "FORBIDDEN", f"role {principal.role!r} may not do this")
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_CHARS_MAX:
            raise Refusal(422, "VALIDATION_ERROR", f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_CHARS_MAX} chars")
        return str(principal.user_id), key
