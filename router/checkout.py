"""Checkout (API.md "Checkout", DESIGN §9): pin the hold → charge → confirm and issue tickets.

The saga runs in the router so the shard actor never waits on a network call. Every step is
idempotent, so a retry with the same Idempotency-Key resumes where the first attempt stopped:
the pin and the confirmation carry keys derived from the request's key, and the charge carries
one gateway key per hold (``charge:<hold id>``), so a hold is charged at most once whatever
happens. Outcomes:

- declined → the hold fails (inventory back on sale) → 402 PAYMENT_DECLINED;
- gateway error or unknown outcome → 502 PAYMENT_GATEWAY_ERROR, the hold stays pinned; a retry
  with the same key charges idempotently, and the checkout resolver settles holds nobody retries;
- charged but the hold can no longer be confirmed → the charge is refunded (never a ticket
  without inventory behind it) → the hold's error (409/410);
- charged and confirmed → 201 with the order and signed ticket codes, committed with the payment
  record in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import Field, StringConstraints

from actors.inventory.commands import BeginCheckout, ConfirmCheckout, FailCheckout
from actors.inventory.results import HoldView, OrderView, Rejection
from actors.protocol import CompleteCheckout, GetHold, GetOrder, PaymentRecord, RecordPayment
from router.auth import BUYERS, authorize
from router.deps import call_shard, client_of, idempotency_key, parse_body, settings_of, shard_of_entity
from router.errors import PROBLEM, ApiError
from router.jsonbody import JSONBody
from router.payments import Charge, GatewayError, GatewayOutcomeUnknown, IdempotencyKeyReused
from router.ratelimit import rate_limit
from router.schemas import Strict
from router.shard_client import ShardClient
from router.views import expect, order_body, rejection_error
from shards.slots import new_id, slot_of_id

log = logging.getLogger(__name__)
router = APIRouter(tags=["checkout"])

CHECKOUTS = Counter("ticketing_checkouts_total", "Checkouts by result.", ["result"])
TEST_HOOK_HEADER = "x-test-hook"


class Holder(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class Payment(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class CheckoutBody(Strict):
    payment: Payment
    holders: list[Holder] | None = Field(None, max_length=100)


def charge_key(hold_id: UUID) -> str:
    return f"charge:{hold_id}"


def refund_key(hold_id: UUID) -> str:
    return f"refund:{hold_id}"


def payment_record(hold: HoldView, user_id: str, gateway: str, key: str, charge: Charge | None, kind: str,
                   status: str) -> PaymentRecord:
    return PaymentRecord(uuid.uuid4(), hold.event_id, hold.hold_id, None, user_id, kind, gateway,
                         charge.id if charge else None, key, charge.amount_cents if charge else hold.total_cents,
                         hold.currency, status)


@router.post("/v1/holds/{hold_id}/checkout", status_code=201, summary="Pay for a hold and get tickets (owner)",
             responses={401: PROBLEM, 402: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM,
                        502: PROBLEM, 503: PROBLEM})
async def checkout(request: Request, hold_id: UUID) -> JSONBody:
    principal = authorize(request, BUYERS)
    await rate_limit(request, principal)
    shard_id = shard_of_entity(client_of(request), hold_id, "HOLD_NOT_FOUND")
    # Without a key, the hold itself is the key: a hold is checked out at most once.
    key = idempotency_key(request) or f"checkout:{hold_id}"
    body = await parse_body(request, CheckoutBody)
    saga = CheckoutSaga(request, shard_id, principal.user_id, hold_id, key)
    order = await saga.run(body)
    codes = request.app.state.ticket_codes
    response = order_body(order)
    tickets = response.pop("tickets")
    for ticket, view in zip(tickets, order.tickets, strict=True):
        ticket["code"] = codes.code(view)
    for ticket, holder in zip(tickets, body.holders or (), strict=False):
        ticket["holder"] = {"name": holder.name, "email": holder.email}
    return JSONBody({"order": response, "tickets": tickets}, status_code=201)


class CheckoutSaga:
    def __init__(self, request: Request, shard_id: int, user_id: str, hold_id: UUID, key: str) -> None:
        self.request = request
        self.shard_id = shard_id
        self.user_id = user_id
        self.hold_id = hold_id
        self.key = key
        self.settings = settings_of(request)
        self.gateway = request.app.state.gateway

    async def run(self, body: CheckoutBody) -> OrderView:
        hold = await self.pin()
        await self.test_hook("pinned")
        if body.holders is not None and len(body.holders) > hold.quantity:
            raise ApiError(422, "VALIDATION_ERROR", f"{len(body.holders)} holders for {hold.quantity} tickets")
        charge = await self.charge(hold, body.payment.token)
        if charge.status != "succeeded":
            await self.fail(hold, charge)
            CHECKOUTS.labels("declined").inc()
            raise ApiError(402, "PAYMENT_DECLINED", f"the payment was declined ({charge.decline_code or 'declined'}); "
                           "the hold was released")
        await self.test_hook("charged")
        holders = tuple((holder.name, holder.email) for holder in body.holders or ())
        return await self.confirm(hold, charge, holders)

    async def pin(self) -> HoldView:
        pin = BeginCheckout(self.user_id, self.hold_id, f"{self.key}:pin")
        reply = await call_shard(self.request, self.shard_id, pin, retryable=True)
        if isinstance(reply, Rejection) and reply.code.value == "HOLD_NOT_ACTIVE":
            # Pinned by an earlier attempt under another key: resume it (the charge is per hold).
            current = await call_shard(self.request, self.shard_id, GetHold(self.hold_id, self.user_id), read=True)
            if isinstance(current, HoldView) and current.status.value == "payment_pending":
                return current
        if isinstance(reply, Rejection):
            CHECKOUTS.labels(reply.code.value.lower()).inc()
        return expect(reply, HoldView, "HOLD_NOT_FOUND", self.settings.retry_after_s)  # type: ignore[no-any-return]

    async def charge(self, hold: HoldView, token: str) -> Charge:
        try:
            charge: Charge = await self.gateway.charge(
                amount_cents=hold.total_cents, currency=hold.currency, token=token,
                idempotency_key=charge_key(hold.hold_id), description=f"hold {hold.hold_id}")
        except IdempotencyKeyReused:
            raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", "this hold's payment was attempted with other details; "
                           "retry with the same payment") from None
        except (GatewayError, GatewayOutcomeUnknown) as error:
            CHECKOUTS.labels("gateway_error").inc()
            raise ApiError(502, "PAYMENT_GATEWAY_ERROR", f"the payment gateway failed ({type(error).__name__}); "
                           "the hold stays reserved for you: retry with the same Idempotency-Key") from None
        return charge

    async def fail(self, hold: HoldView, charge: Charge) -> None:
        gateway = self.settings.payment_gateway
        record = payment_record(hold, self.user_id, gateway, charge_key(hold.hold_id), charge, "charge", "declined")
        await call_shard(self.request, self.shard_id, RecordPayment(record), retryable=True)
        fail = FailCheckout(self.user_id, hold.hold_id, f"{self.key}:fail")
        reply = await call_shard(self.request, self.shard_id, fail, retryable=True)
        if not isinstance(reply, HoldView | Rejection):
            expect(reply, HoldView, "HOLD_NOT_FOUND", self.settings.retry_after_s)

    async def confirm(self, hold: HoldView, charge: Charge, holders: tuple[tuple[str, str], ...]) -> OrderView:
        slot = slot_of_id(hold.hold_id) or 0
        confirm = ConfirmCheckout(self.user_id, hold.hold_id, new_id(slot),
                                  tuple(new_id(slot) for _ in range(hold.quantity)), f"{self.key}:confirm")
        record = payment_record(hold, self.user_id, self.settings.payment_gateway, charge_key(hold.hold_id), charge,
                                "charge", "succeeded")
        complete = CompleteCheckout(confirm, record, holders)
        reply = await call_shard(self.request, self.shard_id, complete, retryable=True)
        if isinstance(reply, Rejection):
            # The resolver may have confirmed this hold meanwhile (it looks the same charge up):
            # then that order is ours and the charge paid for it. Refund only a hold that is gone.
            settled = await settled_order(self.request.app.state.shard_client, self.shard_id, hold.hold_id,
                                          self.user_id)
            if settled is not None:
                CHECKOUTS.labels("confirmed").inc()
                return settled
            await refund_charge(self.request, self.shard_id, hold, self.user_id, charge)
            CHECKOUTS.labels("refunded").inc()
            raise rejection_error(reply)
        order: OrderView = expect(reply, OrderView, "HOLD_NOT_FOUND", self.settings.retry_after_s)
        CHECKOUTS.labels("confirmed").inc()
        return order

    async def test_hook(self, stage: str) -> None:
        """Fault injection for tests only (settings.test_hooks), at a stage of the saga."""
        hook = self.request.headers.get(TEST_HOOK_HEADER)
        if not self.settings.test_hooks or not hook:
            return
        if stage == "pinned":
            if hook == "crash-before-charge":  # as if this router died between pin and charge
                raise ApiError(503, "SHARD_UNAVAILABLE", "test hook: the router stopped before the charge",
                               headers={"Retry-After": "1"})
            return
        import ray

        runtime = self.request.app.state.runtime
        if hook in ("kill-shard-after-charge", "crash-after-charge"):
            ray.kill(runtime.actor(self.shard_id), no_restart=False)
            runtime.forget_actor(self.shard_id)
        if hook == "crash-after-charge":  # as if this router process died here: nobody confirms
            raise ApiError(503, "SHARD_UNAVAILABLE", "test hook: the router stopped after the charge",
                           headers={"Retry-After": "1"})
        if hook == "fail-hold-after-charge":  # as if the resolver had given up on the hold meanwhile
            await call_shard(self.request, self.shard_id, FailCheckout(self.user_id, self.hold_id), retryable=True)


async def settled_order(client: ShardClient, shard_id: int, hold_id: UUID, user_id: str) -> OrderView | None:
    """The order a hold was confirmed into, if it was. A hold has exactly one charge (its key is
    per hold), so whoever confirmed the hold used that charge: refunding it would give tickets away."""
    hold = await client.read(shard_id, GetHold(hold_id, user_id))
    if not isinstance(hold, HoldView) or hold.status.value != "confirmed" or hold.order_id is None:
        return None
    order = await client.read(shard_id, GetOrder(hold.order_id, user_id))
    return order if isinstance(order, OrderView) else None


async def refund_charge(request: Request, shard_id: int, hold: HoldView, user_id: str, charge: Charge) -> None:
    """Give the money back for a charge that bought nothing; recorded either way."""
    settings = settings_of(request)
    status = "succeeded"
    try:
        await request.app.state.gateway.refund(charge_id=charge.id, amount_cents=charge.amount_cents,
                                               idempotency_key=refund_key(hold.hold_id))
    except Exception as error:  # recorded as pending; the resolver retries pending refunds
        log.warning("refund of charge %s failed: %s", charge.id, error)
        status = "pending"
    record = payment_record(hold, user_id, settings.payment_gateway, refund_key(hold.hold_id), charge, "refund", status)
    await call_shard(request, shard_id, RecordPayment(record), retryable=True)


