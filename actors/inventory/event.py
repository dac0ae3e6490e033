"""One event's inventory state, in compact arrays, with the primitives that mutate it.

Per seat: one byte of status in ``seat_status`` (the byte *is* the seat-map character: ``.``
available, ``h`` held, ``s`` sold, ``x`` blocked, so a seat-map row is one slice and a decode)
and one ``int32`` in ``seat_ref``: the hold's position (in ``hold_table``) while held, the ticket serial once sold, -1
otherwise. Per section: ``held`` and ``sold`` counters (GA pools *are* these counters; seated
sections keep them so availability is O(sections)). Per user: a 16-byte key and one ``int32``
counting live held units plus live tickets, for the per-person limit. Per section, ``prices``
is the price a new hold pays now: the layout's price, moved by ``set_price`` for a dynamic
section. A hold keeps the prices it was placed at and a ticket the price it was sold at, so
nothing already held or sold is repriced.

The primitives here never decide: callers (hold_decisions.py, ticket_decisions.py) check first, then mutate.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from uuid import UUID

from actors.inventory.compact import KeyTable, user_key
from actors.inventory.holds import Hold
from actors.inventory.layout import Layout, Section
from actors.inventory.results import (
    HoldItem,
    HoldView,
    OrderView,
    SeatMapRow,
    SectionAvailability,
    TicketView,
)
from actors.inventory.sales import EventSettings
from actors.inventory.seating import AVAILABLE, BLOCKED, HELD, SOLD
from actors.inventory.tickets import ORDER_STATUSES, TICKET_STATUSES, OrderStatus, TicketBook, TicketStatus

NOBODY = -1
USER_LOAD_MAX = 0.5
# Builds a NamedTuple without its generated Python ``__new__`` (half the cost; see hold_decisions.py).
_new = tuple.__new__


class EventInventory:
    __slots__ = (
        "_free_positions",
        "blocked",
        "event_id",
        "held",
        "hold_table",
        "layout",
        "open_row",
        "pool_item",
        "prices",
        "seat_ref",
        "seat_status",
        "settings",
        "sold",
        "tickets",
        "user_units",
        "users",
    )

    def __init__(self, event_id: UUID, layout: Layout, settings: EventSettings) -> None:
        self.event_id = event_id
        self.layout = layout
        self.settings = settings
        section_count = len(layout.sections)
        self.seat_status = bytearray(b".") * layout.seat_count
        self.seat_ref = array("i", [-1]) * layout.seat_count
        self.held = array("i", [0]) * section_count
        self.sold = array("i", [0]) * section_count
        self.blocked = array("i", [0]) * section_count
        self.open_row = array("i", [0]) * section_count
        for seat_no in layout.blocked_seat_nos:
            self.seat_status[seat_no] = BLOCKED
            self.blocked[layout.section_of(seat_no).index] += 1
        # Users are looked up (and, on a first hold, missed) on every hold: at load ≤ 0.5 a miss
        # probes ~1.5-2.5 buckets where ≤ 0.75 probed up to ~8.5 (linear probing). The price is
        # 8-16 instead of 5-11 bytes of buckets per user, at most ~1.5 bytes per seat.
        self.users = KeyTable(load_max=USER_LOAD_MAX)
        self.user_units = array("i")
        self.hold_table: list[Hold | None] = []
        self._free_positions: list[int] = []
        self.tickets = TicketBook()
        self.prices = array("i", [section.price_cents for section in layout.sections])
        # GA items are identical for every unit of a pool at one price: build them once per price.
        self.pool_item = {s.index: HoldItem(None, s.section_id, s.price_cents) for s in layout.sections}

    def set_price(self, section: Section, price_cents: int) -> None:
        """The price new holds of ``section`` pay from now on (checked by the caller)."""
        self.prices[section.index] = price_cents
        self.pool_item[section.index] = HoldItem(None, section.section_id, price_cents)

    # --- users -------------------------------------------------------------------------------

    def find_user(self, user_id: str) -> int:
        return self.users.find(user_key(user_id))

    def intern_user(self, user_id: str) -> int:
        key = user_key(user_id)
        user = self.users.find(key)
        return user if user != NOBODY else self.add_user(key)

    def add_user(self, key: bytes) -> int:
        """Add a user known to be new (``users.find(key)`` returned NOBODY)."""
        self.user_units.append(0)
        return self.users.add(key)

    def units_of(self, user: int) -> int:
        return 0 if user == NOBODY else self.user_units[user]

    # --- counts ------------------------------------------------------------------------------

    def available(self, section: Section) -> int:
        index = section.index
        return section.capacity - self.held[index] - self.sold[index] - self.blocked[index]

    def sold_out(self) -> bool:
        """Every unit of every section sold (blocked seats are not for sale)."""
        return all(s.capacity == self.sold[s.index] + self.blocked[s.index] for s in self.layout.sections)

    # --- holds: positions, claims, releases --------------------------------------------------------

    def attach(self, hold: Hold) -> None:
        """Give ``hold`` a position in the hold table and claim its inventory (already checked to be available)."""
        if self._free_positions:
            position = self._free_positions.pop()
            self.hold_table[position] = hold
        else:
            position = len(self.hold_table)
            self.hold_table.append(hold)
        hold.position = position
        self.user_units[hold.user] += hold.quantity
        held = self.held
        if hold.pool is not None:
            held[hold.pool.index] += hold.quantity
            return
        status, ref = self.seat_status, self.seat_ref
        seated, starts = self.layout.seated, self.layout.seated_starts
        for seat_no in hold.seat_nos:
            status[seat_no] = HELD
            ref[seat_no] = position
            held[seated[bisect_right(starts, seat_no) - 1].index] += 1  # layout.section_of, inlined

    def detach(self, hold: Hold, sold: bool) -> None:
        """Free ``hold``'s position; its inventory is released (or was just sold, if ``sold``)."""
        self.hold_table[hold.position] = None
        self._free_positions.append(hold.position)
        if sold:
            return
        self.user_units[hold.user] -= hold.quantity
        if hold.pool is not None:
            self.held[hold.pool.index] -= hold.quantity
            return
        status, ref, held, open_row = self.seat_status, self.seat_ref, self.held, self.open_row
        seated, starts = self.layout.seated, self.layout.seated_starts
        for seat_no in hold.seat_nos:
            status[seat_no] = AVAILABLE
            ref[seat_no] = -1
            section = seated[bisect_right(starts, seat_no) - 1]  # layout.section_of, inlined
            index = section.index
            held[index] -= 1
            row = bisect_right(section.row_starts, seat_no) - 1  # _reopen, inlined
            if row < open_row[index]:
                open_row[index] = row

    def sell(self, hold: Hold, first_ticket: int) -> None:
        """Turn the hold's claims into sales; ticket serials start at ``first_ticket``."""
        if hold.pool is not None:
            self.held[hold.pool.index] -= hold.quantity
            self.sold[hold.pool.index] += hold.quantity
            return
        status, ref, held, sold = self.seat_status, self.seat_ref, self.held, self.sold
        seated, starts = self.layout.seated, self.layout.seated_starts
        for serial, seat_no in enumerate(hold.seat_nos, first_ticket):
            status[seat_no] = SOLD
            ref[seat_no] = serial
            index = seated[bisect_right(starts, seat_no) - 1].index  # layout.section_of, inlined
            held[index] -= 1
            sold[index] += 1

    def unsell(self, ticket: int) -> None:
        """Put a refunded ticket's seat or GA unit back on sale."""
        seat_ref = self.tickets.seat[ticket]
        self.user_units[self.tickets.owner[ticket]] -= 1
        if seat_ref < 0:
            self.sold[-1 - seat_ref] -= 1
            return
        self.seat_status[seat_ref] = AVAILABLE
        self.seat_ref[seat_ref] = -1
        section = self.layout.section_of(seat_ref)
        self.sold[section.index] -= 1
        self._reopen(section, seat_ref)

    def _reopen(self, section: Section, seat_no: int) -> None:
        row = section.row_of(seat_no)
        if row < self.open_row[section.index]:
            self.open_row[section.index] = row

    # --- views ---------------------------------------------------------------------------------

    def seat_items(self, seat_nos: tuple[int, ...]) -> tuple[HoldItem, ...]:
        """One item per seat, with its label and its section's price now; ``Layout.section_of``
        and ``Section.seat_label`` inlined (four calls per seat cost more than the two bisects)."""
        seated, starts, prices = self.layout.seated, self.layout.seated_starts, self.prices
        items = []
        for seat_no in seat_nos:
            section = seated[bisect_right(starts, seat_no) - 1]
            row_starts = section.row_starts
            row = bisect_right(row_starts, seat_no) - 1
            label = f"{section.row_prefixes[row]}{seat_no - row_starts[row] + 1}"
            items.append(_new(HoldItem, (label, section.section_id, prices[section.index])))
        return tuple(items)

    def pool_items(self, pool: Section, quantity: int) -> tuple[HoldItem, ...]:
        return (self.pool_item[pool.index],) * quantity

    def hold_items(self, hold: Hold) -> tuple[HoldItem, ...]:
        """The hold's items at the prices it keeps (``Hold.prices_cents``), not today's."""
        prices = hold.prices_cents
        pool = hold.pool
        if pool is not None:
            item = self.pool_item[pool.index]
            if item.price_cents != prices:
                item = HoldItem(None, pool.section_id, hold.item_prices()[0])
            return (item,) * hold.quantity
        items = self.seat_items(hold.seat_nos)
        locked = hold.item_prices()
        if all(item.price_cents == price for item, price in zip(items, locked, strict=True)):
            return items
        return tuple(HoldItem(item.seat, item.section_id, price) for item, price in zip(items, locked, strict=True))

    def hold_view(self, hold: Hold) -> HoldView:
        items = self.hold_items(hold)
        total_cents = 0
        for item in items:
            total_cents += item.price_cents
        return _new(
            HoldView,
            (
                hold.hold_id,
                self.event_id,
                hold.status,
                hold.expires_at_s,
                items,
                total_cents,
                self.settings.currency,
                hold.order_id,
            ),
        )

    def ticket_section(self, ticket: int) -> Section:
        seat_ref = self.tickets.seat[ticket]
        return self.layout.sections[-1 - seat_ref] if seat_ref < 0 else self.layout.section_of(seat_ref)

    def ticket_view(self, ticket: int) -> TicketView:
        book = self.tickets
        seat_ref = book.seat[ticket]
        section = self.ticket_section(ticket)
        gate = book.gate[ticket]
        return TicketView(
            ticket_id=UUID(bytes=book.ids.key(ticket)),
            event_id=self.event_id,
            order_id=UUID(bytes=book.order_ids.key(book.order[ticket])),
            seat=None if seat_ref < 0 else self.layout.seat_label(seat_ref),
            section_id=section.section_id,
            price_cents=book.price[ticket],
            status=TICKET_STATUSES[book.status[ticket]],
            checked_in_at_s=book.checked_in_at_s[ticket] if gate else None,
            gate=book.gate_names[gate] if gate else None,
        )

    def issued_order_view(
        self, order_id: UUID, ticket_ids: tuple[UUID, ...], seat_refs: Sequence[int], prices: Sequence[int]
    ) -> OrderView:
        """The view of an order confirmed just now, from the ids in hand.

        Equal to ``order_view(order)`` for a fresh order (its tickets are valid, unmoved and in
        serial order; test_inventory_fast_paths checks the equality), without rebuilding two
        UUIDs per ticket from bytes (``UUID(bytes=...)`` is Python code, ~1.5 µs here).
        """
        sections, seated, starts = self.layout.sections, self.layout.seated, self.layout.seated_starts
        event_id, valid = self.event_id, TicketStatus.VALID
        tickets = []
        total_cents = 0
        for ticket_id, seat_ref, price_cents in zip(ticket_ids, seat_refs, prices, strict=True):
            if seat_ref < 0:
                section, label = sections[-1 - seat_ref], None
            else:
                section = seated[bisect_right(starts, seat_ref) - 1]
                label = section.seat_label(seat_ref)
            total_cents += price_cents
            view = (ticket_id, event_id, order_id, label, section.section_id, price_cents, valid, None, None)
            tickets.append(_new(TicketView, view))
        return _new(
            OrderView,
            (order_id, event_id, OrderStatus.CONFIRMED, total_cents, self.settings.currency, tuple(tickets)),
        )

    def order_view(self, order: int) -> OrderView:
        book = self.tickets
        tickets = tuple(self.ticket_view(serial) for serial in book.buyer_tickets(order))
        first = book.order_first[order]
        # The original tickets' prices, as sold: what the buyer paid, whoever holds them now.
        total_cents = sum(book.price[first : first + book.order_count[order]])
        return OrderView(
            UUID(bytes=book.order_ids.key(order)),
            self.event_id,
            ORDER_STATUSES[book.order_status[order]],
            total_cents,
            self.settings.currency,
            tickets,
        )

    def availability(self) -> tuple[SectionAvailability, ...]:
        return tuple(
            SectionAvailability(
                s.section_id,
                s.kind.value,
                s.capacity,
                self.available(s),
                self.held[s.index],
                self.sold[s.index],
                self.blocked[s.index],
                self.prices[s.index],
            )
            for s in self.layout.sections
        )

    def seat_map(self, section_id: str) -> tuple[SeatMapRow, ...] | None:
        section = self.layout.section_by_id.get(section_id)
        if section is None or not section.seated:
            return None
        status = self.seat_status
        return tuple(
            SeatMapRow(label, status[start : start + length].decode("ascii"))
            for label, start, length in zip(section.row_labels, section.row_starts, section.row_lengths, strict=True)
        )
