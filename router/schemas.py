"""Request bodies of the public API (API.md), validated strictly: wrong types, unknown fields and
values out of bounds are 422 VALIDATION_ERROR before anything reaches a shard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_]+$")]
RowLabel = Annotated[str, StringConstraints(min_length=1, max_length=8, pattern=r"^[A-Za-z0-9]+$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
SeatLabel = Annotated[str, StringConstraints(min_length=5, max_length=64)]

# Bounds of an event document (the seat total is bounded by the `event_seats_max` setting).
SECTIONS_MAX = 200
ROWS_MAX = 2000
SEATS_PER_ROW_MAX = 2000
CAPACITY_MAX = 1_000_000
PRICE_CENTS_MAX = 100_000_000
WINDOWS_MAX = 20
BLOCKED_MAX = 10_000
DESCRIPTION_CHARS_MAX = 5000
PRESALE_CODE_CHARS_MAX = 64


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Venue(Strict):
    name: ShortText
    city: ShortText = ""
    country: Annotated[str, StringConstraints(max_length=2)] = ""


class Queue(Strict):
    enabled: bool = False
    admit_per_second: int = Field(50, ge=1, le=100_000)
    token_seconds: int = Field(600, ge=10, le=86_400)


class SaleWindow(Strict):
    name: ShortText = ""
    starts_at: datetime
    ends_at: datetime | None = None
    code: Annotated[str, StringConstraints(min_length=1, max_length=PRESALE_CODE_CHARS_MAX)] | None = None

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # RFC 3339 strings → datetime

    @model_validator(mode="after")
    def _ordered(self) -> SaleWindow:
        _aware(self.starts_at, "starts_at")
        if self.ends_at is not None and _aware(self.ends_at, "ends_at") <= self.starts_at:
            raise ValueError("a sale window must end after it starts")
        return self


class Row(Strict):
    label: RowLabel
    seats: int = Field(ge=1, le=SEATS_PER_ROW_MAX)


class GaSection(Strict):
    id: Identifier
    name: ShortText
    kind: Literal["ga"]
    capacity: int = Field(ge=1, le=CAPACITY_MAX)
    price_cents: int = Field(ge=0, le=PRICE_CENTS_MAX)


class SeatedSection(Strict):
    id: Identifier
    name: ShortText
    kind: Literal["seated"]
    price_cents: int = Field(ge=0, le=PRICE_CENTS_MAX)
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

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: ShortText = ""
    description: Annotated[str, StringConstraints(max_length=DESCRIPTION_CHARS_MAX)] = ""
    venue: Venue
    starts_at: datetime
    ends_at: datetime | None = None
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
        _aware(self.starts_at, "starts_at")
        if self.ends_at is not None and _aware(self.ends_at, "ends_at") <= self.starts_at:
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
    seats: list[SeatLabel] | None = Field(None, min_length=1)
    section: Identifier | None = None
    quantity: int | None = None
    best_available: bool = False
    adjacent: bool = False
    presale_code: Annotated[str, StringConstraints(min_length=1, max_length=PRESALE_CODE_CHARS_MAX)] | None = None

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
            if self.quantity is None or self.quantity < 1:
                raise ValueError("quantity must be at least 1")
            if self.adjacent and not self.best_available:
                raise ValueError("adjacent applies to best_available holds only")
        return self


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (RFC 3339, e.g. 2027-05-01T20:00:00Z)")
    return value


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    from datetime import UTC

    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
