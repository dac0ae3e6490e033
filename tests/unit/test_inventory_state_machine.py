"""Every command, in random order, against a reference model that is obviously correct.

The model is plain dicts and sets with no performance tricks. After every step the real core
must agree with it on the outcome code, the seat map, the availability counts and every hold's
status, and ``check_all`` must hold. A negative control plants a bug (a seat hold that keeps the
available seats instead of holding all or nothing) and shows the machine catches it; if that
control ever passes, this whole test is blind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from itertools import count

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.inventory import hold_decisions
from actors.inventory.commands import (
    BeginCheckout,
    CheckIn,
    ConfirmCheckout,
    FailCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import ErrorCode
from actors.inventory.layout import GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import HoldView, OrderView, Outcome, Rejection
from actors.inventory.sales import EventSettings
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=7)
USERS = ("ana", "ben", "cai", "dee")
LIMIT = 5
ITEMS_MAX = 4
HOLD_SECONDS = 10
# Two seated sections and a GA pool: small enough that conflicts are frequent.
SEATED = {"A": (4, 4, 3), "B": (3, 3)}  # section → seats per row
BLOCKED = ("A-1-1",)
POOL, POOL_CAPACITY = "floor", 5


def build_layout() -> Layout:
    specs = [
        SeatedSectionSpec(
            section,
            100 * (i + 1),
            tuple(RowSpec(str(r + 1), n) for r, n in enumerate(rows)),
            BLOCKED if section == "A" else (),
        )
        for i, (section, rows) in enumerate(SEATED.items())
    ]
    return Layout((*specs, GeneralAdmissionSpec(POOL, 50, POOL_CAPACITY)))


LAYOUT = build_layout()
LABELS = [f"{s}-{r + 1}-{n + 1}" for s, rows in SEATED.items() for r, length in enumerate(rows) for n in range(length)]


@dataclass
class ModelHold:
    user: str
    status: str
    seats: list[str]
    quantity: int
    expires_at: float


@dataclass
class ModelTicket:
    owner: str
    seat: str | None
    order: uuid.UUID
    status: str = "valid"
    checked_in: tuple[float, str] | None = None


@dataclass
class Model:
    """The reference: seats by label, a GA pool as two integers, holds, tickets, orders."""

    seats: dict[str, str] = field(default_factory=lambda: {label: "x" if label in BLOCKED else "." for label in LABELS})
    pool_held: int = 0
    pool_sold: int = 0
    holds: dict[uuid.UUID, ModelHold] = field(default_factory=dict)
    tickets: dict[uuid.UUID, ModelTicket] = field(default_factory=dict)
    orders: dict[uuid.UUID, tuple[str, list[uuid.UUID], str]] = field(default_factory=dict)

    def units(self, user: str) -> int:
        held = sum(
            h.quantity for h in self.holds.values() if h.user == user and h.status in ("held", "payment_pending")
        )
        return held + sum(1 for t in self.tickets.values() if t.owner == user and t.status in ("valid", "checked_in"))

    def release(self, hold: ModelHold, status: str) -> None:
        hold.status = status
        for label in hold.seats:
            self.seats[label] = "."
        if not hold.seats:
            self.pool_held -= hold.quantity

    def best(self, section: str, quantity: int, adjacent: bool) -> list[str] | None:
        rows = SEATED[section]
        if adjacent:
            for r, length in enumerate(rows):
                runs = [
                    start
                    for start in range(length - quantity + 1)
                    if all(self.seats[f"{section}-{r + 1}-{n + 1}"] == "." for n in range(start, start + quantity))
                ]
                if runs:
                    start = min(runs, key=lambda s: (abs(2 * s + quantity - length), s))
                    return [f"{section}-{r + 1}-{n + 1}" for n in range(start, start + quantity)]
            return None
        free = [
            (r, abs(2 * n - (length - 1)), n)
            for r, length in enumerate(rows)
            for n in range(length)
            if self.seats[f"{section}-{r + 1}-{n + 1}"] == "."
        ]
        return [f"{section}-{r + 1}-{n + 1}" for r, _, n in sorted(free)[:quantity]] if len(free) >= quantity else None


class InventoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.shard = ShardInventory(core_limits(items_max=ITEMS_MAX, idempotency_keys_max=8))
        self.shard.create_event(EVENT, LAYOUT, EventSettings(hold_seconds=HOLD_SECONDS, per_person_limit=LIMIT))
        self.model = Model()
        self.now = 0.0
        self.ids = count(1)
        self.model_successor: dict[uuid.UUID, uuid.UUID] = {}

    def new_id(self) -> uuid.UUID:
        return uuid.UUID(int=next(self.ids))

    @initialize()
    def start(self) -> None:
        self.shard.check_all()

    # --- holds -------------------------------------------------------------------------------

    def expect_hold(self, user: str, quantity: int) -> ErrorCode | None:
        if not 1 <= quantity <= ITEMS_MAX:
            return ErrorCode.VALIDATION_ERROR
        if self.model.units(user) + quantity > LIMIT:
            return ErrorCode.LIMIT_EXCEEDED
        return None

    def record_hold(self, outcome: Outcome, user: str, seats: list[str], quantity: int) -> None:
        assert isinstance(outcome.result, HoldView), outcome.result
        assert [item.seat for item in outcome.result.items if item.seat] == seats
        self.model.holds[outcome.result.hold_id] = ModelHold(user, "held", seats, quantity, self.now + HOLD_SECONDS)
        for label in seats:
            self.model.seats[label] = "h"
        if not seats:
            self.model.pool_held += quantity

    @rule(user=st.sampled_from(USERS), seats=st.lists(st.sampled_from([*LABELS, "A-9-9"]), min_size=1, max_size=5))
    def hold_seats(self, user: str, seats: list[str]) -> None:
        outcome = self.shard.apply(HoldSeats(EVENT, user, self.new_id(), tuple(seats)), self.now)
        expected = self.expect_hold(user, len(seats))
        if expected is None and "A-9-9" in seats:
            expected = ErrorCode.UNKNOWN_SEAT
        elif expected is None and len(set(seats)) != len(seats):
            expected = ErrorCode.VALIDATION_ERROR
        unavailable = tuple(label for label in seats if self.model.seats[label] != ".") if expected is None else ()
        if unavailable:
            expected = ErrorCode.SEATS_UNAVAILABLE
        self.check_code(outcome, expected)
        if expected is ErrorCode.SEATS_UNAVAILABLE:
            assert isinstance(outcome.result, Rejection) and outcome.result.unavailable == unavailable
        if expected is None:
            self.record_hold(outcome, user, seats, len(seats))

    @rule(user=st.sampled_from(USERS), quantity=st.integers(0, 5))
    def hold_pool(self, user: str, quantity: int) -> None:
        outcome = self.shard.apply(HoldGeneralAdmission(EVENT, user, self.new_id(), POOL, quantity), self.now)
        expected = self.expect_hold(user, quantity)
        available = POOL_CAPACITY - self.model.pool_held - self.model.pool_sold
        if expected is None and available < quantity:
            expected = ErrorCode.INSUFFICIENT_INVENTORY
        self.check_code(outcome, expected)
        if expected is None:
            self.record_hold(outcome, user, [], quantity)

    @rule(
        user=st.sampled_from(USERS),
        section=st.sampled_from(sorted(SEATED)),
        quantity=st.integers(1, 4),
        adjacent=st.booleans(),
    )
    def hold_best(self, user: str, section: str, quantity: int, adjacent: bool) -> None:
        command = HoldBestAvailable(EVENT, user, self.new_id(), section, quantity, adjacent)
        outcome = self.shard.apply(command, self.now)
        expected = self.expect_hold(user, quantity)
        chosen = self.model.best(section, quantity, adjacent) if expected is None else None
        if expected is None and chosen is None:
            expected = ErrorCode.INSUFFICIENT_INVENTORY
        self.check_code(outcome, expected)
        if chosen is not None:
            self.record_hold(outcome, user, chosen, quantity)

    # --- hold lifecycle --------------------------------------------------------------------------

    def pick_hold(self, data: st.DataObject) -> uuid.UUID:
        return data.draw(st.sampled_from(sorted(self.model.holds)))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), as_owner=st.booleans())
    def release(self, data: st.DataObject, as_owner: bool) -> None:
        hold_id = self.pick_hold(data)
        hold = self.model.holds[hold_id]
        user = hold.user if as_owner else "mallory"
        outcome = self.shard.apply(ReleaseHold(user, hold_id), self.now)
        if not as_owner:
            return self.check_code(outcome, ErrorCode.HOLD_NOT_FOUND)
        if hold.status != "held":
            return self.check_code(outcome, ErrorCode.HOLD_NOT_ACTIVE)
        if hold.expires_at <= self.now:
            self.model.release(hold, "expired")
            return self.check_code(outcome, ErrorCode.HOLD_NOT_ACTIVE)
        self.model.release(hold, "released")
        self.check_code(outcome, None)

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0]))
    def advance_time(self, seconds: float) -> None:
        self.now += seconds
        expired = {o.result.hold_id for o in self.shard.expire_due(self.now) if isinstance(o.result, HoldView)}
        due = {i for i, h in self.model.holds.items() if h.status == "held" and h.expires_at <= self.now}
        assert expired == due
        for hold_id in due:
            self.model.release(self.model.holds[hold_id], "expired")

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def begin_checkout(self, data: st.DataObject) -> None:
        hold_id = self.pick_hold(data)
        hold = self.model.holds[hold_id]
        outcome = self.shard.apply(BeginCheckout(hold.user, hold_id), self.now)
        if hold.status == "expired":
            return self.check_code(outcome, ErrorCode.HOLD_EXPIRED)
        if hold.status != "held":
            return self.check_code(outcome, ErrorCode.HOLD_NOT_ACTIVE)
        if hold.expires_at <= self.now:
            self.model.release(hold, "expired")
            return self.check_code(outcome, ErrorCode.HOLD_EXPIRED)
        hold.status = "payment_pending"
        self.check_code(outcome, None)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), succeed=st.booleans())
    def finish_checkout(self, data: st.DataObject, succeed: bool) -> None:
        hold_id = self.pick_hold(data)
        hold = self.model.holds[hold_id]
        if not succeed:
            outcome = self.shard.apply(FailCheckout(hold.user, hold_id), self.now)
            if hold.status != "payment_pending":
                return self.check_code(outcome, ErrorCode.HOLD_NOT_ACTIVE)
            self.model.release(hold, "failed")
            return self.check_code(outcome, None)
        ticket_ids = tuple(self.new_id() for _ in range(hold.quantity))
        order_id = self.new_id()
        outcome = self.shard.apply(ConfirmCheckout(hold.user, hold_id, order_id, ticket_ids), self.now)
        if hold.status != "payment_pending":
            return self.check_code(outcome, ErrorCode.HOLD_NOT_ACTIVE)
        self.check_code(outcome, None)
        hold.status = "confirmed"
        for label in hold.seats:
            self.model.seats[label] = "s"
        if not hold.seats:
            self.model.pool_held -= hold.quantity
            self.model.pool_sold += hold.quantity
        seats: list[str | None] = list(hold.seats) if hold.seats else [None] * hold.quantity
        for ticket_id, seat in zip(ticket_ids, seats, strict=True):
            self.model.tickets[ticket_id] = ModelTicket(hold.user, seat, order_id)
        self.model.orders[order_id] = (hold.user, list(ticket_ids), "confirmed")

    # --- after the sale --------------------------------------------------------------------------

    @precondition(lambda self: self.model.orders)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.model.orders)))
        buyer, originals, status = self.model.orders[order_id]
        outcome = self.shard.apply(RefundOrder(buyer, order_id), self.now)
        # The refundable set: the order's tickets (after transfers) still held by its buyer.
        current = [self.current(ticket_id) for ticket_id in originals]
        current = [ticket_id for ticket_id in current if self.model.tickets[ticket_id].owner == buyer]
        if status == "refunded":
            return self.check_code(outcome, ErrorCode.ORDER_ALREADY_REFUNDED)
        if any(self.model.tickets[t].status == "checked_in" for t in current):
            return self.check_code(outcome, ErrorCode.TICKET_ALREADY_USED)
        if not current:
            return self.check_code(outcome, ErrorCode.TICKET_VOID)
        self.check_code(outcome, None)
        self.model.orders[order_id] = (buyer, originals, "refunded")
        for ticket_id in current:
            ticket = self.model.tickets[ticket_id]
            if ticket.status == "valid":
                ticket.status = "refunded"
                if ticket.seat is None:
                    self.model.pool_sold -= 1
                else:
                    self.model.seats[ticket.seat] = "."

    def current(self, ticket_id: uuid.UUID) -> uuid.UUID:
        """Where an order's ticket is now, after any transfers."""
        while ticket_id in self.model_successor:
            ticket_id = self.model_successor[ticket_id]
        return ticket_id

    @precondition(lambda self: self.model.tickets)
    @rule(data=st.data(), to=st.sampled_from(USERS))
    def transfer(self, data: st.DataObject, to: str) -> None:
        ticket_id = data.draw(st.sampled_from(sorted(self.model.tickets)))
        ticket = self.model.tickets[ticket_id]
        new_id = self.new_id()
        outcome = self.shard.apply(TransferTicket(ticket.owner, ticket_id, to, new_id), self.now)
        if ticket.status == "checked_in":
            return self.check_code(outcome, ErrorCode.TICKET_ALREADY_USED)
        if ticket.status != "valid":
            return self.check_code(outcome, ErrorCode.TICKET_VOID)
        if to == ticket.owner:
            return self.check_code(outcome, ErrorCode.VALIDATION_ERROR)
        if self.model.units(to) + 1 > LIMIT:
            return self.check_code(outcome, ErrorCode.LIMIT_EXCEEDED)
        self.check_code(outcome, None)
        ticket.status = "transferred"
        self.model.tickets[new_id] = ModelTicket(to, ticket.seat, ticket.order)
        self.model_successor[ticket_id] = new_id

    @precondition(lambda self: self.model.tickets)
    @rule(data=st.data(), gate=st.sampled_from(["north", "south"]))
    def check_in(self, data: st.DataObject, gate: str) -> None:
        ticket_id = data.draw(st.sampled_from(sorted(self.model.tickets)))
        ticket = self.model.tickets[ticket_id]
        outcome = self.shard.apply(CheckIn(ticket_id, gate), self.now)
        if ticket.checked_in is not None:
            self.check_code(outcome, ErrorCode.TICKET_ALREADY_USED)
            assert isinstance(outcome.result, Rejection)
            assert (outcome.result.first_checked_in_at_s, outcome.result.gate) == ticket.checked_in
            return
        if ticket.status != "valid":
            return self.check_code(outcome, ErrorCode.TICKET_VOID)
        self.check_code(outcome, None)
        ticket.status, ticket.checked_in = "checked_in", (self.now, gate)

    # --- idempotency -----------------------------------------------------------------------------

    @rule(
        user=st.sampled_from(USERS),
        quantity=st.integers(1, 2),
        key=st.sampled_from(["k1", "k2"]),
        change_body=st.booleans(),
    )
    def keyed_hold(self, user: str, quantity: int, key: str, change_body: bool) -> None:
        """A GA hold with a key; the first use is modelled, later uses must replay or be refused."""
        recorded = self.shard.idempotency.lookup(user, key)
        command = HoldGeneralAdmission(EVENT, user, self.new_id(), POOL, quantity, idempotency_key=key)
        if recorded is None:
            return self.hold_pool_keyed(command)
        first = recorded.result
        outcome = self.shard.apply(command, self.now)
        same_body = isinstance(first, HoldView) and first.quantity == quantity
        if isinstance(first, Rejection):
            same_body = outcome.replayed
        if outcome.replayed:
            assert outcome.result == first and outcome.changes == ()
        else:
            self.check_code(outcome, ErrorCode.IDEMPOTENCY_KEY_REUSED)
            assert not same_body

    def hold_pool_keyed(self, command: HoldGeneralAdmission) -> None:
        expected = self.expect_hold(command.user_id, command.quantity)
        available = POOL_CAPACITY - self.model.pool_held - self.model.pool_sold
        if expected is None and available < command.quantity:
            expected = ErrorCode.INSUFFICIENT_INVENTORY
        outcome = self.shard.apply(command, self.now)
        self.check_code(outcome, expected)
        if expected is None:
            self.record_hold(outcome, command.user_id, [], command.quantity)

    # --- checks ----------------------------------------------------------------------------------

    def check_code(self, outcome: Outcome, expected: ErrorCode | None) -> None:
        actual = outcome.result.code if isinstance(outcome.result, Rejection) else None
        assert actual == expected, (actual, expected, outcome.result)
        if expected is not None and expected not in (ErrorCode.HOLD_EXPIRED, ErrorCode.HOLD_NOT_ACTIVE):
            assert [c for c in outcome.changes if type(c).__name__ != "IdempotencyRecorded"] == []

    @invariant()
    def agrees_with_model(self) -> None:
        self.shard.check_all()
        seat_map = "".join(row.seats for section in SEATED for row in self.shard.seat_map(EVENT, section) or ())
        assert seat_map == "".join(self.model.seats[label] for label in LABELS)
        pool = next(a for a in self.shard.availability(EVENT) or () if a.section_id == POOL)
        assert (pool.held, pool.sold) == (self.model.pool_held, self.model.pool_sold)
        for hold_id, hold in self.model.holds.items():
            view = self.shard.hold(hold_id, hold.user)
            assert view is not None and view.status == hold.status, (hold_id, view, hold)
        for order_id, (buyer, _, status) in self.model.orders.items():
            order = self.shard.order(order_id, buyer)
            assert isinstance(order, OrderView) and order.status == status


MACHINE_SETTINGS = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    database=None,  # no .hypothesis/ folder written by CI runs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_inventory_agrees_with_reference_model() -> None:
    """500 random runs of 50 commands each: the core and the model never disagree."""
    InventoryMachine.TestCase.settings = MACHINE_SETTINGS
    InventoryMachine.TestCase().runTest()


def _partial_hold_seats(event, command, now_s, hold_items_max):  # type: ignore[no-untyped-def]
    """The planted bug: hold whichever requested seats are free instead of all or nothing."""
    free = tuple(
        label
        for label in command.seats
        if event.layout.parse_label(label) != -1 and event.seat_status[event.layout.parse_label(label)] == ord(".")
    )
    trimmed = HoldSeats(command.event_id, command.user_id, command.hold_id, free or command.seats)
    return _REAL_HOLD_SEATS(event, trimmed, now_s, hold_items_max)


_REAL_HOLD_SEATS = hold_decisions.hold_seats


def test_negative_control_partial_holds_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the all-or-nothing check switched off, the state machine must find a failure."""
    monkeypatch.setattr(hold_decisions, "hold_seats", _partial_hold_seats)
    InventoryMachine.TestCase.settings = settings(MACHINE_SETTINGS, max_examples=200)
    with pytest.raises(AssertionError):
        InventoryMachine.TestCase().runTest()
