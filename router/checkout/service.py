"""The checkout service: pin → charge → confirm | refund, and the refund of an order (DESIGN §9).

One implementation of every money step, used by the HTTP routes (router/checkout/route.py,
router/orders_api.py) and by the resolver (router/resolver.py). It takes a shard client, a
payment gateway and the payment-history queries — no HTTP request — so tests drive it directly
with a wrapping gateway that injects faults between steps.

Every step is idempotent, so whoever repeats a step (a client retrying with its key, another
router worker, the resolver) gets the first outcome back and nothing happens twice:

- **pin** (`BeginCheckout`) carries the client's key (or the hold's own) and a digest of the
  request body: the same key with another body is IDEMPOTENCY_KEY_REUSED before anything happens.
  Everything that can be refused is checked *before* the pin (holders per ticket, the total the
  gateway can take), so a refused request leaves the hold as it was.
- **charge** carries one gateway key per hold (`charge:<hold>`): a hold is charged at most once.
  A free hold (total 0) is not charged at all.
- **confirm** / **fail** carry one system key per hold (router/checkout/keys.py), shared with
  the resolver: the second one to confirm gets the order replayed.
- **refund of a charge that bought nothing** (the hold could not be confirmed) and **refund of an
  order** are first recorded as a pending refund — for an order, in the same commit as the
  refund itself — then sent to the gateway, then recorded as succeeded. A crash or a gateway
  failure between leaves the pending record, which the resolver retries until the gateway
  confirms; the money is never kept silently (issue 10, defect 5).

The confirm step never refunds a hold that was confirmed: when a confirmation is refused it
reads the hold back (durable state, also after restarts) and returns its order if it has one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from prometheus_client import Counter

from actors.inventory.commands import BeginCheckout, ConfirmCheckout, FailCheckout, RefundOrder
from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldView, OrderView, Rejection
from actors.payments import refunded_cents
from actors.protocol import (
    Caller,
    CompleteCheckout,
    GetHold,
    GetOrder,
    PaymentRecord,
    RecordPayment,
    RefundPaidOrder,
    Unavailable,
    attributed,
)
from router.checkout import keys
from router.checkout.gateway import (
    CHARGE_AMOUNT_CENTS_MAX,
    Charge,
    GatewayError,
    GatewayOutcomeUnknown,
    IdempotencyKeyReused,
    PaymentGateway,
    RefundRejected,
)
from router.problems import ApiError
from router.shard_client import Overloaded, ShardUnavailable
from router.views import expect, rejection_error, unavailable_error
from shards.checkout_queries import CheckoutQueries, PaymentRow, QueryFailed
from shards.slots import new_id, slot_of_id

log = logging.getLogger(__name__)

CHECKOUTS = Counter("ticketing_checkouts_total", "Checkouts by result.", ["result"])


class Shards(Protocol):
    """The part of `router.shard_client.ShardClient` the service uses."""

    async def apply(self, shard_id: int, command: Any, *, retryable: bool) -> Any: ...

    async def read(self, shard_id: int, query: Any) -> Any: ...


class CheckoutRequest(NamedTuple):
    shard_id: int
    user_id: str
    hold_id: UUID
    key: str | None  # the client's Idempotency-Key
    token: str
    holders: tuple[tuple[str, str], ...]  # (name, email), at most one per ticket
    caller: Caller | None = None  # who asks, for the audit log (None: the resolver's own passes)


class RefundRequest(NamedTuple):
    shard_id: int
    user_id: str  # who asks: the buyer, or an organizer (`by_organizer`)
    order: OrderView  # as read by the route after its permission checks
    by_organizer: bool
    key: str | None
    caller: Caller | None = None  # who asks, for the audit log
    cancellation: bool = False  # the event's cancellation refunds the whole order (router/cancellation.py)


class Unsettled(Exception):
    """A step the service could not finish; it is left for a later pass (the resolver)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def request_digest(token: str, holders: tuple[tuple[str, str], ...]) -> str:
    """What a checkout asks beyond the hold, as part of the pin's idempotency fingerprint."""
    return hashlib.blake2b(repr((token, holders)).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class CheckoutService:
    def __init__(self, shards: Shards, gateway: PaymentGateway, queries: CheckoutQueries, *, gateway_name: str,
                 retry_after_s: int) -> None:
        self.shards = shards
        self.gateway = gateway
        self.queries = queries
        self.gateway_name = gateway_name
        self.retry_after_s = retry_after_s

    # --- the checkout request ---------------------------------------------------------------------

    async def checkout(self, request: CheckoutRequest) -> OrderView:
        hold = expect(await self.read(request.shard_id, GetHold(request.hold_id, request.user_id)), HoldView,
                      "HOLD_NOT_FOUND", self.retry_after_s)
        _validate(request, hold)
        hold = await self._pin(request)
        charge = None
        if hold.total_cents > 0:
            charge = await self._charge(hold, request.token)
            if charge.status != "succeeded":
                await self.fail(request.shard_id, hold, request.user_id, charge)
                CHECKOUTS.labels("declined").inc()
                reason = charge.decline_code or "declined"
                raise ApiError(402, "PAYMENT_DECLINED", f"the payment was declined ({reason}); the hold was released")
        order = await self.complete(request.shard_id, hold, request.user_id, charge, request.holders, request.caller)
        if isinstance(order, Rejection):
            CHECKOUTS.labels("refunded" if charge is not None else order.code.value.lower()).inc()
            raise rejection_error(order)
        CHECKOUTS.labels("confirmed").inc()
        return order

    async def _pin(self, request: CheckoutRequest) -> HoldView:
        pin = BeginCheckout(request.user_id, request.hold_id, keys.pin_key(request.key, request.hold_id),
                            request_digest(request.token, request.holders))
        reply = await self._apply(request.shard_id, pin)
        if isinstance(reply, Rejection) and reply.code.value == "HOLD_NOT_ACTIVE":
            # Pinned by an earlier attempt under another key: resume it (the charge is per hold).
            current = await self.read(request.shard_id, GetHold(request.hold_id, request.user_id))
            if isinstance(current, HoldView) and current.status is HoldStatus.PAYMENT_PENDING:
                return current
        if isinstance(reply, Rejection):
            CHECKOUTS.labels(reply.code.value.lower()).inc()
        pinned: HoldView = expect(reply, HoldView, "HOLD_NOT_FOUND", self.retry_after_s)
        return pinned

    async def _charge(self, hold: HoldView, token: str) -> Charge:
        try:
            return await self.gateway.charge(amount_cents=hold.total_cents, currency=hold.currency, token=token,
                                             idempotency_key=keys.charge_key(hold.hold_id),
                                             description=f"hold {hold.hold_id}")
        except IdempotencyKeyReused:
            raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", "this hold's payment was attempted with other details; "
                           "retry with the same payment") from None
        except (GatewayError, GatewayOutcomeUnknown) as error:
            CHECKOUTS.labels("gateway_error").inc()
            raise ApiError(502, "PAYMENT_GATEWAY_ERROR", f"the payment gateway failed ({type(error).__name__}); "
                           "the hold stays reserved for you: retry with the same Idempotency-Key") from None

    # --- steps shared with the resolver -------------------------------------------------------------

    async def fail(self, shard_id: int, hold: HoldView, user_id: str, charge: Charge | None) -> HoldView | Rejection:
        """The hold was not paid for: record what the gateway said (declined, or nothing found yet:
        `unknown`, looked up again later), then fail the hold, putting its inventory back on sale."""
        status = "unknown" if charge is None else "declined"
        record = self._record(hold.event_id, hold.hold_id, None, user_id, "charge", keys.charge_key(hold.hold_id),
                              charge.id if charge else None, hold.total_cents, hold.currency, status)
        await self._apply(shard_id, RecordPayment(record))
        reply = await self._apply(shard_id, FailCheckout(user_id, hold.hold_id, keys.fail_key(hold.hold_id)))
        settled: HoldView | Rejection = expect(reply, (HoldView, Rejection), "HOLD_NOT_FOUND", self.retry_after_s)
        return settled

    async def complete(self, shard_id: int, hold: HoldView, user_id: str, charge: Charge | None,
                       holders: tuple[tuple[str, str], ...] = (), caller: Caller | None = None
                       ) -> OrderView | Rejection:
        """Confirm a paid (or free) pinned hold: the order, or why it cannot be confirmed — and
        then the charge has been refunded, unless the hold was confirmed by someone else."""
        slot = slot_of_id(hold.hold_id) or 0
        confirm = ConfirmCheckout(user_id, hold.hold_id, new_id(slot), tuple(new_id(slot) for _ in hold.items),
                                  keys.confirm_key(hold.hold_id))
        record = None if charge is None else self._record(
            hold.event_id, hold.hold_id, None, user_id, "charge", keys.charge_key(hold.hold_id), charge.id,
            charge.amount_cents, hold.currency, "succeeded")
        reply = await self._apply(shard_id, attributed(CompleteCheckout(confirm, record, holders), caller))
        if isinstance(reply, OrderView):
            return reply
        rejection: Rejection = expect(reply, Rejection, "HOLD_NOT_FOUND", self.retry_after_s)
        settled = await self.settled_order(shard_id, hold.hold_id, user_id)
        if settled is not None:
            return settled
        if charge is not None:
            await self.refund_unbought(shard_id, hold.event_id, hold.hold_id, user_id, hold.currency, charge)
        return rejection

    async def settled_order(self, shard_id: int, hold_id: UUID, user_id: str) -> OrderView | None:
        """The order a hold was confirmed into, if it was. A hold has exactly one charge (its key is
        per hold), so whoever confirmed the hold used that charge: refunding it would give tickets away."""
        hold = await self.read(shard_id, GetHold(hold_id, user_id))
        if not isinstance(hold, HoldView) or hold.status is not HoldStatus.CONFIRMED or hold.order_id is None:
            return None
        order = await self.read(shard_id, GetOrder(hold.order_id, user_id))
        return order if isinstance(order, OrderView) else None

    async def refund_unbought(self, shard_id: int, event_id: UUID, hold_id: UUID, user_id: str, currency: str,
                              charge: Charge) -> str:
        """Give back a charge whose hold was not confirmed: owed first (durable), then paid."""
        owed = self._record(event_id, hold_id, None, user_id, "refund", keys.refund_key(hold_id), charge.id,
                            charge.amount_cents, currency, "pending")
        await self._apply(shard_id, RecordPayment(owed))
        return await self.return_money(shard_id, owed)

    async def return_money(self, shard_id: int, owed: PaymentRecord) -> str:
        """Send a recorded pending refund to the gateway; `refunded`, or `pending` (retried later),
        or `rejected` (the gateway refuses it for good: recorded as failed, logged as an error)."""
        try:
            charge_id = owed.gateway_ref or await self._charge_id(owed.hold_id)
            await self.gateway.refund(charge_id=charge_id, amount_cents=owed.amount_cents,
                                      idempotency_key=owed.idempotency_key)
        except (GatewayError, GatewayOutcomeUnknown) as error:
            log.warning("refund %s of %s cents still owed: %s", owed.idempotency_key, owed.amount_cents, error)
            return "pending"
        except (RefundRejected, IdempotencyKeyReused) as error:
            log.error("refund %s refused by the gateway, recorded as failed: %s", owed.idempotency_key, error)
            await self._apply(shard_id, RecordPayment(dataclasses.replace(owed, status="failed")))
            return "rejected"
        await self._apply(shard_id, RecordPayment(dataclasses.replace(owed, status="succeeded")))
        return "refunded"

    async def _charge_id(self, hold_id: UUID) -> str:
        charge = await self.gateway.lookup(keys.charge_key(hold_id))
        if charge is None:
            raise RefundRejected(f"no charge for hold {hold_id}")
        return charge.id

    # --- the refund of an order -----------------------------------------------------------------------

    async def refund_order(self, request: RefundRequest) -> OrderView:
        """Refund an order: inventory back on sale and the money owed recorded in one commit, then
        the money returned. A retry with the same key replays the refunded order and pays what is
        still owed; a gateway failure leaves the refund owed, and the resolver pays it."""
        order = request.order
        try:
            charge = await self.queries.order_charge(request.shard_id, order.order_id)
        except QueryFailed as error:
            raise unavailable_error(str(error), self.retry_after_s) from None
        owed = None if charge is None else self._record(
            order.event_id, charge.hold_id, order.order_id, charge.user_id, "refund",
            keys.order_refund_key(order.order_id), charge.gateway_ref, charge.amount_cents, charge.currency, "pending",
            gateway=charge.gateway)
        command = RefundOrder(request.user_id, order.order_id, request.by_organizer,
                              keys.order_refund_request_key(request.key, order.order_id), request.cancellation)
        reply = await self._apply(request.shard_id, attributed(RefundPaidOrder(command, owed), request.caller))
        refunded: OrderView = expect(reply, OrderView, "ORDER_NOT_FOUND", self.retry_after_s)
        amount_cents = refunded_cents(refunded, cancellation=request.cancellation)
        if owed is not None and amount_cents > 0:
            await self.return_money(request.shard_id, dataclasses.replace(owed, amount_cents=amount_cents))
        return refunded

    # --- the resolver's passes ------------------------------------------------------------------------

    async def settle(self, shard_id: int, hold_id: UUID, user_id: str) -> str:
        """Settle a hold pinned too long: confirm it if its charge succeeded (or it is free), else
        fail it. Raises `Unsettled` when the hold is still pinned afterwards."""
        hold = await self.read(shard_id, GetHold(hold_id, user_id))
        if not isinstance(hold, HoldView):
            raise Unsettled("read", "hold not found")
        if hold.status is not HoldStatus.PAYMENT_PENDING:
            return "settled_elsewhere"
        charge = None if hold.total_cents == 0 else await self.gateway.lookup(keys.charge_key(hold_id))
        if hold.total_cents > 0 and (charge is None or charge.status != "succeeded"):
            failed = await self.fail(shard_id, hold, user_id, charge)
            return await self._settled("fail", shard_id, hold, failed, "failed")
        order = await self.complete(shard_id, hold, user_id, charge)
        return await self._settled("confirm", shard_id, hold, order, "confirmed")

    async def _settled(self, step: str, shard_id: int, hold: HoldView, reply: Any, result: str) -> str:
        if not isinstance(reply, Rejection):
            return result
        current = await self.read(shard_id, GetHold(hold.hold_id, None))
        if isinstance(current, HoldView) and current.status is HoldStatus.PAYMENT_PENDING:
            raise Unsettled(step, reply.code.value)
        return "refunded" if step == "confirm" and hold.total_cents > 0 else "settled_elsewhere"

    async def recheck_charge(self, shard_id: int, row: PaymentRow) -> str:
        """A hold was failed because its charge was not found; refund the charge if it landed since."""
        charge = await self.gateway.lookup(row.idempotency_key)
        result = "still_unknown"
        if charge is not None and charge.status == "succeeded":
            result = "late_charge_found"
            if await self.settled_order(shard_id, row.hold_id, row.user_id) is None:
                await self.refund_unbought(shard_id, row.event_id, row.hold_id, row.user_id, row.currency, charge)
                result = "late_charge_refunded"
            status = "succeeded"
        elif charge is not None:
            status, result = "declined", "declined"
        elif row.past_horizon:
            status, result = "failed", "never_charged"
        else:
            return result
        await self._apply(shard_id, RecordPayment(self._record(
            row.event_id, row.hold_id, row.order_id, row.user_id, "charge", row.idempotency_key,
            charge.id if charge else None, charge.amount_cents if charge else row.amount_cents, row.currency, status,
            gateway=row.gateway)))
        return result

    async def retry_refund(self, shard_id: int, row: PaymentRow) -> str:
        return await self.return_money(shard_id, self._record(
            row.event_id, row.hold_id, row.order_id, row.user_id, "refund", row.idempotency_key, row.gateway_ref,
            row.amount_cents, row.currency, "pending", gateway=row.gateway))

    # --- helpers ----------------------------------------------------------------------------------------

    def _record(self, event_id: UUID, hold_id: UUID, order_id: UUID | None, user_id: str, kind: str, key: str,
                gateway_ref: str | None, amount_cents: int, currency: str, status: str, *,
                gateway: str | None = None) -> PaymentRecord:
        return PaymentRecord(uuid.uuid4(), event_id, hold_id, order_id, user_id, kind, gateway or self.gateway_name,
                             gateway_ref, key, amount_cents, currency, status)

    async def _apply(self, shard_id: int, command: Any) -> Any:
        """Every command here is keyed or an upsert by key, so the shard client may retry it."""
        try:
            return await self.shards.apply(shard_id, command, retryable=True)
        except Overloaded as error:
            raise unavailable_error(f"overloaded: {error}", self.retry_after_s) from None
        except ShardUnavailable as error:
            raise unavailable_error(str(error), self.retry_after_s) from None

    async def read(self, shard_id: int, query: Any) -> Any:
        """A read's reply; 503 when the shard could not answer. An `Unavailable` reply (Postgres did
        not answer the durable lookup) must never pass for "not found": `settled_order` would then
        refund the charge of a confirmed hold."""
        try:
            reply = await self.shards.read(shard_id, query)
        except (Overloaded, ShardUnavailable) as error:
            raise unavailable_error(str(error), self.retry_after_s) from None
        if isinstance(reply, Unavailable):
            raise unavailable_error(reply.reason, self.retry_after_s)
        return reply


def _validate(request: CheckoutRequest, hold: HoldView) -> None:
    """What would be refused after the pin is refused before it (issue 10, defect 8)."""
    if len(request.holders) > hold.quantity:
        raise ApiError(422, "VALIDATION_ERROR", f"{len(request.holders)} holders for {hold.quantity} tickets")
    if hold.total_cents > CHARGE_AMOUNT_CENTS_MAX:
        raise ApiError(422, "VALIDATION_ERROR", f"the hold's total ({hold.total_cents} cents) is more than one "
                       f"payment may take ({CHARGE_AMOUNT_CENTS_MAX} cents): hold fewer tickets")
