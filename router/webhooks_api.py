"""Organizers' webhook registrations (API.md "Webhooks"): `POST`/`GET /v1/webhooks`,
`DELETE /v1/webhooks/{id}`, `GET /v1/webhooks/{id}/deliveries`; docs/organizers.md "Webhooks".

Only organizers (and admins, for their own) register. A registration is its owner's alone: anyone
else is told it does not exist (404 `NOT_FOUND`), as for reports. The secret (`whsec_` and 24
random bytes in base64, the Standard Webhooks form) is answered once, by the `POST`; listings
never show it. URLs are `https://` to anywhere, or `http://` to a loopback address only when
`webhook_loopback_http_allowed` is set (tests and local development): plain http elsewhere would
send signed events in clear, and other schemes are not webhooks. A URL with credentials in it is
refused (they would be stored and logged as part of the URL).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from router.auth import ORGANIZERS, authorize
from router.deps import parse_body, settings_of
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.responses import Open
from router.views import unavailable_error
from shards.outbox import TOPICS
from shards.pools import QUERY_ERRORS
from shards.webhooks import Delivery, Webhook, WebhookRegistry

router = APIRouter(tags=["webhooks"])

SECRET_BYTES = 24
LOOPBACK_NAMES = ("localhost",)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=len(TOPICS))


class WebhookBody(Open):
    id: str
    url: str
    events: list[str]
    created_at: str
    secret: str | None = Field(None, description="`whsec_…`, answered only by the POST that registers it")


class WebhookList(Open):
    items: list[WebhookBody]


class DeliveryBody(Open):
    id: int
    message_id: str
    event_id: str
    type: str
    attempt: int
    result: str = Field(description="succeeded, failed (retried at next_attempt_at) or dead")
    status_code: int | None
    error: str | None
    attempted_at: str
    next_attempt_at: str | None


class DeliveryList(Open):
    items: list[DeliveryBody]


def registry_of(request: Request) -> WebhookRegistry:
    registry: WebhookRegistry = request.app.state.webhooks
    return registry


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def url_problem(url: str, *, loopback_http_allowed: bool, url_chars_max: int) -> str | None:
    """Why `url` cannot receive webhooks, or None (module docstring)."""
    if len(url) > url_chars_max:
        return f"url: at most {url_chars_max} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 — raises ValueError for a port out of range
    except ValueError:
        return "url: not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return "url: an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "url: credentials in the URL are not accepted (verify the signature instead)"
    if any(ord(character) <= 0x20 or ord(character) == 0x7F for character in url):
        return "url: no spaces or control characters"
    if parts.scheme == "http" and not (loopback_http_allowed and _loopback(host)):
        return "url: https:// only"
    return None


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_body(webhook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(webhook.webhook_id), "url": webhook.url, "events": list(webhook.topics),
                            "created_at": webhook.created_at.isoformat().replace("+00:00", "Z")}
    if with_secret:
        body["secret"] = webhook.secret
    return body


def delivery_body(delivery: Delivery) -> dict[str, Any]:
    return {"id": delivery.delivery_id, "message_id": delivery.message_id, "event_id": str(delivery.event_id),
            "type": delivery.topic, "attempt": delivery.attempt, "result": delivery.result,
            "status_code": delivery.status_code, "error": delivery.error,
            "attempted_at": delivery.attempted_at.isoformat().replace("+00:00", "Z"),
            "next_attempt_at": None if delivery.next_attempt_at is None
            else delivery.next_attempt_at.isoformat().replace("+00:00", "Z")}


def _unavailable(request: Request, error: BaseException) -> ApiError:
    return unavailable_error(f"webhooks: {type(error).__name__}: {error}", settings_of(request).retry_after_s)


@router.post("/v1/webhooks", status_code=201, summary="Register a webhook (organizer)",
             responses={401: PROBLEM, 403: PROBLEM})
async def register_webhook(request: Request) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    body = await parse_body(request, WebhookCreate)
    settings = settings_of(request)
    problem = url_problem(body.url, loopback_http_allowed=settings.webhook_loopback_http_allowed,
                          url_chars_max=settings.webhook_url_chars_max)
    unknown = sorted(set(body.events) - set(TOPICS))
    if problem is None and unknown:
        problem = f"events: unknown {', '.join(unknown)}; known: {', '.join(TOPICS)}"
    if problem is not None:
        raise ApiError(422, "VALIDATION_ERROR", problem)
    registry = registry_of(request)
    try:
        limit = settings.webhooks_per_organizer_max
        if len(await registry.of_organizer(principal.user_id, limit)) >= limit:
            raise ApiError(422, "VALIDATION_ERROR", f"at most {limit} webhooks per organizer")
        webhook = await registry.register(uuid4(), principal.user_id, body.url, sorted(set(body.events)),
                                          new_secret())
    except QUERY_ERRORS as error:
        raise _unavailable(request, error) from None
    return JSONBody(webhook_body(webhook, with_secret=True), status_code=201)


@router.get("/v1/webhooks", summary="The caller's webhooks", responses={401: PROBLEM, 403: PROBLEM})
async def list_webhooks(request: Request) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    try:
        webhooks = await registry_of(request).of_organizer(principal.user_id,
                                                           settings_of(request).webhooks_per_organizer_max)
    except QUERY_ERRORS as error:
        raise _unavailable(request, error) from None
    return JSONBody({"items": [webhook_body(webhook) for webhook in webhooks]})


@router.delete("/v1/webhooks/{webhook_id}", summary="Delete a webhook (its owner)",
               responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})
async def delete_webhook(request: Request, webhook_id: UUID) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    try:
        webhook = await registry_of(request).delete(webhook_id, principal.user_id)
    except QUERY_ERRORS as error:
        raise _unavailable(request, error) from None
    if webhook is None:
        raise ApiError(404, "NOT_FOUND", "no such webhook")
    return JSONBody(webhook_body(webhook))


@router.get("/v1/webhooks/{webhook_id}/deliveries", summary="A webhook's delivery log, newest first (its owner)",
            responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})
async def webhook_deliveries(request: Request, webhook_id: UUID) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    registry = registry_of(request)
    try:
        if await registry.owned(webhook_id, principal.user_id) is None:
            raise ApiError(404, "NOT_FOUND", "no such webhook")
        deliveries = await registry.deliveries(webhook_id, settings_of(request).webhook_deliveries_page_max)
    except QUERY_ERRORS as error:
        raise _unavailable(request, error) from None
    return JSONBody({"items": [delivery_body(delivery) for delivery in deliveries]})
