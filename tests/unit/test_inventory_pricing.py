"""Dynamic pricing in the core: prices stay within bounds, move by bounded steps, and nothing held
or sold is repriced (actors/inventory/pricing.py, docs/organizers.md "Dynamic pricing").

The rule is checked as properties of ``next_price``; the command path by a Hypothesis state
machine that holds, releases, expires, sells, refunds and ticks the pricing rule in random order
against a model that remembers every price each hold and ticket was given. Negative controls
take the clamp and the hold's price lock away and show the properties then fail.
"""

from __future__ import annotations

import uuid
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.inventory import pricing
from actors.inventory.changes import SectionPriceChanged
from actors.inventory.commands import (
    BeginCheckout,
    ConfirmCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    SetSectionPrice,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import ErrorCode, LayoutError
from actors.inventory.holds import Hold
from actors.inventory.layout import DynamicPricing, GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.recovery import HoldRow, load_event
from actors.inventory.results import HoldView, OrderView, Rejection, SectionPriceView
from actors.inventory.sales import EventSettings
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=15)
# The negative controls replace core functions; compiled (mypyc) modules call each other natively
# and their classes take no new methods, so they run against the interpreted core, which
# tests/unit/test_native_core.py runs every test_inventory_*.py file against.
INTERPRETED = pricing.__file__ is not None and pricing.__file__.endswith(".py")
interpreted_only = pytest.mark.skipif(not INTERPRETED, reason="patches the core: runs in the interpreted pass")
STEP_PERCENT = 10
FLOOR, START, CEILING = 1_000, 1_000, 3_000


def build_layout() -> Layout:
    """A dynamic seated section, a dynamic GA pool, and a fixed seated section (the control)."""
    return Layout((
        SeatedSectionSpec("dyn", START, (RowSpec("1", 4), RowSpec("2", 4)), blocked=("dyn-1-1",),
                          pricing=DynamicPricing(FLOOR, CEILING)),
        GeneralAdmissionSpec("pool", 500, 6, pricing=DynamicPricing(100, 900)),
        SeatedSectionSpec("fixed", 2_500, (RowSpec("1", 4),)),
    ))


def shard() -> ShardInventory:
    inventory = ShardInventory(core_limits(items_max=4))
    inventory.create_event(EVENT, build_layout(), EventSettings(hold_seconds=10, per_person_limit=None))
    return inventory


def step_bound(current: int, percent: int) -> int:
    return max(1, current * percent // 100)


# --- the rule ------------------------------------------------------------------------------------------

prices = st.integers(0, 10_000_000)


@given(data=st.data(), percent=st.integers(1, 100))
def test_next_price_stays_within_bounds_and_moves_by_a_bounded_step(data: st.DataObject, percent: int) -> None:
    floor, ceiling = sorted((data.draw(prices), data.draw(prices)))
    current = data.draw(st.integers(floor, ceiling))
    for_sale = data.draw(st.integers(0, 100_000))
    taken = data.draw(st.integers(0, for_sale))
    proposed = pricing.next_price(current, floor, ceiling, taken, for_sale, percent)
    assert floor <= proposed <= ceiling
    assert abs(proposed - current) <= step_bound(current, percent)
    if for_sale:
        target = floor + (ceiling - floor) * taken // for_sale
        # Toward the target, never past it; at the target it stays.
        assert min(current, target) <= proposed <= max(current, target)


@given(floor=st.integers(0, 5_000), spread=st.integers(0, 5_000), percent=st.integers(1, 100))
def test_full_demand_reaches_the_ceiling_and_none_the_floor(floor: int, spread: int, percent: int) -> None:
    ceiling, price, steps = floor + spread, floor, 0
    while price != ceiling:
        price = pricing.next_price(price, floor, ceiling, 10, 10, percent)
        steps += 1
        assert steps < 10_000
    while price != floor:
        price = pricing.next_price(price, floor, ceiling, 0, 10, percent)
        steps += 1
        assert steps < 20_000


def test_a_layout_refuses_a_price_outside_its_bounds() -> None:
    with pytest.raises(LayoutError, match="floor <= price <= ceiling"):
        Layout((GeneralAdmissionSpec("g", 500, 10, pricing=DynamicPricing(600, 900)),))
    with pytest.raises(LayoutError, match="floor <= price <= ceiling"):
        Layout((GeneralAdmissionSpec("g", 500, 10, pricing=DynamicPricing(100, 400)),))
    with pytest.raises(LayoutError, match="price out of range"):
        Layout((GeneralAdmissionSpec("g", 2**31, 10),))


def test_set_section_price_is_refused_outside_bounds_and_on_fixed_sections() -> None:
    inventory = shard()
    for section_id, price in (("dyn", FLOOR - 1), ("dyn", CEILING + 1), ("fixed", 2_600), ("nope", 1_000)):
        outcome = inventory.apply(SetSectionPrice(EVENT, section_id, price, "system"), 1.0)
        assert isinstance(outcome.result, Rejection) and outcome.result.code is ErrorCode.VALIDATION_ERROR
        assert outcome.changes == ()
    missing = inventory.apply(SetSectionPrice(uuid.UUID(int=99), "dyn", 1_000, "system"), 1.0)
    assert isinstance(missing.result, Rejection) and missing.result.code is ErrorCode.EVENT_NOT_FOUND
    same = inventory.apply(SetSectionPrice(EVENT, "dyn", START, "system"), 1.0)
    assert same.result == SectionPriceView(EVENT, "dyn", START) and same.changes == ()  # no change, no record
    moved = inventory.apply(SetSectionPrice(EVENT, "dyn", 1_500, "system"), 2.0)
    assert moved.changes == (SectionPriceChanged(EVENT, "dyn", START, 1_500, "system", 2.0),)
    assert {s.section_id: s.price_cents for s in inventory.availability(EVENT) or ()}["dyn"] == 1_500


def test_a_hold_placed_before_a_price_change_is_sold_at_its_price() -> None:
    """The acceptance case in miniature: a rise between hold and checkout changes nothing paid."""
    inventory, ids = shard(), count(1)
    hold_id, ga_hold_id = uuid.UUID(int=next(ids)), uuid.UUID(int=next(ids))
    held = inventory.apply(HoldBestAvailable(EVENT, "ana", hold_id, "dyn", 2), 0.0).result
    ga_held = inventory.apply(HoldGeneralAdmission(EVENT, "ana", ga_hold_id, "pool", 3), 0.0).result
    assert isinstance(held, HoldView) and held.total_cents == 2 * START
    assert isinstance(ga_held, HoldView) and ga_held.total_cents == 3 * 500
    assert inventory.apply(SetSectionPrice(EVENT, "dyn", 2_000, "system"), 1.0).changes
    assert inventory.apply(SetSectionPrice(EVENT, "pool", 800, "system"), 1.0).changes
    assert inventory.hold(hold_id) == held and inventory.hold(ga_hold_id) == ga_held  # views keep the price
    for view in (held, ga_held):
        inventory.apply(BeginCheckout("ana", view.hold_id), 2.0)
        order_id = uuid.UUID(int=next(ids))
        tickets = tuple(uuid.UUID(int=next(ids)) for _ in view.items)
        order = inventory.apply(ConfirmCheckout("ana", view.hold_id, order_id, tickets), 3.0).result
        assert isinstance(order, OrderView) and order.total_cents == view.total_cents
        assert [t.price_cents for t in order.tickets] == [item.price_cents for item in view.items]
        assert inventory.order(order_id) == order
    later = inventory.apply(HoldBestAvailable(EVENT, "ben", uuid.UUID(int=next(ids)), "dyn", 1), 4.0).result
    assert isinstance(later, HoldView) and later.total_cents == 2_000  # a new hold pays today's price
    inventory.check_all()


def test_a_hold_across_sections_keeps_each_seats_price() -> None:
    inventory = shard()
    hold_id = uuid.UUID(int=1)
    held = inventory.apply(HoldSeats(EVENT, "ana", hold_id, ("dyn-2-1", "fixed-1-1")), 0.0)
    assert isinstance(held.result, HoldView)
    assert [item.price_cents for item in held.result.items] == [START, 2_500]
    inventory.apply(SetSectionPrice(EVENT, "dyn", 2_900, "system"), 1.0)
    assert inventory.hold(hold_id) == held.result


# --- the state machine -------------------------------------------------------------------------------

SEATS_FOR_SALE = {"dyn": 7, "pool": 6, "fixed": 4}


class PricingMachine(RuleBasedStateMachine):
    """Random holds, releases, sales, refunds, expiry and pricing ticks on one dynamic event."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = count(1)
        self.now_s = 0.0
        self.inventory = shard()
        self.holds: dict[uuid.UUID, HoldView] = {}  # live holds, as placed
        self.orders: dict[uuid.UUID, tuple[str, OrderView]] = {}
        self.ticket_prices: dict[uuid.UUID, int] = {}  # as sold
        self.last_prices = self.prices()

    @initialize()
    def start(self) -> None:
        self.inventory.check_all()

    def new_id(self) -> uuid.UUID:
        return uuid.UUID(int=next(self.ids))

    def prices(self) -> dict[str, int]:
        return {s.section_id: s.price_cents for s in self.inventory.availability(EVENT) or ()}

    @rule(user=st.sampled_from(["ana", "ben", "cai"]), section=st.sampled_from(["dyn", "fixed", "pool"]),
          quantity=st.integers(1, 3))
    def hold(self, user: str, section: str, quantity: int) -> None:
        hold_id = self.new_id()
        command = (HoldGeneralAdmission(EVENT, user, hold_id, section, quantity) if section == "pool"
                   else HoldBestAvailable(EVENT, user, hold_id, section, quantity))
        before = self.prices()[section]
        view = self.inventory.apply(command, self.now_s).result
        if isinstance(view, HoldView):
            assert all(item.price_cents == before for item in view.items)  # today's price, locked now
            self.holds[hold_id] = view

    @rule(data=st.data(), sell=st.booleans())
    def end_hold(self, data: st.DataObject, sell: bool) -> None:
        if not self.holds:
            return
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        view = self.holds.pop(hold_id)
        user = self.owner_of(hold_id)
        if not sell:
            assert self.inventory.apply(ReleaseHold(user, hold_id), self.now_s).ok
            return
        assert self.inventory.apply(BeginCheckout(user, hold_id), self.now_s).ok
        order_id = self.new_id()
        tickets = tuple(self.new_id() for _ in view.items)
        order = self.inventory.apply(ConfirmCheckout(user, hold_id, order_id, tickets), self.now_s).result
        assert isinstance(order, OrderView)
        assert order.total_cents == view.total_cents, "the order is charged what the hold said"
        self.orders[order_id] = (user, order)
        for ticket, item in zip(order.tickets, view.items, strict=True):
            self.ticket_prices[ticket.ticket_id] = item.price_cents

    def owner_of(self, hold_id: uuid.UUID) -> str:
        return next(user for user in ("ana", "ben", "cai") if self.inventory.hold(hold_id, user) is not None)

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        live = sorted(order_id for order_id, (_, order) in self.orders.items() if order.status == "confirmed")
        if not live:
            return
        order_id = data.draw(st.sampled_from(live))
        user, order = self.orders[order_id]
        refunded = self.inventory.apply(RefundOrder(user, order_id), self.now_s).result
        assert isinstance(refunded, OrderView) and refunded.total_cents == order.total_cents
        self.orders[order_id] = (user, refunded)

    @rule(seconds=st.sampled_from([1.0, 11.0]))
    def expire(self, seconds: float) -> None:
        self.now_s += seconds
        for outcome in self.inventory.expire_due(self.now_s):
            if isinstance(outcome.result, HoldView):
                self.holds.pop(outcome.result.hold_id, None)

    @rule()
    def pricing_tick(self) -> None:
        before = self.prices()
        commands = self.inventory.price_commands(STEP_PERCENT)
        for command in commands:
            outcome = self.inventory.apply(command, self.now_s)
            assert outcome.ok and len(outcome.changes) == 1
        after = self.prices()
        for section_id, price in after.items():
            assert abs(price - before[section_id]) <= step_bound(before[section_id], STEP_PERCENT), "step bound"
        moved = {command.section_id for command in commands}
        assert moved == {s for s in after if after[s] != before[s]}, "no change, no command"

    @invariant()
    def prices_are_bounded_and_nothing_sold_or_held_is_repriced(self) -> None:
        prices = self.prices()
        assert FLOOR <= prices["dyn"] <= CEILING and 100 <= prices["pool"] <= 900
        assert prices["fixed"] == 2_500, "a fixed price never moves"
        for hold_id, view in self.holds.items():
            assert self.inventory.hold(hold_id) == view
        for _, order in self.orders.values():
            current = self.inventory.order(order.order_id)
            assert current is not None and current.total_cents == order.total_cents
            for ticket in current.tickets:
                assert ticket.price_cents == self.ticket_prices[ticket.ticket_id]
        self.inventory.check_all()


def test_prices_move_within_bounds_and_keep_what_was_sold() -> None:
    run_machine(80)


def run_machine(examples: int) -> None:
    machine = PricingMachine.TestCase
    machine.settings = settings(max_examples=examples, stateful_step_count=40, deadline=None,
                                suppress_health_check=[HealthCheck.too_slow])
    machine().runTest()


def test_demand_drives_the_price_up_to_the_ceiling_and_back_to_the_floor() -> None:
    """Simulated demand: every seat of the dynamic section held → the price climbs by bounded steps
    to the ceiling; all released → it falls back to the floor; the fixed section never moves."""
    inventory, seen = shard(), []
    holds = [uuid.UUID(int=n) for n in range(1, 8)]
    for hold_id in holds:
        assert inventory.apply(HoldBestAvailable(EVENT, f"u{hold_id.int}", hold_id, "dyn", 1), 0.0).ok
    for _ in range(40):
        for command in inventory.price_commands(STEP_PERCENT):
            inventory.apply(command, 1.0)
        seen.append({s.section_id: s.price_cents for s in inventory.availability(EVENT) or ()})
    assert seen[-1]["dyn"] == CEILING and all(FLOOR <= p["dyn"] <= CEILING for p in seen)
    assert [p["dyn"] for p in seen] == sorted(p["dyn"] for p in seen)  # only up while demand holds
    for hold_id in holds:
        assert inventory.apply(ReleaseHold(f"u{hold_id.int}", hold_id), 2.0).ok
    for _ in range(40):
        for command in inventory.price_commands(STEP_PERCENT):
            inventory.apply(command, 3.0)
        seen.append({s.section_id: s.price_cents for s in inventory.availability(EVENT) or ()})
    assert seen[-1]["dyn"] == FLOOR
    assert {p["fixed"] for p in seen} == {2_500}
    pool = [p["pool"] for p in seen]  # no demand on the pool: from 500 down to its floor, then still
    assert pool == sorted(pool, reverse=True) and pool[-1] == 100


# --- negative controls -------------------------------------------------------------------------------


@interpreted_only
def test_negative_control_an_unclamped_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the clamp (and with an unbounded step) the price leaves its bounds: the core's
    own check (``check_prices``) or the machine's invariant must see it."""

    def unclamped(current: int, floor: int, ceiling: int, taken: int, for_sale: int, percent: int,
                  share: float | None = None) -> int:
        return current + 10_000 if taken else current - 10_000

    monkeypatch.setattr(pricing, "next_price", unclamped)
    inventory = shard()
    inventory.apply(HoldBestAvailable(EVENT, "ana", uuid.UUID(int=1), "dyn", 1), 0.0)
    (command, *_) = inventory.price_commands(STEP_PERCENT)
    assert isinstance(inventory.apply(command, 1.0).result, Rejection)  # the command refuses it ...
    monkeypatch.setattr(pricing, "set_price", _set_price_unchecked)
    inventory.apply(command, 1.0)
    with pytest.raises(Exception, match="outside its bounds"):  # ... and without that, check_all
        inventory.check_all()


def _set_price_unchecked(event, command, now_s):  # type: ignore[no-untyped-def]
    section = event.layout.section_by_id[command.section_id]
    event.set_price(section, command.price_cents)
    return SectionPriceView(event.event_id, command.section_id, command.price_cents), []


@interpreted_only
def test_negative_control_without_the_price_lock_orders_are_repriced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold that sells at today's price instead of its own: the machine must catch it."""

    def todays_prices(hold: Hold) -> tuple[int, ...]:
        event = hold.event
        if hold.pool is not None:
            return (event.prices[hold.pool.index],) * hold.quantity
        return tuple(event.prices[event.layout.section_of(seat_no).index] for seat_no in hold.seat_nos)

    monkeypatch.setattr(Hold, "item_prices", todays_prices)
    with pytest.raises(AssertionError):
        run_machine(200)


def test_seats_across_sections_record_their_prices_even_when_equal() -> None:
    """A stored seat hold across sections without prices is then known to predate migration 008
    (fixed prices: the layout's); one with them keeps them whatever the sections' prices do."""
    inventory = shard()
    inventory.apply(SetSectionPrice(EVENT, "dyn", 2_500, "system"), 0.0)  # the fixed section's price
    held = inventory.apply(HoldSeats(EVENT, "ana", uuid.UUID(int=1), ("dyn-2-1", "fixed-1-1")), 0.0)
    (created, _) = held.changes
    assert isinstance(held.result, HoldView) and created.item_prices_cents == (2_500, 2_500)
    one_section = inventory.apply(HoldSeats(EVENT, "ben", uuid.UUID(int=2), ("dyn-2-2", "dyn-2-3")), 0.0)
    assert one_section.changes[0].item_prices_cents is None  # type: ignore[union-attr]


def test_rows_from_before_migration_008_load_at_the_layouts_prices() -> None:
    layout = build_layout()
    seats = (layout.parse_label("dyn-2-1"), layout.parse_label("fixed-1-1"))
    legacy = [HoldRow(uuid.UUID(int=1), "ana", "held", None, seats, 2, 60.0),
              HoldRow(uuid.UUID(int=2), "ben", "held", None, seats[:1], 1, 60.0, total_cents=None),
              HoldRow(uuid.UUID(int=3), "cai", "held", "pool", (), 2, 60.0)]
    event, live = load_event(EVENT, layout, EventSettings(hold_seconds=10, per_person_limit=None), legacy, [], [])
    assert [hold.item_prices() for hold in live] == [(START, 2_500), (START,), (500, 500)]
    assert event.hold_view(live[0]).total_cents == START + 2_500


# --- demand beyond the share taken: pace, waiting room, time to the event ------------------------------

RULE = pricing.DemandRule(interval_s=10.0, velocity_horizon_s=600.0, last_call_s=86_400.0)
FAR = pricing.Demand(seconds_to_start=30 * 86_400.0)


def test_each_signal_alone_sets_the_demand_and_the_strongest_wins() -> None:
    share = pricing.demand_share
    assert share(10, 100, 0, FAR, RULE) == pytest.approx(0.1)  # the share taken
    # 9 units in one 10 s round with 90 left: sold out in 100 s, well within 600 s: full demand
    assert share(10, 100, 9, FAR, RULE) == 1.0
    # 1 unit per round with 90 left: sold out in 900 s: 600/900 of the way
    assert share(10, 100, 1, FAR, RULE) == pytest.approx(600 / 900)
    # 45 people waiting for 90 units: half the way; 200 waiting: all the way
    assert share(10, 100, 0, FAR._replace(waiting=45), RULE) == pytest.approx(0.5)
    assert share(10, 100, 0, FAR._replace(waiting=200), RULE) == 1.0
    assert share(100, 100, 0, FAR, RULE) == 1.0  # sold out
    assert share(10, 100, -5, FAR, RULE) == pytest.approx(0.1)  # units coming back are no pace


def test_in_the_last_call_the_share_fades_but_live_demand_still_counts() -> None:
    half_day = pricing.Demand(seconds_to_start=43_200.0)
    assert pricing.demand_share(80, 100, 0, half_day, RULE) == pytest.approx(0.4)
    assert pricing.demand_share(80, 100, 0, pricing.Demand(seconds_to_start=-60.0), RULE) == 0.0
    assert pricing.demand_share(80, 100, 0, half_day._replace(waiting=20), RULE) == 1.0
    off = RULE._replace(last_call_s=0.0, velocity_horizon_s=0.0)
    assert pricing.demand_share(80, 100, 50, half_day, off) == pytest.approx(0.8)


@given(taken=st.integers(-5, 120), delta=st.integers(-50, 200), waiting=st.integers(-5, 10_000),
       start=st.one_of(st.none(), st.floats(-1e6, 1e7)))
def test_demand_is_a_share_and_prices_stay_in_bounds(taken: int, delta: int, waiting: int, start: float | None) -> None:
    demand = pricing.Demand(start, waiting)
    share = pricing.demand_share(taken, 100, delta, demand, RULE)
    assert 0.0 <= share <= 1.0
    price = pricing.next_price(2_000, FLOOR, CEILING, taken, 100, STEP_PERCENT, share)
    assert FLOOR <= price <= CEILING and abs(price - 2_000) <= step_bound(2_000, STEP_PERCENT)


def test_a_fast_sale_moves_the_price_before_the_share_would() -> None:
    """Two of seven seats held in one round: by the share alone the target is 2/7 of the way; at
    that pace the section sells out in 25 s, so the demand is full and the price heads to the ceiling."""
    inventory = shard()
    before = inventory.taken_by_section()
    held = inventory.apply(HoldSeats(EVENT, "ana", uuid.uuid4(), ("dyn-1-2", "dyn-1-3")), 1.0).result
    assert isinstance(held, HoldView)
    demands = {EVENT: FAR}
    by_share = {c.section_id: c.price_cents for c in inventory.price_commands(100)}
    with_pace = {c.section_id: c.price_cents
                 for c in inventory.price_commands(100, demands=demands, rule=RULE, taken_before=before)}
    assert by_share["dyn"] == FLOOR + (CEILING - FLOOR) * 2 // 7
    assert with_pace["dyn"] == min(CEILING, START * 2)  # one step of at most 100 %, toward the ceiling
    assert "fixed" not in with_pace  # the negative control never moves
    # The next round, with no new holds, has no pace left: back toward the share's target.
    again = inventory.taken_by_section()
    later = {c.section_id: c.price_cents
             for c in inventory.price_commands(100, demands=demands, rule=RULE, taken_before=again)}
    assert later["dyn"] == by_share["dyn"]
