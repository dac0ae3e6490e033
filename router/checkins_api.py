"""Check-in (API.md "Check-in"): admit a ticket exactly once, through its event's shard actor,
and the revocation list offline scanners poll.

Both are scoped to the events the caller is granted: an admin to every event, an organizer to the
events it created (the event document records its organizer), a validator to the events in its
token's `events` claim. The scope is checked in the router, before the check-in reaches the shard,
so a refused check-in has no effect at all.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from prometheus_client import Counter
from pydantic import AfterValidator, StringConstraints

from actors.inventory.commands import CheckIn
from actors.inventory.results import Rejection, TicketView
from actors.protocol import EventDocument, GetEvent, attributed
from router.auth import VALIDATORS, Principal, authorize
from router.deps import call_shard, caller_of, client_of, parse_body, settings_of, shard_for_direct_read
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.schemas import Strict, time_range_error
from router.tickets.codes import CODE_CHARS_MAX, TicketCodeInvalid
from router.views import expect, iso, rejection_error, ticket_body

router = APIRouter(tags=["check-in"])
CHECKINS = Counter("ticketing_http_checkins_total", "Check-in requests by result.", ["result"])


GATE_CHARS_MAX = 64
PRINTABLE_ONLY = "must be printable text (no NUL, control characters or lone surrogates)"


def _printable(value: str) -> str:
    """Refuse text Postgres cannot store (NUL) or UTF-8 cannot encode (lone surrogates), and
    control characters, which no gate name or ticket code contains: the gate is written in the
    shard's group commit, where one unstorable value would fail every co-batched caller."""
    if not value.isprintable():
        raise ValueError(PRINTABLE_ONLY)
    return value


class CheckinBody(Strict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=CODE_CHARS_MAX), AfterValidator(_printable)]
    gate: Annotated[str, StringConstraints(min_length=1, max_length=GATE_CHARS_MAX), AfterValidator(_printable)]


def _field_with_lone_surrogate(raw: bytes) -> str | None:
    """Which check-in field holds a lone surrogate, if that is why the body did not parse.

    pydantic's JSON parser refuses lone surrogates for the whole body, naming no field; the
    standard library's parser keeps them (escaped, or UTF-8-encoded once decoded with
    `surrogatepass`), so the answer can say which field to fix.
    """
    try:
        document = json.loads(raw.decode("utf-8", "surrogatepass"))
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for field in ("code", "gate"):
        value = document.get(field)
        if isinstance(value, str) and any("\ud800" <= character <= "\udfff" for character in value):
            return field
    return None


async def _checkin_body(request: Request) -> CheckinBody:
    try:
        return await parse_body(request, CheckinBody)
    except ApiError as error:
        field = _field_with_lone_surrogate(await request.body()) if error.status == 422 else None
        if field is None:
            raise
        raise ApiError(422, "VALIDATION_ERROR", f"{field}: {PRINTABLE_ONLY}",
                       errors=[{"loc": [field], "msg": PRINTABLE_ONLY, "type": "value_error"}]) from None


async def require_event_scope(request: Request, principal: Principal, event_id: UUID) -> None:
    """403 FORBIDDEN unless `principal` may check in tickets of `event_id` (module docstring)."""
    if principal.role == "admin":
        return
    if principal.role == "validator":
        if event_id not in principal.events:
            raise ApiError(403, "FORBIDDEN", "this validator token is not granted this event "
                           "(ticketing token --role validator --event ID)")
        return
    shard_id = client_of(request).shard_map.shard_of(event_id)
    reply = await call_shard(request, shard_id, GetEvent(event_id), read=True)
    document = expect(reply, EventDocument, "EVENT_NOT_FOUND", settings_of(request).retry_after_s).document
    if principal.role != "organizer" or document.get("organizer_id") != principal.user_id:
        raise ApiError(403, "FORBIDDEN", "organizers may check in tickets of their own events only")


@router.post("/v1/checkins", summary="Admit a ticket at a gate, exactly once (validator, organizer)",
             description="An organizer for its own events, a validator for the events in its token's "
                         "`events` claim; a code of another event is 403 FORBIDDEN.",
             responses={403: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM})
async def check_in(request: Request) -> JSONBody:
    principal = authorize(request, VALIDATORS)
    body = await _checkin_body(request)
    try:
        claims = request.app.state.ticket_codes.verify(body.code)
    except TicketCodeInvalid as error:
        CHECKINS.labels("invalid").inc()
        raise ApiError(422, "TICKET_INVALID", f"this is not a valid ticket code: {error.reason}") from None
    try:
        await require_event_scope(request, principal, claims.event_id)
    except ApiError as error:
        if error.status == 403:
            CHECKINS.labels("forbidden").inc()
        raise
    shard_id = client_of(request).shard_map.shard_of(claims.event_id)
    reply = await call_shard(request, shard_id,
                             attributed(CheckIn(claims.ticket_id, body.gate), caller_of(request, principal)))
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
        after = datetime.fromisoformat(moment), UUID(ticket_id)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "VALIDATION_ERROR", "malformed cursor") from None
    if time_range_error(after[0]) is not None:  # year 1 or 9999 overflowed on the way to Postgres (500)
        raise ApiError(422, "VALIDATION_ERROR", "malformed cursor")
    return after


@router.get("/v1/events/{event_id}/revocations", summary="Void tickets since a cursor (for offline scanners)",
            description="Scoped like check-in: an organizer for its own events, a validator for the events "
                        "in its token's `events` claim.",
            responses={403: PROBLEM, 404: PROBLEM, 422: PROBLEM})
async def revocations(request: Request, event_id: UUID, cursor: str | None = None,
                      limit: int = Query(500, ge=1)) -> JSONBody:
    principal = authorize(request, VALIDATORS)
    await require_event_scope(request, principal, event_id)
    settings = settings_of(request)
    if limit > settings.revocations_page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be at most {settings.revocations_page_max}")
    after = _cursor(cursor)
    shard_id = await shard_for_direct_read(request, event_id)
    rows = await request.app.state.runtime.reads.revocations(shard_id, event_id, after, limit + 1)
    page = rows[:limit]
    next_cursor = None
    if page:
        last = page[-1]
        text = f"{last.updated_at.isoformat()}|{last.ticket_id}"
        next_cursor = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    items: list[dict[str, Any]] = [{"ticket_id": str(row.ticket_id), "status": row.status,
                                    "revoked_at": iso(row.updated_at.timestamp())} for row in page]
    return JSONBody({"event_id": str(event_id), "items": items, "next_cursor": next_cursor,
                     "complete": len(rows) <= limit})

