"""The static shape of an event: sections, rows, seat numbers, prices and their bounds.

Every seat of an event has an event-local ``seat_no`` (0..N-1), assigned in section order, then
row order, then seat number. The ``seat_no`` is what memory and Postgres store; labels such as
``A-2-17`` (``<section>-<row>-<number>``, numbers from 1) are computed on demand and parsed back
with two dict lookups, so no per-seat string or object is ever kept.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from enum import StrEnum

from actors.inventory.errors import LayoutError

NO_SEAT = -1


# Prices are int32 in the core's arrays (``EventInventory.prices``, ``TicketBook.price``) and
# integer in Postgres; the API bounds them lower still (router/schemas.py PRICE_CENTS_MAX).
PRICE_CENTS_MAX = 2**31 - 1


class SectionKind(StrEnum):
    SEATED = "seated"
    GENERAL_ADMISSION = "ga"


@dataclass(frozen=True, slots=True)
class RowSpec:
    label: str
    seats: int


@dataclass(frozen=True, slots=True)
class DynamicPricing:
    """A section whose price moves with demand (docs/organizers.md "Dynamic pricing"), only ever
    within ``[floor_cents, ceiling_cents]``; the spec's ``price_cents`` is then its current price."""

    floor_cents: int
    ceiling_cents: int


@dataclass(frozen=True, slots=True)
class SeatedSectionSpec:
    """A section of numbered seats; ``blocked`` lists seat labels never offered for sale."""

    section_id: str
    price_cents: int
    rows: tuple[RowSpec, ...]
    blocked: tuple[str, ...] = ()
    pricing: DynamicPricing | None = None  # None: a fixed price


@dataclass(frozen=True, slots=True)
class GeneralAdmissionSpec:
    """A general-admission (GA) pool: a capacity and a price, no seat numbers."""

    section_id: str
    price_cents: int
    capacity: int
    pricing: DynamicPricing | None = None  # None: a fixed price


SectionSpec = SeatedSectionSpec | GeneralAdmissionSpec


class Section:
    """One section, compiled: where its seats start and how its rows are laid out.

    ``price_cents`` is the price the layout was built with; the price a dynamic section sells at
    now is ``EventInventory.prices`` (a layout never changes once built)."""

    __slots__ = (
        "capacity",
        "first_seat_no",
        "index",
        "kind",
        "price_cents",
        "pricing",
        "row_by_label",
        "row_labels",
        "row_lengths",
        "row_prefixes",
        "row_starts",
        "section_id",
    )

    def __init__(self, index: int, spec: SectionSpec, first_seat_no: int) -> None:
        self.index = index
        self.section_id = spec.section_id
        self.price_cents = spec.price_cents
        self.pricing = spec.pricing
        self.first_seat_no = first_seat_no
        if isinstance(spec, GeneralAdmissionSpec):
            self.kind = SectionKind.GENERAL_ADMISSION
            self.capacity = spec.capacity
            self.row_labels: tuple[str, ...] = ()
            self.row_lengths: tuple[int, ...] = ()
            self.row_starts: tuple[int, ...] = ()
        else:
            self.kind = SectionKind.SEATED
            self.row_labels = tuple(row.label for row in spec.rows)
            self.row_lengths = tuple(row.seats for row in spec.rows)
            starts, seat_no = [], first_seat_no
            for length in self.row_lengths:
                starts.append(seat_no)
                seat_no += length
            self.row_starts = tuple(starts)
            self.capacity = seat_no - first_seat_no
        self.row_by_label = {label: row for row, label in enumerate(self.row_labels)}
        # "<section>-<row>-" per row: a label is its row's prefix plus the seat number.
        self.row_prefixes = tuple(f"{self.section_id}-{label}-" for label in self.row_labels)

    @property
    def seated(self) -> bool:
        return self.kind is SectionKind.SEATED

    @property
    def end_seat_no(self) -> int:
        """One past the last seat_no of this section (== first_seat_no for a GA pool)."""
        return self.first_seat_no + (self.capacity if self.seated else 0)

    def row_of(self, seat_no: int) -> int:
        return bisect_right(self.row_starts, seat_no) - 1

    def seat_label(self, seat_no: int) -> str:
        """The label of a seat of this section (``<section>-<row>-<number>``)."""
        starts = self.row_starts
        row = bisect_right(starts, seat_no) - 1
        return f"{self.row_prefixes[row]}{seat_no - starts[row] + 1}"


class Layout:
    """All sections of one event, with seat_no ⇄ label conversion."""

    __slots__ = (
        "_row_by_prefix",
        "blocked_seat_nos",
        "seat_count",
        "seated",
        "seated_starts",
        "section_by_id",
        "sections",
    )

    def __init__(self, specs: tuple[SectionSpec, ...]) -> None:
        _validate(specs)
        sections: list[Section] = []
        seat_no = 0
        for index, spec in enumerate(specs):
            section = Section(index, spec, seat_no)
            sections.append(section)
            seat_no = section.end_seat_no
        self.sections = tuple(sections)
        self.seat_count = seat_no
        self.section_by_id = {section.section_id: section for section in sections}
        self.seated = tuple(section for section in sections if section.seated)
        self.seated_starts = tuple(section.first_seat_no for section in self.seated)
        # "<section>-<row>" → (first seat_no of the row, seats in the row): parsing a label is one
        # rpartition and one dict lookup (see parse_label). A few bytes per row, none per seat.
        self._row_by_prefix = {
            prefix[:-1]: (start, length)
            for section in self.seated
            for prefix, start, length in zip(section.row_prefixes, section.row_starts, section.row_lengths, strict=True)
        }
        blocked: list[int] = []
        for spec in specs:
            if isinstance(spec, SeatedSectionSpec):
                for label in spec.blocked:
                    blocked_seat_no = self.parse_label(label)
                    if blocked_seat_no == NO_SEAT:
                        raise LayoutError(f"blocked seat {label!r} is not in the layout")
                    blocked.append(blocked_seat_no)
        if len(set(blocked)) != len(blocked):
            raise LayoutError("a blocked seat is listed twice")
        self.blocked_seat_nos = tuple(sorted(blocked))

    def section_of(self, seat_no: int) -> Section:
        """The seated section holding ``seat_no`` (a bisect over a handful of sections).

        Hot loops inline this as ``seated[bisect_right(seated_starts, seat_no) - 1]``: the call
        costs more than the bisect."""
        return self.seated[bisect_right(self.seated_starts, seat_no) - 1]

    def seat_label(self, seat_no: int) -> str:
        return self.seated[bisect_right(self.seated_starts, seat_no) - 1].seat_label(seat_no)

    def parse_label(self, label: str) -> int:
        """The seat_no of ``label``, or NO_SEAT (-1) if no such seat exists.

        Section ids may themselves contain '-' but row labels may not (``_validate``), so the
        number is split off the right and the rest, ``<section>-<row>``, names exactly one row:
        the same answer as splitting the row off too, with one dict lookup instead of two.
        """
        prefix, _, number_text = label.rpartition("-")
        row = self._row_by_prefix.get(prefix)
        if row is None or not number_text.isdecimal() or not number_text.isascii():
            return NO_SEAT
        start, length = row
        number = int(number_text)
        if not 1 <= number <= length:
            return NO_SEAT
        return start + number - 1


def _validate(specs: tuple[SectionSpec, ...]) -> None:
    if not specs:
        raise LayoutError("an event needs at least one section")
    ids = [spec.section_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise LayoutError("duplicate section ids")
    for spec in specs:
        if not spec.section_id:
            raise LayoutError("empty section id")
        if not 0 <= spec.price_cents <= PRICE_CENTS_MAX:
            raise LayoutError(f"section {spec.section_id}: price out of range")
        pricing = spec.pricing
        if pricing is not None and not 0 <= pricing.floor_cents <= spec.price_cents <= pricing.ceiling_cents:
            raise LayoutError(f"section {spec.section_id}: a dynamic price needs floor <= price <= ceiling")
        if isinstance(spec, GeneralAdmissionSpec):
            if spec.capacity <= 0:
                raise LayoutError(f"section {spec.section_id}: capacity must be positive")
            continue
        labels = [row.label for row in spec.rows]
        if not spec.rows or len(set(labels)) != len(labels):
            raise LayoutError(f"section {spec.section_id}: rows missing or duplicated")
        if any(row.seats <= 0 or not row.label or "-" in row.label for row in spec.rows):
            # A '-' in a row label would make "A-1-2-3" ambiguous; section ids may contain one.
            raise LayoutError(f"section {spec.section_id}: every row needs seats and a label without '-'")
