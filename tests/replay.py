"""A reference projection of change records into rows: the executable spec of the writer.

``RowsProjection`` applies records in order to plain dicts shaped like the SQL tables and can
produce the rows recovery loads. The unit tests build state by commands, replay every change
here, reload the event from the projected rows and compare: if a change record were missing or
wrong, the reloaded event would differ. The shards' Postgres writer must give the same rows.

It lives with the tests, not in the core: it is a test's reference, so it is neither shipped nor
compiled with the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from actors.inventory.changes import (
    Change,
    CheckedIn,
    HoldCreated,
    HoldStatusChanged,
    IdempotencyRecorded,
    OrderCreated,
    OrderStatusChanged,
    PoolCountersChanged,
    SeatsClaimed,
    SeatsReleased,
    SeatsSold,
    SectionPriceChanged,
    TicketsIssued,
    TicketStatusChanged,
)
from actors.inventory.holds import LIVE_HOLD_STATUSES, HoldStatus
from actors.inventory.recovery import HoldRow, OrderRow, TicketRow
from actors.inventory.tickets import TicketStatus


class RowsProjection:
    def __init__(self) -> None:
        self.holds: dict[UUID, tuple[UUID, HoldRow]] = {}  # hold_id → (event_id, row)
        self.orders: dict[UUID, tuple[UUID, OrderRow]] = {}
        self.tickets: dict[UUID, tuple[UUID, TicketRow]] = {}  # insertion order = issue order
        self.seat_claims: dict[tuple[UUID, int], tuple[UUID, str]] = {}  # → (hold_id, state)
        self.pools: dict[tuple[UUID, str], tuple[int, int]] = {}  # → (held, sold)
        self.idempotency: list[IdempotencyRecorded] = []
        self.event_statuses: dict[UUID, str] = {}
        self.section_prices: dict[tuple[UUID, str], int] = {}  # sections.price_cents, where it moved
        self._order_holds: dict[UUID, UUID] = {}  # order_id → its hold (names a refund's claims)

    def apply_all(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.apply(change)

    def apply(self, change: Change) -> None:  # noqa: C901 - one branch per table, flat on purpose
        match change:
            case HoldCreated():
                row = HoldRow(
                    change.hold_id,
                    change.user_id,
                    HoldStatus.HELD,
                    change.section_id,
                    change.seat_nos,
                    change.quantity,
                    change.expires_at_s,
                    change.total_cents,
                    change.item_prices_cents,
                )
                self.holds[change.hold_id] = (change.event_id, row)
            case HoldStatusChanged():
                event_id, row = self.holds[change.hold_id]
                if row.status != change.from_status:
                    raise ValueError(f"hold {change.hold_id} is {row.status}, not {change.from_status}")
                self.holds[change.hold_id] = (event_id, row._replace(status=change.to_status))
            case SeatsClaimed():
                for seat_no in change.seat_nos:
                    if (change.event_id, seat_no) in self.seat_claims:
                        raise ValueError(f"seat {seat_no} claimed twice (primary key violation)")
                    self.seat_claims[(change.event_id, seat_no)] = (change.hold_id, "held")
            case SeatsSold():
                for seat_no in change.seat_nos:
                    self.seat_claims[(change.event_id, seat_no)] = (change.hold_id, "sold")
            case SeatsReleased():
                # The claims the record names: a live hold's, or (a refund) its order's sold ones.
                if change.order_id is None:
                    expected = (change.hold_id, "held")
                else:
                    expected = (self._order_holds[change.order_id], "sold")
                for seat_no in change.seat_nos:
                    claim = self.seat_claims.pop((change.event_id, seat_no))
                    if claim != expected:
                        raise ValueError(f"seat {seat_no} is claimed {claim}, the release expected {expected}")
            case PoolCountersChanged():
                key = (change.event_id, change.section_id)
                if self.pools.get(key, (0, 0)) != (change.held_before, change.sold_before):
                    raise ValueError(f"pool {change.section_id} is {self.pools.get(key)}, the change expected "
                                     f"{(change.held_before, change.sold_before)}")
                self.pools[key] = (change.held, change.sold)
            case OrderCreated():
                self._order_holds[change.order_id] = change.hold_id
                self.orders[change.order_id] = (change.event_id, OrderRow(change.order_id, change.user_id, "confirmed"))
            case OrderStatusChanged():
                event_id, order = self.orders[change.order_id]
                self.orders[change.order_id] = (event_id, order._replace(status=change.to_status))
            case TicketsIssued():
                for ticket_id, ticket_seat_no, section_id, price_cents in zip(
                    change.ticket_ids, change.seat_nos, change.section_ids, change.prices_cents, strict=True
                ):
                    issued = TicketRow(
                        ticket_id,
                        change.order_id,
                        change.user_id,
                        ticket_seat_no,
                        section_id,
                        TicketStatus.VALID,
                        replaces=change.replaces,
                        price_cents=price_cents,
                    )
                    self.tickets[ticket_id] = (change.event_id, issued)
            case TicketStatusChanged():
                event_id, ticket = self.tickets[change.ticket_id]
                self.tickets[change.ticket_id] = (event_id, ticket._replace(status=change.to_status))
            case CheckedIn():
                event_id, ticket = self.tickets[change.ticket_id]
                self.tickets[change.ticket_id] = (
                    event_id,
                    ticket._replace(status=TicketStatus.CHECKED_IN, checked_in_at_s=change.at_s, gate=change.gate),
                )
            case IdempotencyRecorded():
                self.idempotency.append(change)
            case SectionPriceChanged():
                self._set_price(change)
            case _:
                self.event_statuses[change.event_id] = change.to_status

    def _set_price(self, change: SectionPriceChanged) -> None:
        """UPDATE sections SET price_cents, guarded by the price the change found."""
        key = (change.event_id, change.section_id)
        if self.section_prices.get(key, change.from_cents) != change.from_cents:
            raise ValueError(f"section {change.section_id} is at {self.section_prices[key]}, the change expected "
                             f"{change.from_cents}")
        self.section_prices[key] = change.to_cents

    def event_rows(self, event_id: UUID) -> tuple[list[HoldRow], list[OrderRow], list[TicketRow]]:
        """What recovery reads for one event: live holds, orders, tickets in issue order."""
        holds = [row for owner, row in self.holds.values() if owner == event_id and row.status in LIVE_HOLD_STATUSES]
        orders = [row for owner, row in self.orders.values() if owner == event_id]
        tickets = [row for owner, row in self.tickets.values() if owner == event_id]
        return holds, orders, tickets
