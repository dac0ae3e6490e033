"""The live seat map: `GET /v1/events/{id}/seats/stream` (API.md "Availability and seat map").

Pushed, not polled (issue 13, DESIGN §7): the shard actor appends every commit's seat and pool
changes to the event's Redis stream (actors/seat_feed.py). Each router worker keeps one *feed* per
event that has streams open on it — the event's seat map and availability, read from the actor
once when the first stream opens — and one reader task follows the streams of all its feeds with
a blocking `XREAD`, applying each entry to its feed. Every client stream then sends the rows and
counts that changed since what it last sent. A thousand viewers of one event cost the actor one
read when the first arrives and nothing after; a change reaches them as soon as Redis hands the
entry to the reader.

SSE event ids are the stream's entry ids, so a reconnecting EventSource resumes from its
`Last-Event-ID`: when the entries after it are still in the stream (about
`seat_feed_stream_entries_max` are kept) and number at most `seat_stream_resume_entries_max`, the
client is sent only the rows they touched; otherwise a fresh snapshot. A sequence gap, a new shard
epoch or a reset entry (after an actor's recovery) means the feed missed something: it re-reads the
seat map from the actor and its streams are sent a fresh snapshot.

Responses are sse-starlette's `EventSourceResponse`: keep-alive comments every
`seat_stream_heartbeat_s`, a write taking longer than `seat_stream_send_timeout_s` drops the client
(it reconnects and resumes; nothing is buffered for it), the stream ends on client disconnect and
on server shutdown. docs/browse-and-stream.md records the design and its limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import orjson
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from actors.inventory.results import SectionAvailability
from actors.protocol import AvailabilityView, GetAvailability, GetSeatMap, SeatMapView
from actors.seat_feed import stream_key
from cluster.logs import shared_context
from cluster.settings import Settings
from router.deps import settings_of
from router.http_metrics import at_zero
from router.problems import PROBLEM, ApiError
from router.shard_client import ShardClient, ShardUnavailable
from router.views import availability_body, expect, seat_map_body, unavailable_error

log = logging.getLogger(__name__)

# The stream's bounds are settings (`seat_stream_*`, `seat_feed_*`, `seat_streams_per_worker_max`).
STREAMS_OPEN = Gauge("ticketing_seat_streams_open", "Seat-map streams open.", multiprocess_mode="livesum")
STREAM_EVENTS = Counter("ticketing_seat_stream_events_total", "Server-sent events written to seat-map streams.",
                        ["kind"])
# Every reason and start the counters below are counted with, so each series exists at 0 from the
# start (`at_zero`): why a stream was refused or ended by the server, how it started, why a feed
# re-read its seat map (Feed.apply) and what a failed feed read was.
STREAM_REJECTIONS = ("no_redis", "streams_max", "unavailable")
STREAM_ENDINGS = ("lifetime", "shutdown", "feed_failed", "slow_client")
STREAM_STARTS = ("snapshot", "resumed")
FEED_RESYNC_REASONS = ("reset", "epoch", "gap", "layout")
FEED_FAILURE_KINDS = ("redis", "seat_map", "resume")
STREAMS_REJECTED = at_zero(Counter("ticketing_seat_streams_rejected_total", "Seat-map streams refused.", ["reason"]),
                           *STREAM_REJECTIONS)
STREAMS_ENDED = at_zero(Counter("ticketing_seat_streams_ended_total",
                                "Seat-map streams ended by the server, by reason.", ["reason"]), *STREAM_ENDINGS)
STREAMS_OPENED = at_zero(Counter("ticketing_seat_streams_opened_total", "Seat-map streams opened, by how they started.",
                                 ["start"]), *STREAM_STARTS)
FEED_ENTRIES = Counter("ticketing_seat_feed_entries_read_total", "Seat-feed stream entries applied by routers.")
FEED_RESYNCS = at_zero(Counter("ticketing_seat_feed_resyncs_total",
                               "Seat maps re-read from the actor because a feed missed entries, by reason.",
                               ["reason"]), *FEED_RESYNC_REASONS)
FEED_FAILURES = at_zero(Counter("ticketing_seat_feed_failures_total", "Failed seat-feed reads, by what failed.",
                                ["what"]), *FEED_FAILURE_KINDS)
FEED_LAG = Histogram("ticketing_seat_feed_lag_seconds",
                     "From a change's commit in the actor to its application in a router's feed.",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
NO_ENTRY = "0-0"

router = APIRouter(tags=["events"])


def _id_order(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Frame = tuple[str, bytes]  # (kind, the event's bytes): kinds are counted as they are written


def _sse(kind: str, event_id: str, data: Any) -> Frame:
    return kind, b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), kind.encode(), orjson.dumps(data))


def _written(frames: list[Frame]) -> bytes:
    for kind, _ in frames:
        STREAM_EVENTS.labels(kind).inc()
    return b"".join(frame for _, frame in frames)


@dataclass(frozen=True, slots=True)
class _Change:
    """What one feed update changed: the stream's client sends these rows and, if `counts`, the availability."""

    version: int
    rows: frozenset[tuple[str, str]]
    counts: bool
    full: bool  # the seat map was re-read: send a snapshot


class _Feed:
    """One event's seat map and availability on this worker, kept current from its Redis stream."""

    def __init__(self, event_id: UUID, shard_id: int, history_max: int, interval_s: float = 0.0) -> None:
        self.event_id = event_id
        self.shard_id = shard_id
        self.key = stream_key(event_id)
        self.subscribers = 0
        self.last_id = NO_ENTRY  # the last stream entry applied
        self.epoch: int | None = None
        self.number = 0
        self.currency = ""
        self.layout: list[tuple[str, list[str]]] = []  # seated sections in order, their row labels
        self.labels: dict[str, list[str]] = {}  # the same, by section
        self.rows: dict[tuple[str, str], bytearray] = {}
        self.sections: dict[str, SectionAvailability] = {}
        self.as_of_s = 0.0
        self.version = 0
        self.history: deque[_Change] = deque(maxlen=history_max)
        self.changed = asyncio.Event()
        # Streams are woken at most every `interval_s` (changes in between go out together): a
        # thousand streams of a hot event must not each write once per commit.
        self.interval_s = interval_s
        self.woken_version = 0
        self._woken_at = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        self.loaded: asyncio.Task[None] | None = None
        self.resync_task: asyncio.Task[None] | None = None
        self.failures = 0
        self.closed = False
        # since(v) for the current version, by v: streams at the same version share one rendering.
        self._rendered: dict[int, list[Frame] | None] = {}

    # State ----------------------------------------------------------------------------------------

    def replace(self, seats: SeatMapView, availability: AvailabilityView, as_of_s: float) -> None:
        self.currency = availability.currency
        self.layout = [(section_id, [label for label, _ in rows]) for section_id, rows in seats.sections]
        self.labels = dict(self.layout)
        self.rows = {(section_id, label): bytearray(row.encode())
                     for section_id, rows in seats.sections for label, row in rows}
        self.sections = {section.section_id: section for section in availability.sections}
        self.as_of_s = as_of_s

    def seat_map(self) -> SeatMapView:
        return SeatMapView(tuple((section_id, tuple((label, self.rows[section_id, label].decode()) for label in labels))
                                 for section_id, labels in self.layout))

    def availability(self) -> AvailabilityView:
        return AvailabilityView(self.event_id, self.currency, tuple(self.sections.values()))

    def snapshot(self) -> dict[str, Any]:
        return {"seats": seat_map_body(self.seat_map()), "availability": availability_body(self.availability(),
                                                                                           self.as_of_s)}

    def apply(self, entries: list[tuple[Any, dict[Any, Any]]]) -> str | None:
        """Apply stream entries in order; the reason to re-read the seat map, if one showed a gap."""
        resync: str | None = None
        touched: set[tuple[str, str]] = set()
        seated: set[str] = set()
        counts = False
        now = time.time()
        for entry_id, raw in entries:
            fields = {_text(name): value for name, value in raw.items()}
            epoch, number = int(fields["e"]), int(fields["n"])
            if "r" in fields:
                resync = resync or "reset"
            elif self.epoch is not None and epoch != self.epoch:
                resync = resync or "epoch"
            elif self.epoch is not None and number != self.number + 1:
                resync = resync or "gap"
            self.epoch, self.number, self.last_id = epoch, number, _text(entry_id)
            FEED_ENTRIES.inc()
            if "d" not in fields:
                continue
            at_s = float(fields["t"])
            FEED_LAG.observe(max(0.0, now - at_s))
            self.as_of_s = max(self.as_of_s, at_s)
            data = orjson.loads(fields["d"])
            for section_id, label, index, status in data["s"]:
                row = self.rows.get((section_id, label))
                if row is None or not 0 <= index < len(row):
                    resync = resync or "layout"
                    continue
                row[index] = ord(status)
                touched.add((section_id, label))
                seated.add(section_id)
            for section_id, held, sold in data["p"]:
                section = self.sections.get(section_id)
                if section is None:
                    resync = resync or "layout"
                    continue
                self.sections[section_id] = section._replace(
                    held=held, sold=sold, available=section.capacity - held - sold - section.blocked)
                counts = True
        for section_id in seated:
            self._recount(section_id)
        if touched or counts:
            self.publish(_Change(self.version + 1, frozenset(touched), True, False))
        return resync

    def _recount(self, section_id: str) -> None:
        section = self.sections.get(section_id)
        if section is None:
            return
        held = sold = blocked = available = 0
        for label in self.labels.get(section_id, ()):  # this section's rows only, not every row
            row = self.rows[section_id, label]
            held += row.count(b"h")
            sold += row.count(b"s")
            blocked += row.count(b"x")
            available += row.count(b".")
        self.sections[section_id] = section._replace(held=held, sold=sold, blocked=blocked, available=available)

    def publish(self, change: _Change) -> None:
        self._rendered.clear()
        self.version = change.version
        self.history.append(change)
        if self._wake_handle is not None:
            return  # a wake is already due: it will carry this change too
        wait_s = self._woken_at + self.interval_s - time.monotonic()
        if wait_s <= 0:
            self._wake()
        else:
            self._wake_handle = asyncio.get_running_loop().call_later(wait_s, self._wake)

    def wake(self) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        self._wake()

    def _wake(self) -> None:
        """Wake every stream waiting for a version newer than the one they have."""
        self._wake_handle = None
        self._woken_at = time.monotonic()
        self.woken_version = self.version
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        self.closed = True
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        self.publish(_Change(self.version + 1, frozenset(), False, True))
        self._wake()

    # What a stream sends -------------------------------------------------------------------------

    def frames(self, rows: Iterable[tuple[str, str]], counts: bool) -> list[Frame]:
        """`seats` events (one per section, the given rows) and an `availability` event, all with
        the id of the last entry applied."""
        wanted = set(rows)
        frames = []
        for section_id, labels in self.layout:
            changed = [{"label": label, "seats": self.rows[section_id, label].decode()}
                       for label in labels if (section_id, label) in wanted]
            if changed:
                frames.append(_sse("seats", self.last_id, {"section": section_id, "rows": changed}))
        if counts or wanted:
            frames.append(_sse("availability", self.last_id, availability_body(self.availability(), self.as_of_s)))
        return frames

    def since(self, version: int) -> list[Frame] | None:
        """What changed after `version`; None when a snapshot must be sent instead."""
        if version >= self.version:
            return []
        if version in self._rendered:
            return self._rendered[version]
        rendered = self._rendered[version] = self._since(version)
        return rendered

    def _since(self, version: int) -> list[Frame] | None:
        if not self.history or self.history[0].version > version + 1:
            return None  # fell further behind than the history keeps
        rows: set[tuple[str, str]] = set()
        counts = False
        for change in self.history:
            if change.version <= version:
                continue
            if change.full:
                return None
            rows |= change.rows
            counts = counts or change.counts
        return self.frames(rows, counts)

    async def wait(self, version: int) -> None:
        """Until the streams are woken past `version` (a change, the feed closing, or the reader's
        tick every `seat_stream_heartbeat_s` so streams see their lifetime end). An Event's future,
        not `wait_for`: that makes a task per stream per wake, which a thousand streams feel."""
        if self.woken_version > version or self.closed:
            return
        await self.changed.wait()

    def tick(self, every_s: float) -> None:
        if self._wake_handle is None and time.monotonic() - self._woken_at >= every_s:
            self._wake()


class SeatFeeds:
    """This worker's feeds and the one reader task that follows their Redis streams."""

    def __init__(self, settings: Settings, client: ShardClient, redis: Any) -> None:
        self.settings = settings
        self.client = client
        self.redis = redis  # the router's pooled client: loads and resumes
        self.feeds: dict[UUID, _Feed] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._reader_redis: Any = None

    async def subscribe(self, event_id: UUID) -> _Feed:
        """The event's feed, loaded (the first stream of an event on this worker reads its seat map)."""
        feed = self.feeds.get(event_id)
        if feed is None or feed.closed:
            feed = self.feeds[event_id] = _Feed(event_id, self.client.shard_map.shard_of(event_id),
                                                self.settings.seat_stream_history_max,
                                                self.settings.seat_stream_interval_ms / 1000)
            feed.loaded = asyncio.get_running_loop().create_task(self._load(feed), name=f"seat-feed-{event_id}",
                                                                   context=shared_context())
        feed.subscribers += 1
        try:
            assert feed.loaded is not None
            await asyncio.shield(feed.loaded)
        except BaseException:
            self.unsubscribe(feed)
            if self.feeds.get(event_id) is feed:
                del self.feeds[event_id]
            raise
        self._ensure_reader()
        return feed

    def unsubscribe(self, feed: _Feed) -> None:
        feed.subscribers -= 1
        if feed.subscribers <= 0 and self.feeds.get(feed.event_id) is feed and not feed.closed:
            del self.feeds[feed.event_id]  # the reader stops following it on its next read
            feed.closed = True

    async def _load(self, feed: _Feed) -> None:
        """The last entry's id first, then the seat map: what committed in between is applied
        again from the stream, harmlessly (entries carry absolute values)."""
        last = await self.redis.xrevrange(feed.key, "+", "-", count=1)
        last_id = _text(last[0][0]) if last else NO_ENTRY
        await self._read_seat_map(feed)
        feed.last_id = last_id

    async def _read_seat_map(self, feed: _Feed) -> None:
        settings = self.settings
        as_of_s = time.time()
        async with asyncio.timeout(settings.request_deadline_s):  # the lane retries inside
            seats, availability = await asyncio.gather(self.client.read(feed.shard_id, GetSeatMap(feed.event_id)),
                                                       self.client.read(feed.shard_id,
                                                                        GetAvailability(feed.event_id)))
        feed.replace(expect(seats, SeatMapView, "EVENT_NOT_FOUND", settings.retry_after_s),
                     expect(availability, AvailabilityView, "EVENT_NOT_FOUND", settings.retry_after_s), as_of_s)

    async def _resync(self, feed: _Feed, reason: str) -> None:
        FEED_RESYNCS.labels(reason).inc()
        log.info("seat feed of %s re-reads the seat map (%s)", feed.event_id, reason)
        while not feed.closed:
            try:
                await self._read_seat_map(feed)
            except (ShardUnavailable, ApiError, TimeoutError, ConnectionError) as error:
                feed.failures += 1
                FEED_FAILURES.labels("seat_map").inc()
                if feed.failures >= self.settings.seat_feed_failures_max:
                    log.warning("seat feed of %s gives up after %d failures: %s", feed.event_id, feed.failures, error)
                    self._drop(feed)
                    return
                await asyncio.sleep(self.settings.seat_feed_block_ms / 1000)
                continue
            feed.failures = 0
            feed.publish(_Change(feed.version + 1, frozenset(), True, True))
            return

    def wake_all(self) -> None:
        """Every stream looks up now (at shutdown: they see the flag and end)."""
        for feed in self.feeds.values():
            feed.wake()

    def _drop(self, feed: _Feed) -> None:
        if self.feeds.get(feed.event_id) is feed:
            del self.feeds[feed.event_id]
        feed.close()

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="seat-feed-reader",
                                                                   context=shared_context())
        self._wake.set()

    async def _read(self) -> None:
        """Follow every loaded feed's stream: one blocking XREAD for all of them at a time."""
        import redis.asyncio as aioredis

        settings = self.settings
        block_ms = settings.seat_feed_block_ms
        self._reader_redis = reader = aioredis.from_url(
            settings.redis_url, socket_timeout=block_ms / 1000 + settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s)
        while True:
            feeds = {feed.key: feed for feed in self.feeds.values() if feed.loaded is not None and feed.loaded.done()
                     and not feed.loaded.cancelled() and feed.loaded.exception() is None}
            if not feeds:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                reply = await reader.xread({key: feed.last_id for key, feed in feeds.items()},
                                           count=settings.seat_feed_read_entries_max, block=block_ms)
            except (RedisError, OSError, TimeoutError) as error:
                FEED_FAILURES.labels("redis").inc()
                for feed in feeds.values():
                    feed.failures += 1
                    if feed.failures >= settings.seat_feed_failures_max:
                        log.warning("seat feed of %s gives up: Redis: %s", feed.event_id, error)
                        self._drop(feed)
                await asyncio.sleep(block_ms / 1000)
                continue
            for feed in feeds.values():
                feed.failures = 0
                feed.tick(settings.seat_stream_heartbeat_s)
            for key, entries in _by_stream(reply):
                following = feeds.get(key)
                if following is None or following.closed:
                    continue
                reason = following.apply(entries)
                if reason is not None and (following.resync_task is None or following.resync_task.done()):
                    following.resync_task = asyncio.get_running_loop().create_task(self._resync(following, reason),
                                                                                            context=shared_context())

    async def resume(self, feed: _Feed, last_event_id: str) -> tuple[int, list[Frame]] | None:
        """(version, frames) bringing a client that saw `last_event_id` up to date; None: send a snapshot."""
        version, last_id = feed.version, feed.last_id
        if last_event_id == last_id:
            return version, []
        if last_id == NO_ENTRY or _id_order(last_event_id) > _id_order(last_id):
            return None
        limit = self.settings.seat_stream_resume_entries_max
        try:
            entries = await self.redis.xrange(feed.key, last_event_id, last_id, count=limit + 2)
        except (RedisError, OSError, TimeoutError):
            FEED_FAILURES.labels("resume").inc()
            return None
        if not entries or _text(entries[0][0]) != last_event_id or len(entries) > limit + 1:
            return None  # trimmed away, or too much to replay
        rows: set[tuple[str, str]] = set()
        counts = False
        previous: tuple[int, int] | None = None
        for _, raw in entries:
            fields = {_text(name): value for name, value in raw.items()}
            epoch, number = int(fields["e"]), int(fields["n"])
            if "r" in fields or (previous is not None and (epoch, number) != (previous[0], previous[1] + 1)):
                return None
            if previous is not None and "d" in fields:
                data = orjson.loads(fields["d"])
                rows.update((section_id, label) for section_id, label, _, _ in data["s"])
                counts = counts or bool(data["p"]) or bool(data["s"])
            previous = (epoch, number)
        return version, feed.frames(rows, counts)

    async def close(self) -> None:
        tasks = [task for task in (self._reader, *(feed.resync_task for feed in self.feeds.values())) if task]
        for feed in list(self.feeds.values()):
            self._drop(feed)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._reader_redis is not None:
            with contextlib.suppress(Exception):
                await self._reader_redis.aclose()


def _by_stream(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREAD's reply as (key, entries): a list of [key, entries] in RESP2, {key: [entries]} in RESP3."""
    if isinstance(reply, dict):
        return [(_text(key), value[0]) for key, value in reply.items()]
    return [(_text(key), entries) for key, entries in reply or []]


# Shutdown ---------------------------------------------------------------------------------------
# uvicorn waits for open responses to finish before it runs the lifespan shutdown, so a stream
# cannot learn about shutdown from the lifespan. sse-starlette's own drain cancels the response,
# which cuts the chunked body mid-stream (measured: the client sees "incomplete chunked read").
# So the lifespan chains a handler in front of uvicorn's SIGINT/SIGTERM handler that sets a flag
# and wakes every feed (through the loop: a signal handler must not touch asyncio objects); each
# stream sees the flag and ends its body cleanly. sse-starlette's drain stays as the backstop,
# after `seat_stream_shutdown_grace_s`.
_shutting_down = False


def _chain_shutdown_signals(on_signal: Callable[[], None]) -> dict[int, Any]:
    previous: dict[int, Any] = {}
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if not callable(handler):
            continue

        def chained(sig: int, frame: Any, handler: Callable[..., Any] = handler) -> None:
            global _shutting_down
            _shutting_down = True
            loop.call_soon_threadsafe(on_signal)
            handler(sig, frame)

        try:
            signal.signal(signum, chained)
        except ValueError:  # not the main thread (an in-process test client): nothing to chain
            return previous
        previous[signum] = handler
    return previous


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Entered by the app's lifespan (router/app.py), after the runtime started (its Redis client)."""
    global _shutting_down
    _shutting_down = False
    runtime = app.state.runtime
    app.state.seat_feeds = feeds = SeatFeeds(app.state.settings, app.state.shard_client, runtime.redis)
    previous = _chain_shutdown_signals(feeds.wake_all)
    try:
        yield
    finally:
        _shutting_down = True
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        await feeds.close()


# Seat stream ------------------------------------------------------------------------------------

_streams_open = 0  # this worker's streams (the gauge sums over workers)


class _SeatStream:
    """One client's stream: a snapshot (or what it missed since its Last-Event-ID), then changes."""

    def __init__(self, feeds: SeatFeeds, feed: _Feed, settings: Settings, opening: bytes, version: int) -> None:
        self.feeds = feeds
        self.feed = feed
        self.settings = settings
        self.opening = opening
        self.version = version
        self.closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        settings, feed = self.settings, self.feed
        yield b"retry: %d\n" % settings.seat_stream_reconnect_ms + self.opening
        closes_at = time.monotonic() + settings.seat_stream_lifetime_s
        while True:
            remaining = closes_at - time.monotonic()
            if remaining <= 0:
                STREAMS_ENDED.labels("lifetime").inc()
                return
            await feed.wait(self.version)
            if _shutting_down:
                STREAMS_ENDED.labels("shutdown").inc()
                return
            if feed.closed:
                STREAMS_ENDED.labels("feed_failed").inc()
                return
            version = feed.version
            frames = feed.since(self.version)
            if frames is None:
                frames = [_sse("snapshot", feed.last_id, feed.snapshot())]
            self.version = version
            if frames:
                yield _written(frames)

    def close(self) -> None:
        """Release the stream's slot and its feed subscription (exactly once, whatever ended it)."""
        global _streams_open
        if self.closed:
            return
        self.closed = True
        _streams_open -= 1
        STREAMS_OPEN.dec()
        self.feeds.unsubscribe(self.feed)


def _keep_alive() -> ServerSentEvent:
    STREAM_EVENTS.labels("heartbeat").inc()
    return ServerSentEvent(comment="keep-alive")


class _StreamResponse(EventSourceResponse):
    def __init__(self, stream: _SeatStream) -> None:
        settings = stream.settings
        super().__init__(stream.frames(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                         ping=settings.seat_stream_heartbeat_s, ping_message_factory=_keep_alive,
                         send_timeout=settings.seat_stream_send_timeout_s, shutdown_event=anyio.Event(),
                         shutdown_grace_period=settings.seat_stream_shutdown_grace_s)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            STREAMS_ENDED.labels("slow_client").inc()  # it reconnects and resumes; nothing was buffered for it
        finally:
            self.stream.close()


async def _opening(feeds: SeatFeeds, feed: _Feed, last_event_id: str) -> tuple[bytes, int]:
    """The first frames (a snapshot, or what the client missed) and the feed version they reflect."""
    if STREAM_ID.fullmatch(last_event_id):
        resumed = await feeds.resume(feed, last_event_id)
        if resumed is not None:
            STREAMS_OPENED.labels("resumed").inc()
            version, frames = resumed
            return _written(frames), version
    STREAMS_OPENED.labels("snapshot").inc()
    return _written([_sse("snapshot", feed.last_id, feed.snapshot())]), feed.version


@router.get("/v1/events/{event_id}/seats/stream", summary="Live seat map: server-sent events (public)",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: PROBLEM, 503: PROBLEM})
async def seat_stream(request: Request, event_id: UUID) -> EventSourceResponse:
    global _streams_open
    settings = settings_of(request)
    retry_after_s = settings.retry_after_s
    feeds: SeatFeeds = request.app.state.seat_feeds
    if feeds.redis is None:
        STREAMS_REJECTED.labels("no_redis").inc()
        raise unavailable_error("the live seat map needs Redis, and none is configured", retry_after_s)
    if _streams_open >= settings.seat_streams_per_worker_max:
        STREAMS_REJECTED.labels("streams_max").inc()
        raise unavailable_error(f"this worker serves {settings.seat_streams_per_worker_max} streams already",
                                retry_after_s)
    _streams_open += 1
    STREAMS_OPEN.inc()
    feed: _Feed | None = None
    try:
        feed = await feeds.subscribe(event_id)
        opening, version = await _opening(feeds, feed, request.headers.get("last-event-id", "")[:64])
        stream = _SeatStream(feeds, feed, settings, opening, version)
    except BaseException as error:
        _streams_open -= 1
        STREAMS_OPEN.dec()
        if feed is not None:
            feeds.unsubscribe(feed)
        if isinstance(error, ShardUnavailable | TimeoutError | ConnectionError | RedisError | OSError):
            STREAMS_REJECTED.labels("unavailable").inc()
            raise unavailable_error(f"the seat map could not be read: {type(error).__name__}", retry_after_s) from None
        raise
    return _StreamResponse(stream)
