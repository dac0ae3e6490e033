"""Framework ceilings: what the serving stack alone costs for ``POST /v1/holds``.

Both parse the JSON body with orjson, read the Authorization header and answer a constant 201
hold body of the product's size; neither verifies the token or touches a database. ``asgi_app`` is
bare ASGI (the most any Python design on uvicorn can serve), ``fastapi_app`` is one FastAPI
route with no middleware and no dependencies (the cheapest FastAPI a product could be).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from loadtest.baselines.asgi import Receive, Scope, Send, read_body, respond

CONSTANT_BODY = orjson.dumps({
    "id": str(uuid.UUID(int=1)), "event_id": str(uuid.UUID(int=2)), "status": "held",
    "expires_at": "2027-01-01T20:10:00.000Z",
    "items": [{"seat": None, "section": "floor", "price_cents": 5000}],
    "quantity": 1, "total_cents": 5000, "currency": "EUR",
})


def _shape(document: Any, authorization: str | None) -> bool:
    """The work a real handler starts with: a body that parsed, a header that is there."""
    return isinstance(document, dict) and bool(authorization)


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/healthz":
        await respond(send, 200, b'{"status":"ok"}')
        return
    authorization = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"),
                         None)
    ok = _shape(orjson.loads(await read_body(receive)), authorization)
    await respond(send, 201 if ok else 422, CONSTANT_BODY)


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.post("/v1/holds", status_code=201)
async def create_hold(request: Request) -> Response:
    ok = _shape(orjson.loads(await request.body()), request.headers.get("authorization"))
    return Response(CONSTANT_BODY, status_code=201 if ok else 422, media_type="application/json")


@fastapi_app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")

