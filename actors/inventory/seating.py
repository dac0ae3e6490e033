"""Best-available seat picking: lowest row first, then closest to the row's centre.

Deterministic by construction (ties go to the lower seat number), so a replayed command picks the
same seats. Rows before ``first_row`` are known to be full: the event keeps that lower bound per
section (see ``EventInventory.open_row``) so a nearly sold-out 100k-seat section is not rescanned
from its first row on every request.
"""

from __future__ import annotations

from functools import cache

from actors.inventory.layout import Section

AVAILABLE = ord(".")
HELD = ord("h")
SOLD = ord("s")
BLOCKED = ord("x")
_AVAILABLE_BYTE = b"."


@cache
def centre_order(length: int) -> tuple[int, ...]:
    """Seat offsets of a row of ``length`` seats, closest to the centre first.

    Distances are doubled so they stay integers: an even row has two equally central seats, and
    the lower-numbered one wins.
    """
    return tuple(sorted(range(length), key=lambda offset: (abs(2 * offset - (length - 1)), offset)))


def pick_best(status: bytearray, section: Section, quantity: int, first_row: int) -> list[int] | None:
    """The ``quantity`` best available seats of ``section`` (not necessarily together), or None."""
    chosen: list[int] = []
    for row in range(first_row, len(section.row_starts)):
        start = section.row_starts[row]
        length = section.row_lengths[row]
        if status.find(_AVAILABLE_BYTE, start, start + length) == -1:
            continue
        for offset in centre_order(length):
            if status[start + offset] == AVAILABLE:
                chosen.append(start + offset)
                if len(chosen) == quantity:
                    return chosen
    return None


def pick_adjacent(status: bytearray, section: Section, quantity: int, first_row: int) -> list[int] | None:
    """``quantity`` consecutive available seats in one row: the lowest row that has such a run,
    and in it the run whose middle is closest to the row's centre; or None."""
    block = _AVAILABLE_BYTE * quantity
    for row in range(first_row, len(section.row_starts)):
        start = section.row_starts[row]
        length = section.row_lengths[row]
        end = start + length
        best, best_distance = -1, length * 2
        position = status.find(block, start, end)
        while position != -1:
            # Twice the distance from the run's middle to the row's middle (integers, no floats).
            distance = abs(2 * (position - start) + quantity - length)
            if distance < best_distance:
                best, best_distance = position, distance
            elif distance > best_distance:
                break  # distances only grow once we are past the centre
            position = status.find(block, position + 1, end)
        if best != -1:
            return list(range(best, best + quantity))
    return None


def advance_open_row(status: bytearray, section: Section, first_row: int) -> int:
    """The first row at or after ``first_row`` with an available seat (or the row count)."""
    rows = len(section.row_starts)
    row = first_row
    while row < rows:
        start = section.row_starts[row]
        if status.find(_AVAILABLE_BYTE, start, start + section.row_lengths[row]) != -1:
            break
        row += 1
    return row
