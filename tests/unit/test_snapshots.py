"""Per-worker snapshots of the public reads (router/snapshots.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.snapshots import ReadSnapshots

pytestmark = pytest.mark.unit


def test_a_crowd_of_readers_costs_one_read_per_interval() -> None:
    calls: list[float] = []

    async def read() -> str:
        calls.append(time.time())
        await asyncio.sleep(0.01)
        return f"view {len(calls)}"

    now = [0.0]  # the snapshots' clock: moved by hand, so a slow machine cannot age them

    async def crowd() -> list[tuple[str, float]]:
        snapshots = ReadSnapshots(ttl_s=0.2, entries_max=10, clock=lambda: now[0])
        first = await asyncio.gather(*(snapshots.get("event", read) for _ in range(500)))  # cold: single flight
        again = await asyncio.gather(*(snapshots.get("event", read) for _ in range(500)))  # fresh snapshot
        now[0] += 0.25
        later = await snapshots.get("event", read)
        return [*first, *again, later]

    answers = asyncio.run(crowd())
    assert len(calls) == 2  # one read for 1,000 requests, one after the snapshot aged
    assert {view for view, _ in answers[:1000]} == {"view 1"} and answers[-1][0] == "view 2"
    # as_of is when the read was sent: never later than the data, so never claims to be fresher.
    assert answers[0][1] <= calls[0] and answers[-1][1] <= calls[1]


def test_a_failed_read_is_not_kept() -> None:
    attempts = 0

    async def read() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("shard not answering")
        return "view"

    async def run() -> str:
        snapshots = ReadSnapshots(ttl_s=10, entries_max=10)
        with pytest.raises(ConnectionError):
            await snapshots.get("event", read)
        view, _ = await snapshots.get("event", read)
        return view

    assert asyncio.run(run()) == "view" and attempts == 2


def test_zero_seconds_means_every_read_asks() -> None:
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def run() -> None:
        snapshots = ReadSnapshots(ttl_s=0, entries_max=10)
        for _ in range(3):
            await snapshots.get("event", read)

    asyncio.run(run())
    assert calls == 3


def test_public_reads_state_their_age_and_how_long_caches_may_keep_them() -> None:
    from cluster.settings import Settings
    from router.events_api import freshness_headers

    assert dict(freshness_headers(Settings(read_snapshot_s=0.5), time.time() - 3.2)) == {
        b"cache-control": b"public, max-age=1", b"age": b"3"}
    assert dict(freshness_headers(Settings(read_snapshot_s=0), time.time())) == {
        b"cache-control": b"no-cache", b"age": b"0"}
