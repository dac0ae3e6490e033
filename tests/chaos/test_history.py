"""About 100 buyers hold → pay → sometimes release or refund over HTTP on one seated and one GA
event while faults hit the shards; the history checker (`tests/chaos/history.py`) then checks
what every client was told against the API and the shard databases: nothing sold twice, sold ==
live tickets, pool counters == live holds + tickets, every acknowledged hold and order reads back
with a consistent status, every unknown outcome resolved by its Idempotency-Key to at most one
effect, and no charge at the payment gateway without tickets or a refund (every confirmed order
with exactly one charge kept).

Faults: (a) every shard actor SIGKILLed, repeatedly (Ray restarts them; they rebuild from
Postgres); (b) every Postgres backend of the shard databases terminated, in a loop, so batches
die mid-commit. A third test is the checker's own negative control: on a fault-free history it
must pass, and with planted lies in the history it must name each one.

Each workload is bounded in time (`WORKLOAD_S`) and the checker's re-sends in attempts and time.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shards.migrate import with_database
from tests.chaos.history import History, Operation, Report
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, seated

pytestmark = pytest.mark.chaos

BUYERS = 100
WORKLOAD_S = 40.0
FAULTS_S = 28.0  # faults stop before the buyers do, so the last cycles run on a healed cluster
KILL_PERIOD_S = 6.0
TERMINATE_PERIOD_S = 1.0
READY_TIMEOUT_S = 180.0
ROWS, SEATS_PER_ROW, POOL_CAPACITY = 10, 20, 300
RELEASE_SHARE, REFUND_SHARE = 0.1, 0.2


def create_events(http: httpx.Client, cluster: RunningCluster) -> tuple[str, str]:
    common = {"per_person_limit": None, "hold_seconds": 20}
    seated_event = create_event(http, cluster, event_body(seated("A", [SEATS_PER_ROW] * ROWS), **common))
    pool_event = create_event(http, cluster, event_body(ga("floor", POOL_CAPACITY), **common))
    return seated_event["id"], pool_event["id"]


def hold_body(rng: random.Random, seated_event: str, pool_event: str) -> dict[str, Any]:
    quantity = rng.randint(1, 2)
    if rng.random() < 0.5:
        return {"event_id": pool_event, "section": "floor", "quantity": quantity}
    if rng.random() < 0.5:
        return {"event_id": seated_event, "section": "A", "quantity": quantity, "best_available": True}
    row, first = rng.randint(1, ROWS), rng.randint(1, SEATS_PER_ROW - 1)
    return {"event_id": seated_event, "seats": [f"A-{row}-{first + n}" for n in range(quantity)]}


async def buyer(history: History, client: httpx.AsyncClient, n: int, events: tuple[str, str],
                deadline: float) -> None:
    """hold → checkout (tok_visa) → sometimes refund; sometimes release instead of paying."""
    name, rng = f"history-buyer-{n}", random.Random(n)
    while time.monotonic() < deadline:
        hold = await history.record(client, name, "hold", "POST", "/v1/holds", hold_body(rng, *events),
                                    key=str(uuid.uuid4()))
        if hold.outcome != "ok" or hold.response is None:
            await asyncio.sleep(0.2)
            continue
        hold_path = f"/v1/holds/{hold.response['id']}"
        if rng.random() < RELEASE_SHARE:
            await history.record(client, name, "release", "DELETE", hold_path, key=str(uuid.uuid4()))
            continue
        paid = await history.record(client, name, "checkout", "POST", f"{hold_path}/checkout",
                                    {"payment": {"token": "tok_visa"}}, key=str(uuid.uuid4()))
        if paid.outcome == "ok" and paid.response is not None and rng.random() < REFUND_SHARE:
            await history.record(client, name, "refund", "POST", f"/v1/orders/{paid.response['order']['id']}/refund",
                                 key=str(uuid.uuid4()))


async def run_workload(cluster: RunningCluster, history: History, events: tuple[str, str], buyers: int,
                       workload_s: float, fault: Callable[[asyncio.Event], Awaitable[int]] | None) -> int:
    """The buyers, and the fault until `FAULTS_S`; returns how many times the fault struck."""
    limits = httpx.Limits(max_connections=buyers, max_keepalive_connections=buyers)
    async with httpx.AsyncClient(base_url=cluster.base_url, limits=limits) as client:
        deadline = time.monotonic() + workload_s
        stop = asyncio.Event()
        injector = asyncio.create_task(fault(stop)) if fault else None
        tasks = [asyncio.create_task(buyer(history, client, n, events, deadline)) for n in range(buyers)]
        if injector is not None:
            await asyncio.sleep(min(FAULTS_S, workload_s))
            stop.set()
        await asyncio.gather(*tasks)
        return await injector if injector is not None else 0


async def wait_ready(cluster: RunningCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url) as client:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz", timeout=10)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1.0)
    raise AssertionError(f"the cluster was not ready again within {READY_TIMEOUT_S} s")


async def shard_dsns(cluster: RunningCluster, events: tuple[str, str]) -> dict[str, str]:
    """Each event's shard database, found by asking every shard (no settings object needed)."""
    found: dict[str, str] = {}
    for dsn in cluster.state()["pg_dsns"]:  # type: ignore[attr-defined]
        connection = await asyncpg.connect(str(dsn), timeout=10)
        try:
            rows = await connection.fetch("SELECT event_id::text FROM events WHERE event_id = ANY($1::uuid[])",
                                          list(events))
        finally:
            await connection.close()
        found.update({row["event_id"]: str(dsn) for row in rows})
    assert set(found) == set(events), f"events not found in any shard: {set(events) - set(found)}"
    return found


def gateway_path(cluster: RunningCluster) -> Path:
    """The simulated gateway's store (`SimulatedGateway.path`) under the cluster's data folder."""
    path = cluster.data_dir / "gateway" / "gateway.sqlite3"
    assert path.exists(), f"no gateway store at {path}"
    return path


async def check(cluster: RunningCluster, history: History, events: tuple[str, str]) -> Report:
    await wait_ready(cluster)
    async with httpx.AsyncClient(base_url=cluster.base_url) as client:
        return await history.check(client, await shard_dsns(cluster, events), gateway_path=gateway_path(cluster))


def shard_count(cluster: RunningCluster) -> int:
    return len(cluster.state()["pg_dsns"])  # type: ignore[arg-type]


def kill_all_shard_actors(cluster: RunningCluster) -> Callable[[asyncio.Event], Awaitable[int]]:
    """SIGKILL every `shard-<k>` actor process every `KILL_PERIOD_S` (pids from their health)."""
    import ray

    from cluster.raycluster import NAMESPACE, actor_name

    async def fault(stop: asyncio.Event) -> int:
        kills = 0
        while not stop.is_set():
            await asyncio.sleep(KILL_PERIOD_S / 2)
            for shard_id in range(shard_count(cluster)):
                try:
                    handle = ray.get_actor(actor_name(shard_id), namespace=NAMESPACE)
                    health = await asyncio.wait_for(handle.health.remote(), 10)
                except Exception:  # restarting still: the next round kills it
                    continue
                os.kill(int(health["pid"]), signal.SIGKILL)
                kills += 1
            await asyncio.sleep(KILL_PERIOD_S / 2)
        return kills

    return fault


TERMINATE = """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname LIKE 'ticketing_shard%' AND pid <> pg_backend_pid()"""


def terminate_shard_backends(cluster: RunningCluster) -> Callable[[asyncio.Event], Awaitable[int]]:
    """Terminate every backend of the shard databases every `TERMINATE_PERIOD_S`."""
    admin_dsn = with_database(str(cluster.state()["pg_dsns"][0]), "postgres")  # type: ignore[index]

    async def fault(stop: asyncio.Event) -> int:
        terminated = 0
        connection = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            while not stop.is_set():
                await asyncio.sleep(TERMINATE_PERIOD_S)
                terminated += int(await connection.fetchval(TERMINATE, timeout=10))
        finally:
            await connection.close()
        return terminated

    return fault


def run_and_check(cluster: RunningCluster, http: httpx.Client,
                  fault: Callable[[asyncio.Event], Awaitable[int]] | None, *, buyers: int = BUYERS,
                  workload_s: float = WORKLOAD_S) -> tuple[History, Report, int, tuple[str, str]]:
    events = create_events(http, cluster)
    history = History(cluster.headers)

    async def main() -> tuple[Report, int]:
        struck = await run_workload(cluster, history, events, buyers, workload_s, fault)
        return await check(cluster, history, events), struck

    report, struck = asyncio.run(main())
    # The figures, in the test's captured output (-s shows them; docs/RELIABILITY.md records them).
    print(f"fault struck {struck} times, {len(history.operations)} operations\n{report.describe()}")
    return history, report, struck, events


def test_history_under_repeated_sigkills_of_every_shard_actor(cluster: RunningCluster, http: httpx.Client,
                                                               ray_driver: None) -> None:
    _, report, kills, _ = run_and_check(cluster, http, kill_all_shard_actors(cluster))
    assert kills >= shard_count(cluster), f"only {kills} actor processes killed: the fault was not exercised"
    assert report.counts["hold:ok"] > 0 and report.counts["checkout:ok"] > 0, report.describe()
    assert report.ok, report.describe()


def test_history_under_postgres_backends_terminated_mid_batch(cluster: RunningCluster,
                                                              http: httpx.Client) -> None:
    _, report, terminated, _ = run_and_check(cluster, http, terminate_shard_backends(cluster))
    assert terminated > 0, "no backend was terminated: the fault was not exercised"
    assert report.counts["hold:ok"] > 0 and report.counts["checkout:ok"] > 0, report.describe()
    assert report.ok, report.describe()


def plant_charges(path: Path, twice_charged_hold: str, refunded_hold: str) -> None:
    """A second charge for one bought hold (under another key, its description naming the hold) and
    the full refund of another bought hold's charge, written into the gateway's store."""
    with closing(sqlite3.connect(path, timeout=10)) as connection, connection:
        connection.execute(
            """INSERT INTO charges (id, idempotency_key, status, decline_code, amount_cents, currency, token,
                                        description, created_at_s, refunded_cents)
                   VALUES (?, ?, 'succeeded', '', 100, 'EUR', 'tok_visa', ?, ?, 0)""",
            (f"ch_planted_{uuid.uuid4().hex[:8]}", f"planted:{uuid.uuid4()}", f"hold {twice_charged_hold}",
             time.time()))
        refunded = connection.execute("UPDATE charges SET refunded_cents = amount_cents WHERE idempotency_key = ?",
                                      (f"charge:{refunded_hold}",))
        assert refunded.rowcount == 1, f"no charge of hold {refunded_hold} to plant a refund on"


def test_negative_control_the_checker_names_planted_lies(cluster: RunningCluster, http: httpx.Client) -> None:
    """A short fault-free history passes; then five lies are planted in it and each must be
    named: an acknowledged hold that never existed (reads back 404, not stored), a hold the client
    was told about but whose record is dropped (an unaccounted effect), a release said to be
    acknowledged for a hold that was bought (inconsistent status), and at the gateway a second
    charge for a bought hold and a refund of a confirmed order's charge (money kept without
    tickets, tickets kept without money)."""
    history, report, _, events = run_and_check(cluster, http, None, buyers=10, workload_s=6.0)
    assert report.ok, report.describe()
    assert report.counts["charges_checked"] > 0 and report.counts["orders_confirmed"] > 0, report.describe()
    checkouts = [op for op in history.operations if op.kind == "checkout" and op.outcome == "ok"]
    # Orders the workload refunded (or tried to): /v1/orders/{order id}/refund. The "stolen" charge
    # must belong to an order that stays confirmed, or planting its refund tells no lie.
    refunded = {op.path.split("/")[3] for op in history.operations if op.kind == "refund"}
    bought, refunded_later = checkouts[0], next(
        op for op in checkouts[1:] if op.response and op.response["order"]["id"] not in refunded
        and op.response["order"]["total_cents"] > 0)
    bought_hold = bought.path.split("/")[3]
    stolen_hold = refunded_later.path.split("/")[3]
    plant_charges(gateway_path(cluster), bought_hold, stolen_hold)
    holds = [op for op in history.operations if op.kind == "hold" and op.outcome == "ok"]
    dropped = next(op for op in holds if op.response and op.response["id"] != bought_hold)
    history.operations.remove(dropped)
    phantom = str(uuid.uuid4())
    history.operations.append(Operation(
        len(history.operations), dropped.buyer, "hold", "POST", "/v1/holds", {"event_id": events[1]}, "planted",
        time.monotonic(), time.monotonic(), 201, "ok", {"id": phantom}))
    history.operations.append(Operation(
        len(history.operations), bought.buyer, "release", "DELETE", f"/v1/holds/{bought_hold}", None, "planted-2",
        time.monotonic(), time.monotonic(), 200, "ok", {"id": bought_hold}))

    async def recheck() -> Report:
        async with httpx.AsyncClient(base_url=cluster.base_url) as client:
            return await history.check(client, await shard_dsns(cluster, events), gateway_path=gateway_path(cluster),
                                       money_settle_time_max_s=3.0)  # planted lies never settle

    planted = asyncio.run(recheck())
    found = planted.describe()
    assert any(phantom in line for line in planted.failures["hold_reads_back"]), found
    assert any(phantom in line for line in planted.failures["stored_as_acknowledged"]), found
    assert any(dropped.response["id"] in line for line in planted.failures["at_most_one_effect"]), found
    assert any(bought_hold in line for line in planted.failures["hold_reads_back"]), found
    assert any(f"hold {bought_hold} charged 2 times" in line for line in planted.failures["money"]), found
    assert any(f"of hold {stolen_hold} has 0 succeeded charges" in line for line in planted.failures["money"]), found
