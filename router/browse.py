"""Browse events across shards (API.md "Events": `GET /v1/events`).

`GET /v1/events` is a scatter-gather (DESIGN §4): every shard database is asked at once for its
next `limit + 1` events after the cursor in `(starts_at, event_id)` order (the query is
`shards.queries.ReadQueries.events_page`), and the router merges the pages and cuts `limit`. A
shard that does not answer in time fails the whole request with 503: a page silently missing a
shard's events would look complete and is worse than no page. `q` is a full-text search (every
word, the last one also as a prefix), `organizer` an organizer's own events; pages are cached
briefly in Redis (router/events_cache.py). docs/browse-and-stream.md records the design.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import struct
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request, Response
from prometheus_client import Counter, Histogram
from pydantic import StringConstraints

from actors.event_bodies import document_from_rows
from router.auth import ORGANIZERS, SUBJECT_LENGTH_MAX, authorize
from router.deps import settings_of
from router.events_cache import EventsCache
from router.http_metrics import LATENCY_BUCKETS_S, at_zero
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
OrganizerText = Annotated[str, StringConstraints(min_length=1, max_length=SUBJECT_LENGTH_MAX), *LINE]
# `organizer=me`: the caller's own events.
ME = "me"

LIST_LATENCY = Histogram("ticketing_events_list_duration_seconds", "GET /v1/events scatter-gather latency.",
                         ["result"], buckets=LATENCY_BUCKETS_S)
LIST_SHARD_FAILURES = Counter("ticketing_events_list_shard_failures_total",
                              "Shard databases that failed a GET /v1/events scatter-gather.", ["shard", "reason"])
LIST_SHARD_FAILURE_REASONS = ("timeout", "error")  # as `_gather_pages` tells them apart


def count_shard_failures_from_zero(shard_count: int) -> None:
    """Each shard's listing-failure series, created at 0 (`at_zero`): the app calls this at its
    creation, when the shards are known."""
    for shard in map(str, range(shard_count)):
        at_zero(LIST_SHARD_FAILURES, *((shard, reason) for reason in LIST_SHARD_FAILURE_REASONS))


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


# A word of `q`: a run of letters and digits (Unicode). Everything else separates words.
WORD = re.compile(r"[^\W_]+")


def text_query(text: str) -> str | None:
    """`q` as `to_tsquery` input: every word must match, the last one also as a prefix (type-ahead:
    "lisb" finds Lisboa); None when `q` has no word.

    Built so that nothing a client types is ever a tsquery operator or SQL: words are runs of
    letters and digits, so quotes, backslashes, `& | ! : * ( ) <->` and the like can only separate
    words; each word is then a quoted lexeme (`'word'`, nothing inside needing an escape), and the
    whole goes to Postgres as a parameter. NFC first, as text is usually stored composed.
    """
    words = WORD.findall(unicodedata.normalize("NFC", text))
    if not words:
        return None
    return " & ".join(f"'{word}'" for word in words) + ":*"


def _organizer_of(request: Request, organizer: str | None) -> str | None:
    """The organizer id to filter on: `me` is the caller (an organizer or admin token); another id
    only an admin, or the organizer it names, may ask for (403 otherwise)."""
    if organizer is None:
        return None
    principal = authorize(request, ORGANIZERS)
    if organizer == ME or organizer == principal.user_id:
        return principal.user_id
    if principal.role != "admin":
        raise ApiError(403, "FORBIDDEN", "organizers list their own events: organizer=me")
    return organizer


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


@router.get("/v1/events", summary="Browse and search events across all shards (public)",
            description="Public, except `organizer`: `organizer=me` (an organizer or admin token) lists the "
                        "caller's own events, every status included; another organizer id is for admins.",
            responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM, 503: PROBLEM})
async def list_events(
    request: Request,
    q: Annotated[QueryText | None, Query(
        description="full-text search of title, venue, city and description: every word must match, "
                    "the last also as a prefix; punctuation only separates words")] = None,
    category: Annotated[FilterText | None, Query()] = None,
    city: Annotated[FilterText | None, Query()] = None,
    starts_from: Annotated[ApiTime | None, Query(alias="from", description="starts_at ≥ from (RFC 3339)")] = None,
    starts_to: Annotated[ApiTime | None, Query(alias="to", description="starts_at < to (RFC 3339)")] = None,
    status: Annotated[Literal["on_sale", "paused", "cancelled"] | None, Query()] = None,
    organizer: Annotated[OrganizerText | None, Query(
        description="`me`: the caller's events (organizer or admin token); an organizer id: admins only")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_CHARS_MAX,
                                        pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1)] = EVENTS_PAGE_DEFAULT,
) -> Response:
    page_max = settings_of(request).events_page_max
    if limit > page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be in [1, {page_max}]")
    organizer_id = _organizer_of(request, organizer)
    after = decode_cursor(cursor) if cursor is not None else NO_CURSOR
    if starts_from is not None:
        # `from` is inclusive: the keyset is exclusive, so start just before it (ids are > the nil uuid).
        after = max(after, (starts_from, UUID(int=0)))
    words = text_query(q) if q is not None else None
    if q is not None and words is None:
        return _json({"items": [], "next_cursor": None})  # no word to look for: nothing matches
    query = EventListQuery(after, starts_to, category, city, words, status, organizer_id, limit)
    cache: EventsCache = request.app.state.events_cache
    version, cached = await cache.lookup(query)
    if cached is not None:
        return _json(cached)
    page = orjson.dumps(await _listing(request, query))
    await cache.store(version, query, page)
    return _json(page)


def _json(body: dict[str, Any] | bytes) -> Response:
    return Response(body if isinstance(body, bytes) else orjson.dumps(body), media_type="application/json")


async def _listing(request: Request, query: EventListQuery) -> dict[str, Any]:
    """One page from the shards (a cache miss)."""
    started = time.perf_counter()
    result = "error"
    try:
        merged = await _gather_pages(request, query)
        result = "ok"
    finally:
        LIST_LATENCY.labels(result).observe(time.perf_counter() - started)
    page = merged[:query.limit]
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(merged) > query.limit else None
    return {"items": [_item(row) for _, _, row in page], "next_cursor": next_cursor}
