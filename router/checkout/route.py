"""`POST /v1/holds/{id}/checkout` (API.md "Checkout"): parse, authorize, hand over to the service.

The saga itself — pin, charge, confirm or refund — is `router.checkout.service.CheckoutService`.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import Field, StringConstraints

from router.auth import BUYERS, authorize
from router.checkout.service import CheckoutRequest, CheckoutService
from router.deps import caller_of, client_of, idempotency_key, parse_body, shard_of_entity
from router.jsonbody import JSONBody
from router.problems import PROBLEM
from router.ratelimit import rate_limit
from router.schemas import Strict
from router.views import order_body

router = APIRouter(tags=["checkout"])


class Holder(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class Payment(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class CheckoutBody(Strict):
    payment: Payment
    holders: list[Holder] | None = Field(None, max_length=100)


@router.post("/v1/holds/{hold_id}/checkout", status_code=201, summary="Pay for a hold and get tickets (owner)",
             responses={401: PROBLEM, 402: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM,
                        502: PROBLEM, 503: PROBLEM})
async def checkout(request: Request, hold_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    await rate_limit(request, principal)
    shard_id = shard_of_entity(client_of(request), hold_id, "HOLD_NOT_FOUND")
    key = idempotency_key(request)
    body = await parse_body(request, CheckoutBody)
    holders = tuple((holder.name, holder.email) for holder in body.holders or ())
    service: CheckoutService = request.app.state.checkout
    order = await service.checkout(CheckoutRequest(shard_id, principal.user_id, hold_id, key, body.payment.token,
                                                   holders, caller_of(request, principal)))
    codes = request.app.state.ticket_codes
    response = order_body(order)
    tickets = response.pop("tickets")
    for ticket, view in zip(tickets, order.tickets, strict=True):
        ticket["code"] = codes.code(view)
    for ticket, (name, email) in zip(tickets, holders, strict=False):
        ticket["holder"] = {"name": name, "email": email}
    return JSONBody({"order": response, "tickets": tickets}, status_code=201)
