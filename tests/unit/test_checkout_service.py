"""The checkout service's steps over the real inventory core and the real simulated gateway, with
faults injected by wrapping the gateway (issue 10, defects 4, 5, 8, 9; issue 11's one service).

`CoreShards` stands in for the shard client: it applies commands to a `ShardInventory` through the
actor's own payment shell (`actors.payments.checkout_outcome`) and keeps the `payments` rows the
writer would upsert, so what is tested is the service's protocol, not a mock of it. The end-to-end
versions, over HTTP against a running cluster, are in tests/e2e/test_checkout.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors.inventory.commands import FailCheckout, HoldSeats, TransferTicket
from actors.inventory.core import ShardInventory
from actors.inventory.layout import Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import HoldView, OrderView, TransferView
from actors.inventory.sales import EventSettings
from actors.payments import checkout_outcome
from actors.protocol import CompleteCheckout, GetHold, GetOrder, RecordPayment, RefundPaidOrder, Unavailable
from router.checkout import keys
from router.checkout.gateway import CHARGE_AMOUNT_CENTS_MAX, Charge, FaultyGateway, GatewayError, SimulatedGateway
from router.checkout.service import CheckoutRequest, CheckoutService, RefundRequest
from router.problems import ApiError
from shards.checkout_queries import PaymentRow
from shards.records import PaymentRecorded
from shards.slots import new_id
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=7)
PRICE_CENTS = 2_500
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class CoreShards:
    """The shard client's `apply`/`read` over one in-memory shard, with its `payments` rows."""

    def __init__(self, price_cents: int = PRICE_CENTS) -> None:
        self.inventory = ShardInventory(core_limits(items_max=6))
        layout = Layout((SeatedSectionSpec("A", price_cents, (RowSpec("1", 8),)),))
        self.inventory.create_event(EVENT, layout, EventSettings())
        self.payments: dict[str, PaymentRecorded] = {}
        self.now_s = 1.0

    async def apply(self, shard_id: int, command: Any, *, retryable: bool) -> Any:
        self.now_s += 1
        if isinstance(command, CompleteCheckout | RefundPaidOrder | RecordPayment):
            outcome: Any = checkout_outcome(self.inventory, command, self.now_s)
        else:
            outcome = self.inventory.apply(command, self.now_s)
        for change in outcome.changes:
            if isinstance(change, PaymentRecorded):  # the writer's upsert by key
                before = self.payments.get(change.idempotency_key)
                if before is not None:
                    change = change._replace(gateway_ref=change.gateway_ref or before.gateway_ref,
                                             order_id=change.order_id or before.order_id)
                self.payments[change.idempotency_key] = change
        return outcome.result

    async def read(self, shard_id: int, query: Any) -> Any:
        if isinstance(query, GetHold):
            return self.inventory.hold(query.hold_id, query.user_id)
        if isinstance(query, GetOrder):
            return self.inventory.order(query.order_id, query.user_id)
        raise AssertionError(query)

    def rows(self, kind: str, status: str) -> list[PaymentRow]:
        return [PaymentRow(p.payment_id, p.event_id, p.hold_id, p.order_id, p.user_id, p.kind, p.gateway,
                           p.gateway_ref, p.idempotency_key, p.amount_cents, p.currency, p.status,
                           (p.at_s, p.payment_id))  # type: ignore[arg-type]
                for p in self.payments.values() if p.kind == kind and p.status == status]


class CoreQueries:
    def __init__(self, shards: CoreShards) -> None:
        self.shards = shards

    async def order_charge(self, shard_id: int, order_id: uuid.UUID) -> PaymentRow | None:
        rows = [row for row in self.shards.rows("charge", "succeeded") if row.order_id == order_id]
        return rows[0] if rows else None


class Crash(BaseException):
    """The router process dies here: nothing after this point of the saga runs."""


class StepGateway(FaultyGateway):
    """Runs `before` ahead of, or `after` behind, one kind of call: a crash, another actor's step."""

    def __init__(self, inner: Any, operation: str, *, before: Callable[[], Awaitable[None]] | None = None,
                 after: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(inner)
        self.operation, self.before, self.after = operation, before, after

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if operation == self.operation and self.before is not None:
            await self.before()
        result = await super()._call(operation, call)
        if operation == self.operation and self.after is not None:
            await self.after()
        return result


def service(shards: CoreShards, gateway: Any) -> CheckoutService:
    return CheckoutService(shards, gateway, CoreQueries(shards), gateway_name="simulated",  # type: ignore[arg-type]
                           retry_after_s=1)


def hold(shards: CoreShards, user: str, *seats: str) -> HoldView:
    held = shards.inventory.apply(HoldSeats(EVENT, user, new_id(0), seats), shards.now_s).result
    assert isinstance(held, HoldView), held
    return held


def request(held: HoldView, user: str, key: str | None = "pay-1", holders: tuple[tuple[str, str], ...] = (),
            token: str = "tok_visa") -> CheckoutRequest:
    return CheckoutRequest(0, user, held.hold_id, key, token, holders)


def status(shards: CoreShards, held: HoldView) -> str:
    view = shards.inventory.hold(held.hold_id)
    assert view is not None
    return str(view.status)


def charge_of(gateway: SimulatedGateway, held: HoldView) -> Charge | None:
    return run(gateway.lookup(keys.charge_key(held.hold_id)))


def test_too_many_holders_is_refused_before_the_hold_is_pinned(tmp_path: Path) -> None:
    """Defect 8: the 422 used to come after the pin, leaving the hold payment_pending."""
    shards, gateway = CoreShards(), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1")
    with pytest.raises(ApiError) as refused:
        run(service(shards, gateway).checkout(request(held, "ana", holders=(("a", "a@x.io"), ("b", "b@x.io")))))
    assert (refused.value.status, refused.value.code) == (422, "VALIDATION_ERROR")
    assert status(shards, held) == "held" and charge_of(gateway, held) is None


def test_the_same_key_with_other_holders_is_idempotency_key_reused(tmp_path: Path) -> None:
    """Defect 8: the same key with a changed body answered 201 for the new body."""
    shards, gateway = CoreShards(), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1")
    checkout = service(shards, gateway)
    first = run(checkout.checkout(request(held, "ana", holders=(("Ana", "ana@x.io"),))))
    with pytest.raises(ApiError) as refused:
        run(checkout.checkout(request(held, "ana", holders=(("Eve", "eve@x.io"),))))
    assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
    again = run(checkout.checkout(request(held, "ana", holders=(("Ana", "ana@x.io"),))))
    assert again == first


def test_a_free_hold_is_confirmed_without_a_charge(tmp_path: Path) -> None:
    """Defect 9: a total of 0 went to the gateway, which refuses amounts below 1 (500)."""
    shards, gateway = CoreShards(price_cents=0), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1", "A-1-2")
    order = run(service(shards, gateway).checkout(request(held, "ana", key=None)))
    assert order.status == "confirmed" and order.total_cents == 0 and len(order.tickets) == 2
    assert charge_of(gateway, held) is None and shards.payments == {}


def test_a_total_above_what_one_payment_may_take_is_refused_before_the_pin(tmp_path: Path) -> None:
    """Defect 9: the gateway's ValueError surfaced as a 500 after the hold was pinned."""
    shards, gateway = CoreShards(price_cents=CHARGE_AMOUNT_CENTS_MAX // 2 + 1), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1", "A-1-2")
    with pytest.raises(ApiError) as refused:
        run(service(shards, gateway).checkout(request(held, "ana")))
    assert refused.value.status == 422 and status(shards, held) == "held"


def test_a_router_dying_after_the_charge_is_settled_and_the_retry_gets_the_same_order(tmp_path: Path) -> None:
    """The old `crash-after-charge` hook: nobody confirms; the resolver's step confirms with the
    checkout's own per-hold key, so the client's retry replays that order."""
    shards, simulated = CoreShards(), SimulatedGateway(tmp_path)

    async def die() -> None:
        raise Crash

    held = hold(shards, "ana", "A-1-1")
    with pytest.raises(Crash):
        run(service(shards, StepGateway(simulated, "charge", after=die)).checkout(request(held, "ana")))
    assert status(shards, held) == "payment_pending"
    assert run(service(shards, simulated).settle(0, held.hold_id, "ana")) == "confirmed"
    order = run(service(shards, simulated).checkout(request(held, "ana")))
    assert order.status == "confirmed" and status(shards, held) == "confirmed"
    charge = charge_of(simulated, held)
    assert charge is not None and charge.refunded_cents == 0


def test_a_hold_failed_during_the_charge_gets_its_money_back(tmp_path: Path) -> None:
    """The old `fail-hold-after-charge` hook: the resolver fails the hold while the charge is in
    flight; the confirmation is refused and the charge is refunded, recorded as succeeded."""
    shards, simulated = CoreShards(), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1")

    async def resolver_gives_up() -> None:
        await shards.apply(0, FailCheckout("ana", held.hold_id, keys.fail_key(held.hold_id)), retryable=True)

    with pytest.raises(ApiError) as refused:
        run(service(shards, StepGateway(simulated, "charge", after=resolver_gives_up)).checkout(request(held, "ana")))
    assert refused.value.code == "HOLD_NOT_ACTIVE"
    charge = charge_of(simulated, held)
    assert charge is not None and charge.refunded_cents == charge.amount_cents
    assert shards.payments[keys.refund_key(held.hold_id)].status == "succeeded"


def buy(shards: CoreShards, checkout: CheckoutService, user: str, *seats: str) -> OrderView:
    return run(checkout.checkout(request(hold(shards, user, *seats), user, key=f"pay-{seats}")))


def test_a_refund_interrupted_before_the_gateway_is_owed_and_a_retry_pays_it(tmp_path: Path) -> None:
    """Defect 5: the refund committed, then the process died before the gateway refund, and a
    retry answered 409 with the money kept. Now the debt is committed with the refund (pending),
    the retry with the same key answers the refunded order, and the money goes back once."""
    shards, simulated = CoreShards(), SimulatedGateway(tmp_path)
    order = buy(shards, service(shards, simulated), "ana", "A-1-1", "A-1-2")

    async def die() -> None:
        raise Crash

    refund = RefundRequest(0, "ana", order, False, "refund-1")
    with pytest.raises(Crash):
        run(service(shards, StepGateway(simulated, "refund", before=die)).refund_order(refund))
    owed = shards.payments[keys.order_refund_key(order.order_id)]
    assert (owed.status, owed.amount_cents) == ("pending", 2 * PRICE_CENTS)
    again = run(service(shards, simulated).refund_order(refund))
    assert again.status == "refunded" and again.order_id == order.order_id
    assert shards.payments[keys.order_refund_key(order.order_id)].status == "succeeded"
    charge = run(simulated.lookup(keys.charge_key(_hold_of(shards, order))))
    assert charge is not None and charge.refunded_cents == 2 * PRICE_CENTS


def _hold_of(shards: CoreShards, order: OrderView) -> uuid.UUID:
    row = next(p for p in shards.payments.values() if p.order_id == order.order_id and p.kind == "charge")
    return row.hold_id


def test_a_refund_the_gateway_fails_stays_owed_until_the_resolver_pays_it(tmp_path: Path) -> None:
    """Defect 5 with a gateway error: 200 refunded, the refund pending, the resolver's retry pays."""
    shards, simulated = CoreShards(), SimulatedGateway(tmp_path)
    order = buy(shards, service(shards, simulated), "ana", "A-1-3")
    faulty = FaultyGateway(simulated)
    faulty.fail_next(1, GatewayError, operations=("refund",))
    refunded = run(service(shards, faulty).refund_order(RefundRequest(0, "ana", order, False, None)))
    assert refunded.status == "refunded"
    [owed] = shards.rows("refund", "pending")
    assert run(service(shards, simulated).retry_refund(0, owed)) == "refunded"
    assert shards.rows("refund", "pending") == [] and len(shards.rows("refund", "succeeded")) == 1


def test_a_transferred_ticket_is_not_paid_back_to_the_sender(tmp_path: Path) -> None:
    """Defect 6 at the money end: only the ticket the buyer kept is refunded at the gateway."""
    shards, simulated = CoreShards(), SimulatedGateway(tmp_path)
    order = buy(shards, service(shards, simulated), "ana", "A-1-5", "A-1-6")
    moved = shards.inventory.apply(TransferTicket("ana", order.tickets[1].ticket_id, "ben", new_id(0)), 9.0).result
    assert isinstance(moved, TransferView)
    run(service(shards, simulated).refund_order(RefundRequest(0, "ana", order, False, None)))
    charge = run(simulated.lookup(keys.charge_key(_hold_of(shards, order))))
    assert charge is not None and charge.refunded_cents == PRICE_CENTS


def test_the_most_expensive_default_hold_fits_one_payment() -> None:
    """Defect 9 at creation: with the default hold sizes, no event can price a hold the gateway refuses."""
    from cluster.settings import Settings
    from router.schemas import PRICE_CENTS_MAX

    settings = Settings()
    assert PRICE_CENTS_MAX * max(settings.hold_seats_max, settings.hold_quantity_max) <= CHARGE_AMOUNT_CENTS_MAX


def test_an_unanswered_read_is_a_503_never_a_hold_that_was_not_confirmed(tmp_path: Path) -> None:
    """`settled_order` decides whether a charge bought the hold's tickets. When the shard cannot
    read a hold from Postgres it answers `Unavailable`; taking that for "not confirmed" would
    refund the charge of a confirmed hold. It must be a 503 the caller retries."""
    shards, gateway = CoreShards(), SimulatedGateway(tmp_path)
    held = hold(shards, "ana", "A-1-1")
    run(service(shards, gateway).checkout(request(held, "ana")))

    async def unanswered(shard_id: int, query: Any) -> Any:
        return Unavailable("the hold could not be read from Postgres")

    shards.read = unanswered  # type: ignore[method-assign]
    with pytest.raises(ApiError) as refused:
        run(service(shards, gateway).settled_order(0, held.hold_id, "ana"))
    assert (refused.value.status, refused.value.code) == (503, "SHARD_UNAVAILABLE")
