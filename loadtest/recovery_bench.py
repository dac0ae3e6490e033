"""Time from SIGKILL of a shard actor until it answers reads with the same numbers as before.

    python -m loadtest.recovery_bench --seats 100000 [--kills 3] [--data-dir D]
    python -m loadtest.recovery_bench --seats 1000000

A fresh database and `ShardActor` of its own (see `loadtest.actor_bench`). One seated event of
``--seats`` seats in sections of 20 rows × 1,000 seats (20,000 seats a section: 5 sections for
100k, 50 for 1M). Seats are taken in groups of 4 adjacent seats, one buyer per group: of every
10 groups, 6 are sold (HoldSeats → BeginCheckout → ConfirmCheckout: an order and 4 tickets), 1 is
held (a live hold that does not expire during the run) and 3 stay free, so 60 % of seats are sold
and 10 % held, spread over the whole venue. Everything goes through ``apply`` in large batches
(1,000 commands a call, 4 calls in flight), durably, as a router would send them.

Then, ``--kills`` times: read the availability, SIGKILL the actor's process (Ray restarts it,
``max_restarts=-1``), and poll until (a) the restarted process answers ``health`` and (b) a
``GetAvailability`` read answers with exactly the numbers read before the kill. Printed: the time
to (b) from the kill (what a buyer sees), the time to (a) (Ray's process restart, imports
included), and the actor's own ``ticketing_actor_recovery_seconds`` gauge (lease + load +
checks). The summary gives median and min-max over the kills. Cleans up what it started.

While Ray restarts the actor, every ``health`` call fails at once (`cluster.raycluster` sets
``timeout_ms_task_wait_for_death_info`` to 0) and is sent again after ``POLL_S`` (5 ms), so the
polling adds at most 5 ms to (a); the ``GetAvailability`` read then waits inside the actor until
recovery is done, so (b) has no polling in it. The steps printed last are recovery's, timed one
by one in this process on the same database (in the actor the events and the idempotency keys
load concurrently, so their sum is a little more than the actor's own time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
import uuid
from typing import Any

from loadtest.actor_bench import apply_checked, bench_environment, gauge, kill_actor, start_actor  # sets Ray env

ROWS_PER_SECTION = 20
SEATS_PER_ROW = 1000
GROUP_SEATS = 4
CALL_COMMANDS = 1000
CALLS_IN_FLIGHT = 4
HOLD_SECONDS = 3600
POLL_S = 0.005
RECOVERY_TIMEOUT_S = 300.0


def seated_event(seats: int) -> Any:
    from actors.protocol import CreateEvent

    per_section = ROWS_PER_SECTION * SEATS_PER_ROW
    if seats % per_section:
        raise SystemExit(f"--seats must be a multiple of {per_section}")
    sections = [{"id": f"S{n + 1}", "name": f"Section {n + 1}", "kind": "seated", "price_cents": 6000 + 100 * n,
                 "rows": [{"label": str(row + 1), "seats": SEATS_PER_ROW} for row in range(ROWS_PER_SECTION)]}
                for n in range(seats // per_section)]
    document = {"title": "recovery bench", "category": "", "description": "", "venue": {"name": "arena"},
                "starts_at": "2027-01-01T20:00:00Z", "ends_at": None, "currency": "EUR",
                "hold_seconds": HOLD_SECONDS, "per_person_limit": None, "queue": {"enabled": False},
                "sale_windows": [], "sections": sections}
    return CreateEvent(uuid.uuid4(), "organizer", document)


def group_labels(group: int) -> tuple[str, ...]:
    first = group * GROUP_SEATS
    section, within = divmod(first, ROWS_PER_SECTION * SEATS_PER_ROW)
    row, seat = divmod(within, SEATS_PER_ROW)
    return tuple(f"S{section + 1}-{row + 1}-{seat + n + 1}" for n in range(GROUP_SEATS))


async def load_sales(handle: Any, event_id: uuid.UUID, seats: int) -> tuple[int, int]:
    """Sell 60 % and hold 10 % of the seats through `apply`; returns (sold groups, held groups)."""
    from actors.inventory.commands import BeginCheckout, ConfirmCheckout, HoldSeats
    from actors.inventory.results import HoldView, OrderView
    from shards.slots import new_id, slot_of

    slot = slot_of(event_id)
    groups = [g for g in range(seats // GROUP_SEATS) if g % 10 < 7]
    chunks = [groups[i:i + CALL_COMMANDS] for i in range(0, len(groups), CALL_COMMANDS)]
    gate = asyncio.Semaphore(CALLS_IN_FLIGHT)
    counts = [0, 0]

    async def call(commands: list[Any], expected: type) -> list[Any]:
        replies = await asyncio.wait_for(handle.apply.remote(commands), 600)
        bad = [reply for reply in replies if type(reply) is not expected]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(replies)} failed, first: {bad[0]}")
        return list(replies)

    async def chunk(members: list[int]) -> None:
        async with gate:
            holds = [HoldSeats(event_id, f"buyer-{g}", new_id(slot), group_labels(g)) for g in members]
            await call(holds, HoldView)
            sold = [hold for g, hold in zip(members, holds, strict=True) if g % 10 < 6]
            await call([BeginCheckout(h.user_id, h.hold_id) for h in sold], HoldView)
            await call([ConfirmCheckout(h.user_id, h.hold_id, new_id(slot), tuple(new_id(slot) for _ in h.seats))
                        for h in sold], OrderView)
            counts[0] += len(sold)
            counts[1] += len(holds) - len(sold)

    await asyncio.gather(*(chunk(members) for members in chunks))
    return counts[0], counts[1]


def availability(handle: Any, event_id: uuid.UUID, timeout_s: float = 30.0) -> Any:
    import ray

    from actors.protocol import GetAvailability

    (reply,) = ray.get(handle.read.remote([GetAvailability(event_id)]), timeout=timeout_s)
    return reply


def kill_and_time(handle: Any, event_id: uuid.UUID) -> tuple[float, float, float]:
    """SIGKILL the actor; seconds until health answers from a new pid and until reads match."""
    import ray

    expected = availability(handle, event_id)
    old_pid = int(ray.get(handle.health.remote(), timeout=30)["pid"])
    killed_at = time.perf_counter()
    os.kill(old_pid, signal.SIGKILL)
    process_up_s = answered_s = float("nan")
    while time.perf_counter() - killed_at < RECOVERY_TIMEOUT_S:
        try:
            if process_up_s != process_up_s:  # nan: the new process has not answered yet
                health = ray.get(handle.health.remote(), timeout=30)
                if int(health["pid"]) == old_pid:
                    time.sleep(POLL_S)
                    continue
                process_up_s = time.perf_counter() - killed_at
            if availability(handle, event_id, RECOVERY_TIMEOUT_S) == expected:
                answered_s = time.perf_counter() - killed_at
                break
            raise RuntimeError("the restarted actor answered with different availability")
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            time.sleep(POLL_S)
    else:
        raise RuntimeError(f"no matching answer within {RECOVERY_TIMEOUT_S} s")
    text = ray.get(handle.metrics_text.remote(), timeout=30)
    recovery_s = gauge(text, "ticketing_actor_recovery_seconds") or float("nan")
    return answered_s, process_up_s, recovery_s


def recovery_breakdown(dsn: str) -> dict[str, float]:
    """Recovery's steps timed in this process, as `actors.restore.restore_shard` runs them.

    Run only after the actor is gone for good: taking the lease fences any live owner. The
    events and the idempotency keys load concurrently in recovery; here they are timed apart.
    """
    import asyncpg

    from actors.inventory import ShardInventory
    from actors.restore import adopt
    from cluster.settings import ShardBounds
    from shards.event_rows import configure_json
    from shards.lease import take_lease
    from shards.loader import load_events, load_idempotency

    async def steps() -> dict[str, float]:
        timings: dict[str, float] = {}
        mark = time.perf_counter()
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=8, init=configure_json)
        timings["connect"] = time.perf_counter() - mark
        try:
            async with pool.acquire() as connection:
                mark = time.perf_counter()
                await take_lease(connection, 0, "recovery-bench")
                timings["take_lease"] = time.perf_counter() - mark
            mark = time.perf_counter()
            rows = await load_events(pool, list(range(256)))
            timings["load_events_sql"] = time.perf_counter() - mark
            async with pool.acquire() as connection:
                mark = time.perf_counter()
                await load_idempotency(connection, 86_400, 200_000)
                timings["load_idempotency_sql"] = time.perf_counter() - mark
        finally:
            await pool.close()
        mark = time.perf_counter()
        inventory = ShardInventory(ShardBounds.defaults().inventory_limits())
        for event_id, event_rows in rows.items():
            adopt(inventory, event_id, event_rows)
        timings["adopt_python"] = time.perf_counter() - mark
        return timings

    return asyncio.run(steps())


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: median={statistics.median(values):.3f} min={min(values):.3f} max={max(values):.3f} "
            f"(n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seats", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="join this running deployment instead of starting one")
    args = parser.parse_args()

    from cluster.native import CORE_STATUS

    core = CORE_STATUS.detail  # compiled or not: see cluster/native.py
    print(f"# loadavg before: {os.getloadavg()}; inventory core: {core}", flush=True)
    with bench_environment(args.data_dir) as env:
        handle = start_actor(env.dsn)
        try:
            (document,) = apply_checked(handle, [seated_event(args.seats)])
            event_id = uuid.UUID(document.document["id"])
            started = time.perf_counter()
            sold, held = asyncio.run(load_sales(handle, event_id, args.seats))
            load_s = time.perf_counter() - started
            commands = sold * 3 + held
            print(f"# loaded {sold} orders ({sold * GROUP_SEATS} seats sold) and {held} live holds "
                  f"({held * GROUP_SEATS} seats held): {commands} commands in {load_s:.1f} s "
                  f"({commands / load_s:,.0f} commands/s)", flush=True)
            before = availability(handle, event_id)
            totals = [sum(s.capacity for s in before.sections), sum(s.sold for s in before.sections),
                      sum(s.held for s in before.sections)]
            print(f"# availability before: capacity={totals[0]} sold={totals[1]} held={totals[2]}", flush=True)
            answered, process_up, recovery = [], [], []
            for kill in range(args.kills):
                a, p, r = kill_and_time(handle, event_id)
                answered.append(a)
                process_up.append(p)
                recovery.append(r)
                print(f"kill {kill + 1}: read_matches_after_s={a:.3f} new_process_answers_after_s={p:.3f} "
                      f"actor_recovery_seconds_gauge={r:.3f}", flush=True)
            print(f"# loadavg after: {os.getloadavg()}")
            print(f"== seats={args.seats} kills={args.kills}")
            print(summary("kill -> matching GetAvailability s", answered))
            print(summary("kill -> restarted process answers health s", process_up))
            print(summary("ticketing_actor_recovery_seconds", recovery))
        finally:
            kill_actor(handle)
        time.sleep(1.0)  # the killed actor's connections close; its lease is taken over below
        timings = recovery_breakdown(env.dsn)
        print("recovery steps in-process (s): " + " ".join(f"{name}={value:.3f}" for name, value in timings.items()))


if __name__ == "__main__":
    main()
