"""Beyond one machine, on one machine: a real Ray cluster of a head and two worker nodes (`ray start`,
as an operator would), `ticketing up` joining it through settings, shard actors on the worker nodes
only (the `shard_node_resource` placement) and spread over them, and two independent PostgreSQL
servers (`pg_embedded_servers`). Then a worker node is SIGKILLed — its raylet and every process
under it — while ~30 buyers hold, pay, release and refund on two events of its shards: Ray declares
the node dead, re-creates its actors on the surviving node, they recover from their own Postgres
and serve again; the history checker (tests/chaos/history.py) then finds nothing acknowledged
lost and nothing sold twice. The time from the kill to the first hold served again on the killed
node's shards is printed (docs/RELIABILITY.md records it) and bounded.

Last, a slot range holding two busy events moves from shard 0 to shard 1 — another Postgres
server — through `ticketing slots move` while ~30 buyers go on (shards/slot_moves.py): the history
checker finds every acknowledged operation in the target's database and nothing sold twice, the
source keeps no row of the events, and each event is in exactly one database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cluster.settings import Settings
from shards.slot_moves import EVENT_TABLES
from shards.slots import slot_of
from tests.chaos.history import History
from tests.chaos.test_history import check, run_workload
from tests.harness import RunningCluster, down, start_cluster
from tests.ray_nodes import RayNodes, shard_nodes_of, status
from tests.support import create_event, event_body, ga, seated

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(bool(os.environ.get("TICKETING_PG_DSNS")),
                       reason="starts PostgreSQL servers and a Ray cluster of its own (embedded services)"),
]

WORKER_NODES = 2
PG_SERVERS = 2
BUYERS, WORKLOAD_S, KILL_AFTER_S = 30, 30.0, 5.0
SERVED_AGAIN_BOUND_S = 60.0  # a generous bound; the measured time is printed and recorded
MOVE_AFTER_S, MOVE_TIMEOUT_S = 5.0, 180.0


@pytest.fixture(scope="module")
def multinode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RayNodes, RunningCluster]]:
    nodes = RayNodes(Path("/tmp") / f"tkt-mn-{uuid.uuid4().hex[:8]}", WORKER_NODES)
    data_dir = Path(tmp_path_factory.mktemp("multinode")) / "data"
    try:
        nodes.start()
        running = start_cluster(data_dir, environment=nodes.deployment_environment(PG_SERVERS))
        try:
            running.wait_ready()
            yield nodes, running
        finally:
            running.stop()
            down(data_dir)
    finally:
        nodes.stop()


def test_shards_run_on_the_worker_nodes_spread_with_a_postgres_server_each_half(
        multinode: tuple[RayNodes, RunningCluster]) -> None:
    nodes, cluster = multinode
    placed = shard_nodes_of(cluster.data_dir)
    workers = nodes.shard_nodes()
    assert len(workers) == WORKER_NODES
    assert set(placed.values()) == workers, (placed, workers)  # on the workers only, and on both
    report = status(cluster.data_dir)
    dsns = [str(dsn) for dsn in cluster.state()["pg_dsns"]]  # type: ignore[attr-defined]
    ports = [dsn.split("@")[1].split("/")[0] for dsn in dsns]
    assert len(set(ports)) == PG_SERVERS and ports[0] == ports[2] != ports[1], ports  # shard k on server k mod 2
    versions = {shard["database"]["schema_version"] for shard in report["shards"]}
    assert len(versions) == 1 and all(shard["database"]["up"] for shard in report["shards"]), report


def events_on(http: httpx.Client, cluster: RunningCluster, shards: set[int]) -> tuple[str, str]:
    """A seated and a GA event whose shards are among `shards` (events land by their random id)."""
    shard_map = Settings(shard_count=4).shard_map()
    common = {"per_person_limit": None, "hold_seconds": 20}
    found: dict[str, str] = {}
    for _ in range(60):
        for kind, body in (("seated", event_body(seated("A", [20] * 10), **common)),
                           ("pool", event_body(ga("floor", 300), **common))):
            if kind in found:
                continue
            event_id = create_event(http, cluster, body)["id"]
            if shard_map.shard_of(uuid.UUID(event_id)) in shards:
                found[kind] = event_id
        if len(found) == 2:
            return found["seated"], found["pool"]
    raise AssertionError(f"no events landed on shards {shards}")


def with_fault(cluster: RunningCluster, history: History, events: tuple[str, str], after_s: float,
               fault: Callable[[], Awaitable[None]]) -> Any:
    """The buyers' workload with `fault` run once `after_s` into it; the history checker's report."""

    async def strike(stop: asyncio.Event) -> int:
        await asyncio.sleep(after_s)
        await fault()
        await stop.wait()
        return 1

    async def main() -> Any:
        await run_workload(cluster, history, events, BUYERS, WORKLOAD_S, strike)
        return await check(cluster, history, events)

    return asyncio.run(main())


def test_a_worker_node_killed_under_load_loses_nothing_and_its_shards_serve_again(
        multinode: tuple[RayNodes, RunningCluster]) -> None:
    nodes, cluster = multinode
    placed = shard_nodes_of(cluster.data_dir)
    by_node: dict[str, set[int]] = {}
    for shard_id, node in placed.items():
        by_node.setdefault(node, set()).add(shard_id)
    victim, victim_shards = max(by_node.items(), key=lambda item: len(item[1]))
    with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
        events = events_on(http, cluster, victim_shards)
    history = History(cluster.headers)
    killed_at: list[float] = []

    async def kill_node() -> None:
        killed_at.append(time.monotonic())
        nodes.kill_node(victim)

    report = with_fault(cluster, history, events, KILL_AFTER_S, kill_node)
    served_again = [op.completed_s for op in history.operations
                    if op.kind == "hold" and op.outcome == "ok" and op.invoked_s >= killed_at[0]]
    assert served_again, "no hold was served after the node was killed"
    recovery_s = min(served_again) - killed_at[0]  # type: ignore[operator]
    print(f"node {victim[:8]} killed with shards {sorted(victim_shards)}: first hold served again after "
          f"{recovery_s:.1f} s; {len(history.operations)} operations\n{report.describe()}")
    assert report.counts["hold:ok"] > 0 and report.counts["checkout:ok"] > 0, report.describe()
    assert report.ok, report.describe()
    assert recovery_s < SERVED_AGAIN_BOUND_S
    moved = shard_nodes_of(cluster.data_dir)
    assert victim not in moved.values(), moved  # re-created on the surviving node


def test_a_slot_range_moved_under_load_is_served_by_its_new_owner_only(
        multinode: tuple[RayNodes, RunningCluster]) -> None:
    nodes, cluster = multinode
    with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
        events = events_on(http, cluster, {0})
    slots = sorted(slot_of(uuid.UUID(event_id)) for event_id in events)
    span = f"{slots[0]}-{slots[-1]}"
    history = History(cluster.headers)
    moves: list[tuple[float, float, subprocess.CompletedProcess[str]]] = []

    async def move() -> None:
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cluster.cli", "slots", "move", span, "--to", "1",
                             "--data-dir", str(cluster.data_dir)],
            env={**os.environ, **nodes.deployment_environment(PG_SERVERS)}, capture_output=True, text=True,
            timeout=MOVE_TIMEOUT_S, check=False)
        moves.append((started, time.monotonic(), done))

    report = with_fault(cluster, history, events, MOVE_AFTER_S, move)
    started, ended, done = moves[0]
    assert done.returncode == 0, done.stdout + done.stderr
    after = [op for op in history.operations if op.kind == "hold" and op.outcome == "ok" and op.invoked_s >= ended]
    during = [op for op in history.operations if started <= op.invoked_s <= ended and op.completed_s is not None]
    slowest_s = max((op.completed_s - op.invoked_s for op in during), default=0.0)  # type: ignore[operator]
    statuses = sorted({op.status for op in during if op.status is not None and op.status >= 500})
    print(f"{done.stdout.strip()} (command {ended - started:.1f} s); {len(during)} requests during it, slowest "
          f"{slowest_s:.2f} s, 5xx statuses {statuses}; {len(after)} holds served after it\n{report.describe()}")
    assert report.ok, report.describe()
    assert after, "no hold was served after the move"
    dsns = [str(dsn) for dsn in cluster.state()["pg_dsns"]]  # type: ignore[attr-defined]
    assert asyncio.run(databases_holding(dsns, events)) == {event_id: [1] for event_id in events}
    shown = subprocess.run([sys.executable, "-m", "cluster.cli", "slots", "--data-dir", str(cluster.data_dir)],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "shard map version 2" in shown and span in shown.split("shard 1: owns ")[1].splitlines()[0], shown
    assert "served by nobody" not in shown, shown


async def databases_holding(dsns: list[str], events: tuple[str, str]) -> dict[str, list[int]]:
    """For each event, the shards whose database has any row of it, in any table."""
    holding: dict[str, list[int]] = {event_id: [] for event_id in events}
    for shard_id, dsn in enumerate(dsns):
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            for event_id in events:
                counts = [await connection.fetchval(f"SELECT count(*) FROM {table} WHERE event_id = $1",
                                                    uuid.UUID(event_id)) for table in EVENT_TABLES]
                if any(counts):
                    holding[event_id].append(shard_id)
        finally:
            await connection.close()
    return holding
