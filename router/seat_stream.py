"""The live seat map: `GET /v1/events/{id}/seats/stream` (API.md "Availability and seat map").

A router-side change feed until the shard actors publish seat changes on Redis (DESIGN §7): one
poller per (worker, event) reads the seat map and the availability through the ordinary read lane
every `seat_stream_poll_interval_s`, and every stream of that event on this worker diffs the latest
reading against what it last sent its client. So a thousand viewers of one event cost one pair of
reads per interval per worker, not a thousand. docs/browse-and-stream.md records the design and
its limits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import Counter, Gauge
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from actors.protocol import AvailabilityView, GetAvailability, GetSeatMap, SeatMapView
from router.deps import call_shard, client_of, settings_of
from router.problems import PROBLEM
from router.shard_client import ShardClient, ShardUnavailable
from router.views import availability_body, expect, seat_map_body, unavailable_error

log = logging.getLogger(__name__)

# The stream's bounds are settings (`seat_stream_*`, `seat_streams_per_worker_max`: cluster/settings.py).
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
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Entered by the app's lifespan (router/app.py)."""
    global _shutting_down
    _shutting_down = False
    previous = _chain_shutdown_signals()
    try:
        yield
    finally:
        _shutting_down = True
        for signum, handler in previous.items():
            signal.signal(signum, handler)


router = APIRouter(tags=["events"])


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
            await asyncio.sleep(self.client.settings.seat_stream_poll_interval_s)
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
        self.settings = settings_of(request)
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
        settings = self.settings
        yield b"retry: %d\n" % settings.seat_stream_reconnect_ms + self._frame("snapshot", self.snapshot)
        feed = self.feed = _subscribe(client_of(self.request), self.event_id)
        seen = feed.version
        closes_at = time.monotonic() + settings.seat_stream_lifetime_s
        heartbeat_at = time.monotonic() + settings.seat_stream_heartbeat_s
        while self._open(feed, closes_at):
            if await self.request.is_disconnected():
                return
            await feed.wait(seen, min(settings.seat_stream_poll_interval_s, max(closes_at - time.monotonic(), 0.0)))
            if feed.version > seen:
                seen = feed.version
                frames = self._changes(feed)
                if frames:
                    heartbeat_at = time.monotonic() + settings.seat_stream_heartbeat_s
                    yield b"".join(frames)
            if time.monotonic() >= heartbeat_at:
                heartbeat_at = time.monotonic() + settings.seat_stream_heartbeat_s
                STREAM_EVENTS.labels("heartbeat").inc()
                yield b": keep-alive\n\n"

    def _open(self, feed: _Feed, closes_at: float) -> bool:
        """Whether to keep streaming: not shutting down, within the lifetime, the feed alive and answering."""
        feed_alive = (feed.task is not None and not feed.task.done()
                      and feed.failures < self.settings.seat_stream_poll_failures_max)
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
    settings = settings_of(request)
    retry_after_s = settings.retry_after_s
    if _streams_open >= settings.seat_streams_per_worker_max:
        STREAMS_REJECTED.labels("streams_max").inc()
        raise unavailable_error(f"this worker serves {settings.seat_streams_per_worker_max} streams already",
                                retry_after_s)
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

