"""The audit rows a batch plan writes (issue 15, docs/organizers.md "Audit"): holds are counted,
not audited; check-ins, event edits and payments are; and the request context the actor shell
brackets an attributed request's changes with stamps exactly that request's rows — never a
neighbour's in the same batch. Also the read path's cursor: ours round-trip, anything else is 422."""

from __future__ import annotations

import uuid

import pytest

from actors.inventory.commands import BeginCheckout, CheckIn, ConfirmCheckout, HoldSeats
from actors.inventory.results import HoldView, OrderView, TicketView
from router.audit_api import decode_cursor, encode_cursor
from router.problems import ApiError
from shards.audit import AUDIT_COLUMNS
from shards.records import AUDIT_CONTEXT_END, AuditContext, EventFieldsChanged, PaymentRecorded
from shards.writer import plan_batch
from tests.writer_support import BASE_S, Run, sequential_ids

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=2**100 + 5)


def _row(row: tuple[object, ...]) -> dict[str, object]:
    return dict(zip(AUDIT_COLUMNS, row, strict=True))


def _sold(run: Run) -> tuple[HoldView, OrderView]:
    hold = run.apply(HoldSeats(EVENT, "ana", run.new_id(), ("A-1-2",)))
    assert isinstance(hold, HoldView)
    run.apply(BeginCheckout("ana", hold.hold_id))
    order = run.apply(ConfirmCheckout("ana", hold.hold_id, run.new_id(), (run.new_id(),)))
    assert isinstance(order, OrderView)
    return hold, order


def test_a_hold_writes_no_audit_row_and_a_check_in_does() -> None:
    """Holds aside: creating, pinning and expiring holds leaves the audit empty (no COPY at all on
    the hot path). Negative control: the same planner audits a check-in, with its gate."""
    run = Run(EVENT, sequential_ids())
    run.batches.append([])
    hold = run.apply(HoldSeats(EVENT, "ana", run.new_id(), ("A-1-3",)))
    assert isinstance(hold, HoldView)
    run.apply(BeginCheckout("ana", hold.hold_id))
    assert list(plan_batch(run.batches[-1]).audit) == []

    _, order = _sold(run)
    run.batches.append([])
    ticket = run.apply(CheckIn(order.tickets[0].ticket_id, "north"))
    assert isinstance(ticket, TicketView)
    (row,) = plan_batch(run.batches[-1]).audit
    assert _row(row)["action"] == "ticket.checked_in"
    assert (_row(row)["from_status"], _row(row)["to_status"]) == ("valid", "checked_in")
    assert _row(row)["detail"] == {"gate": "north"}


def test_the_request_context_stamps_its_own_rows_only() -> None:
    """The validator's context covers its check-in; the records after AUDIT_CONTEXT_END (the next
    command of the batch, made by no request) keep their own actor and no role or request id."""
    run = Run(EVENT, sequential_ids())
    _, order = _sold(run)
    run.batches.append([])
    run.apply(CheckIn(order.tickets[0].ticket_id, "south"))
    check_in = run.batches[-1]
    payment = PaymentRecorded(uuid.uuid4(), EVENT, uuid.uuid4(), order.order_id, "ana", "refund", "sim", None, "k",
                              900, "EUR", "succeeded", BASE_S)
    plan = plan_batch([AuditContext("val-7", "validator", "req-1"), *check_in, AUDIT_CONTEXT_END, payment])
    stamped, unstamped = (_row(row) for row in plan.audit)
    assert (stamped["actor"], stamped["actor_role"], stamped["request_id"]) == ("val-7", "validator", "req-1")
    assert (unstamped["actor"], unstamped["actor_role"], unstamped["request_id"]) == ("system", None, None)
    assert unstamped["action"] == "refund.succeeded"


def test_an_event_edit_is_audited_with_its_fields_before_and_after() -> None:
    change = EventFieldsChanged(EVENT, {"queue": {"enabled": True}}, {"queue": None}, BASE_S)
    (row,) = plan_batch([AuditContext("org-1", "organizer", "req-9"), change, AUDIT_CONTEXT_END]).audit
    values = _row(row)
    assert values["action"] == "event.updated"
    assert values["detail"] == {"fields": ["queue"], "from": {"queue": None}, "to": {"queue": {"enabled": True}}}
    assert (values["actor"], values["actor_role"]) == ("org-1", "organizer")


@pytest.mark.parametrize("audit_id", [0, 1, 2**63 - 1])
def test_our_cursors_round_trip(audit_id: int) -> None:
    assert decode_cursor(encode_cursor(audit_id)) == audit_id


@pytest.mark.parametrize("cursor", ["garbage!", "YTE4NDQ2NzQ0MDczNzA5NTUxNjE2", "Yi0x", "YS0x", "%%%", "YQ"])
def test_hostile_cursors_are_422(cursor: str) -> None:
    with pytest.raises(ApiError) as raised:
        decode_cursor(cursor)
    assert raised.value.status == 422
