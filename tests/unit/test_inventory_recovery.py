"""Loading from rows reproduces the state that commands built.

Commands build a state; every change record they emitted is replayed into the reference row
projection; a new event is loaded from those rows. If any change record were missing or wrong
(a sold seat not persisted, a transfer that loses its link), the two states would differ here.
"""

from __future__ import annotations

import dataclasses
import uuid
from itertools import count

import pytest

from actors.inventory.changes import Change
from actors.inventory.commands import (
    BeginCheckout,
    CheckIn,
    Command,
    ConfirmCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    SetSectionPrice,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import InvariantViolation
from actors.inventory.event import EventInventory
from actors.inventory.layout import DynamicPricing, GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.recovery import load_event
from actors.inventory.results import HoldView, OrderView, TransferView
from actors.inventory.sales import EventSettings
from tests.core_limits import core_limits
from tests.replay import RowsProjection

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=5)
LAYOUT = Layout(
    (
        SeatedSectionSpec("A", 1_000, tuple(RowSpec(str(r), 8) for r in range(1, 5)), blocked=("A-1-8",)),
        GeneralAdmissionSpec("floor", 500, 20),
    )
)
SETTINGS = EventSettings(hold_seconds=60, per_person_limit=10)


def build() -> tuple[ShardInventory, list[Change]]:
    ids = count(1)
    shard = ShardInventory(core_limits())
    shard.create_event(EVENT, LAYOUT, SETTINGS)
    changes: list[Change] = []

    def run(command: Command, now_s: float) -> object:
        outcome = shard.apply(command, now_s)
        changes.extend(outcome.changes)
        return outcome.result

    def new() -> uuid.UUID:
        return uuid.UUID(int=next(ids))

    orders, tickets = [], []
    for n, user in enumerate(["ana", "ben", "cai", "dee", "eve", "fay"]):
        commands: list[Command] = [
            HoldBestAvailable(EVENT, user, new(), "A", 2 + n % 3, adjacent=n % 2 == 0, idempotency_key=f"b{n}"),
            HoldGeneralAdmission(EVENT, user, new(), "floor", 1 + n % 2),
            HoldSeats(EVENT, user, new(), (f"A-4-{n + 1}",)),
        ]
        for command in commands:
            view = run(command, float(n))
            assert isinstance(view, HoldView)
            if n % 3 == 2:
                continue  # stays held
            run(BeginCheckout(user, view.hold_id), n + 0.5)
            if n % 3 == 1 and command is commands[2]:
                continue  # stays pinned (payment_pending)
            order = run(ConfirmCheckout(user, view.hold_id, new(), tuple(new() for _ in view.items)), n + 0.7)
            assert isinstance(order, OrderView)
            orders.append((user, order))
            tickets += [(user, t.ticket_id) for t in order.tickets]
    released = run(HoldSeats(EVENT, "gus", new(), ("A-3-1", "A-3-2")), 10.0)
    assert isinstance(released, HoldView)
    run(ReleaseHold("gus", released.hold_id), 11.0)
    run(CheckIn(tickets[0][1], "north"), 20.0)
    moved = run(TransferTicket(tickets[1][0], tickets[1][1], "hal", new()), 21.0)
    assert isinstance(moved, TransferView)
    run(TransferTicket("hal", moved.new_ticket.ticket_id, "ivy", new()), 22.0)
    run(RefundOrder(orders[-1][0], orders[-1][1].order_id), 23.0)
    run(RefundOrder(orders[1][0], orders[1][1].order_id, by_organizer=True), 24.0)
    shard.expire_due(30.0)  # nothing due yet: holds last 60 s
    return shard, changes


def snapshot(event: EventInventory) -> dict[str, object]:
    book = event.tickets
    return {
        "seats": bytes(event.seat_status),
        "held": event.held.tolist(),
        "sold": event.sold.tolist(),
        "holds": sorted(
            (h.hold_id, h.status, h.seat_nos, h.quantity, h.expires_at_s, h.item_prices())
            for h in event.hold_table
            if h is not None
        ),
        "ticket_prices": event.tickets.price.tolist(),
        "tickets": [event.ticket_view(serial) for serial in range(len(book))],
        "orders": sorted((event.order_view(order) for order in range(len(book.order_ids))), key=lambda o: o.order_id),
        "units": sorted((event.units_of(event.find_user(u)), u) for u in ("ana", "ben", "cai", "dee", "hal", "ivy")),
    }


def test_rows_rebuilt_from_changes_reload_the_same_state() -> None:
    shard, changes = build()
    projection = RowsProjection()
    projection.apply_all(changes)
    event, live = load_event(EVENT, LAYOUT, SETTINGS, *projection.event_rows(EVENT))
    reloaded = ShardInventory(core_limits())
    reloaded.adopt_event(event, live)
    reloaded.check_all()
    original = shard.events[EVENT]
    assert snapshot(event) == snapshot(original)
    assert reloaded.seat_map(EVENT, "A") == shard.seat_map(EVENT, "A")
    assert reloaded.availability(EVENT) == shard.availability(EVENT)
    # Pool counters persisted as absolute values agree with the reloaded counters.
    floor = LAYOUT.section_by_id["floor"].index
    assert projection.pools[(EVENT, "floor")] == (event.held[floor], event.sold[floor])
    # Seat claims hold exactly the held and sold seats.
    claimed = {seat_no for (event_id, seat_no) in projection.seat_claims if event_id == EVENT}
    assert claimed == {n for n, s in enumerate(original.seat_status) if s in b"hs"}
    # Expiry keeps working on reloaded holds, through the same command path.
    assert {o.result.hold_id for o in reloaded.expire_due(1_000.0) if isinstance(o.result, HoldView)} == {
        o.result.hold_id for o in shard.expire_due(1_000.0) if isinstance(o.result, HoldView)
    }
    assert snapshot(event) == snapshot(original)


def test_recorded_idempotency_keys_survive_recovery() -> None:
    _, changes = build()
    projection = RowsProjection()
    projection.apply_all(changes)
    event, live = load_event(EVENT, LAYOUT, SETTINGS, *projection.event_rows(EVENT))
    reloaded = ShardInventory(core_limits())
    reloaded.adopt_event(event, live)
    reloaded.idempotency.load(projection.idempotency)
    retry = reloaded.apply(
        HoldBestAvailable(EVENT, "ana", uuid.UUID(int=10**6), "A", 2, adjacent=True, idempotency_key="b0"), 40.0
    )
    assert retry.replayed and retry.changes == ()


def test_inconsistent_rows_are_refused_before_serving() -> None:
    """Two live holds claiming one seat must crash recovery, not be served."""
    _, changes = build()
    projection = RowsProjection()
    projection.apply_all(changes)
    holds, orders, tickets = projection.event_rows(EVENT)
    seated = next(h for h in holds if h.seat_nos)
    clash = seated._replace(hold_id=uuid.UUID(int=10**7))
    event, live = load_event(EVENT, LAYOUT, SETTINGS, [*holds, clash], orders, tickets)
    with pytest.raises(InvariantViolation):
        ShardInventory(core_limits()).adopt_event(event, live)


DYNAMIC_SPECS = (
    SeatedSectionSpec("A", 1_000, tuple(RowSpec(str(r), 8) for r in range(1, 3)), pricing=DynamicPricing(800, 4_000)),
    GeneralAdmissionSpec("floor", 500, 20, pricing=DynamicPricing(500, 2_000)),
    SeatedSectionSpec("B", 3_000, (RowSpec("1", 4),)),  # fixed
)


def test_dynamic_prices_and_locked_prices_survive_recovery() -> None:
    """Prices move between holds and sales; the reloaded event (its layout built, as the shell
    does, from the projected `sections.price_cents`) sells at the last committed price, and every
    live hold, ticket and order keeps the price it was given."""
    layout = Layout(DYNAMIC_SPECS)
    shard = ShardInventory(core_limits())
    shard.create_event(EVENT, layout, SETTINGS)
    changes: list[Change] = []
    ids = count(1)

    def run(command: Command, now_s: float) -> object:
        outcome = shard.apply(command, now_s)
        changes.extend(outcome.changes)
        return outcome.result

    def hold_and_sell(user: str, command: Command, now_s: float, sell: bool) -> None:
        view = run(command, now_s)
        assert isinstance(view, HoldView)
        if sell:
            run(BeginCheckout(user, view.hold_id), now_s)
            order_id = uuid.UUID(int=next(ids))
            run(ConfirmCheckout(user, view.hold_id, order_id, tuple(uuid.UUID(int=next(ids)) for _ in view.items)),
                now_s)

    for step, (a_price, floor_price) in enumerate([(1_000, 500), (1_700, 900), (3_100, 2_000), (900, 650)]):
        now_s = float(step)
        run(SetSectionPrice(EVENT, "A", a_price, "system"), now_s)
        run(SetSectionPrice(EVENT, "floor", floor_price, "system"), now_s)
        user = f"u{step}"
        hold_and_sell(user, HoldBestAvailable(EVENT, user, uuid.UUID(int=next(ids)), "A", 2), now_s, step % 2 == 0)
        hold_and_sell(user, HoldGeneralAdmission(EVENT, user, uuid.UUID(int=next(ids)), "floor", 2), now_s, step != 1)
        hold_and_sell(user, HoldSeats(EVENT, user, uuid.UUID(int=next(ids)), (f"A-2-{step + 1}", f"B-1-{step + 1}")),
                      now_s, step == 3)  # seats of two prices: one price per seat
    run(SetSectionPrice(EVENT, "A", 2_222, "system"), 9.0)
    projection = RowsProjection()
    projection.apply_all(changes)
    current = {section_id: price for (event_id, section_id), price in projection.section_prices.items()}
    assert current == {"A": 2_222, "floor": 650}
    reloaded_layout = Layout(tuple(dataclasses.replace(spec, price_cents=current.get(spec.section_id, spec.price_cents))
                                   for spec in DYNAMIC_SPECS))
    event, live = load_event(EVENT, reloaded_layout, SETTINGS, *projection.event_rows(EVENT))
    reloaded = ShardInventory(core_limits())
    reloaded.adopt_event(event, live)
    original = shard.events[EVENT]
    assert snapshot(event) == snapshot(original)
    assert reloaded.availability(EVENT) == shard.availability(EVENT)
    assert [reloaded.hold(h.hold_id) for h in live] == [shard.hold(h.hold_id) for h in live]
    # The locks are really tested: live holds and tickets whose prices are not today's.
    assert any(2_222 not in h.item_prices() for h in live if h.pool is None)
    assert any(isinstance(h.prices_cents, tuple) for h in live)
    assert set(event.tickets.price.tolist()) >= {1_000, 3_100, 500, 2_000}
