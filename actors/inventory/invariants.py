"""The inventory's invariants, checked in two sizes.

* After every command, only what the command touched (its hold's seats, its pool or sections,
  its tickets, its users): O(size of the command). Checking a million seats per command would
  cost ~1 ms and cap an actor near 1k commands/s.
* :func:`check_all` recounts everything from the raw arrays: after recovery, after loading, and
  in tests. O(seats + tickets + holds).

Both raise :class:`InvariantViolation` (never a bare assert, which ``python -O`` strips).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable

from actors.inventory.errors import invariant
from actors.inventory.event import EventInventory
from actors.inventory.holds import LIVE_HOLD_STATUSES, Hold
from actors.inventory.layout import Section
from actors.inventory.seating import BLOCKED, HELD, SOLD


def check_section(event: EventInventory, section: Section) -> None:
    index = section.index
    held, sold, blocked = event.held[index], event.sold[index], event.blocked[index]
    # One comparison on the passing path; invariant() is called only to raise its message.
    if held < 0 or sold < 0 or held + sold + blocked > section.capacity:
        invariant(held >= 0 and sold >= 0, "%s: negative counter held=%d sold=%d", section.section_id, held, sold)
        invariant(
            held + sold + blocked <= section.capacity,
            "%s: held %d + sold %d + blocked %d > capacity",
            section.section_id,
            held,
            sold,
            blocked,
        )


def check_hold(event: EventInventory, hold: Hold) -> None:
    """A live hold owns its seats exclusively; an ended one owns none; the user's count and the
    touched sections stay in range.

    Runs after every hold command, so the passing path avoids calls: ``invariant`` is reached only
    when a condition fails, and a run of seats in one section checks that section once.
    """
    if event.user_units[hold.user] < 0:
        invariant(False, "negative per-user count")
    if hold.pool is not None:
        check_section(event, hold.pool)
        return
    status, ref, position = event.seat_status, event.seat_ref, hold.position
    live = hold.status in LIVE_HOLD_STATUSES
    seated, starts = event.layout.seated, event.layout.seated_starts
    checked = None
    for seat_no in hold.seat_nos:
        owned = status[seat_no] == HELD and ref[seat_no] == position
        if owned != live:
            invariant(False, "seat %d: held=%s but hold %s is %s", seat_no, owned, hold.hold_id, hold.status)
        section = seated[bisect_right(starts, seat_no) - 1]  # layout.section_of, inlined
        if section is not checked:
            check_section(event, section)
            checked = section


def check_tickets(event: EventInventory, serials: Iterable[int]) -> None:
    """Each live seated ticket is the one ticket its sold seat points at. Like ``check_hold``,
    the passing path makes no call but one ``check_section`` per run of tickets in a section."""
    book = event.tickets
    seats, owners, units = book.seat, book.owner, event.user_units
    status, ref, sections = event.seat_status, event.seat_ref, event.layout.sections
    seated, starts = event.layout.seated, event.layout.seated_starts
    checked = None
    for serial in serials:
        seat_no = seats[serial]
        if units[owners[serial]] < 0:
            invariant(False, "negative per-user count")
        if seat_no < 0:
            section = sections[-1 - seat_no]
        else:
            points_here = status[seat_no] == SOLD and ref[seat_no] == serial
            if points_here != book.is_live(serial):
                invariant(False, "ticket %d and seat %d disagree", serial, seat_no)
            section = seated[bisect_right(starts, seat_no) - 1]  # layout.section_of, inlined
        if section is not checked:
            check_section(event, section)
            checked = section


def check_all(event: EventInventory) -> None:
    """Recount the whole event from its arrays and compare with every counter."""
    holds = [hold for hold in event.hold_table if hold is not None]
    _check_holds(event, holds)
    _check_sections(event, holds)
    _check_tickets(event)
    _check_users(event, holds)


def _check_holds(event: EventInventory, holds: list[Hold]) -> None:
    for position, hold in enumerate(event.hold_table):
        if hold is not None:
            invariant(hold.position == position and hold.live, "position %d holds a dead or misplaced hold", position)
            check_hold(event, hold)
    # Every held seat is claimed by a live hold that lists it: with check_hold above (each listed
    # seat points back at its hold), no seat can be in two holds.
    held_seats = sum(len(hold.seat_nos) for hold in holds)
    invariant(event.seat_status.count(HELD) == held_seats, "held seats without a hold")


def _check_sections(event: EventInventory, holds: list[Hold]) -> None:
    pool_held = Counter[int]()
    for hold in holds:
        if hold.pool is not None:
            pool_held[hold.pool.index] += hold.quantity
    pool_sold = Counter[int]()
    book = event.tickets
    for serial in range(len(book)):
        if book.seat[serial] < 0 and book.is_live(serial):
            pool_sold[-1 - book.seat[serial]] += 1
    status = event.seat_status
    for section in event.layout.sections:
        check_section(event, section)
        index, start, end = section.index, section.first_seat_no, section.end_seat_no
        if section.seated:
            counts = (
                status.count(HELD, start, end),
                status.count(SOLD, start, end),
                status.count(BLOCKED, start, end),
            )
        else:
            counts = (pool_held[index], pool_sold[index], 0)
        expected = (event.held[index], event.sold[index], event.blocked[index])
        invariant(counts == expected, "%s: counted %s, counters say %s", section.section_id, counts, expected)
        invariant(
            event.open_row[index] <= _first_open_row(event, section),
            "%s: open_row hint skips an open row",
            section.section_id,
        )


def _first_open_row(event: EventInventory, section: Section) -> int:
    for row, (start, length) in enumerate(zip(section.row_starts, section.row_lengths, strict=True)):
        if event.seat_status.find(b".", start, start + length) != -1:
            return row
    return len(section.row_starts)


def _check_tickets(event: EventInventory) -> None:
    book = event.tickets
    live_seated = 0
    for serial in range(len(book)):
        if book.is_live(serial) and book.seat[serial] >= 0:
            live_seated += 1
            seat_no = book.seat[serial]
            invariant(
                event.seat_status[seat_no] == SOLD and event.seat_ref[seat_no] == serial,
                "live ticket %d does not own seat %d",
                serial,
                seat_no,
            )
    # Each sold seat points at one live ticket and each live ticket at its own seat: one each.
    invariant(live_seated == event.seat_status.count(SOLD), "sold seats and live tickets differ")
    for order in range(len(book.order_ids)):
        invariant(book.order_count[order] > 0, "order %d has no tickets", order)


def _check_users(event: EventInventory, holds: list[Hold]) -> None:
    units = [0] * len(event.users)
    for hold in holds:
        units[hold.user] += hold.quantity
    book = event.tickets
    for serial in range(len(book)):
        if book.is_live(serial):
            units[book.owner[serial]] += 1
    invariant(units == event.user_units.tolist(), "per-user counts differ from holds and tickets")
