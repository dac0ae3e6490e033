"""Orders and tickets (API.md "Orders and tickets"): read, refund, transfer, QR images, keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from prometheus_client import Counter
from pydantic import StringConstraints
from starlette.responses import Response

from actors.inventory.commands import TransferTicket
from actors.inventory.results import OrderView, TicketView, TransferView
from actors.protocol import EventDocument, GetEvent, GetOrder, GetTicket, GetUserTickets, attributed
from router.auth import ANY_ROLE, BUYERS, authorize
from router.checkout import CheckoutService, RefundRequest
from router.deps import (
    call_shard,
    caller_of,
    client_of,
    idempotency_key,
    parse_body,
    settings_of,
    shard_of_entity,
)
from router.http_metrics import at_zero
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.ratelimit import rate_limit
from router.schemas import Strict
from router.views import expect, order_body, ticket_body
from shards.slots import new_id, slot_of_id

router = APIRouter(tags=["orders and tickets"])
# Each result's series exists at 0 from the start (`at_zero`): a day without transfers shows 0.
REFUNDS = at_zero(Counter("ticketing_refunds_total", "Order refunds by result.", ["result"]), "refunded")
TRANSFERS = at_zero(Counter("ticketing_transfers_total", "Ticket transfers by result.", ["result"]), "transferred")


class TransferBody(Strict):
    to: Annotated[str, StringConstraints(min_length=1, max_length=255)]


def with_code(request: Request, ticket: TicketView) -> dict[str, Any]:
    return {**ticket_body(ticket), "code": request.app.state.ticket_codes.code(ticket)}


def order_with_codes(request: Request, order: OrderView) -> dict[str, Any]:
    body = order_body(order)
    body["tickets"] = [with_code(request, ticket) for ticket in order.tickets]
    return body


def _owner(principal: Any) -> str | None:
    return None if principal.role == "admin" else principal.user_id


@router.get("/v1/orders/{order_id}", summary="One of your orders, with its tickets", responses={404: PROBLEM})
async def get_order(request: Request, order_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    shard_id = shard_of_entity(client_of(request), order_id, "ORDER_NOT_FOUND")
    reply = await call_shard(request, shard_id, GetOrder(order_id, _owner(principal)), read=True)
    return JSONBody(order_with_codes(request, expect(reply, OrderView, "ORDER_NOT_FOUND", 1)))


@router.get("/v1/tickets/{ticket_id}", summary="One of your tickets, with its code", responses={404: PROBLEM})
async def get_ticket(request: Request, ticket_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    return JSONBody(with_code(request, await _ticket(request, ticket_id, principal)))


async def _ticket(request: Request, ticket_id: UUID, principal: Any) -> TicketView:
    shard_id = shard_of_entity(client_of(request), ticket_id, "TICKET_NOT_FOUND")
    reply = await call_shard(request, shard_id, GetTicket(ticket_id, _owner(principal)), read=True)
    ticket: TicketView = expect(reply, TicketView, "TICKET_NOT_FOUND", settings_of(request).retry_after_s)
    return ticket


@router.get("/v1/tickets/{ticket_id}/qr.png", summary="QR image (PNG) of a ticket's code",
            response_class=Response, responses={200: {"content": {"image/png": {}}}, 404: PROBLEM})
async def ticket_png(request: Request, ticket_id: UUID) -> Response:
    principal = authorize(request, BUYERS)
    return await _qr(request, ticket_id, principal, "png", "image/png")


@router.get("/v1/tickets/{ticket_id}/qr.svg", summary="QR image (SVG) of a ticket's code",
            response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}, 404: PROBLEM})
async def ticket_svg(request: Request, ticket_id: UUID) -> Response:
    principal = authorize(request, BUYERS)
    return await _qr(request, ticket_id, principal, "svg", "image/svg+xml")


async def _qr(request: Request, ticket_id: UUID, principal: Any, kind: str, media_type: str) -> Response:
    ticket = await _ticket(request, ticket_id, principal)
    codes = request.app.state.ticket_codes
    return Response(await codes.image(codes.code(ticket), kind), media_type=media_type,
                    headers={"Cache-Control": "private, max-age=300"})


@router.get("/v1/me/tickets", summary="Your tickets, newest last")
async def my_tickets(request: Request, event_id: UUID | None = None,
                     cursor: UUID | None = None, limit: int = Query(50, ge=1)) -> JSONBody:
    principal = authorize(request, BUYERS)
    settings = settings_of(request)
    if limit > settings.me_tickets_page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be at most {settings.me_tickets_page_max}")
    client = client_of(request)
    shards = [client.shard_map.shard_of(event_id)] if event_id else list(range(settings.shard_count))
    replies = await asyncio.gather(*(call_shard(request, shard_id, GetUserTickets(principal.user_id, event_id),
                                                read=True) for shard_id in shards))
    tickets = sorted((ticket for reply in replies for ticket in expect(reply, tuple, "TICKET_NOT_FOUND", 1)),
                     key=lambda ticket: ticket.ticket_id.int)
    if cursor is not None:
        tickets = [ticket for ticket in tickets if ticket.ticket_id.int > cursor.int]
    page = tickets[:limit]
    next_cursor = str(page[-1].ticket_id) if len(tickets) > limit else None
    return JSONBody({"items": [with_code(request, ticket) for ticket in page], "next_cursor": next_cursor})


@router.post("/v1/tickets/{ticket_id}/transfer", status_code=201, summary="Give a ticket to another user",
             responses={404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM})
async def transfer(request: Request, ticket_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    await rate_limit(request, principal)
    shard_id = shard_of_entity(client_of(request), ticket_id, "TICKET_NOT_FOUND")
    body = await parse_body(request, TransferBody)
    if body.to == principal.user_id:
        raise ApiError(422, "VALIDATION_ERROR", "a ticket cannot be transferred to its owner")
    key = idempotency_key(request)
    command = TransferTicket(principal.user_id, ticket_id, body.to, new_id(slot_of_id(ticket_id) or 0), key)
    reply = await call_shard(request, shard_id, attributed(command, caller_of(request, principal)),
                             retryable=key is not None)
    result: TransferView = expect(reply, TransferView, "TICKET_NOT_FOUND", settings_of(request).retry_after_s)
    TRANSFERS.labels("transferred").inc()
    return JSONBody({**with_code(request, result.new_ticket), "owner": body.to}, status_code=201)


@router.post("/v1/orders/{order_id}/refund", summary="Refund an order (owner before the event, or organizer)",
             responses={403: PROBLEM, 404: PROBLEM, 409: PROBLEM})
async def refund(request: Request, order_id: UUID) -> JSONBody:
    principal = authorize(request, ANY_ROLE)
    await rate_limit(request, principal)
    if principal.role == "validator":
        raise ApiError(403, "FORBIDDEN", "validators do not refund orders")
    shard_id = shard_of_entity(client_of(request), order_id, "ORDER_NOT_FOUND")
    by_organizer = principal.role in ("organizer", "admin")
    reply = await call_shard(request, shard_id, GetOrder(order_id, None if by_organizer else principal.user_id),
                             read=True)
    order: OrderView = expect(reply, OrderView, "ORDER_NOT_FOUND", 1)
    event = await call_shard(request, shard_id, GetEvent(order.event_id), read=True)
    document = expect(event, EventDocument, "EVENT_NOT_FOUND", 1).document
    if principal.role == "organizer" and document.get("organizer_id") != principal.user_id:
        raise ApiError(404, "ORDER_NOT_FOUND", "not found")
    if not by_organizer and datetime.fromisoformat(document["starts_at"].replace("Z", "+00:00")) <= datetime.now(UTC):
        raise ApiError(403, "FORBIDDEN", "refunds close when the event starts; ask the organizer")
    service: CheckoutService = request.app.state.checkout
    # Again: the reads above follow a slot move (and refresh the map), and the refund reads the
    # order's charge from the database of the shard it names.
    shard_id = shard_of_entity(client_of(request), order_id, "ORDER_NOT_FOUND")
    refunded = await service.refund_order(RefundRequest(shard_id, principal.user_id, order, by_organizer,
                                                        idempotency_key(request), caller_of(request, principal)))
    REFUNDS.labels("refunded").inc()
    return JSONBody(order_with_codes(request, refunded))


@router.get("/v1/ticket-keys", summary="Public keys that verify ticket codes (public)")
async def ticket_keys(request: Request) -> JSONBody:
    return JSONBody({"keys": request.app.state.ticket_codes.public_keys()},
                    headers={"Cache-Control": "public, max-age=60"})

