"""`ticketing slots move FIRST-LAST --to K`: move a slot range to another shard while it serves.

The steps and why each is safe are in shards/slot_moves.py; this module drives them against a
running deployment (its shard actors through Ray, its databases directly) and times them. Every
step is decided from what the databases record, so running the same command again after a crash
(of this process, an actor, a node) finishes the move from where it stopped, and running it on a
finished move changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shards.slot_moves import FENCED, OWNED, SlotRow, clear_source, copy_to_target, owners_of, read_rows
from shards.slots import SLOT_COUNT

# An actor method called with arguments, awaited: (shard id, method name, *args) → its answer.
CallActor = Callable[..., Awaitable[Any]]


@dataclass
class MoveReport:
    slots: list[int]
    source: int | None
    target: int
    version: int
    steps_s: dict[str, float] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)
    cleared: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return sum(self.steps_s.values())

    def describe(self) -> str:
        span = slot_ranges(self.slots)
        if self.source is None:
            return f"slots {span} are already on shard {self.target} (map version {self.version})"
        steps = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.steps_s.items())
        events = self.copied.get("events", 0)
        return (f"moved slots {span} ({events} events) from shard {self.source} to shard {self.target}, "
                f"map version {self.version}: {steps}; total {self.total_s:.2f} s")


def parse_slot_range(text: str) -> list[int]:
    first_text, _, last_text = text.partition("-")
    try:
        first, last = int(first_text), int(last_text or first_text)
    except ValueError:
        raise ValueError(f"slot range {text!r} is not FIRST-LAST") from None
    if not 0 <= first <= last < SLOT_COUNT:
        raise ValueError(f"slot range {text!r} is outside 0-{SLOT_COUNT - 1}")
    return list(range(first, last + 1))


def slot_ranges(slots: list[int]) -> str:
    """``[0, 1, 2, 7]`` → ``"0-2,7"``."""
    spans: list[list[int]] = []
    for slot in sorted(slots):
        if spans and slot == spans[-1][1] + 1:
            spans[-1][1] = slot
        else:
            spans.append([slot, slot])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans) or "-"


async def read_ownership(dsns: list[str]) -> dict[int, list[SlotRow]]:
    async def one(dsn: str) -> list[SlotRow]:
        connection = await asyncpg.connect(dsn)
        try:
            return await read_rows(connection)
        finally:
            await connection.close()

    return dict(enumerate(await asyncio.gather(*(one(dsn) for dsn in dsns))))


def _source_of(rows: dict[int, list[SlotRow]], slots: list[int], target: int) -> tuple[int | None, str]:
    """Which shard the slots leave, and where the move stands: 'fence', 'copy', 'clear', 'adopt'
    (the next step to run). The slots must all leave one shard."""
    state = {(shard_id, row.slot): row.state for shard_id, shard_rows in rows.items() for row in shard_rows}
    sources = set()
    for slot in slots:
        holders = {shard_id for shard_id in rows if state.get((shard_id, slot)) in (OWNED, FENCED)
                   and shard_id != target}
        if len(holders) > 1:
            raise RuntimeError(f"slot {slot} is held by shards {sorted(holders)}: repair by hand")
        sources |= holders
    if len(sources) > 1:
        raise ValueError(f"slots {slot_ranges(slots)} leave several shards ({sorted(sources)}): move one range "
                         "per source shard")
    if not sources:
        return None, "adopt"
    source = sources.pop()
    states = {state.get((source, slot)) for slot in slots}
    if OWNED in states:
        return source, "fence"
    if all(state.get((target, slot)) == OWNED for slot in slots):
        return source, "clear"
    return source, "copy"


async def move_slots(dsns: list[str], slots: list[int], target: int, call_actor: CallActor) -> MoveReport:
    """Fence → copy → clear → adopt (shards/slot_moves.py), each step only if not yet done."""
    if not 0 <= target < len(dsns):
        raise ValueError(f"shard {target} does not exist (shards 0-{len(dsns) - 1})")
    rows = await read_ownership(dsns)
    source, step = _source_of(rows, slots, target)
    _, version = owners_of(rows)
    if step == "fence":
        version += 1  # the move's version: fence, copy and clear all record it
    report = MoveReport(slots, source, target, version)
    if source is not None:
        if step == "fence":
            await _timed(report, "fence", call_actor(source, "fence_slots", slots, version))
            step = "copy"
        source_db, target_db = await asyncio.gather(asyncpg.connect(dsns[source]), asyncpg.connect(dsns[target]))
        try:
            if step == "copy":
                report.copied = await _timed(report, "copy", copy_to_target(source_db, target_db, slots, version))
            report.cleared = await _timed(report, "clear", clear_source(source_db, target_db, slots, version))
        finally:
            await asyncio.gather(source_db.close(), target_db.close())
    await _timed(report, "adopt", call_actor(target, "adopt_slots", slots))
    return report


async def _timed(report: MoveReport, name: str, step: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await step
    report.steps_s[name] = time.perf_counter() - started
    return result


def ray_caller(timeout_s: float) -> CallActor:
    """Call a shard actor's method through Ray (the caller has connected with `ray.init`)."""
    import ray

    async def call(shard_id: int, method: str, *args: Any) -> Any:
        handle = ray.get_actor(f"shard-{shard_id}", namespace="ticketing")
        return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout_s)

    return call

