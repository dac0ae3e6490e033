"""An event's audit trail (API.md "Organizers"): `GET /v1/events/{id}/audit?cursor=&limit=`;
docs/organizers.md "Audit" records the design.

Who may read it: as the reports (router/reports_api.py, whose ownership check this reuses) — the
event's organizer and admins; another organizer gets 404 `EVENT_NOT_FOUND`, buyers and validators
403 `FORBIDDEN`. Entries come oldest first, by the log's own order (``audit_id``), and a page ends
with an opaque cursor naming its last entry: entries written while a client pages come after it,
so a chain of pages returns every entry once. A cursor that is not one of ours is 422.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Query, Request

from router.deps import settings_of
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.reports_api import _owned_event  # the reports' owner check: same readers, same 404
from router.views import iso, unavailable_error
from shards.audit import PRICE_CHANGED_ACTION, AuditEntry
from shards.pools import QUERY_ERRORS

router = APIRouter(tags=["organizers"])

AUDIT_PAGE_ROWS_DEFAULT = 100
# A cursor is base64url("a<audit_id>"); audit_id is a bigint identity, so at most 19 digits.
_CURSOR = re.compile(r"^a(\d{1,19})$")
_BIGINT_MAX = 2**63 - 1


def encode_cursor(audit_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{audit_id}".encode()).rstrip(b"=").decode()


def decode_cursor(text: str | None) -> int:
    """The audit_id a cursor names (0 for the first page); 422 for anything we did not hand out."""
    if not text:
        return 0
    try:
        match = _CURSOR.match(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        match = None
    if match is None or int(match.group(1)) > _BIGINT_MAX:
        raise ApiError(422, "VALIDATION_ERROR", "malformed cursor")
    return int(match.group(1))


def entry_body(entry: AuditEntry) -> dict[str, Any]:
    """One entry as API.md shows it. An event edit's ``from``/``to`` are the fields it changed,
    before and after; a dynamic price change's the prices in cents (its section in ``detail``);
    every other entry's are statuses."""
    before: Any = entry.from_status
    after: Any = entry.to_status
    detail = entry.detail
    if entry.action == "event.updated" and detail is not None:
        before, after = detail.get("from"), detail.get("to")
    elif entry.action == PRICE_CHANGED_ACTION and detail is not None:
        before, after = detail.get("from_cents"), detail.get("to_cents")
    return {"id": encode_cursor(entry.audit_id), "at": iso(entry.at.timestamp()),
            "actor": {"sub": entry.actor, "role": entry.actor_role}, "action": entry.action,
            "subject": {"type": entry.entity, "id": str(entry.entity_id)}, "from": before, "to": after,
            "request_id": entry.request_id, "detail": detail}


@router.get("/v1/events/{event_id}/audit", summary="Audit trail of an event, oldest first (owner organizer, admin)",
            responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM})
async def audit(request: Request, event_id: UUID, cursor: str | None = Query(None, max_length=64),
                limit: int | None = Query(None, ge=1)) -> JSONBody:
    shard_id = await _owned_event(request, event_id)
    settings = settings_of(request)
    rows_max = settings.audit_page_rows_max
    if limit is not None and limit > rows_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be at most {rows_max}")
    after = decode_cursor(cursor)
    page_rows = limit or min(AUDIT_PAGE_ROWS_DEFAULT, rows_max)
    try:
        entries = await request.app.state.runtime.audit.page(shard_id, event_id, after, page_rows + 1)
    except QUERY_ERRORS as error:
        raise unavailable_error(f"shard {shard_id}: {type(error).__name__}: {error}",
                                settings.retry_after_s) from None
    page = entries[:page_rows]
    next_cursor = encode_cursor(page[-1].audit_id) if len(entries) > page_rows else None
    return JSONBody({"items": [entry_body(entry) for entry in page], "next_cursor": next_cursor})
