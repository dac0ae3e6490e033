"""Browse events across shards (API.md "Events": `GET /v1/events`).

`GET /v1/events` is a scatter-gather (DESIGN §4): every shard database is asked at once for its
next `limit + 1` events after the cursor in `(starts_at, event_id)` order (the query is
`shards.queries.ReadQueries.events_page`), and the router merges the pages and cuts `limit`. A
shard that does not answer in time fails the whole request with 503: a page silently missing a
shard's events would look complete and is worse than no page. docs/browse-and-stream.md records
the design.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from prometheus_client import Counter, Histogram
from pydantic import StringConstraints

from actors.event_bodies import document_from_rows
from router.deps import settings_of
from router.http_metrics import LATENCY_BUCKETS_S
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.runtime import Runtime
from router.schemas import LINE, ApiTime, time_range_error
from router.views import unavailable_error
from shards.pools import QUERY_ERRORS
from shards.queries import EventListQuery

log = logging.getLogger(__name__)

# The listing's request format, published in the OpenAPI document: changing one is an API change,
# not a deployment's tuning (docs/browse-and-stream.md "Bounds"). The page maximum is the
# `events_page_max` setting.
EVENTS_PAGE_DEFAULT = 20
EVENTS_QUERY_CHARS_MAX = 100
EVENTS_FILTER_CHARS_MAX = 100
CURSOR_CHARS_MAX = 64
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=EVENTS_QUERY_CHARS_MAX), *LINE]
FilterText = Annotated[str, StringConstraints(min_length=1, max_length=EVENTS_FILTER_CHARS_MAX), *LINE]

LIST_LATENCY = Histogram("ticketing_events_list_duration_seconds", "GET /v1/events scatter-gather latency.",
                         ["result"], buckets=LATENCY_BUCKETS_S)
LIST_SHARD_FAILURES = Counter("ticketing_events_list_shard_failures_total",
                              "Shard databases that failed a GET /v1/events scatter-gather.", ["shard", "reason"])

router = APIRouter(tags=["events"])


# Listing ----------------------------------------------------------------------------------------

CURSOR_FORMAT = struct.Struct(">q16s")  # starts_at in microseconds since the epoch, event id bytes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_CURSOR = (datetime(1, 1, 1, tzinfo=UTC), UUID(int=0))


def encode_cursor(starts_at: datetime, event_id: UUID) -> str:
    micros = (starts_at - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(CURSOR_FORMAT.pack(micros, event_id.bytes)).rstrip(b"=").decode()


def decode_cursor(text: str) -> tuple[datetime, UUID]:
    """The keyset position in a cursor. A cursor is client input like any other: one carrying a
    time outside the API's years (which no event has) is refused before it reaches a database."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        micros, event_bytes = CURSOR_FORMAT.unpack(raw)
        starts_at = EPOCH + timedelta(microseconds=micros)
    except (binascii.Error, struct.error, ValueError, OverflowError):
        starts_at = None
    if starts_at is None or time_range_error(starts_at) is not None:
        raise ApiError(422, "VALIDATION_ERROR", "cursor is malformed; pass back next_cursor unchanged",
                       errors=[{"loc": ["query", "cursor"], "msg": "malformed cursor", "type": "value_error"}])
    return starts_at, UUID(bytes=event_bytes)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _blocked_labels(section: dict[str, Any]) -> list[str]:
    """Seat labels (`A-2-17`) of a seated section's blocked seat numbers, as `GET /v1/events/{id}` shows."""
    labels = []
    for seat_no in section.get("blocked_seat_nos") or ():
        offset = seat_no - (section.get("first_seat_no") or 0)
        for row in section["rows"]:
            if offset < row["seats"]:
                labels.append(f"{section['section_id']}-{row['label']}-{offset + 1}")
                break
            offset -= row["seats"]
    return labels


def _item(row: dict[str, Any]) -> dict[str, Any]:
    # The router's pools have no jsonb codec, so jsonb columns arrive as text.
    event = dict(row)
    for column in ("venue", "queue", "sale_windows"):
        event[column] = orjson.loads(event[column])
    sections = orjson.loads(event.pop("sections"))
    document: dict[str, Any] = dict(document_from_rows(event, sections, None))
    for body, section in zip(document["sections"], sections, strict=True):
        if section["kind"] == "seated":
            body["blocked"] = _blocked_labels(section)
    document.pop("organizer_id", None)
    return document


Row = tuple[datetime, UUID, dict[str, Any]]  # (starts_at, event_id, columns): the merge's sort key first


async def _shard_page(runtime: Runtime, shard_id: int, query: EventListQuery, timeout_s: float) -> list[Row]:
    rows = await runtime.reads.events_page(shard_id, query, timeout_s)
    return [(row["starts_at"], row["event_id"], row) for row in rows]


async def _gather_pages(request: Request, query: EventListQuery) -> list[Row]:
    runtime: Runtime = request.app.state.runtime
    settings = settings_of(request)
    shard_ids = range(settings.shard_count)
    pages = await asyncio.gather(*(_shard_page(runtime, shard_id, query, settings.db_call_timeout_s)
                                   for shard_id in shard_ids), return_exceptions=True)
    merged: list[Row] = []
    failed: list[str] = []
    for shard_id, page in zip(shard_ids, pages, strict=True):
        if isinstance(page, BaseException):
            if not isinstance(page, QUERY_ERRORS):
                raise page  # a bug, not an outage: let it be a logged 500
            reason = "timeout" if isinstance(page, TimeoutError) else "error"
            LIST_SHARD_FAILURES.labels(str(shard_id), reason).inc()
            log.warning("events listing: shard %s failed: %s: %s", shard_id, type(page).__name__, str(page)[:200])
            failed.append(str(shard_id))
        else:
            merged.extend(page)
    if failed:
        raise unavailable_error(f"shard database(s) {', '.join(failed)} did not answer", settings.retry_after_s)
    merged.sort(key=lambda entry: (entry[0], entry[1]))  # Postgres orders uuids bytewise, as Python does
    return merged


@router.get("/v1/events", summary="Browse events across all shards (public)",
            responses={422: PROBLEM, 503: PROBLEM})
async def list_events(
    request: Request,
    q: Annotated[QueryText | None, Query(description="case-insensitive substring of the title")] = None,
    category: Annotated[FilterText | None, Query()] = None,
    city: Annotated[FilterText | None, Query()] = None,
    starts_from: Annotated[ApiTime | None, Query(alias="from", description="starts_at ≥ from (RFC 3339)")] = None,
    starts_to: Annotated[ApiTime | None, Query(alias="to", description="starts_at < to (RFC 3339)")] = None,
    status: Annotated[Literal["on_sale", "paused", "cancelled"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_CHARS_MAX,
                                        pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1)] = EVENTS_PAGE_DEFAULT,
) -> JSONBody:
    started = time.perf_counter()
    page_max = settings_of(request).events_page_max
    if limit > page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be in [1, {page_max}]")
    after = decode_cursor(cursor) if cursor is not None else NO_CURSOR
    if starts_from is not None:
        # `from` is inclusive: the keyset is exclusive, so start just before it (ids are > the nil uuid).
        after = max(after, (starts_from, UUID(int=0)))
    query = EventListQuery(after, starts_to, category, city, _like_escape(q) if q else None, status, limit)
    result = "error"
    try:
        merged = await _gather_pages(request, query)
        result = "ok"
    finally:
        LIST_LATENCY.labels(result).observe(time.perf_counter() - started)
    page = merged[:limit]
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(merged) > limit else None
    return JSONBody({"items": [_item(row) for _, _, row in page], "next_cursor": next_cursor})
