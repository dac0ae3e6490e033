"""Change records: what a command changed, in the order it changed it.

The shard's writer turns each record into SQL (one record → one statement or one row group) and
commits a batch of them in one transaction; replaying them in order into empty tables rebuilds
exactly the rows recovery reads back (``tests/replay.py`` is the executable reference).
Records are immutable, hold only plain values (UUIDs, str, int, float, tuples) and never an
in-memory object, so they can cross a process boundary and be retried safely.

They are ``NamedTuple``s, not frozen dataclasses: building a frozen slotted dataclass of 8 fields
costs 1.28 µs on the reference machine against 0.39 µs for a NamedTuple, and one hold emits 2-4
records plus its result, so frozen dataclasses alone would cap the core below ~150k holds/s
(docs/inventory.md). A NamedTuple is as immutable and as typed, and it already *is* a row for
``executemany``. Caveat: a NamedTuple equals any tuple with the same values, so the writer must
dispatch on ``type(change)``, never on equality.

Every status-change record carries ``actor`` (a user id or ``"system"``) and ``at_s`` (POSIX
seconds): the ``audit_log`` (who, what, when, from → to) is a projection of these records, so no
separate audit record is emitted twice for the same fact. Seats are ``seat_no`` integers (the
static ``seats`` table maps them to labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID

if TYPE_CHECKING:
    from actors.inventory.results import Result

SYSTEM_ACTOR = "system"


class HoldCreated(NamedTuple):
    """INSERT into ``holds`` (status ``held``). GA holds name their pool; seat holds their seats.

    Every item's price is ``total_cents / quantity`` (one section) unless ``item_prices_cents``
    gives one per seat (always for seats across sections): the prices a hold keeps
    (docs/inventory.md).
    """

    event_id: UUID
    hold_id: UUID
    user_id: str
    kind: str
    section_id: str | None
    seat_nos: tuple[int, ...]
    quantity: int
    total_cents: int
    expires_at_s: float
    at_s: float
    item_prices_cents: tuple[int, ...] | None = None


class HoldStatusChanged(NamedTuple):
    """UPDATE ``holds`` SET status = to_status WHERE hold_id AND status = from_status."""

    event_id: UUID
    hold_id: UUID
    from_status: str
    to_status: str
    actor: str
    at_s: float


class SeatsClaimed(NamedTuple):
    """INSERT ``seat_claims`` (event_id, seat_no, hold_id, state 'held'); the primary key on
    (event_id, seat_no) is the database's own guard against a double claim."""

    event_id: UUID
    hold_id: UUID
    seat_nos: tuple[int, ...]


class SeatsSold(NamedTuple):
    """UPDATE ``seat_claims`` SET state 'sold', order_id for these seats of the hold."""

    event_id: UUID
    hold_id: UUID
    order_id: UUID
    seat_nos: tuple[int, ...]


class SeatsReleased(NamedTuple):
    """DELETE ``seat_claims`` for these seats: they are on sale again (expiry, release, refund).

    The record names whose claims end, so the writer deletes only claims that still say so: a live
    hold's (``hold_id``, state 'held', ``order_id`` None), or a refunded order's (``order_id``,
    state 'sold', ``hold_id`` None: the core does not keep an order's hold, and ``orders.hold_id``
    is unique, so the order names the claim as well).
    """

    event_id: UUID
    seat_nos: tuple[int, ...]
    hold_id: UUID | None
    order_id: UUID | None


class PoolCountersChanged(NamedTuple):
    """UPDATE ``ga_pools`` SET held, sold WHERE held = held_before AND sold = sold_before.

    Absolute values, so the ``CHECK (held + sold <= capacity)`` constraint sees the true totals;
    and the counters the command found, so a database that disagrees (another writer sold from
    the same counters) refuses the update instead of being overwritten. One record per pool a
    command changes.
    """

    event_id: UUID
    section_id: str
    held: int
    sold: int
    held_before: int
    sold_before: int


class OrderCreated(NamedTuple):
    """INSERT into ``orders`` (status ``confirmed``)."""

    event_id: UUID
    order_id: UUID
    hold_id: UUID
    user_id: str
    total_cents: int
    currency: str
    at_s: float


class OrderStatusChanged(NamedTuple):
    event_id: UUID
    order_id: UUID
    from_status: str
    to_status: str
    actor: str
    at_s: float


class TicketsIssued(NamedTuple):
    """INSERT one ``tickets`` row per position of the parallel tuples (status ``valid``).

    ``seat_nos[i]`` is None for a GA unit of ``section_ids[i]``. A transfer issues one ticket
    with ``replaces`` naming the voided ticket it replaces (recovery follows these links).
    ``prices_cents[i]`` is the price the ticket was sold at (a transfer's ticket keeps its
    original's); empty only in records built before tickets kept their price.
    """

    event_id: UUID
    order_id: UUID
    user_id: str
    ticket_ids: tuple[UUID, ...]
    seat_nos: tuple[int | None, ...]
    section_ids: tuple[str, ...]
    at_s: float
    replaces: UUID | None = None
    prices_cents: tuple[int, ...] = ()


class TicketStatusChanged(NamedTuple):
    event_id: UUID
    ticket_id: UUID
    from_status: str
    to_status: str
    actor: str
    at_s: float


class CheckedIn(NamedTuple):
    """INSERT into ``checkins`` (unique per ticket) and mark the ticket ``checked_in``."""

    event_id: UUID
    ticket_id: UUID
    gate: str
    at_s: float


class EventStatusChanged(NamedTuple):
    event_id: UUID
    from_status: str
    to_status: str
    actor: str
    at_s: float


class EventSoldOut(NamedTuple):
    """The confirmation that sold an event's last unit: nothing is available or held any more. No
    table changes; the outbox's ``event.sold_out``. A refund that puts units back and a later sale
    that takes the last again record it again."""

    event_id: UUID
    at_s: float


class SectionPriceChanged(NamedTuple):
    """UPDATE ``sections.price_cents`` (guarded by ``from_cents``); audit (``section.price_changed``).

    A dynamic section's price, for holds placed from now on (docs/organizers.md "Dynamic pricing").
    """

    event_id: UUID
    section_id: str
    from_cents: int
    to_cents: int
    actor: str
    at_s: float


class IdempotencyRecorded(NamedTuple):
    """INSERT into ``idempotency_keys`` (user_id, key) → fingerprint and the serialized result.

    Postgres keeps keys ≥ 24 h; the core only keeps a bounded hot cache (see idempotency.py).
    """

    user_id: str
    key: str
    fingerprint: bytes
    result: Result
    at_s: float
    # The slot of the command's event, read from the hold, order or ticket id it names (each
    # carries its slot, `shards.slots.new_id`): a slot move copies the keys of its slots with their
    # events. None for an id that is not one of ours (and for keys read back from Postgres).
    slot: int | None = None


Change = (
    HoldCreated
    | HoldStatusChanged
    | SeatsClaimed
    | SeatsSold
    | SeatsReleased
    | PoolCountersChanged
    | OrderCreated
    | OrderStatusChanged
    | TicketsIssued
    | TicketStatusChanged
    | CheckedIn
    | EventStatusChanged
    | EventSoldOut
    | SectionPriceChanged
    | IdempotencyRecorded
)
