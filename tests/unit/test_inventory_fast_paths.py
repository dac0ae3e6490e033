"""The hot-path shortcuts of the inventory core give exactly what the plain code gave.

Issue 3 made the command path faster by building NamedTuples with ``tuple.__new__`` (no field
checks by mypy), parsing labels with one dict lookup, probing the user table once for a new user,
building a fresh order's view from the command's ids, sorting the expiry heap when many holds
are due and calling ``invariant()`` only when a check fails. Each test here pins one of those
shortcuts to the slower reference it replaced, so a later "simplification" cannot change results.
"""

from __future__ import annotations

import hashlib
import uuid
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.inventory.changes import HoldCreated, PoolCountersChanged, SeatsClaimed, SeatsSold, TicketsIssued
from actors.inventory.commands import (
    BeginCheckout,
    ConfirmCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
)
from actors.inventory.compact import KeyTable, user_key
from actors.inventory.core import _POPS_BEFORE_SORT, ShardInventory
from actors.inventory.errors import InvariantViolation
from actors.inventory.holds import HoldStatus
from actors.inventory.invariants import check_hold, check_tickets
from actors.inventory.layout import NO_SEAT, GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec, Section
from actors.inventory.results import HoldItem, HoldView, OrderView
from actors.inventory.sales import EventSettings
from actors.inventory.seating import AVAILABLE, centre_order, pick_best
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=1)
_ids = count(10_000)


def new_id() -> uuid.UUID:
    return uuid.UUID(int=next(_ids))


def layout() -> Layout:
    # Section ids with '-' and multi-character rows exercise the right-to-left split.
    return Layout(
        (
            SeatedSectionSpec("A", 1_000, (RowSpec("1", 5), RowSpec("2", 6), RowSpec("AA", 7))),
            SeatedSectionSpec("B-1", 2_000, (RowSpec("1", 3), RowSpec("2", 12))),
            GeneralAdmissionSpec("floor", 500, 1_000),
        )
    )


def reference_parse(lay: Layout, label: str) -> int:
    """The label parser before issue 3: rsplit into three parts, two dict lookups."""
    parts = label.rsplit("-", 2)
    if len(parts) != 3:
        return NO_SEAT
    section_id, row_label, number_text = parts
    section = lay.section_by_id.get(section_id)
    if section is None or not number_text.isdecimal() or not number_text.isascii():
        return NO_SEAT
    row = section.row_by_label.get(row_label)
    if row is None:
        return NO_SEAT
    number = int(number_text)
    if not 1 <= number <= section.row_lengths[row]:
        return NO_SEAT
    return section.row_starts[row] + number - 1


def test_every_seat_label_round_trips_and_matches_the_reference_format() -> None:
    lay = layout()
    for seat_no in range(lay.seat_count):
        section = lay.section_of(seat_no)
        row = section.row_of(seat_no)
        expected = f"{section.section_id}-{section.row_labels[row]}-{seat_no - section.row_starts[row] + 1}"
        assert lay.seat_label(seat_no) == expected
        assert lay.parse_label(expected) == seat_no == reference_parse(lay, expected)


_PIECES = st.sampled_from(["A", "B", "B-1", "1", "2", "AA", "0", "01", "7", "12", "13", "", "-", "x", "٣", "+1"])


@settings(max_examples=2_000, deadline=None, database=None)
@given(st.lists(_PIECES, min_size=0, max_size=5).map("-".join))
def test_parse_label_agrees_with_the_reference_parser(label: str) -> None:
    lay = layout()
    assert lay.parse_label(label) == reference_parse(lay, label)


def test_user_key_matches_a_plain_blake2b_digest() -> None:
    for user_id in ("", "ana", "user-12345", "ü" * 100):
        assert user_key(user_id) == hashlib.blake2b(user_id.encode(), digest_size=16).digest()


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=300), st.sampled_from([0.5, 0.75]))
def test_find_bucket_then_add_at_equals_find_then_add(keys: list[bytes], load_max: float) -> None:
    fused, plain = KeyTable(load_max=load_max), KeyTable()
    for key in keys:
        found = fused.find_bucket(key)
        assert (found if found >= 0 else -1) == plain.find(key)
        if found < 0:
            assert fused.add_at(key, found) == plain.add(key)
    for serial, key in enumerate(dict.fromkeys(keys)):
        assert fused.find(key) == serial == plain.find(key)
        assert fused.key(serial) == key


def _shard() -> ShardInventory:
    inventory = ShardInventory(core_limits())
    inventory.create_event(EVENT, layout(), EventSettings(hold_seconds=60))
    return inventory


def test_ga_hold_records_and_view_carry_each_field_by_name() -> None:
    inventory = _shard()
    command = HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 3)
    outcome = inventory.apply(command, 5.0)
    created, counters = outcome.changes
    assert type(created) is HoldCreated and type(counters) is PoolCountersChanged
    assert created._asdict() == {
        "event_id": EVENT,
        "hold_id": command.hold_id,
        "user_id": "ana",
        "kind": "ga",
        "section_id": "floor",
        "seat_nos": (),
        "quantity": 3,
        "total_cents": 1_500,
        "expires_at_s": 65.0,
        "at_s": 5.0,
        "item_prices_cents": None,  # one price for all: total_cents / quantity
    }
    assert counters._asdict() == {"event_id": EVENT, "section_id": "floor", "held": 3, "sold": 0, "held_before": 0,
                                  "sold_before": 0}
    assert outcome.replayed is False and type(outcome.result) is HoldView
    assert outcome.result == inventory.hold(command.hold_id, "ana")
    assert outcome.result.items == (HoldItem(None, "floor", 500),) * 3
    assert outcome.result.status is HoldStatus.HELD and outcome.result.total_cents == 1_500


def test_seat_hold_records_and_view_carry_each_field_by_name() -> None:
    inventory = _shard()
    command = HoldSeats(EVENT, "ben", new_id(), ("B-1-2-12", "A-AA-07"))  # a leading zero, too
    outcome = inventory.apply(command, 0.0)
    created, claimed = outcome.changes
    seat_nos = (inventory.events[EVENT].layout.parse_label("B-1-2-12"), 5 + 6 + 6)
    assert type(created) is HoldCreated and type(claimed) is SeatsClaimed
    assert (created.kind, created.section_id, created.seat_nos, created.quantity) == ("seats", None, seat_nos, 2)
    assert (created.total_cents, created.expires_at_s, created.user_id) == (3_000, 60.0, "ben")
    assert claimed._asdict() == {"event_id": EVENT, "hold_id": command.hold_id, "seat_nos": seat_nos}
    assert outcome.result == inventory.hold(command.hold_id, "ben")
    assert [item.seat for item in outcome.result.items] == ["B-1-2-12", "A-AA-7"]
    # Seats of two prices: the record lists each seat's, the price the hold keeps.
    prices = tuple(item.price_cents for item in outcome.result.items)
    assert len(set(prices)) == 2 and created.item_prices_cents == prices


@pytest.mark.parametrize("kind", ["seats", "ga", "best"])
def test_a_confirmed_order_view_equals_the_order_read_back(kind: str) -> None:
    inventory = _shard()
    hold_id = new_id()
    if kind == "seats":
        hold = inventory.apply(HoldSeats(EVENT, "cai", hold_id, ("A-2-3", "B-1-1-1")), 0.0)
    elif kind == "ga":
        hold = inventory.apply(HoldGeneralAdmission(EVENT, "cai", hold_id, "floor", 2), 0.0)
    else:
        hold = inventory.apply(HoldBestAvailable(EVENT, "cai", hold_id, "A", 2, adjacent=True), 0.0)
    assert hold.ok
    inventory.apply(BeginCheckout("cai", hold_id), 1.0)
    command = ConfirmCheckout("cai", hold_id, new_id(), (new_id(), new_id()))
    outcome = inventory.apply(command, 2.0)
    assert type(outcome.result) is OrderView
    assert outcome.result == inventory.order(command.order_id, "cai")
    issued = next(change for change in outcome.changes if type(change) is TicketsIssued)
    assert issued.ticket_ids == command.ticket_ids and issued.replaces is None
    assert issued.section_ids == tuple(ticket.section_id for ticket in outcome.result.tickets)
    assert issued.prices_cents == tuple(ticket.price_cents for ticket in outcome.result.tickets)
    assert outcome.result.total_cents == hold.result.total_cents == sum(issued.prices_cents)
    if kind == "ga":
        assert issued.seat_nos == (None, None)
    else:
        sold = next(change for change in outcome.changes if type(change) is SeatsSold)
        assert issued.seat_nos == sold.seat_nos and sold.order_id == command.order_id
    inventory.check_all()


def test_many_due_holds_expire_in_expiry_then_arrival_order() -> None:
    """More than _POPS_BEFORE_SORT due holds take the sort path; ties keep arrival order."""
    inventory = _shard()
    count_held = _POPS_BEFORE_SORT * 2 + 7
    taken = []
    for i in range(count_held):
        hold_id = new_id()
        assert inventory.apply(HoldGeneralAdmission(EVENT, f"u{i}", hold_id, "floor", 1), float(i % 5)).ok
        taken.append((i % 5, i, hold_id))
    late = new_id()
    assert inventory.apply(HoldGeneralAdmission(EVENT, "late", late, "floor", 1), 100.0).ok
    views = [outcome.result for outcome in inventory.expire_due(64.0)]
    assert all(isinstance(view, HoldView) and view.status is HoldStatus.EXPIRED for view in views)
    assert [view.hold_id for view in views if isinstance(view, HoldView)] == [hold for _, _, hold in sorted(taken)]
    assert inventory.expire_due(159.0) == []
    assert [outcome.result for outcome in inventory.expire_due(160.0)] == [inventory.hold(late)]
    inventory.check_all()


def test_the_cheaper_per_command_checks_still_catch_corruption() -> None:
    """check_hold / check_tickets skip calls on the passing path; a planted fault must still raise."""
    inventory = _shard()
    view = inventory.apply(HoldSeats(EVENT, "dee", new_id(), ("A-1-1", "A-1-2")), 0.0).result
    assert isinstance(view, HoldView)
    event = inventory.events[EVENT]
    hold = next(hold for hold in event.hold_table if hold is not None)
    event.seat_ref[1] = hold.position + 1  # the second seat now points at another slot
    with pytest.raises(InvariantViolation, match="seat 1"):
        check_hold(event, hold)
    event.seat_ref[1] = hold.position
    event.held[0] = event.layout.sections[0].capacity + 1
    with pytest.raises(InvariantViolation, match="capacity"):
        check_hold(event, hold)
    event.held[0] = 2
    inventory.apply(BeginCheckout("dee", view.hold_id), 1.0)
    assert inventory.apply(ConfirmCheckout("dee", view.hold_id, new_id(), (new_id(), new_id())), 2.0).ok
    event.seat_ref[0] = 1  # seat 0 claims to be sold to ticket 1
    with pytest.raises(InvariantViolation, match="ticket 0 and seat 0"):
        check_tickets(event, range(2))


def reference_pick_best(status: bytearray, section: Section, quantity: int, first_row: int) -> list[int] | None:
    """Best-available before issue 3: walk each row in centre order and test every seat."""
    chosen: list[int] = []
    for row in range(first_row, len(section.row_starts)):
        start = section.row_starts[row]
        for offset in centre_order(section.row_lengths[row]):
            if status[start + offset] == AVAILABLE:
                chosen.append(start + offset)
                if len(chosen) == quantity:
                    return chosen
    return None


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
    st.data(),
)
def test_pick_best_agrees_with_the_centre_order_walk(row_lengths: list[int], data: st.DataObject) -> None:
    lay = Layout((SeatedSectionSpec("S", 100, tuple(RowSpec(str(i), n) for i, n in enumerate(row_lengths))),))
    section = lay.sections[0]
    free = data.draw(st.lists(st.booleans(), min_size=lay.seat_count, max_size=lay.seat_count))
    status = bytearray(AVAILABLE if is_free else ord("s") for is_free in free)
    quantity = data.draw(st.integers(min_value=1, max_value=lay.seat_count + 1))
    first_row = data.draw(st.integers(min_value=0, max_value=len(row_lengths)))
    assert pick_best(status, section, quantity, first_row) == reference_pick_best(status, section, quantity, first_row)
