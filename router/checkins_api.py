"""Check-in (API.md "Check-in"): admit a ticket exactly once, through its event's shard actor,
and the revocation list offline scanners poll."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from prometheus_client import Counter
from pydantic import StringConstraints

from actors.inventory.commands import CheckIn
from actors.inventory.results import Rejection, TicketView
from router.auth import VALIDATORS, authorize
from router.deps import call_shard, client_of, parse_body, settings_of
from router.errors import PROBLEM, ApiError
from router.jsonbody import JSONBody
from router.schemas import Strict
from router.ticketcodes import CODE_CHARS_MAX, TicketCodeInvalid
from router.views import expect, iso, rejection_error, ticket_body

router = APIRouter(tags=["check-in"])
CHECKINS = Counter("ticketing_http_checkins_total", "Check-in requests by result.", ["result"])


class CheckinBody(Strict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=CODE_CHARS_MAX)]
    gate: Annotated[str, StringConstraints(min_length=1, max_length=64)]


@router.post("/v1/checkins", summary="Admit a ticket at a gate, exactly once (validator, organizer)",
             responses={409: PROBLEM, 410: PROBLEM, 422: PROBLEM})
async def check_in(request: Request) -> JSONBody:
    authorize(request, VALIDATORS)
    body = await parse_body(request, CheckinBody)
    try:
        claims = request.app.state.ticket_codes.verify(body.code)
    except TicketCodeInvalid as error:
        CHECKINS.labels("invalid").inc()
        raise ApiError(422, "TICKET_INVALID", f"this is not a valid ticket code: {error.reason}") from None
    shard_id = client_of(request).shard_map.shard_of(claims.event_id)
    reply = await call_shard(request, shard_id, CheckIn(claims.ticket_id, body.gate))
    if isinstance(reply, Rejection):
        CHECKINS.labels(reply.code.value.lower()).inc()
        if reply.code.value == "TICKET_NOT_FOUND":  # signed by us, unknown to the shard
            raise ApiError(422, "TICKET_INVALID", "no such ticket")
        raise rejection_error(reply)
    ticket: TicketView = expect(reply, TicketView, "TICKET_NOT_FOUND", settings_of(request).retry_after_s)
    if ticket.event_id != claims.event_id:
        raise ApiError(422, "TICKET_INVALID", "the code names another event")
    CHECKINS.labels("admitted").inc()
    return JSONBody({"result": "admitted", "ticket": {**ticket_body(ticket), "place": claims.place}})


def _cursor(text: str | None) -> tuple[datetime, UUID] | None:
    if not text:
        return None
    try:
        moment, _, ticket_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().partition("|")
        return datetime.fromisoformat(moment), UUID(ticket_id)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "VALIDATION_ERROR", "malformed cursor") from None


@router.get("/v1/events/{event_id}/revocations", summary="Void tickets since a cursor (for offline scanners)")
async def revocations(request: Request, event_id: UUID, cursor: str | None = None,
                      limit: int = Query(500, ge=1)) -> JSONBody:
    authorize(request, VALIDATORS)
    settings = settings_of(request)
    if limit > settings.revocations_page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be at most {settings.revocations_page_max}")
    after = _cursor(cursor)
    shard_id = client_of(request).shard_map.shard_of(event_id)
    pool = await request.app.state.runtime.pool(shard_id)
    rows = await pool.fetch(
        """SELECT ticket_id, status, updated_at FROM tickets
           WHERE event_id = $1 AND status IN ('refunded', 'transferred', 'cancelled')
             AND ($2::timestamptz IS NULL OR (updated_at, ticket_id) > ($2, $3))
           ORDER BY updated_at, ticket_id LIMIT $4""",
        event_id, after[0] if after else None, after[1] if after else None, limit + 1)
    page = rows[:limit]
    next_cursor = None
    if page:
        last = page[-1]
        text = f"{last['updated_at'].isoformat()}|{last['ticket_id']}"
        next_cursor = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    items: list[dict[str, Any]] = [{"ticket_id": str(row["ticket_id"]), "status": row["status"],
                                    "revoked_at": iso(row["updated_at"].timestamp())} for row in page]
    return JSONBody({"event_id": str(event_id), "items": items, "next_cursor": next_cursor,
                     "complete": len(rows) <= limit})

