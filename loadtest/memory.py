"""Resident memory of one event's inventory, per seat.

    python -m loadtest.memory --seats 1000000

Builds an event of ``--seats`` seats (sections of 500 rows × 100 seats), sells 60 % of them
(orders of 2-4 seats, one buyer each, one ticket per seat) and holds another 10 % (live holds of
2-4 seats, one user each), through the recovery fast path (``load_event``) and the shard's hold
index and expiry heap. The number is **tracemalloc**'s count of bytes still allocated after
``gc.collect()``, taken from just before loading to after, divided by the seat count: it covers
the event's arrays, tickets, orders, users, hold objects and the shard's indexes, and excludes
the input rows (allocated before tracing starts) and the interpreter itself.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
import uuid
from collections.abc import Sequence

from actors.inventory.core import ShardInventory
from actors.inventory.layout import Layout, RowSpec, SeatedSectionSpec
from actors.inventory.recovery import HoldRow, OrderRow, TicketRow, load_event
from actors.inventory.sales import EventSettings
from cluster.settings import ShardBounds

ROWS_PER_SECTION = 500
ROW_SEATS = 100
SOLD_SHARE = 0.6
HELD_SHARE = 0.1


def build_layout(seats: int) -> Layout:
    sections, remaining, index = [], seats, 0
    while remaining > 0:
        rows = []
        for row in range(ROWS_PER_SECTION):
            if remaining <= 0:
                break
            rows.append(RowSpec(str(row + 1), min(ROW_SEATS, remaining)))
            remaining -= rows[-1].seats
        sections.append(SeatedSectionSpec(f"S{index}", 5_000, tuple(rows)))
        index += 1
    return Layout(tuple(sections))


def build_rows(layout: Layout) -> tuple[list[HoldRow], list[OrderRow], list[TicketRow]]:
    """Consecutive groups of 2, 3, 4, 2, ... seats: sold first, then held, the rest free."""
    holds, orders, tickets = [], [], []
    seats, seat_no, group = layout.seat_count, 0, 0
    sold_until, held_until = int(seats * SOLD_SHARE), int(seats * (SOLD_SHARE + HELD_SHARE))
    while True:
        size = 2 + group % 3
        if seat_no + size > held_until:
            break
        user_id = f"user-{group:07d}"
        seat_nos = tuple(range(seat_no, seat_no + size))
        if seat_no + size <= sold_until:
            order_id = uuid.UUID(int=(1 << 100) + group)
            orders.append(OrderRow(order_id, user_id, "confirmed"))
            for seat in seat_nos:
                section_id = layout.section_of(seat).section_id
                tickets.append(
                    TicketRow(uuid.UUID(int=(2 << 100) + seat), order_id, user_id, seat, section_id, "valid")
                )
        else:
            holds.append(HoldRow(uuid.UUID(int=(3 << 100) + group), user_id, "held", None, seat_nos, size, 600.0))
        seat_no += size
        group += 1
    return holds, orders, tickets


def measure(seats: int) -> tuple[float, int, int]:
    layout = build_layout(seats)
    holds, orders, tickets = build_rows(layout)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    shard = ShardInventory(ShardBounds.defaults().inventory_limits())
    event, live = load_event(uuid.UUID(int=1), layout, EventSettings(per_person_limit=8), holds, orders, tickets)
    shard.adopt_event(event, live)
    del live
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / seats, len(tickets), len(holds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bytes of inventory state per seat")
    parser.add_argument("--seats", type=int, default=1_000_000)
    arguments = parser.parse_args(argv)
    per_seat, ticket_count, hold_count = measure(arguments.seats)
    print(f"seats={arguments.seats} tickets={ticket_count} live_holds={hold_count} method=tracemalloc")
    print(f"bytes_per_seat={per_seat:.1f}")


if __name__ == "__main__":
    main()
