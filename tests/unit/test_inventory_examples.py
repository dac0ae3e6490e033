"""Example-based tests of the inventory core: one per rule, each error code, each decision."""

from __future__ import annotations

import uuid
from itertools import count

import pytest

from actors.inventory.commands import (
    BeginCheckout,
    ChangeEventStatus,
    CheckIn,
    ConfirmCheckout,
    ExpireHold,
    FailCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import ErrorCode, InvariantViolation, LayoutError, invariant
from actors.inventory.layout import NO_SEAT, GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import HoldView, OrderView, Outcome, Rejection, TicketView, TransferView
from actors.inventory.sales import EventSettings, EventStatus, SaleWindow
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=1)
_ids = count(1000)


def new_id() -> uuid.UUID:
    return uuid.UUID(int=next(_ids))


def layout() -> Layout:
    return Layout(
        (
            SeatedSectionSpec("A", 1_000, (RowSpec("1", 5), RowSpec("2", 6), RowSpec("3", 7)), blocked=("A-1-5",)),
            GeneralAdmissionSpec("floor", 500, 4),
        )
    )


def shard(**settings: object) -> ShardInventory:
    inventory = ShardInventory(core_limits(items_max=6, idempotency_keys_max=3))
    inventory.create_event(EVENT, layout(), EventSettings(**settings))  # type: ignore[arg-type]
    return inventory


def code(outcome: Outcome) -> ErrorCode | None:
    return outcome.result.code if isinstance(outcome.result, Rejection) else None


def hold(inventory: ShardInventory, user: str, *seats: str, now_s: float = 0.0) -> HoldView:
    outcome = inventory.apply(HoldSeats(EVENT, user, new_id(), seats), now_s)
    assert isinstance(outcome.result, HoldView), outcome.result
    return outcome.result


def buy(inventory: ShardInventory, user: str, *seats: str) -> OrderView:
    view = hold(inventory, user, *seats)
    assert code(inventory.apply(BeginCheckout(user, view.hold_id), 1.0)) is None
    tickets = tuple(new_id() for _ in seats)
    outcome = inventory.apply(ConfirmCheckout(user, view.hold_id, new_id(), tickets), 2.0)
    assert isinstance(outcome.result, OrderView), outcome.result
    return outcome.result


def seats_of(inventory: ShardInventory) -> list[str]:
    return [row.seats for row in inventory.seat_map(EVENT, "A") or ()]


# --- layout ------------------------------------------------------------------------------------


def test_labels_round_trip_and_unknown_labels_are_rejected() -> None:
    """Every seat_no has one label and parses back; malformed or unknown labels give NO_SEAT."""
    plan = layout()
    assert [plan.seat_label(n) for n in (0, 4, 5, 17)] == ["A-1-1", "A-1-5", "A-2-1", "A-3-7"]
    assert all(plan.parse_label(plan.seat_label(n)) == n for n in range(plan.seat_count))
    for bad in ("A-1-6", "A-4-1", "B-1-1", "A-1-0", "A-1-x", "A1-1", "", "floor-1-1", "A-1-٣"):
        assert plan.parse_label(bad) == NO_SEAT, bad


def test_impossible_layouts_are_refused() -> None:
    with pytest.raises(LayoutError):
        Layout((GeneralAdmissionSpec("x", 1, 1), GeneralAdmissionSpec("x", 1, 1)))
    with pytest.raises(LayoutError):
        Layout((GeneralAdmissionSpec("x", 1, 0),))


def test_invariant_raises_even_under_optimisation() -> None:
    """invariant() is a function call, not an assert: python -O cannot remove it."""
    with pytest.raises(InvariantViolation, match="seat 3"):
        invariant(False, "seat %d", 3)


# --- holds ---------------------------------------------------------------------------------------


def test_seat_hold_is_all_or_nothing_and_names_the_unavailable_seats() -> None:
    inventory = shard()
    hold(inventory, "ana", "A-1-2")
    outcome = inventory.apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-1", "A-1-2", "A-1-5")), 0.0)
    assert code(outcome) is ErrorCode.SEATS_UNAVAILABLE and outcome.changes == ()
    assert isinstance(outcome.result, Rejection) and outcome.result.unavailable == ("A-1-2", "A-1-5")
    assert seats_of(inventory)[0] == ".h..x"  # A-1-1 was not held


def test_seat_hold_validation() -> None:
    inventory = shard()
    assert code(inventory.apply(HoldSeats(EVENT, "ana", new_id(), ("A-9-1",)), 0.0)) is ErrorCode.UNKNOWN_SEAT
    assert (
        code(inventory.apply(HoldSeats(EVENT, "ana", new_id(), ("A-1-1", "A-1-1")), 0.0)) is ErrorCode.VALIDATION_ERROR
    )
    assert code(inventory.apply(HoldSeats(EVENT, "ana", new_id(), ()), 0.0)) is ErrorCode.VALIDATION_ERROR
    too_many = HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 7)
    assert code(inventory.apply(too_many, 0.0)) is ErrorCode.VALIDATION_ERROR
    assert (
        code(inventory.apply(HoldBestAvailable(EVENT, "ana", new_id(), "floor", 1), 0.0)) is ErrorCode.VALIDATION_ERROR
    )
    assert (
        code(inventory.apply(HoldSeats(uuid.UUID(int=99), "ana", new_id(), ("A-1-1",)), 0.0))
        is ErrorCode.EVENT_NOT_FOUND
    )


def test_general_admission_counts_and_insufficient_inventory() -> None:
    inventory = shard()
    assert code(inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 3), 0.0)) is None
    outcome = inventory.apply(HoldGeneralAdmission(EVENT, "ben", new_id(), "floor", 2), 0.0)
    assert code(outcome) is ErrorCode.INSUFFICIENT_INVENTORY
    assert isinstance(outcome.result, Rejection) and outcome.result.available == 1
    floor = (inventory.availability(EVENT) or ())[1]
    assert (floor.capacity, floor.available, floor.held, floor.sold) == (4, 1, 3, 0)


def test_best_available_prefers_lowest_row_then_the_centre() -> None:
    inventory = shard()
    first = inventory.apply(HoldBestAvailable(EVENT, "ana", new_id(), "A", 3), 0.0).result
    assert isinstance(first, HoldView)
    # Row 1 has seats 1-4 free (5 is blocked); its centre is seat 3, then 2 and 4 (tie: lower first).
    assert [item.seat for item in first.items] == ["A-1-3", "A-1-2", "A-1-4"]
    second = inventory.apply(HoldBestAvailable(EVENT, "ben", new_id(), "A", 2), 0.0).result
    assert isinstance(second, HoldView)
    assert [item.seat for item in second.items] == ["A-1-1", "A-2-3"]  # not adjacent: best two anywhere


def test_best_available_adjacent_takes_the_most_central_run() -> None:
    inventory = shard()
    hold(inventory, "ana", "A-1-2")
    adjacent = inventory.apply(HoldBestAvailable(EVENT, "ben", new_id(), "A", 3, adjacent=True), 0.0).result
    assert isinstance(adjacent, HoldView)
    # Row 1 has no 3 free in a row; row 2 (6 seats) centres a run of 3 on seats 2-4 or 3-5: lower wins.
    assert [item.seat for item in adjacent.items] == ["A-2-2", "A-2-3", "A-2-4"]
    hold(inventory, "ana", "A-3-4")  # now no row has 6 free side by side, though 12 seats are free
    impossible = inventory.apply(HoldBestAvailable(EVENT, "cai", new_id(), "A", 6, adjacent=True), 0.0)
    assert code(impossible) is ErrorCode.INSUFFICIENT_INVENTORY
    assert isinstance(impossible.result, Rejection) and impossible.result.available == 12


def test_per_person_limit_counts_live_holds_and_bought_tickets() -> None:
    inventory = shard(per_person_limit=3)
    buy(inventory, "ana", "A-1-1", "A-1-2")
    outcome = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2), 3.0)
    assert code(outcome) is ErrorCode.LIMIT_EXCEEDED
    assert code(inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 1), 3.0)) is None


def test_sale_windows_and_presale_codes() -> None:
    windows = (SaleWindow("fans", 100.0, 200.0, "FAN"), SaleWindow("general", 200.0))
    inventory = shard(sale_windows=windows)

    def attempt(now_s: float, code_: str | None) -> ErrorCode | None:
        return code(
            inventory.apply(HoldGeneralAdmission(EVENT, f"u{now_s}{code_}", new_id(), "floor", 1, code_), now_s)
        )

    assert attempt(50.0, "FAN") is ErrorCode.SALE_NOT_OPEN
    assert attempt(150.0, None) is ErrorCode.PRESALE_CODE_INVALID
    assert attempt(150.0, "NOPE") is ErrorCode.PRESALE_CODE_INVALID
    assert attempt(150.0, "FAN") is None
    assert attempt(200.0, None) is None  # the presale window ends at 200 sharp, general opens


def test_paused_and_cancelled_events_are_not_on_sale() -> None:
    inventory = shard()
    for status in (EventStatus.PAUSED, EventStatus.CANCELLED):
        inventory.apply(ChangeEventStatus(EVENT, status, "organizer"), 0.0)
        assert code(inventory.apply(HoldSeats(EVENT, "ana", new_id(), ("A-1-1",)), 0.0)) is ErrorCode.SALE_NOT_OPEN


# --- lifecycle -----------------------------------------------------------------------------------


def test_expiry_happens_exactly_at_expires_at() -> None:
    inventory = shard(hold_seconds=60)
    view = hold(inventory, "ana", "A-1-1", now_s=0.0)
    assert inventory.expire_due(59.999) == []
    expired = inventory.expire_due(60.0)
    assert [o.result.status for o in expired if isinstance(o.result, HoldView)] == ["expired"]
    assert seats_of(inventory)[0] == "....x"
    assert code(inventory.apply(BeginCheckout("ana", view.hold_id), 61.0)) is ErrorCode.HOLD_EXPIRED
    assert code(inventory.apply(ReleaseHold("ana", view.hold_id), 61.0)) is ErrorCode.HOLD_NOT_ACTIVE


def test_checkout_after_expires_at_expires_the_hold_even_before_the_tick() -> None:
    inventory = shard(hold_seconds=60)
    view = hold(inventory, "ana", "A-1-1")
    outcome = inventory.apply(BeginCheckout("ana", view.hold_id), 60.0)
    assert code(outcome) is ErrorCode.HOLD_EXPIRED and outcome.changes  # the expiry is persisted
    assert seats_of(inventory)[0] == "....x"


def test_pinned_hold_does_not_expire_and_cannot_be_held_again() -> None:
    inventory = shard(hold_seconds=60)
    view = hold(inventory, "ana", "A-1-1")
    inventory.apply(BeginCheckout("ana", view.hold_id), 30.0)
    assert inventory.expire_due(1_000.0) == []
    assert code(inventory.apply(ExpireHold(view.hold_id), 1_000.0)) is ErrorCode.HOLD_NOT_ACTIVE
    assert code(inventory.apply(HoldSeats(EVENT, "ana", new_id(), ("A-1-1",)), 30.0)) is ErrorCode.SEATS_UNAVAILABLE
    assert code(inventory.apply(ReleaseHold("ana", view.hold_id), 30.0)) is ErrorCode.HOLD_NOT_ACTIVE
    assert code(inventory.apply(FailCheckout("ana", view.hold_id), 1_000.0)) is None
    assert seats_of(inventory)[0] == "....x"


def test_holds_of_others_are_not_found() -> None:
    inventory = shard()
    view = hold(inventory, "ana", "A-1-1")
    assert code(inventory.apply(ReleaseHold("ben", view.hold_id), 0.0)) is ErrorCode.HOLD_NOT_FOUND
    assert code(inventory.apply(ReleaseHold("ana", new_id()), 0.0)) is ErrorCode.HOLD_NOT_FOUND
    assert inventory.hold(view.hold_id, "ben") is None


def test_confirm_issues_one_ticket_per_seat_and_closes_the_hold() -> None:
    inventory = shard()
    order = buy(inventory, "ana", "A-2-1", "A-2-2")
    assert [t.seat for t in order.tickets] == ["A-2-1", "A-2-2"] and order.total_cents == 2_000
    assert seats_of(inventory)[1] == "ss...."
    assert [t.seat for t in inventory.user_tickets(EVENT, "ana")] == ["A-2-1", "A-2-2"]


# --- tickets -------------------------------------------------------------------------------------


def test_check_in_admits_once_then_reports_first_check_in() -> None:
    inventory = shard()
    ticket = buy(inventory, "ana", "A-1-1").tickets[0]
    assert isinstance(inventory.apply(CheckIn(ticket.ticket_id, "north"), 10.0).result, TicketView)
    again = inventory.apply(CheckIn(ticket.ticket_id, "south"), 11.0).result
    assert isinstance(again, Rejection) and again.code is ErrorCode.TICKET_ALREADY_USED
    assert (again.first_checked_in_at_s, again.gate) == (10.0, "north")
    assert code(inventory.apply(CheckIn(new_id(), "north"), 11.0)) is ErrorCode.TICKET_NOT_FOUND


def test_refund_returns_inventory_and_voids_tickets() -> None:
    inventory = shard()
    order = buy(inventory, "ana", "A-1-1", "A-1-2")
    outcome = inventory.apply(RefundOrder("ana", order.order_id), 5.0)
    assert isinstance(outcome.result, OrderView) and outcome.result.status == "refunded"
    assert [t.status for t in outcome.result.tickets] == ["refunded", "refunded"]
    assert seats_of(inventory)[0] == "....x"
    assert code(inventory.apply(CheckIn(order.tickets[0].ticket_id, "north"), 6.0)) is ErrorCode.TICKET_VOID
    assert code(inventory.apply(RefundOrder("ana", order.order_id), 6.0)) is ErrorCode.ORDER_ALREADY_REFUNDED
    assert code(inventory.apply(RefundOrder("ben", order.order_id), 6.0)) is ErrorCode.ORDER_NOT_FOUND


def test_refund_is_refused_once_a_ticket_was_checked_in() -> None:
    inventory = shard()
    order = buy(inventory, "ana", "A-1-1", "A-1-2")
    inventory.apply(CheckIn(order.tickets[1].ticket_id, "north"), 5.0)
    assert (
        code(inventory.apply(RefundOrder("ana", order.order_id, by_organizer=True), 6.0))
        is ErrorCode.TICKET_ALREADY_USED
    )
    assert seats_of(inventory)[0] == "ss..x"


def test_transfer_voids_the_old_ticket_and_moves_the_count() -> None:
    inventory = shard(per_person_limit=2)
    old = buy(inventory, "ana", "A-1-1").tickets[0]
    outcome = inventory.apply(TransferTicket("ana", old.ticket_id, "ben", new_id()), 5.0)
    assert isinstance(outcome.result, TransferView)
    assert outcome.result.old_ticket.status == "transferred" and outcome.result.new_ticket.seat == "A-1-1"
    assert code(inventory.apply(CheckIn(old.ticket_id, "north"), 6.0)) is ErrorCode.TICKET_VOID
    assert (
        code(inventory.apply(HoldGeneralAdmission(EVENT, "ben", new_id(), "floor", 2), 6.0)) is ErrorCode.LIMIT_EXCEEDED
    )
    assert code(inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2), 6.0)) is None
    # ana now has 2 held: a transfer back would put her over the limit.
    new_ticket = outcome.result.new_ticket.ticket_id
    assert code(inventory.apply(TransferTicket("ben", new_ticket, "ana", new_id()), 7.0)) is ErrorCode.LIMIT_EXCEEDED
    assert code(inventory.apply(TransferTicket("ana", new_ticket, "cai", new_id()), 7.0)) is ErrorCode.TICKET_NOT_FOUND


# --- idempotency ---------------------------------------------------------------------------------


def test_idempotent_replay_returns_the_first_result_without_a_second_effect() -> None:
    inventory = shard()
    first = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2, idempotency_key="k"), 0.0)
    retry = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2, idempotency_key="k"), 1.0)
    assert retry.replayed and retry.result == first.result and retry.changes == ()
    assert (inventory.availability(EVENT) or ())[1].held == 2
    assert type(first.changes[-1]).__name__ == "IdempotencyRecorded"
    other = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 1, idempotency_key="k"), 1.0)
    assert code(other) is ErrorCode.IDEMPOTENCY_KEY_REUSED
    # Keys are scoped by user: ben's "k" is a different key.
    assert not inventory.apply(
        HoldGeneralAdmission(EVENT, "ben", new_id(), "floor", 1, idempotency_key="k"), 1.0
    ).replayed


def test_rejections_of_keyed_commands_are_recorded_too() -> None:
    inventory = shard()
    hold(inventory, "ana", "A-1-1")
    first = inventory.apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-1",), idempotency_key="k"), 0.0)
    assert code(first) is ErrorCode.SEATS_UNAVAILABLE and len(first.changes) == 1
    assert inventory.apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-1",), idempotency_key="k"), 1.0).replayed


def test_key_memory_is_bounded_by_count_and_forgets_only_what_postgres_purged() -> None:
    """The count bound drops the oldest key and makes misses inconclusive (the shell must ask
    Postgres) until the purge job has deleted keys at least that old; age alone forgets nothing."""
    inventory = shard()
    cache = inventory.idempotency
    for at_s, key in enumerate(("a", "b", "c", "d")):
        inventory.apply(HoldGeneralAdmission(EVENT, f"user-{key}", new_id(), "floor", 1, idempotency_key=key), at_s)
    assert len(cache) == 3 and cache.lookup("user-a", "a") is None
    assert not cache.complete, "a dropped key may still be in Postgres: a miss is not final"
    assert cache.lookup("user-d", "d") is not None
    assert cache.forget_before(0.0) == 0 and not cache.complete  # Postgres may still hold "a" (recorded at 0.0)
    assert cache.forget_before(2.5) == 2 and cache.complete
    assert cache.lookup("user-b", "b") is None and cache.lookup("user-d", "d") is not None


# --- queue mode ---------------------------------------------------------------------------------


def test_queue_mode_refuses_holds_without_admission_and_a_keyed_retry_with_it_succeeds() -> None:
    """The whole hold rule is the core's: a queue-mode event refuses a hold the waiting room did
    not admit (403 QUEUE_TOKEN_REQUIRED), before any other check but the request's own validity.
    The refusal is not recorded under the key, so the same request retried with an admission
    token is decided anew (the admission is not part of the request's fingerprint)."""
    inventory = shard(queue_required=True)
    refused = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2, None, "k1"), 0.0)
    assert code(refused) is ErrorCode.QUEUE_TOKEN_REQUIRED and refused.changes == ()
    admitted = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2, None, "k1", True), 0.0)
    assert isinstance(admitted.result, HoldView)
    replay = inventory.apply(HoldGeneralAdmission(EVENT, "ana", new_id(), "floor", 2, None, "k1", False), 1.0)
    assert replay.replayed and replay.result == admitted.result  # the admitted hold, not a refusal
    assert code(inventory.apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-1",)), 0.0)) is ErrorCode.QUEUE_TOKEN_REQUIRED
    assert isinstance(shard().apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-1",)), 0.0).result, HoldView)
