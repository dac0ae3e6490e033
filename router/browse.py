"""Browse events across shards and stream an event's seat changes (API.md "Events", "Availability").

`GET /v1/events` is a scatter-gather (DESIGN §4): every shard database is asked at once for its
next `limit + 1` events after the cursor in `(starts_at, event_id)` order — the `events_starts_at`
index serves that keyset directly — and the router merges the pages and cuts `limit`. A shard that
does not answer in time fails the whole request with 503: a page silently missing a shard's events
would look complete and is worse than no page.

`GET /v1/events/{id}/seats/stream` is a router-side change feed until the shard actors publish
seat changes on Redis (DESIGN §7): one poller per (worker, event) reads the seat map and the
availability through the ordinary read lane every `STREAM_POLL_INTERVAL_S`, and every stream of
that event on this worker diffs the latest reading against what it last sent its client. So a
thousand viewers of one event cost one pair of reads per interval per worker, not a thousand.
docs/browse-and-stream.md records the design and its limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from prometheus_client import Counter, Gauge, Histogram
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from actors.events import document_from_rows
from actors.protocol import AvailabilityView, GetAvailability, GetSeatMap, SeatMapView
from router.deps import call_shard, client_of, settings_of
from router.errors import ApiError
from router.jsonbody import JSONBody
from router.metrics import LATENCY_BUCKETS_S
from router.runtime import Runtime
from router.shard_client import ShardClient, ShardUnavailable
from router.views import availability_body, expect, seat_map_body, unavailable_error

log = logging.getLogger(__name__)

# Listing bounds. The page maximum is the `events_page_max` setting; these are candidates for
# settings too (see the report in docs/browse-and-stream.md).
EVENTS_PAGE_DEFAULT = 20
EVENTS_QUERY_CHARS_MAX = 100
EVENTS_FILTER_CHARS_MAX = 100
CURSOR_CHARS_MAX = 64

# Stream bounds.
STREAM_POLL_INTERVAL_S = 0.5  # a change reaches the client at most this late (plus a read)
STREAM_HEARTBEAT_S = 15.0  # proxies drop idle connections after 30-60 s
STREAM_LIFETIME_S = 30 * 60.0  # then the server closes and the client reconnects (fresh snapshot)
STREAMS_PER_WORKER_MAX = 1000  # leaves room under uvicorn's `router_connections_max` for requests
STREAM_RECONNECT_MS = 1000  # the `retry:` hint sent to EventSource clients
STREAM_FEED_FAILURES_MAX = 20  # consecutive failed polls (10 s) before the streams of an event close

LIST_LATENCY = Histogram("ticketing_events_list_duration_seconds", "GET /v1/events scatter-gather latency.",
                         ["result"], buckets=LATENCY_BUCKETS_S)
LIST_SHARD_FAILURES = Counter("ticketing_events_list_shard_failures_total",
                              "Shard databases that failed a GET /v1/events scatter-gather.", ["shard", "reason"])
STREAMS_OPEN = Gauge("ticketing_seat_streams_open", "Seat-map streams open.", multiprocess_mode="livesum")
STREAM_EVENTS = Counter("ticketing_seat_stream_events_total", "Server-sent events written to seat-map streams.",
                        ["kind"])
STREAMS_REJECTED = Counter("ticketing_seat_streams_rejected_total", "Seat-map streams refused.", ["reason"])
STREAM_POLL_FAILURES = Counter("ticketing_seat_stream_poll_failures_total",
                               "Seat-map change-feed polls that failed.", ["shard"])


# Shutdown ---------------------------------------------------------------------------------------
# uvicorn waits for open responses to finish before it runs the lifespan shutdown, so a stream
# cannot learn about shutdown from the lifespan: it would hold the worker until the graceful
# shutdown timeout cancels it. Instead the router's lifespan chains a handler in front of
# uvicorn's SIGINT/SIGTERM handler that only sets this flag; streams check it on every loop.
_shutting_down = False


def _chain_shutdown_signals() -> dict[int, Any]:
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if not callable(handler):
            continue

        def on_signal(sig: int, frame: Any, handler: Callable[..., Any] = handler) -> None:
            global _shutting_down
            _shutting_down = True
            handler(sig, frame)

        try:
            signal.signal(signum, on_signal)
        except ValueError:  # not the main thread (an in-process test client): nothing to chain
            return previous
        previous[signum] = handler
    return previous


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    global _shutting_down
    _shutting_down = False
    previous = _chain_shutdown_signals()
    try:
        yield
    finally:
        _shutting_down = True
        for signum, handler in previous.items():
            signal.signal(signum, handler)


router = APIRouter(tags=["events"], lifespan=_lifespan)
PROBLEM = {"model": dict, "content": {"application/problem+json": {}}}


# Listing ----------------------------------------------------------------------------------------

# One query per shard: the events after the cursor in keyset order, each with its sections as one
# jsonb array (a correlated subquery on the sections primary key), so a page is one round trip.
LIST_SQL = """
SELECT e.event_id, e.organizer_id, e.title, e.category, e.description, e.venue, e.starts_at, e.ends_at,
       e.currency, e.hold_seconds, e.per_person_limit, e.queue, e.sale_windows, e.status, e.created_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'section_id', s.section_id, 'name', s.name, 'kind', s.kind, 'capacity', s.capacity,
                   'price_cents', s.price_cents, 'first_seat_no', s.first_seat_no, 'rows', s.rows,
                   'blocked_seat_nos', s.blocked_seat_nos) ORDER BY s.position), '[]'::jsonb)
          FROM sections s WHERE s.event_id = e.event_id) AS sections
  FROM events e
 WHERE (e.starts_at, e.event_id) > ($1, $2)
   AND ($3::timestamptz IS NULL OR e.starts_at < $3)
   AND ($4::text IS NULL OR e.category = $4)
   AND ($5::text IS NULL OR e.city = $5)
   AND ($6::text IS NULL OR e.title ILIKE '%' || $6 || '%' ESCAPE '\\')
   AND ($7::text IS NULL OR e.status = $7)
 ORDER BY e.starts_at, e.event_id
 LIMIT $8
"""
CURSOR_FORMAT = struct.Struct(">q16s")  # starts_at in microseconds since the epoch, event id bytes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_CURSOR = (datetime(1, 1, 1, tzinfo=UTC), UUID(int=0))


@dataclass(frozen=True, slots=True)
class ListQuery:
    after: tuple[datetime, UUID]
    starts_before: datetime | None
    category: str | None
    city: str | None
    title_contains: str | None
    status: str | None
    limit: int


def encode_cursor(starts_at: datetime, event_id: UUID) -> str:
    micros = (starts_at - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(CURSOR_FORMAT.pack(micros, event_id.bytes)).rstrip(b"=").decode()


def decode_cursor(text: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        micros, event_bytes = CURSOR_FORMAT.unpack(raw)
        return EPOCH + timedelta(microseconds=micros), UUID(bytes=event_bytes)
    except (binascii.Error, struct.error, ValueError, OverflowError):
        raise ApiError(422, "VALIDATION_ERROR", "cursor is malformed; pass back next_cursor unchanged") from None


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(422, "VALIDATION_ERROR", f"{name} needs a UTC offset (RFC 3339), e.g. 2027-05-01T20:00:00Z")
    return value


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


def _item(row: asyncpg.Record) -> dict[str, Any]:
    # The router's pools have no jsonb codec, so jsonb columns arrive as text.
    event = dict(row)
    for column in ("venue", "queue", "sale_windows"):
        event[column] = orjson.loads(event[column])
    sections = orjson.loads(event.pop("sections"))
    document = document_from_rows(event, sections, None)
    for body, section in zip(document["sections"], sections, strict=True):
        if section["kind"] == "seated":
            body["blocked"] = _blocked_labels(section)
    document.pop("organizer_id", None)
    return document


async def _shard_page(runtime: Runtime, shard_id: int, query: ListQuery, timeout_s: float
                      ) -> list[tuple[datetime, UUID, asyncpg.Record]]:
    async with asyncio.timeout(timeout_s):  # covers pool creation, acquiring a connection and the query
        pool = await runtime.pool(shard_id)
        rows = await pool.fetch(LIST_SQL, *query.after, query.starts_before, query.category, query.city,
                                query.title_contains, query.status, query.limit + 1, timeout=timeout_s)
    return [(row["starts_at"], row["event_id"], row) for row in rows]


async def _gather_pages(request: Request, query: ListQuery) -> list[tuple[datetime, UUID, asyncpg.Record]]:
    runtime: Runtime = request.app.state.runtime
    settings = settings_of(request)
    shard_ids = range(settings.shard_count)
    pages = await asyncio.gather(*(_shard_page(runtime, shard_id, query, settings.db_call_timeout_s)
                                   for shard_id in shard_ids), return_exceptions=True)
    merged: list[tuple[datetime, UUID, asyncpg.Record]] = []
    failed: list[str] = []
    for shard_id, page in zip(shard_ids, pages, strict=True):
        if isinstance(page, BaseException):
            if not isinstance(page, TimeoutError | OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
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
    q: Annotated[str | None, Query(min_length=1, max_length=EVENTS_QUERY_CHARS_MAX,
                                   description="case-insensitive substring of the title")] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=EVENTS_FILTER_CHARS_MAX)] = None,
    city: Annotated[str | None, Query(min_length=1, max_length=EVENTS_FILTER_CHARS_MAX)] = None,
    starts_from: Annotated[datetime | None, Query(alias="from", description="starts_at ≥ from (RFC 3339)")] = None,
    starts_to: Annotated[datetime | None, Query(alias="to", description="starts_at < to (RFC 3339)")] = None,
    status: Annotated[Literal["on_sale", "paused", "cancelled"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_CHARS_MAX)] = None,
    limit: Annotated[int, Query(ge=1)] = EVENTS_PAGE_DEFAULT,
) -> JSONBody:
    started = time.perf_counter()
    page_max = settings_of(request).events_page_max
    if limit > page_max:
        raise ApiError(422, "VALIDATION_ERROR", f"limit must be in [1, {page_max}]")
    after = decode_cursor(cursor) if cursor is not None else NO_CURSOR
    starts_from, starts_to = _aware(starts_from, "from"), _aware(starts_to, "to")
    if starts_from is not None:
        # `from` is inclusive: the keyset is exclusive, so start just before it (ids are > the nil uuid).
        after = max(after, (starts_from, UUID(int=0)))
    query = ListQuery(after, starts_to, category, city, _like_escape(q) if q else None, status, limit)
    result = "error"
    try:
        merged = await _gather_pages(request, query)
        result = "ok"
    finally:
        LIST_LATENCY.labels(result).observe(time.perf_counter() - started)
    page = merged[:limit]
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(merged) > limit else None
    return JSONBody({"items": [_item(row) for _, _, row in page], "next_cursor": next_cursor})


# Seat stream ------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Feed:
    """The latest seat map and availability of one event, polled for every stream of it on this worker."""

    event_id: UUID
    shard_id: int
    client: ShardClient
    subscribers: int = 0
    version: int = 0
    failures: int = 0
    seats: SeatMapView | None = None
    availability: AvailabilityView | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def wait(self, seen_version: int, timeout_s: float) -> None:
        if self.version > seen_version:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    async def run(self) -> None:
        while self.subscribers > 0:
            await self._poll()
            self.version += 1
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()  # wakes every stream waiting on this version
            await asyncio.sleep(STREAM_POLL_INTERVAL_S)
        # Unregister in the same step that saw no subscribers, so a new stream starts a new feed.
        if _FEEDS.get(self.event_id) is self:
            del _FEEDS[self.event_id]

    async def _poll(self) -> None:
        """One reading of the seat map and the availability; a failure skips a beat, the next poll catches up."""
        try:
            async with asyncio.timeout(self.client.settings.request_deadline_s):  # the lane retries inside
                replies: tuple[Any, ...] = await asyncio.gather(
                    self.client.read(self.shard_id, GetSeatMap(self.event_id)),
                    self.client.read(self.shard_id, GetAvailability(self.event_id)), return_exceptions=True)
            seats, availability = replies
            if not isinstance(seats, SeatMapView) or not isinstance(availability, AvailabilityView):
                raise ShardUnavailable(f"replies {type(seats).__name__}: {seats}, "
                                       f"{type(availability).__name__}: {availability}"[:300])
        except (ShardUnavailable, TimeoutError, ConnectionError) as error:
            self.failures += 1
            STREAM_POLL_FAILURES.labels(str(self.shard_id)).inc()
            log.info("seat stream poll of %s failed (%d in a row): %s", self.event_id, self.failures, error)
            return
        self.seats, self.availability, self.failures = seats, availability, 0


_FEEDS: dict[UUID, _Feed] = {}
_streams_open = 0  # this worker's streams (the gauge sums over workers)


def _subscribe(client: ShardClient, event_id: UUID) -> _Feed:
    feed = _FEEDS.get(event_id)
    if feed is None or feed.task is None or feed.task.done():
        feed = _Feed(event_id, client.shard_map.shard_of(event_id), client)
        _FEEDS[event_id] = feed
        feed.subscribers = 1
        feed.task = asyncio.get_running_loop().create_task(feed.run(), name=f"seat-feed-{event_id}")
    else:
        feed.subscribers += 1
    return feed


def _sse(kind: str, event_id: int, data: Any) -> bytes:
    STREAM_EVENTS.labels(kind).inc()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, kind.encode(), orjson.dumps(data))


def _rows(view: SeatMapView) -> dict[tuple[str, str], str]:
    return {(section_id, label): seats for section_id, rows in view.sections for label, seats in rows}


def _seat_changes(before: dict[tuple[str, str], str], after: SeatMapView) -> list[dict[str, Any]]:
    """One `{"section", "rows"}` per section with rows whose seat string changed since `before`."""
    changes = []
    for section_id, rows in after.sections:
        changed = [{"label": label, "seats": seats} for label, seats in rows
                   if before.get((section_id, label)) != seats]
        if changed:
            changes.append({"section": section_id, "rows": changed})
    return changes


class _SeatStream:
    """One client's stream: the snapshot it was sent, then diffs against the event's feed."""

    def __init__(self, request: Request, seats: SeatMapView, availability: AvailabilityView, first_id: int) -> None:
        self.request = request
        self.rows = _rows(seats)
        self.sections = availability.sections
        self.snapshot = {"seats": seat_map_body(seats), "availability": availability_body(availability)}
        self.event_id = availability.event_id
        self.next_id = first_id
        self.feed: _Feed | None = None
        self.closed = False

    def _frame(self, kind: str, data: Any) -> bytes:
        frame = _sse(kind, self.next_id, data)
        self.next_id += 1
        return frame

    def _changes(self, feed: _Feed) -> list[bytes]:
        frames = []
        if feed.seats is not None:
            for change in _seat_changes(self.rows, feed.seats):
                frames.append(self._frame("seats", change))
            self.rows = _rows(feed.seats)
        if feed.availability is not None and feed.availability.sections != self.sections:
            self.sections = feed.availability.sections
            frames.append(self._frame("availability", availability_body(feed.availability)))
        return frames

    async def frames(self) -> AsyncIterator[bytes]:
        yield b"retry: %d\n" % STREAM_RECONNECT_MS + self._frame("snapshot", self.snapshot)
        feed = self.feed = _subscribe(client_of(self.request), self.event_id)
        seen = feed.version
        closes_at = time.monotonic() + STREAM_LIFETIME_S
        heartbeat_at = time.monotonic() + STREAM_HEARTBEAT_S
        while self._open(feed, closes_at):
            if await self.request.is_disconnected():
                return
            await feed.wait(seen, min(STREAM_POLL_INTERVAL_S, max(closes_at - time.monotonic(), 0.0)))
            if feed.version > seen:
                seen = feed.version
                frames = self._changes(feed)
                if frames:
                    heartbeat_at = time.monotonic() + STREAM_HEARTBEAT_S
                    yield b"".join(frames)
            if time.monotonic() >= heartbeat_at:
                heartbeat_at = time.monotonic() + STREAM_HEARTBEAT_S
                STREAM_EVENTS.labels("heartbeat").inc()
                yield b": keep-alive\n\n"

    @staticmethod
    def _open(feed: _Feed, closes_at: float) -> bool:
        """Whether to keep streaming: not shutting down, within the lifetime, the feed alive and answering."""
        feed_alive = feed.task is not None and not feed.task.done() and feed.failures < STREAM_FEED_FAILURES_MAX
        return not _shutting_down and time.monotonic() < closes_at and feed_alive

    def close(self) -> None:
        """Release the stream's slot and its feed subscription (exactly once, whatever ended it)."""
        global _streams_open
        if self.closed:
            return
        self.closed = True
        _streams_open -= 1
        STREAMS_OPEN.dec()
        if self.feed is not None:
            self.feed.subscribers -= 1


class _StreamResponse(StreamingResponse):
    def __init__(self, stream: _SeatStream) -> None:
        super().__init__(stream.frames(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


def _first_id(request: Request) -> int:
    """Ids continue after the client's Last-Event-ID, so they stay monotonic across reconnects."""
    last = request.headers.get("last-event-id", "")
    return int(last) + 1 if last.isascii() and last.isdigit() and len(last) <= 15 else 1


@router.get("/v1/events/{event_id}/seats/stream", summary="Live seat map: server-sent events (public)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: PROBLEM, 503: PROBLEM})
async def seat_stream(request: Request, event_id: UUID) -> StreamingResponse:
    global _streams_open
    retry_after_s = settings_of(request).retry_after_s
    if _streams_open >= STREAMS_PER_WORKER_MAX:
        STREAMS_REJECTED.labels("streams_max").inc()
        raise unavailable_error(f"this worker serves {STREAMS_PER_WORKER_MAX} streams already", retry_after_s)
    _streams_open += 1
    STREAMS_OPEN.inc()
    try:
        shard_id = client_of(request).shard_map.shard_of(event_id)
        replies: tuple[Any, ...] = await asyncio.gather(
            call_shard(request, shard_id, GetSeatMap(event_id), read=True),
            call_shard(request, shard_id, GetAvailability(event_id), read=True), return_exceptions=True)
        seats, availability = replies
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        stream = _SeatStream(request, expect(seats, SeatMapView, "EVENT_NOT_FOUND", retry_after_s),
                             expect(availability, AvailabilityView, "EVENT_NOT_FOUND", retry_after_s),
                             _first_id(request))
    except BaseException:
        _streams_open -= 1
        STREAMS_OPEN.dec()
        raise
    return _StreamResponse(stream)

