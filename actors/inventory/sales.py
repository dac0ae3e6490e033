"""When an event may be sold, and to whom: status, sale windows, presale codes, limits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from actors.inventory.errors import ErrorCode, LayoutError


class EventStatus(StrEnum):
    ON_SALE = "on_sale"
    PAUSED = "paused"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SaleWindow:
    """A period in which holds are allowed; with a ``code`` only for buyers who present it."""

    name: str
    starts_at_s: float
    ends_at_s: float | None = None
    code: str | None = None

    def is_open(self, now_s: float) -> bool:
        # Half-open [starts_at, ends_at): a window ending at 20:00 is closed at 20:00 sharp.
        return self.starts_at_s <= now_s and (self.ends_at_s is None or now_s < self.ends_at_s)


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The per-event rules the core enforces. Times are POSIX seconds (UTC)."""

    currency: str = "EUR"
    hold_seconds: int = 600
    per_person_limit: int | None = None
    sale_windows: tuple[SaleWindow, ...] = ()
    status: EventStatus = EventStatus.ON_SALE
    # Queue mode: a hold needs the waiting room's admission (`queue_admitted` on the command).
    queue_required: bool = False

    def __post_init__(self) -> None:
        if self.hold_seconds <= 0:
            raise LayoutError("hold_seconds must be positive")
        if self.per_person_limit is not None and self.per_person_limit <= 0:
            raise LayoutError("per_person_limit must be positive (or None for no limit)")
        for window in self.sale_windows:
            if window.ends_at_s is not None and window.ends_at_s <= window.starts_at_s:
                raise LayoutError(f"sale window {window.name!r} ends before it starts")


def sale_rejection(settings: EventSettings, now_s: float, presale_code: str | None) -> ErrorCode | None:
    """Why a new hold may not be taken now, or None if it may.

    No windows means always on sale. A hold is allowed when ``now_s`` lies inside some window that
    has no code or whose code equals ``presale_code``. If only coded windows are open and the
    buyer brought no code or a wrong one, the answer is PRESALE_CODE_INVALID (so the buyer learns
    a presale is on); if no window is open at all, SALE_NOT_OPEN. Paused or cancelled events are
    never on sale.
    """
    if settings.status is not EventStatus.ON_SALE:
        return ErrorCode.SALE_NOT_OPEN
    if not settings.sale_windows:
        return None
    any_open = False
    for window in settings.sale_windows:
        if window.is_open(now_s):
            if window.code is None or window.code == presale_code:
                return None
            any_open = True
    return ErrorCode.PRESALE_CODE_INVALID if any_open else ErrorCode.SALE_NOT_OPEN
