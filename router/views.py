"""Shard replies → API bodies, and expected rejections → problem documents (API.md shapes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from actors.inventory.results import HoldView, OrderView, Rejection, TicketView
from actors.protocol import AvailabilityView, Refused, SeatMapView, Unavailable
from router.problems import UNAVAILABLE_DETAIL, ApiError

REASON_CHARS_MAX = 500  # of an internal failure message kept for the log

# ErrorCode → (HTTP status, API code). Internal codes map onto the API's (see actors.inventory.errors).
REJECTION_STATUS: dict[str, tuple[int, str]] = {
    "SEATS_UNAVAILABLE": (409, "SEATS_UNAVAILABLE"),
    "INSUFFICIENT_INVENTORY": (409, "INSUFFICIENT_INVENTORY"),
    "LIMIT_EXCEEDED": (409, "LIMIT_EXCEEDED"),
    "HOLD_NOT_ACTIVE": (409, "HOLD_NOT_ACTIVE"),
    "TICKET_ALREADY_USED": (409, "TICKET_ALREADY_USED"),
    "ORDER_ALREADY_REFUNDED": (409, "ORDER_ALREADY_REFUNDED"),
    "EVENT_CANCELLED": (409, "EVENT_CANCELLED"),
    "SALE_NOT_OPEN": (403, "SALE_NOT_OPEN"),
    "PRESALE_CODE_INVALID": (403, "PRESALE_CODE_INVALID"),
    "QUEUE_TOKEN_REQUIRED": (403, "QUEUE_TOKEN_REQUIRED"),
    "HOLD_EXPIRED": (410, "HOLD_EXPIRED"),
    "TICKET_VOID": (410, "TICKET_VOID"),
    "EVENT_NOT_FOUND": (404, "EVENT_NOT_FOUND"),
    "HOLD_NOT_FOUND": (404, "HOLD_NOT_FOUND"),
    "ORDER_NOT_FOUND": (404, "ORDER_NOT_FOUND"),
    "TICKET_NOT_FOUND": (404, "TICKET_NOT_FOUND"),
    "UNKNOWN_SEAT": (422, "VALIDATION_ERROR"),
    "VALIDATION_ERROR": (422, "VALIDATION_ERROR"),
    "IDEMPOTENCY_KEY_REUSED": (422, "IDEMPOTENCY_KEY_REUSED"),
}


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rejection_error(rejection: Rejection) -> ApiError:
    status, code = REJECTION_STATUS.get(rejection.code.value, (422, "VALIDATION_ERROR"))
    extra: dict[str, Any] = {}
    if rejection.code.value == "SEATS_UNAVAILABLE":
        extra["unavailable"] = list(rejection.unavailable)
    if rejection.available is not None:
        extra["available"] = rejection.available
    if rejection.code.value == "TICKET_ALREADY_USED":
        extra["first_checked_in_at"] = iso(rejection.first_checked_in_at_s)
        extra["gate"] = rejection.gate
    if rejection.code.value == "UNKNOWN_SEAT":
        extra["unknown"] = list(rejection.unavailable)
    return ApiError(status, code, rejection.detail, **extra)


def unavailable_error(reason: str, retry_after_s: int) -> ApiError:
    """503 SHARD_UNAVAILABLE with a generic detail: `reason` may quote Postgres, asyncpg or Ray (a
    failed commit's message, a constraint name), so it is only logged with the request id."""
    return ApiError(503, "SHARD_UNAVAILABLE", UNAVAILABLE_DETAIL, headers={"Retry-After": str(retry_after_s)},
                    reason=reason[:REASON_CHARS_MAX])


def expect(reply: Any, kind: type | tuple[type, ...], missing_code: str, retry_after_s: int) -> Any:
    """`reply` if it is of `kind`; otherwise raise the matching ApiError."""
    if isinstance(reply, kind):
        return reply
    if isinstance(reply, Rejection):
        raise rejection_error(reply)
    if isinstance(reply, Refused):  # poison isolation left this command out of its batch
        raise ApiError(422 if reply.code == "VALIDATION_ERROR" else 500, reply.code, reply.detail)
    if isinstance(reply, Unavailable):
        raise unavailable_error(reply.reason, retry_after_s)
    if reply is None:
        status, code = REJECTION_STATUS.get(missing_code, (404, missing_code))
        raise ApiError(status, code, "not found")
    raise TypeError(f"unexpected shard reply {type(reply).__name__}")


def hold_body(hold: HoldView) -> dict[str, Any]:
    body = {
        "id": str(hold.hold_id), "event_id": str(hold.event_id), "status": hold.status.value,
        "expires_at": iso(hold.expires_at_s),
        "items": [{"seat": item.seat, "section": item.section_id, "price_cents": item.price_cents}
                  for item in hold.items],
        "quantity": len(hold.items), "total_cents": hold.total_cents, "currency": hold.currency,
    }
    if hold.order_id is not None:
        body["order_id"] = str(hold.order_id)
    return body


def availability_body(view: AvailabilityView, as_of_s: float | None = None) -> dict[str, Any]:
    """`as_of_s`: when the data was read (a snapshot's time); now when not given."""
    sections = [
        {"id": s.section_id, "kind": s.kind, "capacity": s.capacity, "available": s.available, "held": s.held,
         "sold": s.sold, "blocked": s.blocked, "price_cents": s.price_cents}
        for s in view.sections
    ]
    return {"event_id": str(view.event_id), "total_available": sum(s["available"] for s in sections),
            "as_of": now_iso() if as_of_s is None else iso(as_of_s), "currency": view.currency, "sections": sections}


def seat_map_body(view: SeatMapView) -> dict[str, Any]:
    return {"sections": [{"id": section_id, "rows": [{"label": label, "seats": seats} for label, seats in rows]}
                         for section_id, rows in view.sections]}


def ticket_body(ticket: TicketView) -> dict[str, Any]:
    return {
        "id": str(ticket.ticket_id), "event_id": str(ticket.event_id), "order_id": str(ticket.order_id),
        "seat": ticket.seat, "section": ticket.section_id, "price_cents": ticket.price_cents,
        "status": ticket.status.value, "checked_in_at": iso(ticket.checked_in_at_s), "gate": ticket.gate,
        "qr_png": f"/v1/tickets/{ticket.ticket_id}/qr.png", "qr_svg": f"/v1/tickets/{ticket.ticket_id}/qr.svg",
    }


def order_body(order: OrderView) -> dict[str, Any]:
    return {"id": str(order.order_id), "event_id": str(order.event_id), "status": order.status.value,
            "total_cents": order.total_cents, "currency": order.currency,
            "tickets": [ticket_body(ticket) for ticket in order.tickets]}
