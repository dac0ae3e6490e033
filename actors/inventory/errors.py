"""Every way a command can fail, in one place.

Two kinds of error, never mixed (STYLE §5):

* **Expected outcomes** are returned, not raised: a command that cannot be applied returns a
  :class:`~actors.inventory.results.Rejection` whose ``code`` is an :class:`ErrorCode`. The codes
  are the API's strings, so the router maps them one to one::

      ErrorCode
      ├── 404  EVENT_NOT_FOUND, HOLD_NOT_FOUND*, ORDER_NOT_FOUND*, TICKET_NOT_FOUND*
      ├── 409  SEATS_UNAVAILABLE (+ unavailable), INSUFFICIENT_INVENTORY (+ available),
      │        LIMIT_EXCEEDED, HOLD_NOT_ACTIVE, TICKET_ALREADY_USED (+ first_checked_in_at, gate),
      │        ORDER_ALREADY_REFUNDED*, EVENT_CANCELLED
      ├── 403  SALE_NOT_OPEN, PRESALE_CODE_INVALID, QUEUE_TOKEN_REQUIRED
      ├── 410  HOLD_EXPIRED, TICKET_VOID
      └── 422  VALIDATION_ERROR, UNKNOWN_SEAT*, IDEMPOTENCY_KEY_REUSED

  (*) internal codes: the router answers 404 for the ``*_NOT_FOUND`` ones (also when the caller
  is not the owner, so existence is not revealed), 422 ``VALIDATION_ERROR`` for UNKNOWN_SEAT, and
  409 for ORDER_ALREADY_REFUNDED (a second refund of the same order; not in API.md).

* **Programmer errors** raise. :class:`InvariantViolation` means memory no longer describes a
  consistent inventory; the actor must crash and rebuild from Postgres rather than sell a seat
  twice. :class:`LayoutError` rejects an impossible event layout at creation time (the router
  validates first and maps it to 422).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The machine code of an expected failure; the value is the API's string."""

    SEATS_UNAVAILABLE = "SEATS_UNAVAILABLE"
    INSUFFICIENT_INVENTORY = "INSUFFICIENT_INVENTORY"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    SALE_NOT_OPEN = "SALE_NOT_OPEN"
    PRESALE_CODE_INVALID = "PRESALE_CODE_INVALID"
    QUEUE_TOKEN_REQUIRED = "QUEUE_TOKEN_REQUIRED"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    HOLD_NOT_ACTIVE = "HOLD_NOT_ACTIVE"
    TICKET_ALREADY_USED = "TICKET_ALREADY_USED"
    TICKET_VOID = "TICKET_VOID"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    EVENT_NOT_FOUND = "EVENT_NOT_FOUND"
    HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    TICKET_NOT_FOUND = "TICKET_NOT_FOUND"
    ORDER_ALREADY_REFUNDED = "ORDER_ALREADY_REFUNDED"
    EVENT_CANCELLED = "EVENT_CANCELLED"
    UNKNOWN_SEAT = "UNKNOWN_SEAT"
    VALIDATION_ERROR = "VALIDATION_ERROR"


class InvariantViolation(Exception):
    """In-memory state is inconsistent. Never caught by the core: the actor must restart."""


class LayoutError(ValueError):
    """An event layout or its settings cannot be built (duplicate ids, empty rows, ...)."""


def invariant(condition: bool, message: str, *arguments: object) -> None:
    """Raise :class:`InvariantViolation` unless ``condition`` holds.

    A bare ``assert`` disappears under ``python -O``; this check must not, because a broken
    invariant here means a seat sold twice. The message is %-formatted with ``arguments`` only
    when the check fails: these run several times per command, and an f-string would be built
    (and a UUID turned into text) on every call, which measured as a third of a hold's cost.
    """
    if not condition:
        raise InvariantViolation(message % arguments if arguments else message)
