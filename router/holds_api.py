"""Holds (API.md "Holds"): create, read, release."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request

from actors.inventory.commands import HoldBestAvailable, HoldGeneralAdmission, HoldSeats, ReleaseHold
from actors.inventory.results import HoldView
from actors.protocol import GetHold
from router.auth import BUYERS, authorize
from router.deps import call_shard, client_of, idempotency_key, parse_body, settings_of, shard_of_entity
from router.edge import HotReply, HotRequest, HotRoute
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.ratelimit import rate_limit
from router.schemas import HoldCreate
from router.views import expect, hold_body
from shards.slots import new_id, slot_of

router = APIRouter(tags=["holds"])

QUEUE_TOKEN_HEADER = "x-queue-token"


def _command(body: HoldCreate, user_id: str, key: str | None, admitted: bool
             ) -> HoldSeats | HoldGeneralAdmission | HoldBestAvailable:
    """The core's hold command; `admitted`: the buyer brought a valid waiting-room token (the core
    refuses holds on queue-mode events without one)."""
    hold_id = new_id(slot_of(body.event_id))
    if body.seats is not None:
        return HoldSeats(body.event_id, user_id, hold_id, tuple(body.seats), body.presale_code, key, admitted)
    if body.section is None or body.quantity is None:  # HoldCreate refuses this; kept for the type checker
        raise ApiError(422, "VALIDATION_ERROR", "give exactly one of seats or section and quantity")
    if body.best_available:
        return HoldBestAvailable(body.event_id, user_id, hold_id, body.section, body.quantity, body.adjacent,
                                 body.presale_code, key, admitted)
    return HoldGeneralAdmission(body.event_id, user_id, hold_id, body.section, body.quantity, body.presale_code, key,
                                admitted)


def _within_admission(body: HoldCreate, quantity_max: int) -> None:
    """A waiting-list admission is for `quantity_max` tickets (router/queue_tokens.py): a hold for
    more is refused. It caps each hold; the event's per-person limit caps them together."""
    requested = body.quantity if body.quantity is not None else len(body.seats or ())
    if requested > quantity_max:
        tickets = "ticket" if quantity_max == 1 else "tickets"
        raise ApiError(422, "VALIDATION_ERROR",
                       f"this admission from the waiting list is for {quantity_max} {tickets}: hold at most that many",
                       errors=[{"loc": ["body", "quantity" if body.quantity is not None else "seats"],
                                "msg": f"at most {quantity_max} tickets with this admission",
                                "type": "value_error"}])


async def create_hold(request: HotRequest) -> HotReply:
    """The flash sale's hot path, served by the edge without FastAPI's stack (router/edge.py)."""
    principal = authorize(request, BUYERS)
    await rate_limit(request, principal)
    key = idempotency_key(request)
    body = await parse_body(request, HoldCreate)
    settings = settings_of(request)
    if body.seats is not None and len(body.seats) > settings.hold_seats_max:
        raise ApiError(422, "VALIDATION_ERROR", f"at most {settings.hold_seats_max} seats per hold")
    if body.quantity is not None and body.quantity > settings.hold_quantity_max:
        raise ApiError(422, "VALIDATION_ERROR", f"quantity must be between 1 and {settings.hold_quantity_max}")
    tokens = request.app.state.queue_tokens
    quantity_max = tokens.admission(request.headers.get(QUEUE_TOKEN_HEADER), principal.user_id, body.event_id)
    admitted = quantity_max is not None
    if quantity_max:
        _within_admission(body, quantity_max)
    command = _command(body, principal.user_id, key, admitted)
    shard_id = client_of(request).shard_map.shard_of(body.event_id)
    reply = await call_shard(request, shard_id, command, retryable=key is not None)
    hold = expect(reply, HoldView, "EVENT_NOT_FOUND", settings.retry_after_s)
    if admitted:  # a waiting-room admission, now used: the stock no longer waits for it
        await request.app.state.waiting_room.spend(body.event_id, principal.user_id)
    return HotReply(201, hold_body(hold))


HOT_ROUTES = [HotRoute("POST", "/v1/holds", create_hold, "Hold seats or GA tickets for a few minutes (buyer)",
                       ("holds",))]


@router.get("/v1/holds/{hold_id}", summary="One of your holds", responses={401: PROBLEM, 404: PROBLEM})
async def get_hold(request: Request, hold_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    shard_id = shard_of_entity(client_of(request), hold_id, "HOLD_NOT_FOUND")
    owner = None if principal.role == "admin" else principal.user_id
    reply = await call_shard(request, shard_id, GetHold(hold_id, owner), read=True)
    return JSONBody(hold_body(expect(reply, HoldView, "HOLD_NOT_FOUND", settings_of(request).retry_after_s)))


@router.delete("/v1/holds/{hold_id}", summary="Release one of your holds",
               responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 503: PROBLEM})
async def release_hold(request: Request, hold_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    await rate_limit(request, principal)
    shard_id = shard_of_entity(client_of(request), hold_id, "HOLD_NOT_FOUND")
    key = idempotency_key(request)
    reply = await call_shard(request, shard_id, ReleaseHold(principal.user_id, hold_id, key),
                             retryable=key is not None)
    return JSONBody(hold_body(expect(reply, HoldView, "HOLD_NOT_FOUND", settings_of(request).retry_after_s)))
