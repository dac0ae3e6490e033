"""The seat feed's two ends without Redis: what an actor publishes for a commit
(actors/seat_feed.py), how a router's feed applies it and what a stream then sends
(router/seat_stream.py), and a slow client being dropped rather than buffered."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from starlette.types import Message

from actors.inventory.changes import HoldCreated, PoolCountersChanged, SeatsClaimed, SeatsReleased, SeatsSold
from actors.inventory.layout import GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import SectionAvailability
from actors.protocol import AvailabilityView, SeatMapView
from actors.seat_feed import render, seat_changes
from cluster.settings import Settings
from router import seat_stream
from router.seat_stream import SeatFeeds, _Feed, _SeatStream, _StreamResponse

EVENT = uuid.uuid4()
OTHER = uuid.uuid4()
LAYOUT = Layout((SeatedSectionSpec("A", 100, (RowSpec("1", 4), RowSpec("2", 4))),
                 GeneralAdmissionSpec("floor", 50, 10)))


def test_a_commit_publishes_the_last_status_of_each_touched_seat_and_pool() -> None:
    hold = uuid.uuid4()
    changes = [
        HoldCreated(EVENT, hold, "u", "seats", None, (1, 5), 2, 200, 0.0, 0.0),  # no seat status of its own
        SeatsClaimed(EVENT, hold, (1, 5)),
        SeatsSold(EVENT, hold, uuid.uuid4(), (5,)),
        SeatsReleased(EVENT, (1,), hold, None),
        PoolCountersChanged(EVENT, "floor", 3, 1, 0, 0),
        PoolCountersChanged(EVENT, "floor", 4, 1, 3, 1),
        SeatsClaimed(OTHER, uuid.uuid4(), (0,)),
    ]
    touched = seat_changes(changes)
    assert touched[EVENT] == ({1: ".", 5: "s"}, {"floor": (4, 1)})
    assert touched[OTHER] == ({0: "h"}, {})
    data = orjson.loads(render(LAYOUT, *touched[EVENT]))
    # seat_no 1 is row 1's second seat (index 1), 5 is row 2's second seat
    assert data == {"s": [["A", "1", 1, "."], ["A", "2", 1, "s"]], "p": [["floor", 4, 1]]}


def feed() -> _Feed:
    made = _Feed(EVENT, 0, history_max=4)
    made.replace(SeatMapView((("A", (("1", "...."), ("2", "...."))),)),
                 AvailabilityView(EVENT, "EUR", (SectionAvailability("A", "seated", 8, 8, 0, 0, 0, 100),
                                                 SectionAvailability("floor", "ga", 10, 10, 0, 0, 0, 50))), 1.0)
    return made


def entry(number: int, data: dict[str, Any], epoch: int = 7) -> tuple[bytes, dict[bytes, Any]]:
    return (f"{1000 + number}-0".encode(),
            {b"e": str(epoch).encode(), b"n": str(number).encode(), b"t": b"2.5", b"d": orjson.dumps(data)})


def test_a_feed_applies_entries_and_recounts_the_sections() -> None:
    current = feed()
    assert current.apply([entry(1, {"s": [["A", "1", 0, "h"], ["A", "2", 3, "s"]], "p": [["floor", 2, 3]]})]) is None
    assert current.seat_map() == SeatMapView((("A", (("1", "h..."), ("2", "...s"))),))
    sections = {section.section_id: section for section in current.availability().sections}
    assert (sections["A"].available, sections["A"].held, sections["A"].sold) == (6, 1, 1)
    assert (sections["floor"].available, sections["floor"].held, sections["floor"].sold) == (5, 2, 3)
    assert current.last_id == "1001-0" and current.as_of_s == 2.5
    # Applying the same entry again changes nothing (absolute values).
    current.apply([entry(2, {"s": [["A", "1", 0, "h"]], "p": []})])
    assert current.seat_map().sections[0][1][0] == ("1", "h...")


@pytest.mark.parametrize(("entries", "reason"), [
    ([entry(1, {"s": [], "p": []}), entry(3, {"s": [], "p": []})], "gap"),
    ([entry(1, {"s": [], "p": []}), entry(2, {"s": [], "p": []}, epoch=8)], "epoch"),
    ([(b"1001-0", {b"e": b"7", b"n": b"0", b"r": b"1", b"t": b"1"})], "reset"),
    ([entry(1, {"s": [["B", "9", 0, "h"]], "p": []})], "layout"),
])
def test_a_feed_that_missed_something_asks_for_the_seat_map(entries: list[Any], reason: str) -> None:
    assert feed().apply(entries) == reason


def test_in_sequence_entries_need_no_resync() -> None:
    """The negative control of the parametrized test above."""
    assert feed().apply([entry(number, {"s": [], "p": []}) for number in (1, 2, 3)]) is None


def test_a_stream_is_sent_the_rows_changed_since_its_version_or_a_snapshot() -> None:
    current = feed()
    current.apply([entry(1, {"s": [["A", "1", 0, "h"]], "p": []})])
    current.apply([entry(2, {"s": [["A", "2", 1, "h"]], "p": []})])
    frames = current.since(0)
    assert frames is not None and [kind for kind, _ in frames] == ["seats", "availability"]
    assert b'"rows":[{"label":"1","seats":"h..."},{"label":"2","seats":".h.."}]' in frames[0][1]
    assert current.since(1) is not None and b'"label":"1"' not in current.since(1)[0][1]  # type: ignore[index]
    assert current.since(current.version) == []
    for number in range(3, 9):  # more versions than the history keeps
        current.apply([entry(number, {"s": [["A", "1", 1, "h"]], "p": []})])
    assert current.since(0) is None  # too far behind: a snapshot


def test_a_client_that_does_not_read_is_dropped_not_buffered() -> None:
    """A send that does not complete within seat_stream_send_timeout_s ends the stream and frees its slot."""
    settings = Settings(seat_stream_send_timeout_s=0.2, seat_stream_heartbeat_s=60)
    feeds = SeatFeeds(settings, client=None, redis=None)  # type: ignore[arg-type]
    current = feed()
    feeds.feeds[EVENT] = current
    current.subscribers = 1
    seat_stream._streams_open += 1
    stream = _SeatStream(feeds, current, settings, b"", current.version)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            await asyncio.sleep(3600)  # the client's window is full: the write never completes

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(asyncio.wait_for(_StreamResponse(stream)(scope, receive, send), 5))
    assert stream.closed and current.subscribers == 0 and EVENT not in feeds.feeds


@pytest.mark.parametrize(("interval_s", "expected_wakes"), [(0.2, 2), (0.0, 4)])  # 0: the negative control
def test_a_busy_feed_wakes_its_streams_at_most_once_per_interval(interval_s: float, expected_wakes: int) -> None:
    """Commits every few milliseconds must not write to every stream each time: the wakes come
    `seat_stream_interval_ms` apart and carry every change in between."""

    async def run() -> tuple[int, list[Any]]:
        current = _Feed(EVENT, 0, history_max=64, interval_s=interval_s)
        current.replace(SeatMapView((("A", (("1", "...."),)),)),
                        AvailabilityView(EVENT, "EUR", (SectionAvailability("A", "seated", 4, 4, 0, 0, 0, 1),)), 1.0)
        wakes = 0
        seen = 0
        frames: list[Any] = []

        async def stream() -> None:
            nonlocal wakes, seen
            while True:
                await current.wait(seen)
                version = current.version
                frames.append(current.since(seen))
                seen = version
                wakes += 1

        task = asyncio.create_task(stream())
        for number in range(1, 5):  # four commits 20 ms apart: one wake now, one 200 ms later
            current.apply([entry(number, {"s": [["A", "1", number - 1, "h"]], "p": []})])
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.35)
        task.cancel()
        return wakes, frames

    wakes, frames = asyncio.run(run())
    assert wakes == expected_wakes, frames
    assert b'"seats":"hhhh"' in frames[-1][0][1]
