"""Organizers' reports (API.md "Organizers"): `GET /v1/events/{id}/sales` and the CSV exports
`GET /v1/events/{id}/orders.csv` and `.../attendees.csv`; docs/organizers.md records the design.

Who may read them: the event's organizer and admins. Another organizer is told the event does not
exist (404 `EVENT_NOT_FOUND`, as API.md asks: not revealing it is someone else's); buyers and
validators are refused by role (403 `FORBIDDEN`). Ownership is the `organizer_id` of the event's
row, read from the shard's database like the reports themselves (`shards/reports.py`).

Exports stream: the response starts once the first batch of rows was read (so a database that is
down is still a clean 503), then one CSV chunk per batch of the server-side cursor. Cells are
written by the `csv` module (RFC 4180 quoting: commas, quotes and line breaks survive), encoded
UTF-8 without a byte-order mark; text that a spreadsheet would run as a formula (a cell starting
with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with `'` (OWASP's advice on CSV
injection), so such a name reads back with the quote.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, get_args
from uuid import UUID

from fastapi import APIRouter, Request
from prometheus_client import Counter
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router.auth import ORGANIZERS, authorize
from router.deps import settings_of, shard_for_direct_read
from router.http_metrics import at_zero
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.views import iso, unavailable_error
from shards.pools import QUERY_ERRORS
from shards.reports import ExportKind, ReportQueries, Sales, SeatLabels

log = logging.getLogger(__name__)

router = APIRouter(tags=["organizers"])

# How an export ends: complete, failed (cut while streaming), rejected (too many at once); each
# kind's series exist at 0 from the start (`at_zero`).
EXPORT_RESULTS = ("complete", "failed", "rejected")
EXPORTS = at_zero(Counter("ticketing_event_exports_total", "Organizers' CSV exports, by how they ended.",
                          ["kind", "result"]),
                  *((kind, result) for kind in get_args(ExportKind) for result in EXPORT_RESULTS))

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
# Cells a spreadsheet would evaluate as a formula start with one of these (OWASP "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ORDER_COLUMNS = ("order_id", "created_at", "status", "buyer", "tickets", "total_cents", "currency", "refunded_at",
                 "payment_ref")
ATTENDEE_COLUMNS = ("ticket_id", "order_id", "status", "section", "seat", "holder_name", "holder_email", "owner",
                    "issued_at", "checked_in_at", "gate")


class ExportSlots:
    """At most `exports_per_worker_max` exports stream at once in a worker: each holds a database
    connection for as long as its client reads. Beyond, 503 with Retry-After (never a queue)."""

    def __init__(self, slots_max: int) -> None:
        self.slots_max = slots_max
        self.in_use = 0

    def take(self, kind: str, retry_after_s: int) -> None:
        if self.in_use >= self.slots_max:
            EXPORTS.labels(kind, "rejected").inc()
            raise ApiError(503, "SHARD_UNAVAILABLE", f"{self.slots_max} exports are already streaming here; retry",
                           headers={"Retry-After": str(retry_after_s)})
        self.in_use += 1

    def give_back(self) -> None:
        self.in_use -= 1


def reports_of(request: Request) -> ReportQueries:
    reports: ReportQueries = request.app.state.runtime.reports
    return reports


async def _owned_event(request: Request, event_id: UUID) -> int:
    """The event's shard, if the caller is its organizer or an admin (module docstring)."""
    principal = authorize(request, ORGANIZERS)
    shard_id = await shard_for_direct_read(request, event_id)
    try:
        organizer_id = await reports_of(request).organizer_of(shard_id, event_id)
    except QUERY_ERRORS as error:
        raise unavailable_error(f"shard {shard_id}: {type(error).__name__}: {error}",
                                settings_of(request).retry_after_s) from None
    if organizer_id is None or (principal.role != "admin" and organizer_id != principal.user_id):
        raise ApiError(404, "EVENT_NOT_FOUND", "not found")
    return shard_id


@router.get("/v1/events/{event_id}/sales", summary="Sales report of an event (owner organizer, admin)",
            responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})
async def sales(request: Request, event_id: UUID) -> JSONBody:
    shard_id = await _owned_event(request, event_id)
    try:
        report = await reports_of(request).sales(shard_id, event_id)
    except QUERY_ERRORS as error:
        raise unavailable_error(f"shard {shard_id}: {type(error).__name__}: {error}",
                                settings_of(request).retry_after_s) from None
    if report is None:
        raise ApiError(404, "EVENT_NOT_FOUND", "not found")
    return JSONBody(sales_body(event_id, report))


def sales_body(event_id: UUID, report: Sales) -> dict[str, Any]:
    """API.md's report. Section revenue is the sum of its live tickets' prices as sold (each ticket
    keeps its price, TicketView.price_cents; a dynamic section's `price_cents` is today's);
    `revenue_cents` is the sum of confirmed orders."""
    sections = [{
        "id": s.section_id, "kind": s.kind, "capacity": s.capacity, "sold": s.sold, "held": s.held,
        "blocked": s.blocked, "available": s.capacity - s.sold - s.held - s.blocked, "price_cents": s.price_cents,
        "revenue_cents": s.revenue_cents, "refunded": s.refunded, "refunded_cents": s.refunded_cents,
        "checked_in": s.checked_in,
    } for s in report.sections]
    conversion = round(report.holds_confirmed / report.holds_decided, 4) if report.holds_decided else None
    return {"event_id": str(event_id), "as_of": iso(report.as_of.timestamp()), "currency": report.currency,
            "orders": report.orders, "orders_refunded": report.orders_refunded,
            "revenue_cents": report.confirmed_cents, "refunded_cents": report.refunded_cents,
            "hold_conversion": conversion, "holds_confirmed": report.holds_confirmed,
            "holds_decided": report.holds_decided, "sections": sections}


@router.get("/v1/events/{event_id}/orders.csv", summary="Orders of an event as CSV (owner organizer, admin)",
            responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})
async def orders_csv(request: Request, event_id: UUID) -> StreamingResponse:
    shard_id = await _owned_event(request, event_id)
    return await _export(request, shard_id, event_id, "orders")


@router.get("/v1/events/{event_id}/attendees.csv",
            summary="Attendees (live tickets) of an event as CSV (owner organizer, admin)",
            responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})
async def attendees_csv(request: Request, event_id: UUID) -> StreamingResponse:
    shard_id = await _owned_event(request, event_id)
    return await _export(request, shard_id, event_id, "attendees")


class CsvExport(StreamingResponse):
    """A streamed export whose rows are closed (connection back to the pool, export slot freed)
    however the response ends: completed, the client gone, the edge's deadline."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _export(request: Request, shard_id: int, event_id: UUID, kind: ExportKind) -> StreamingResponse:
    settings = settings_of(request)
    slots: ExportSlots = request.app.state.export_slots
    slots.take(kind, settings.retry_after_s)
    batches = reports_of(request).export_rows(shard_id, event_id, kind, settings.export_batch_rows,
                                              settings.db_call_timeout_s)
    try:
        first = await anext(batches, None)
    except BaseException as error:
        slots.give_back()
        await batches.aclose()
        if isinstance(error, QUERY_ERRORS):
            raise unavailable_error(f"shard {shard_id}: {type(error).__name__}: {error}",
                                    settings.retry_after_s) from None
        raise
    filename = f"{kind}-{event_id}.csv"
    return CsvExport(_csv_body(kind, first, batches, slots), media_type=CSV_MEDIA_TYPE,
                     headers={"Content-Disposition": f'attachment; filename="{filename}"',
                              "Cache-Control": "no-store"})


async def _csv_body(kind: ExportKind, first: tuple[SeatLabels, list[Any]] | None,
                    batches: AsyncGenerator[tuple[SeatLabels, list[Any]], None], slots: ExportSlots
                    ) -> AsyncIterator[bytes]:
    result = "failed"
    try:
        yield _csv_chunk([ORDER_COLUMNS if kind == "orders" else ATTENDEE_COLUMNS])
        batch = first
        while batch is not None:
            labels, rows = batch
            yield _csv_chunk(_order_cells(row) if kind == "orders" else _attendee_cells(row, labels) for row in rows)
            batch = await anext(batches, None)
        result = "complete"
    except QUERY_ERRORS as error:
        # The 200 is already sent: the body is cut (no final chunk), which the client sees.
        log.warning("%s export cut: %s: %s", kind, type(error).__name__, str(error)[:200])
    finally:
        EXPORTS.labels(kind, result).inc()
        slots.give_back()
        await batches.aclose()
    if result != "complete":
        raise ConnectionAbortedError(f"{kind} export cut by a database error")


def _csv_chunk(rows: Iterable[Iterable[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)  # the excel dialect: RFC 4180 quoting, CRLF line ends
    return buffer.getvalue().encode("utf-8")


def csv_cell(value: Any) -> Any:
    """One cell: times in RFC 3339 UTC, ids as text, nothing as empty, and text a spreadsheet
    would evaluate as a formula defused with a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, datetime):  # to the microsecond, as stored: exports reconcile with the database
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _order_cells(row: Any) -> list[Any]:
    return [csv_cell(row[column]) for column in ("order_id", "created_at", "status", "user_id", "tickets",
                                                 "total_cents", "currency", "refunded_at", "payment_ref")]


def _attendee_cells(row: Any, labels: SeatLabels) -> list[Any]:
    return [csv_cell(value) for value in (
        row["ticket_id"], row["order_id"], row["status"], row["section_id"], labels.label(row["seat_no"]),
        row["holder_name"], row["holder_email"], row["user_id"], row["issued_at"], row["checked_in_at"],
        row["gate"])]
