"""The group-commit writer's planning, on its own: `plan_batch` folds a batch of change records
into one net effect per row, and executing the plans batch after batch gives the rows that the
core's reference projection (`RowsProjection`) describes.

The examples pin each folding rule the writer's docstring promises (a seat released and claimed
again in one batch is one update; a hold created and pinned in one batch is one insert in its
final state; rows that existed are updates guarded by the status the batch first saw, seat claims
by the claim and pools by the counters it first saw; the audit keeps every transition). The
Hypothesis test runs random command sequences on the real core, cuts the records into random
batches and compares, after every batch, the tables `TableModel` builds
from the plans (with `execute_plan`'s SQL semantics: guarded updates, primary keys, CHECKs, the
live-ticket index, statement order) with the projection. A negative control plants a folding bug
and shows the comparison catches it. The same comparison against real Postgres is
`tests/integration/test_writer_postgres.py`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from actors.inventory.changes import PoolCountersChanged, SectionPriceChanged
from actors.inventory.commands import (
    BeginCheckout,
    ConfirmCheckout,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    TransferTicket,
)
from actors.inventory.results import HoldView, OrderView
from shards import writer
from shards.writer import Diverged, plan_batch
from tests.replay import RowsProjection
from tests.writer_support import (
    BASE_S,
    HOLD_SECONDS,
    LAYOUT,
    POOL,
    POOL_CAPACITY,
    Run,
    TableModel,
    audit_row,
    event_rows_created,
    expected_audit,
    projected_rows,
    run_steps,
    sequential_ids,
    steps,
)

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=2**100 + 3)
SEAT = "A-1-2"
SEAT_NO = LAYOUT.parse_label(SEAT)


def fresh_run() -> Run:
    return Run(EVENT, sequential_ids())


def held(run: Run, user: str, seats: tuple[str, ...] = (SEAT,)) -> HoldView:
    view = run.apply(HoldSeats(EVENT, user, run.new_id(), seats))
    assert isinstance(view, HoldView), view
    return view


def committed(run: Run) -> TableModel:
    """Every batch so far executed, the event's rows first."""
    tables = TableModel()
    tables.execute(plan_batch([event_rows_created(EVENT)]))
    for batch in run.batches:
        tables.execute(plan_batch(batch))
    return tables


# --- the folding rules, one example each -------------------------------------------------------


def test_seat_released_and_claimed_again_in_one_batch_is_one_update() -> None:
    """An expiry frees the seat and another hold takes it in the same batch: the plan keeps one
    row for the seat, marked as existing with its final owner (an UPDATE), not a DELETE and an
    INSERT that the primary key would order wrongly."""
    run = fresh_run()
    first = held(run, "ana")
    run.batches.append([])
    run.now_s += HOLD_SECONDS
    expired = run.shard.expire_due(run.now_s)
    run.batches[-1].extend(change for outcome in expired for change in outcome.changes)
    second = held(run, "ben")

    plan = plan_batch(run.batches[-1])
    assert plan.seats == {(EVENT, SEAT_NO): (second.hold_id, "held", None)}
    assert plan.seats_existed == {(EVENT, SEAT_NO): (first.hold_id, "held", None)}  # the update's guard
    assert set(plan.hold_updates) == {first.hold_id.int} and plan.hold_updates[first.hold_id.int][1:3] == [
        "held", "expired"]
    assert committed(run).seat_claims == {(EVENT, SEAT_NO): (second.hold_id, "held", None)}


def test_seat_claimed_and_released_in_one_batch_writes_no_claim() -> None:
    run = fresh_run()
    view = held(run, "ana")
    run.apply(ReleaseHold("ana", view.hold_id))
    plan = plan_batch(run.batches[-1])
    assert plan.seats == {(EVENT, SEAT_NO): None} and plan.seats_existed == {}
    (row,) = plan.seat_hold_rows
    assert row[-2] == "released" and not plan.hold_updates
    assert committed(run).seat_claims == {}


def test_hold_created_and_pinned_in_one_batch_is_one_insert_in_its_final_state() -> None:
    run = fresh_run()
    view = held(run, "ana")
    run.now_s += 1.0
    assert isinstance(run.apply(BeginCheckout("ana", view.hold_id)), HoldView)
    plan = plan_batch(run.batches[-1])
    assert not plan.hold_updates
    (row,) = plan.seat_hold_rows
    assert plan.new_holds == {view.hold_id.int: row}
    assert (row[-2], row[-1]) == ("payment_pending", BASE_S + 1.0)  # status and updated_at are final
    assert row[HOLD_COLUMNS_INDEX["created_at"]] == BASE_S


HOLD_COLUMNS_INDEX = {name: index for index, name in enumerate(writer.HOLD_COLUMNS)}


def test_hold_bought_in_one_batch_inserts_sold_claims_and_valid_tickets() -> None:
    """Created, pinned and confirmed in one batch: the claim is inserted already sold (with its
    order), the hold already confirmed; nothing is an update."""
    run = fresh_run()
    view = held(run, "ana")
    run.apply(BeginCheckout("ana", view.hold_id))
    order = run.apply(ConfirmCheckout("ana", view.hold_id, run.new_id(), (run.new_id(),)))
    assert isinstance(order, OrderView)
    plan = plan_batch(run.batches[-1])
    assert not (plan.hold_updates or plan.order_updates or plan.ticket_updates or plan.seats_existed)
    assert plan.seats == {(EVENT, SEAT_NO): (view.hold_id, "sold", order.order_id)}
    assert plan.seat_hold_rows[0][-2] == "confirmed"
    assert [row[-2] for row in plan.new_tickets.values()] == ["valid"]


def test_rows_that_existed_are_guarded_updates_and_run_before_inserts() -> None:
    """A transfer in a later batch voids a ticket that exists (an update guarded by 'valid') and
    issues its replacement for the same seat (an insert). The live-ticket index allows it only if
    the update runs first, which `TableModel` and `execute_plan` both do."""
    run = fresh_run()
    view = held(run, "ana")
    run.apply(BeginCheckout("ana", view.hold_id))
    order = run.apply(ConfirmCheckout("ana", view.hold_id, run.new_id(), (run.new_id(),)))
    assert isinstance(order, OrderView)
    old = order.tickets[0].ticket_id
    run.batches.append([])
    new = run.new_id()
    run.apply(TransferTicket("ana", old, "ben", new))
    plan = plan_batch(run.batches[-1])
    assert list(plan.ticket_updates.values()) == [[old, "valid", "transferred", BASE_S]]
    assert list(plan.new_tickets) == [new.int]
    tables = committed(run)
    assert (tables.tickets[old]["status"], tables.tickets[new]["status"]) == ("transferred", "valid")


def test_guarded_update_refuses_a_database_that_disagrees() -> None:
    """The guard is what makes a diverged database fail the batch instead of being overwritten."""
    run = fresh_run()
    view = held(run, "ana")
    run.batches.append([])
    run.apply(BeginCheckout("ana", view.hold_id))
    tables = TableModel()
    tables.execute(plan_batch([event_rows_created(EVENT), *run.batches[0]]))
    tables.holds[view.hold_id]["status"] = "expired"  # what a resolver or another writer did
    with pytest.raises(Diverged):
        tables.execute(plan_batch(run.batches[1]))


def test_audit_keeps_every_transition_of_a_folded_batch() -> None:
    """Every audited transition is kept even where rows fold to their net effect. Holds are not
    audited (issue 15: they are counted, and their rows keep status and times), so the hold's
    three transitions in this batch leave no audit row while the order and ticket do."""
    run = fresh_run()
    view = held(run, "ana")
    run.apply(BeginCheckout("ana", view.hold_id))
    order = run.apply(ConfirmCheckout("ana", view.hold_id, run.new_id(), (run.new_id(),)))
    assert isinstance(order, OrderView)
    plan = plan_batch(run.batches[-1])
    trail = [audit_row(row) for row in plan.audit]
    assert [(entity, before, after) for entity, _, before, after, _, _ in trail] == [
        ("order", None, "confirmed"), ("ticket", None, "valid")]
    assert trail == expected_audit(run.batches[-1])


def test_the_last_pool_counters_of_a_batch_win_guarded_by_the_first() -> None:
    """The pool's last counters are written, guarded by the counters the batch's first change
    found (those the database must still have)."""
    run = fresh_run()
    assert isinstance(run.apply(HoldGeneralAdmission(EVENT, "cai", run.new_id(), POOL, 1)), HoldView)
    run.batches.append([])
    for user in ("ana", "ben"):
        assert isinstance(run.apply(HoldGeneralAdmission(EVENT, user, run.new_id(), POOL, 2)), HoldView)
    plan = plan_batch(run.batches[-1])
    assert list(plan.pools.values()) == [PoolCountersChanged(EVENT, POOL, 5, 0, 3, 0)]
    assert [(c.held_before, c.sold_before) for c in plan.pools_first.values()] == [(1, 0)]
    assert committed(run).pools[(EVENT, POOL)] == [5, 5, 0]


def test_a_sale_and_a_refund_guard_seats_by_the_claim_they_first_saw() -> None:
    """Selling a held seat expects the hold's 'held' claim; refunding it in a later batch expects
    the order's 'sold' claim (the refund does not know the hold: the unique order names it)."""
    run = fresh_run()
    view = held(run, "ana")
    run.batches.append([])
    run.apply(BeginCheckout("ana", view.hold_id))
    order = run.apply(ConfirmCheckout("ana", view.hold_id, run.new_id(), (run.new_id(),)))
    assert isinstance(order, OrderView)
    assert plan_batch(run.batches[-1]).seats_existed == {(EVENT, SEAT_NO): (view.hold_id, "held", None)}
    run.batches.append([])
    assert isinstance(run.apply(RefundOrder("ana", order.order_id)), OrderView)
    plan = plan_batch(run.batches[-1])
    assert plan.seats == {(EVENT, SEAT_NO): None}
    assert plan.seats_existed == {(EVENT, SEAT_NO): (None, "sold", order.order_id)}
    assert committed(run).seat_claims == {}


@pytest.mark.parametrize("planted", ["another hold's claim", "sold instead of held", "no claim"])
def test_a_seat_claim_that_disagrees_with_memory_fails_the_batch(planted: str) -> None:
    """A release finds the seat claimed otherwise than the batch first saw: `Diverged`, the
    tables unchanged (with the old row-exists check only "no claim" was refused)."""
    run = fresh_run()
    view = held(run, "ana")
    run.batches.append([])
    run.apply(ReleaseHold("ana", view.hold_id))
    tables = TableModel()
    tables.execute(plan_batch([event_rows_created(EVENT), *run.batches[0]]))
    other = uuid.UUID(int=2**90)  # any hold but the one memory knows
    key = (EVENT, SEAT_NO)
    if planted == "no claim":
        del tables.seat_claims[key]
    else:
        tables.seat_claims[key] = ((other, "held", None) if planted == "another hold's claim"
                                   else (view.hold_id, "sold", run.new_id()))
    before = dict(tables.seat_claims)
    with pytest.raises(Diverged, match="seat"):
        tables.execute(plan_batch(run.batches[1]))
    assert tables.seat_claims == before


def test_pool_counters_that_disagree_with_memory_fail_the_batch() -> None:
    """Another writer sold from the same counters: the pool no longer has what the batch first saw."""
    run = fresh_run()
    assert isinstance(run.apply(HoldGeneralAdmission(EVENT, "ana", run.new_id(), POOL, 2)), HoldView)
    tables = TableModel()
    tables.execute(plan_batch([event_rows_created(EVENT)]))
    tables.pools[(EVENT, POOL)] = [POOL_CAPACITY, 0, 2]
    with pytest.raises(Diverged, match="pool"):
        tables.execute(plan_batch(run.batches[0]))
    assert tables.pools[(EVENT, POOL)] == [POOL_CAPACITY, 0, 2]


# --- random sequences against the reference projection ----------------------------------------


def check_against_projection(instructions: list[tuple[Any, ...]]) -> None:
    """After every batch, the tables built from the plans equal the projection of every record so
    far, and the audit trail equals every transition."""
    run = run_steps(instructions, EVENT, sequential_ids())
    tables = TableModel()
    created = event_rows_created(EVENT)
    tables.execute(plan_batch([created]))
    projection = RowsProjection()
    seen: list[Any] = [created]  # the event's creation is its first audit row
    for batch in run.batches:
        tables.execute(plan_batch(batch))
        projection.apply_all(batch)
        seen.extend(batch)
        assert tables.rows() == projected_rows(projection, [EVENT])
    assert [audit_row(row) for row in tables.audit] == expected_audit(seen)


PLAN_SETTINGS = settings(max_examples=300, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PLAN_SETTINGS
@given(steps())
def test_plans_of_random_batches_give_the_projected_rows(instructions: list[tuple[Any, ...]]) -> None:
    check_against_projection(instructions)


def _transition_without_folding(new_rows, updates, key, from_status, to_status, at_s):  # type: ignore[no-untyped-def]
    """The planted bug: a transition of a row created in the same batch becomes an update."""
    row = updates.get(key.int)
    if row is None:
        updates[key.int] = [key, from_status, to_status, at_s]
    else:
        row[-2], row[-1] = to_status, at_s


def test_negative_control_unfolded_transitions_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """With folding into new rows switched off, the comparison must fail; if this control passes,
    the test above is blind."""
    monkeypatch.setattr(writer, "_transition", _transition_without_folding)
    blind = settings(PLAN_SETTINGS, max_examples=200, report_multiple_bugs=False)
    with pytest.raises((AssertionError, Diverged)):
        blind(given(steps())(check_against_projection))()


def test_price_changes_fold_to_one_guarded_update_and_each_is_audited() -> None:
    """Two moves of one section in a batch: one UPDATE from the first price seen to the last, and
    one audit row per move (system actor, from → to in cents, the section in the detail)."""
    plan = plan_batch([SectionPriceChanged(EVENT, "A", 1_000, 1_050, "system", BASE_S),
                       SectionPriceChanged(EVENT, "A", 1_050, 1_100, "system", BASE_S + 10)])
    assert plan.section_prices == {(EVENT, "A"): [1_000, 1_100]} and not plan.empty
    assert [audit_row(row) for row in plan.audit] == [
        ("event", EVENT, "1000", "1050", "system", BASE_S), ("event", EVENT, "1050", "1100", "system", BASE_S + 10)]
    assert [(row[-2], row[-1]) for row in plan.audit] == [
        ("section.price_changed", {"section": "A", "from_cents": 1_000, "to_cents": 1_050}),
        ("section.price_changed", {"section": "A", "from_cents": 1_050, "to_cents": 1_100})]
