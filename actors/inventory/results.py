"""What commands and reads return: typed, immutable, with exactly the data the API needs.

Times are POSIX seconds (``*_s``); money is integer cents. Like the change records these are
``NamedTuple``s, for the construction cost measured in changes.py. A :class:`Rejection` carries the API
error code plus the extra fields some codes need (``unavailable``, ``available``,
``first_checked_in_at_s``, ``gate``).
"""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

from actors.inventory.changes import Change
from actors.inventory.errors import ErrorCode
from actors.inventory.holds import HoldStatus
from actors.inventory.tickets import OrderStatus, TicketStatus


class HoldItem(NamedTuple):
    """One seat or one GA unit of a hold (``seat`` is None for GA)."""

    seat: str | None
    section_id: str
    price_cents: int


class HoldView(NamedTuple):
    hold_id: UUID
    event_id: UUID
    status: HoldStatus
    expires_at_s: float
    items: tuple[HoldItem, ...]
    total_cents: int
    currency: str
    order_id: UUID | None = None

    @property
    def quantity(self) -> int:
        return len(self.items)


class TicketView(NamedTuple):
    ticket_id: UUID
    event_id: UUID
    order_id: UUID
    seat: str | None
    section_id: str
    price_cents: int
    status: TicketStatus
    checked_in_at_s: float | None = None
    gate: str | None = None


class OrderView(NamedTuple):
    order_id: UUID
    event_id: UUID
    status: OrderStatus
    total_cents: int
    currency: str
    tickets: tuple[TicketView, ...]


class TransferView(NamedTuple):
    """The voided ticket and the recipient's new one."""

    old_ticket: TicketView
    new_ticket: TicketView


class EventStatusView(NamedTuple):
    event_id: UUID
    status: str


class Rejection(NamedTuple):
    """An expected failure; ``code`` is the API error code."""

    code: ErrorCode
    detail: str
    unavailable: tuple[str, ...] = ()
    available: int | None = None
    first_checked_in_at_s: float | None = None
    gate: str | None = None


class SectionPriceView(NamedTuple):
    """A section's price after ``SetSectionPrice`` (unchanged if it already was that price)."""

    event_id: UUID
    section_id: str
    price_cents: int


Result = HoldView | OrderView | TicketView | TransferView | EventStatusView | SectionPriceView | Rejection


class Outcome(NamedTuple):
    """The result of one command and the changes to persist, in order.

    ``replayed`` is True when the result came from the idempotency cache: nothing was changed
    and ``changes`` is empty.
    """

    result: Result
    changes: tuple[Change, ...] = ()
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return not isinstance(self.result, Rejection)


class SectionAvailability(NamedTuple):
    section_id: str
    kind: str
    capacity: int
    available: int
    held: int
    sold: int
    blocked: int
    price_cents: int


class SeatMapRow(NamedTuple):
    """One row: one character per seat (``.`` available, ``h`` held, ``s`` sold, ``x`` blocked)."""

    label: str
    seats: str
