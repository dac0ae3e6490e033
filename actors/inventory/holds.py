"""Holds: a user's claim on seats or GA units for a few minutes, and its lifecycle.

::

    held ──BeginCheckout──> payment_pending ──ConfirmCheckout──> confirmed (tickets issued)
     │  │                        └──────────FailCheckout──────> failed     (inventory released)
     │  └──ReleaseHold (owner)──> released
     └──ExpireHold (at expires_at)──> expired

``payment_pending`` is pinned: it never expires, because a payment may be in flight. Only ``held``
and ``payment_pending`` are *live* (they own inventory and count towards the per-person limit).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from actors.inventory.event import EventInventory
    from actors.inventory.layout import Section


class HoldStatus(StrEnum):
    HELD = "held"
    PAYMENT_PENDING = "payment_pending"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    RELEASED = "released"
    FAILED = "failed"


LIVE_HOLD_STATUSES = frozenset({HoldStatus.HELD, HoldStatus.PAYMENT_PENDING})


class HoldKind(StrEnum):
    SEATS = "seats"  # explicit or best-available seats: ``seat_nos`` is set
    GENERAL_ADMISSION = "ga"  # ``quantity`` units of ``pool``


class Hold:
    """One hold. Mutable on purpose: only its ``status`` (and, once sold, ``order_id``) change.

    ``position`` is the hold's index in its event's ``hold_table``; held seats point at it from the
    event's ``seat_ref`` array, which is how "no seat in two holds" is checked cheaply.

    ``prices_cents`` is the price the hold keeps whatever a dynamic section's price does later:
    one int for every item (a GA hold, or seats of one price), or one int per seat, in
    ``seat_nos`` order, for seats of several prices. An int costs the hot path nothing (the
    section's price object is shared); the tuple only exists for holds across sections.
    """

    __slots__ = (
        "event",
        "expires_at_s",
        "hold_id",
        "kind",
        "order_id",
        "pool",
        "position",
        "prices_cents",
        "quantity",
        "seat_nos",
        "status",
        "user",
    )

    def __init__(
        self,
        hold_id: UUID,
        event: EventInventory,
        user: int,
        pool: Section | None,
        seat_nos: tuple[int, ...],
        quantity: int,
        expires_at_s: float,
        prices_cents: int | tuple[int, ...],
    ) -> None:
        self.hold_id = hold_id
        self.event = event
        self.user = user
        self.kind = HoldKind.GENERAL_ADMISSION if pool is not None else HoldKind.SEATS
        self.pool = pool
        self.seat_nos = seat_nos
        self.quantity = quantity
        self.expires_at_s = expires_at_s
        self.prices_cents = prices_cents
        self.status = HoldStatus.HELD
        self.position = -1
        self.order_id: UUID | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE_HOLD_STATUSES

    def item_prices(self) -> tuple[int, ...]:
        """The locked price of each item (seat or GA unit), in item order."""
        prices = self.prices_cents
        return (prices,) * self.quantity if isinstance(prices, int) else prices
