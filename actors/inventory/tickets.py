"""Tickets and orders of one event, stored column-wise.

A ticket is a *serial* (its position) into parallel arrays: 16 bytes of id, the seat it
admits, its status, owner, order, check-in and the price it was sold at (4 bytes: a dynamic
section's price moves, and an order must not be repriced by it; docs/organizers.md). Measured
at 1M seats with 60 % sold this costs ~49 bytes per ticket, where a dataclass per ticket in a
dict costs ~350 (docs/inventory.md). Orders are
the same: a serial into arrays, with their original tickets as one contiguous serial range
(issued together at confirmation). A transfer appends a new ticket for the recipient and links
the old serial to it in ``successor``; transfers are rare, so that dict stays small.

``seat`` holds the seat_no for a seated ticket and ``-1 - section_index`` for a GA unit, so one
``array('i')`` covers both without a second column.
"""

from __future__ import annotations

from array import array
from enum import StrEnum

from actors.inventory.compact import KeyTable


class TicketStatus(StrEnum):
    VALID = "valid"
    CHECKED_IN = "checked_in"
    REFUNDED = "refunded"
    TRANSFERRED = "transferred"
    CANCELLED = "cancelled"  # the event was cancelled (its order refunded by the cancellation)


class OrderStatus(StrEnum):
    CONFIRMED = "confirmed"
    REFUNDED = "refunded"


# Status columns store an index into these tuples (one byte per ticket/order).
TICKET_STATUSES = tuple(TicketStatus)
ORDER_STATUSES = tuple(OrderStatus)
VALID = TICKET_STATUSES.index(TicketStatus.VALID)
CHECKED_IN = TICKET_STATUSES.index(TicketStatus.CHECKED_IN)
REFUNDED = TICKET_STATUSES.index(TicketStatus.REFUNDED)
TRANSFERRED = TICKET_STATUSES.index(TicketStatus.TRANSFERRED)
CANCELLED = TICKET_STATUSES.index(TicketStatus.CANCELLED)
ORDER_CONFIRMED = ORDER_STATUSES.index(OrderStatus.CONFIRMED)
ORDER_REFUNDED = ORDER_STATUSES.index(OrderStatus.REFUNDED)
NO_GATE = 0


def ga_seat_ref(section_index: int) -> int:
    """How a GA unit of a section is stored in the ``seat`` column."""
    return -1 - section_index


class TicketBook:
    """All tickets and orders of one event."""

    __slots__ = (
        "_gate_index",
        "checked_in_at_s",
        "gate",
        "gate_names",
        "ids",
        "order",
        "order_buyer",
        "order_count",
        "order_first",
        "order_ids",
        "order_status",
        "owner",
        "price",
        "seat",
        "status",
        "successor",
    )

    def __init__(self) -> None:
        self.ids = KeyTable()
        self.seat = array("i")
        self.status = bytearray()
        self.owner = array("i")
        self.order = array("i")
        self.price = array("i")  # cents, locked at hold time
        self.checked_in_at_s = array("d")
        self.gate = array("H")  # index into gate_names; 0 is "never checked in"
        self.gate_names: list[str] = [""]
        self._gate_index: dict[str, int] = {}
        self.successor: dict[int, int] = {}
        self.order_ids = KeyTable()
        self.order_buyer = array("i")
        self.order_first = array("i")
        self.order_count = array("i")
        self.order_status = bytearray()

    def __len__(self) -> int:
        return len(self.ids)

    def order_counts(self) -> tuple[int, int]:
        """(orders, orders refunded): an event cancellation's progress."""
        return len(self.order_status), self.order_status.count(ORDER_REFUNDED)

    def is_live(self, serial: int) -> bool:
        """Valid or checked in: the ticket admits (or admitted) its holder."""
        return self.status[serial] <= CHECKED_IN

    def add_ticket(self, ticket_key: bytes, seat_ref: int, owner: int, order: int, price_cents: int) -> int:
        serial = self.ids.add(ticket_key)
        self.seat.append(seat_ref)
        self.price.append(price_cents)
        self.status.append(VALID)
        self.owner.append(owner)
        self.order.append(order)
        self.checked_in_at_s.append(0.0)
        self.gate.append(NO_GATE)
        return serial

    def add_order(self, order_key: bytes, buyer: int, first_ticket: int, ticket_count: int) -> int:
        serial = self.order_ids.add(order_key)
        self.order_buyer.append(buyer)
        self.order_first.append(first_ticket)
        self.order_count.append(ticket_count)
        self.order_status.append(ORDER_CONFIRMED)
        return serial

    def check_in(self, serial: int, gate: str, at_s: float) -> None:
        gate_index = self._gate_index.get(gate)
        if gate_index is None:
            gate_index = len(self.gate_names)
            if gate_index > 0xFFFF:
                raise OverflowError("more than 65535 distinct gates")
            self.gate_names.append(gate)
            self._gate_index[gate] = gate_index
        self.status[serial] = CHECKED_IN
        self.checked_in_at_s[serial] = at_s
        self.gate[serial] = gate_index

    def current_tickets(self, order: int) -> list[int]:
        """The order's tickets as they stand now: each original followed through its transfers."""
        first = self.order_first[order]
        current = []
        for serial in range(first, first + self.order_count[order]):
            while serial in self.successor:
                serial = self.successor[serial]
            current.append(serial)
        return current

    def buyer_tickets(self, order: int) -> list[int]:
        """The order's tickets as its buyer may see them: each original followed through its
        transfers only to the newest ticket its buyer holds or last held. A ticket transferred away
        shows as the buyer's own, now ``transferred``, never as the recipient's (whose code would
        get the buyer into the venue in the recipient's place); one transferred back shows anew."""
        first = self.order_first[order]
        shown = []
        for serial in range(first, first + self.order_count[order]):
            buyer, latest = self.owner[serial], serial
            while serial in self.successor:
                serial = self.successor[serial]
                if self.owner[serial] == buyer:
                    latest = serial
            shown.append(latest)
        return shown

    def owned_by(self, owner: int) -> list[int]:
        """Serials of every ticket ``owner`` ever held, any status (a C-speed scan of one column)."""
        data = self.owner.tobytes()
        needle = array("i", [owner]).tobytes()
        width = len(needle)
        found, offset = [], data.find(needle)
        while offset != -1:
            if offset % width == 0:
                found.append(offset // width)
                offset = data.find(needle, offset + width)
            else:
                offset = data.find(needle, offset + 1)
        return found

    def memory_bytes(self) -> int:
        columns = (
            self.seat,
            self.owner,
            self.order,
            self.price,
            self.checked_in_at_s,
            self.gate,
            self.order_buyer,
            self.order_first,
            self.order_count,
        )
        return (
            self.ids.memory_bytes()
            + self.order_ids.memory_bytes()
            + len(self.status)
            + len(self.order_status)
            + sum(len(c) * c.itemsize for c in columns)
        )
