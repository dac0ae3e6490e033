"""Request bodies of the public API (API.md), validated strictly: wrong types, unknown fields, values
out of bounds, text Postgres cannot store and times outside years 1900-2999 are 422
VALIDATION_ERROR before anything reaches a shard.

Why the edge must be this strict: a shard actor group-commits many callers' changes in one
transaction, so one value Postgres refuses (a NUL in a seat label, a year-9999 time that overflows
on the way to UTC) used to fail every co-batched buyer. What passes these models can always be
stored. Every body model derives from `Strict`, whose catch-all check applies the weakest rule
(storable text, times in range) to every field of every model, including those declared in other
route modules; the typed fields below state the stricter, field-specific rules in the OpenAPI too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from cluster.settings import HOLD_QUANTITY_CEILING, HOLD_SEATS_CEILING

# Storable text ----------------------------------------------------------------------------------
# Characters no text field may hold:
# - U+0000: Postgres text and jsonb refuse it (the reproducer of issue 10);
# - surrogates U+D800-U+DFFF: they have no UTF-8 form, so no driver can send them (the JSON parser
#   already refuses lone surrogate escapes; this covers every other way in);
# - the 66 Unicode non-characters (U+FDD0-U+FDEF and the last two of every plane): storable, but
#   reserved for process-internal use, and a cheap way to break a downstream parser;
# - control characters (C0, DEL, C1) except tab, line feed and carriage return in long text.
# Single-line fields (names, labels, codes, filters) also refuse tab and line breaks: they end up
# in CSV exports, logs and headers, where a line break forges a row. What this does not catch:
# bidirectional overrides and look-alike characters, which are storable and need no edge rule.
_NONCHARACTERS = [(0xFDD0, 0xFDEF)] + [(plane * 0x10000 + 0xFFFE, plane * 0x10000 + 0xFFFF) for plane in range(17)]
_CONTROLS = [(0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F)]
_LINE_BREAKS = [(0x09, 0x0A), (0x0D, 0x0D)]


def _character_class(ranges: list[tuple[int, int]]) -> str:
    parts = (f"{chr(low)}-{chr(high)}" if low != high else re.escape(chr(low)) for low, high in ranges)
    return "[" + "".join(parts) + "]"


_UNSTORABLE_IN_TEXT = re.compile(_character_class([*_CONTROLS, (0xD800, 0xDFFF), *_NONCHARACTERS]))
_UNSTORABLE_IN_LINE = re.compile(_character_class([*_CONTROLS, *_LINE_BREAKS, (0xD800, 0xDFFF), *_NONCHARACTERS]))
# The same rule for OpenAPI readers and fuzzers (ECMA-262 syntax, basic plane only: the non-characters
# of the other planes are refused but not expressible in a pattern without the `u` flag).
LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]*$"
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]*$"


def unstorable_character(text: str, *, single_line: bool) -> str | None:
    """Where `text` holds a character it may not (e.g. "U+0000 at index 4"), or None."""
    found = (_UNSTORABLE_IN_LINE if single_line else _UNSTORABLE_IN_TEXT).search(text)
    return None if found is None else f"U+{ord(found.group()):04X} at index {found.start()}"


def storable_line(value: str) -> str:
    where = unstorable_character(value, single_line=True)
    if where is not None:
        raise ValueError(f"contains a control, surrogate or non-character ({where}); send plain one-line text")
    return value


def storable_text(value: str) -> str:
    where = unstorable_character(value, single_line=False)
    if where is not None:
        raise ValueError(f"contains a character that cannot be stored ({where})")
    return value


class _Documented:
    """Adds keywords to a type's JSON schema that the validators enforce in Python (a `pattern` run by
    pydantic's Rust regex could not express surrogates; a year range has no JSON Schema keyword)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        for name, value in self.keywords.items():
            schema.setdefault(name, value)
        return schema


LINE = (AfterValidator(storable_line), _Documented(pattern=LINE_PATTERN))
TEXT = (AfterValidator(storable_text), _Documented(pattern=TEXT_PATTERN))


# Times ------------------------------------------------------------------------------------------
# API.md: times are RFC 3339 with a UTC offset, years 1900-2999. The bound keeps every time far from
# the edges of Python's datetime (years 1-9999, where converting to UTC overflows) and of asyncpg's
# codec, and no sale of this system is that far in the past or future. Protocol constants (the API
# contract), not settings; so is the length bound: the longest RFC 3339 time (nanoseconds and an
# offset) has 35 characters, so 40 refuses only what cannot be a time, before the regex runs.
TIME_YEAR_MIN = 1900
TIME_YEAR_MAX = 2999
TIME_CHARS_MAX = 40
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def time_range_error(value: datetime) -> str | None:
    """Why `value` is not an API time (naive, or outside years 1900-2999 in UTC), or None."""
    if value.tzinfo is None:
        return "needs a UTC offset (RFC 3339), e.g. 2027-05-01T20:00:00Z"
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = value.year
    if not TIME_YEAR_MIN <= year <= TIME_YEAR_MAX or not TIME_YEAR_MIN <= value.year <= TIME_YEAR_MAX:
        return f"must be between years {TIME_YEAR_MIN} and {TIME_YEAR_MAX} (UTC)"
    return None


def _rfc3339_text(value: Any) -> Any:
    # Pydantic would also take Unix seconds ("1e20", 99999999999) or a bare date; API.md says RFC 3339.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) > TIME_CHARS_MAX or not RFC3339.match(value):
        raise ValueError("must be an RFC 3339 time with a UTC offset, e.g. 2027-05-01T20:00:00Z")
    return value


def _api_time(value: datetime) -> datetime:
    problem = time_range_error(value)
    if problem is not None:
        raise ValueError(problem)
    return value.astimezone(UTC)


ApiTime = Annotated[
    datetime, BeforeValidator(_rfc3339_text), AfterValidator(_api_time),
    _Documented(description=f"RFC 3339 with a UTC offset, years {TIME_YEAR_MIN}-{TIME_YEAR_MAX} in UTC")]


# Identifiers and bounds -------------------------------------------------------------------------
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_]+$")]
RowLabel = Annotated[str, StringConstraints(min_length=1, max_length=8, pattern=r"^[A-Za-z0-9]+$")]
# `<section>-<row>-<number>` (API.md), so a label is plain ASCII by construction. The number's
# digits are part of that format (a protocol constant), with room above SEATS_PER_ROW_MAX.
SEAT_NUMBER_DIGITS_MAX = 6
SeatLabel = Annotated[str, StringConstraints(
    min_length=5, max_length=64,
    pattern=rf"^[A-Za-z0-9_]{{1,32}}-[A-Za-z0-9]{{1,8}}-[0-9]{{1,{SEAT_NUMBER_DIGITS_MAX}}}$")]

# Bounds of an event document: contract limits, not settings. They define which documents are
# events at all (the OpenAPI publishes them as maxItems/maximum/maxLength), so they must be the
# same on every router and cannot change under a stored event; what a deployment may want to
# bound further is a setting (`event_seats_max` bounds the seat total, `hold_seats_max` and
# `hold_quantity_max` a hold).
SECTIONS_MAX = 200
ROWS_MAX = 2000
SEATS_PER_ROW_MAX = 2000
CAPACITY_MAX = 1_000_000
PRICE_CENTS_MAX = 10_000_000  # x the default 10 tickets per hold = the gateway's CHARGE_AMOUNT_CENTS_MAX
WINDOWS_MAX = 20
BLOCKED_MAX = 10_000
TITLE_CHARS_MAX = 200
NAME_CHARS_MAX = 200
DESCRIPTION_CHARS_MAX = 5000
PRESALE_CODE_CHARS_MAX = 64
# The ceilings of a hold body (HOLD_SEATS_CEILING, HOLD_QUANTITY_CEILING) live beside the
# `hold_seats_max` and `hold_quantity_max` settings they cap (cluster/settings.py).

# One line of storable text each (LINE); the description may span lines (TEXT).
ShortText = Annotated[str, StringConstraints(max_length=NAME_CHARS_MAX), *LINE]
Title = Annotated[str, StringConstraints(min_length=1, max_length=TITLE_CHARS_MAX), *LINE]
PresaleCode = Annotated[str, StringConstraints(min_length=1, max_length=PRESALE_CODE_CHARS_MAX), *LINE]
CountryCode = Annotated[str, StringConstraints(max_length=2), *LINE]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_CHARS_MAX), *TEXT]


def _field_is_storable(value: Any) -> Any:
    """The weakest rule, for any field of any body model: text storable, times within the API's years."""
    if isinstance(value, str):
        storable_text(value)
    elif isinstance(value, list | tuple | frozenset | set):
        for item in value:
            _field_is_storable(item)
    elif isinstance(value, datetime):
        problem = time_range_error(value)
        if problem is not None:
            raise ValueError(problem)
    return value


class Strict(BaseModel):
    """The base of every request body: unknown fields refused, types strict, every field storable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Declared here so that a body model added in any route module inherits it.
        return _field_is_storable(value)


class Venue(Strict):
    name: ShortText
    city: ShortText = ""
    country: CountryCode = ""


class Queue(Strict):
    enabled: bool = False
    admit_per_second: int = Field(50, ge=1, le=100_000)
    token_seconds: int = Field(600, ge=10, le=86_400)


class WaitingList(Strict):
    # Also at most the event's per_person_limit and the hold_quantity_max setting (router/queue_api.py).
    quantity: int = Field(ge=1, le=HOLD_QUANTITY_CEILING, description="tickets wanted when some come back")


class QueueJoin(Strict):
    """`POST /v1/events/{id}/queue`; the body is optional (none or `{}`: an ordinary join)."""

    waiting_list: WaitingList | None = Field(
        None, description="on a sold-out event: wait on the waiting list for this many tickets; ignored otherwise")


class SaleWindow(Strict):
    name: ShortText = ""
    starts_at: ApiTime
    ends_at: ApiTime | None = None
    code: PresaleCode | None = None

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # RFC 3339 strings → datetime

    @model_validator(mode="after")
    def _ordered(self) -> SaleWindow:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("a sale window must end after it starts")
        return self


class Row(Strict):
    label: RowLabel
    seats: int = Field(ge=1, le=SEATS_PER_ROW_MAX)


class Pricing(Strict):
    """A section's pricing (API.md "Organizers"): fixed, or dynamic between a floor and a ceiling
    that `price_cents`, the starting price, must lie within (docs/organizers.md "Dynamic pricing")."""

    mode: Literal["fixed", "dynamic"]
    floor_cents: int | None = Field(None, ge=0, le=PRICE_CENTS_MAX)
    ceiling_cents: int | None = Field(None, ge=0, le=PRICE_CENTS_MAX)

    @model_validator(mode="after")
    def _bounded(self) -> Pricing:
        given = self.floor_cents is not None and self.ceiling_cents is not None
        if self.mode == "dynamic" and not given:
            raise ValueError("dynamic pricing needs floor_cents and ceiling_cents")
        if self.mode == "fixed" and (self.floor_cents is not None or self.ceiling_cents is not None):
            raise ValueError("a fixed price takes no floor_cents or ceiling_cents")
        if given and self.floor_cents > self.ceiling_cents:  # type: ignore[operator]
            raise ValueError("floor_cents must not exceed ceiling_cents")
        return self


class PricedSection(Strict):
    """What GA and seated sections share about their price."""

    price_cents: int = Field(ge=0, le=PRICE_CENTS_MAX)
    pricing: Pricing | None = None

    @model_validator(mode="after")
    def _price_within_bounds(self) -> PricedSection:
        pricing = self.pricing
        if pricing is not None and pricing.mode == "dynamic" and not (
                pricing.floor_cents <= self.price_cents <= pricing.ceiling_cents):  # type: ignore[operator]
            raise ValueError("price_cents must lie within [floor_cents, ceiling_cents]")
        return self


class GaSection(PricedSection):
    id: Identifier
    name: ShortText
    kind: Literal["ga"]
    capacity: int = Field(ge=1, le=CAPACITY_MAX)


class SeatedSection(PricedSection):
    id: Identifier
    name: ShortText
    kind: Literal["seated"]
    rows: list[Row] = Field(min_length=1, max_length=ROWS_MAX)
    blocked: list[SeatLabel] = Field(default_factory=list, max_length=BLOCKED_MAX)

    @field_validator("rows")
    @classmethod
    def _unique_rows(cls, rows: list[Row]) -> list[Row]:
        labels = [row.label for row in rows]
        if len(set(labels)) != len(labels):
            raise ValueError("row labels must be unique within a section")
        return rows


Section = Annotated[GaSection | SeatedSection, Field(discriminator="kind")]


class EventCreate(Strict):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    title: Title
    category: ShortText = ""
    description: Description = ""
    venue: Venue
    starts_at: ApiTime
    ends_at: ApiTime | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"
    hold_seconds: int = Field(600, ge=1, le=3600)
    per_person_limit: int | None = Field(None, ge=1, le=1000)
    queue: Queue = Queue()
    sale_windows: list[SaleWindow] = Field(default_factory=list, max_length=WINDOWS_MAX)
    sections: list[Section] = Field(min_length=1, max_length=SECTIONS_MAX)

    @field_validator("hold_seconds", "per_person_limit", mode="before")
    @classmethod
    def _integers_only(cls, value: Any) -> Any:
        if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
            raise ValueError("must be an integer")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EventCreate:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        ids = [section.id for section in self.sections]
        if len(set(ids)) != len(ids):
            raise ValueError("section ids must be unique")
        return self


class EventPatch(Strict):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    status: Literal["on_sale", "paused", "cancelled"] | None = None
    queue: Queue | None = None
    sale_windows: list[SaleWindow] | None = Field(None, max_length=WINDOWS_MAX)

    @model_validator(mode="after")
    def _something(self) -> EventPatch:
        if self.status is None and self.queue is None and self.sale_windows is None:
            raise ValueError("nothing to change: give status, queue or sale_windows")
        return self


class HoldCreate(Strict):
    event_id: UUID
    seats: list[SeatLabel] | None = Field(None, min_length=1, max_length=HOLD_SEATS_CEILING)
    section: Identifier | None = None
    quantity: int | None = Field(None, ge=1, le=HOLD_QUANTITY_CEILING)
    best_available: bool = False
    adjacent: bool = False
    presale_code: PresaleCode | None = None

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("event_id", mode="before")
    @classmethod
    def _uuid_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return UUID(value)
            except ValueError:
                raise ValueError("event_id must be a UUID") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> HoldCreate:
        if (self.seats is None) == (self.quantity is None):
            raise ValueError("give exactly one of seats or quantity")
        if self.seats is not None:
            if self.section is not None or self.best_available or self.adjacent:
                raise ValueError("seats cannot be combined with section, best_available or adjacent")
            if len(set(self.seats)) != len(self.seats):
                raise ValueError("a seat is listed twice")
        else:
            if self.section is None:
                raise ValueError("quantity needs a section")
            if self.adjacent and not self.best_available:
                raise ValueError("adjacent applies to best_available holds only")
        return self


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
