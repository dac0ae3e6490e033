"""The soak: a multi-node deployment under mixed Locust load for a long time, with faults.

    python -m loadtest.soak [--minutes 30] [--users 30] [--kill-every-s 120] [--out docs/soak]
    make soak SOAK_ARGS="--minutes 30"

Starts a Ray cluster of a head and two worker nodes (`tests/ray_nodes.py`, as an operator would with
`ray start`), `ticketing up` joined to it with two embedded PostgreSQL servers, then runs the on-sale
Locust scenarios (`loadtest/locustfile.py`, constant shape) for ``--minutes``. Meanwhile:

- every ``--kill-every-s`` one shard actor, chosen in turn, is SIGKILLed (Ray restarts it; it
  recovers from Postgres), and at half time one worker node is SIGKILLed — raylet and everything
  under it — so its shards move to the other node;
- every ``--sample-s`` the resident memory of every process of the deployment is sampled, by role
  (router, shard actor, Postgres, Redis, Ray), and leaked holds are counted on every shard database:
  holds still ``held`` more than ``LEAK_GRACE_S`` past their expiry (the expiry timer ticks every
  200 ms; none may stay).

At the end every event the load created is checked against its shard database
(`tests/support.check_database`: a seat sold at most once, pool counters equal live holds plus
tickets, every sold seat one live ticket). It writes ``soak.json`` (samples, faults, p99 per interval
from Locust's stats history, the verdicts) and ``soak.png`` (p99 over time, memory by role, the
faults) to ``--out``, and exits 0 only when invariants held, no hold leaked and memory stayed flat:
each role's resident memory over the last half within ``FLAT_GROWTH_MAX`` of its value at half time
(the first half includes warm-up: caches, pools, JIT-less but import-heavy workers).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from cluster import runstate
from loadtest.locust_run import LOADTEST_ENVIRONMENT, LOCUST_OVERHEAD_S, LOCUSTFILE
from tests.harness import RunningCluster, down, start_cluster
from tests.ray_nodes import RayNodes, shard_nodes_of, status
from tests.support import check_database

OUT_DEFAULT = Path(__file__).resolve().parent.parent / "docs" / "soak"
PG_SERVERS = 2
LEAK_GRACE_S = 5.0
FLAT_GROWTH_MAX = 0.15  # a role's RSS may grow at most 15 % over the last half
ROLES = ("router", "shard actor", "postgres", "redis", "ray")
LEAKED_HOLDS_SQL = f"""SELECT count(*) FROM holds WHERE status = 'held'
                       AND expires_at < now() - make_interval(secs => {LEAK_GRACE_S})"""


def role_of(process: psutil.Process, data_dir: Path, nodes: RayNodes) -> str | None:
    try:
        cmdline = " ".join(process.cmdline())
        name = process.name()
    except psutil.Error:
        return None
    if "router.server" in cmdline or ("uvicorn" in cmdline and str(data_dir) in cmdline):
        return "router"
    if "ShardActor" in name or "ShardActor" in cmdline:
        return "shard actor"
    if name.startswith("postgres") and str(data_dir) in cmdline:
        return "postgres"
    if ("valkey" in name or "redis" in name) and process.pid == runstate.read_state(data_dir).get("redis_pid"):
        return "redis"
    if str(nodes.temp_dir) in cmdline or nodes.address in cmdline:
        return "ray"
    return None


def deployment_processes(cluster: RunningCluster, nodes: RayNodes) -> dict[int, tuple[psutil.Process, str]]:
    """pid → (process, role) for the router, Postgres, Redis and Ray processes of the deployment and
    all their children (router workers, Postgres backends, Ray workers take their parent's role)."""
    found: dict[int, tuple[psutil.Process, str]] = {}
    for process in psutil.process_iter():
        role = role_of(process, cluster.data_dir, nodes)
        if role is not None:
            found[process.pid] = (process, role)
    for process, role in list(found.values()):
        try:
            children = process.children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            found.setdefault(child.pid, (child, role_of(child, cluster.data_dir, nodes) or role))
    return found


def memory_by_role(cluster: RunningCluster, nodes: RayNodes) -> dict[str, float]:
    """Resident MiB per role, summed over its processes."""
    totals: dict[str, float] = defaultdict(float)
    for process, role in deployment_processes(cluster, nodes).values():
        try:
            totals[role] += process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return {role: round(totals.get(role, 0.0), 1) for role in ROLES}


async def leaked_holds(dsns: list[str]) -> int:
    total = 0
    for dsn in dsns:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            total += int(await connection.fetchval(LEAKED_HOLDS_SQL, timeout=10))
        finally:
            await connection.close()
    return total


class Faults(threading.Thread):
    """Kills a shard actor every `kill_every_s` (in turn) and one worker node at half time."""

    def __init__(self, cluster: RunningCluster, nodes: RayNodes, seconds: float, kill_every_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.nodes = cluster, nodes
        self.seconds, self.kill_every_s = seconds, kill_every_s
        self.started_s = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def _at(self) -> float:
        return round(time.monotonic() - self.started_s, 1)

    def run(self) -> None:
        node_killed, shard = False, 0
        next_kill = self.kill_every_s
        while not self.stop.wait(1.0):
            now = time.monotonic() - self.started_s
            if not node_killed and now >= self.seconds / 2:
                node_killed = True
                self._kill_node()
            if now >= next_kill:
                next_kill += self.kill_every_s
                self._kill_actor(shard)
                shard = (shard + 1) % 4

    def _kill_node(self) -> None:
        try:
            placed = shard_nodes_of(self.cluster.data_dir)
            victim = random.Random(1).choice(sorted(set(placed.values())))
            processes = self.nodes.kill_node(victim)
            self.events.append({"at_s": self._at(), "fault": "node", "node": victim[:8], "processes": processes,
                                "shards": sorted(k for k, node in placed.items() if node == victim)})
        except Exception as error:
            self.events.append({"at_s": self._at(), "fault": "node", "error": str(error)[:200]})

    def _kill_actor(self, shard: int) -> None:
        try:
            pid = int(status(self.cluster.data_dir)["shards"][shard]["actor"]["pid"])
            os.kill(pid, signal.SIGKILL)
            self.events.append({"at_s": self._at(), "fault": "actor", "shard": shard, "pid": pid})
        except Exception as error:
            self.events.append({"at_s": self._at(), "fault": "actor", "shard": shard, "error": str(error)[:200]})


def run_locust(cluster: RunningCluster, users: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "TICKETING_DATA_DIR": str(cluster.data_dir), "LOADTEST_SHAPE": "constant",
                   "LOADTEST_EVENTS_OUT": str(out / "events.json")}
    environment.pop("LOADTEST_EVENTS", None)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", cluster.base_url,
               "--users", str(users), "--spawn-rate", str(max(1, users // 5)), "--run-time", f"{seconds}s",
               "--only-summary", "--csv", str(out / "locust"), "--csv-full-history"]
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def p99_over_time(out: Path, started_at: float) -> list[tuple[float, float]]:
    """(seconds since start, aggregated p99 in ms) from Locust's stats history."""
    path = out / "locust_stats_history.csv"
    if not path.exists():
        return []
    points = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated" or row.get("99%") in (None, "", "N/A"):
                continue
            points.append((round(float(row["Timestamp"]) - started_at, 1), float(row["99%"])))
    return points


def flat(samples: list[dict[str, Any]]) -> dict[str, dict[str, float | bool]]:
    """Each role's RSS growth over the last half, against its value at half time."""
    half = samples[len(samples) // 2:]
    verdicts: dict[str, dict[str, float | bool]] = {}
    for role in ROLES:
        start, end = half[0]["memory_mib"][role], max(sample["memory_mib"][role] for sample in half[-3:])
        growth = (end - start) / start if start else 0.0
        verdicts[role] = {"at_half_mib": start, "at_end_mib": end, "growth": round(growth, 3),
                          "flat": growth <= FLAT_GROWTH_MAX}
    return verdicts


def plot(out: Path, samples: list[dict[str, Any]], p99: list[tuple[float, float]], faults: list[dict[str, Any]]
         ) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, memory) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if p99:
        latency.plot([t for t, _ in p99], [v for _, v in p99], label="p99 (all requests)")
    latency.set_ylabel("ms")
    latency.set_yscale("log")
    for role in ROLES:
        memory.plot([s["at_s"] for s in samples], [s["memory_mib"][role] for s in samples], label=role)
    memory.set_ylabel("resident MiB")
    memory.set_xlabel("seconds")
    for fault in faults:
        for axis in (latency, memory):
            axis.axvline(fault["at_s"], color="red" if fault["fault"] == "node" else "grey", alpha=0.4, lw=1)
    latency.legend(loc="upper right")
    memory.legend(loc="upper left", ncol=3)
    latency.set_title("soak: p99 and memory (grey: actor SIGKILL, red: node SIGKILL)")
    figure.tight_layout()
    path = out / "soak.png"
    figure.savefig(path, dpi=90)
    return path


def soak(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="tkt-soak-") as temp:
        nodes = RayNodes(Path("/tmp") / f"tkt-soak-{uuid.uuid4().hex[:8]}")
        data_dir = Path(temp) / "data"
        try:
            nodes.start()
            cluster = start_cluster(data_dir, environment={**LOADTEST_ENVIRONMENT,
                                                           **nodes.deployment_environment(PG_SERVERS)})
            try:
                print(f"# deployment ready in {cluster.wait_ready():.1f} s", flush=True)
                return _run(cluster, nodes, args, seconds, out)
            finally:
                cluster.stop()
                down(data_dir)
        finally:
            nodes.stop()


def _run(cluster: RunningCluster, nodes: RayNodes, args: argparse.Namespace, seconds: int, out: Path) -> int:
    dsns = [str(dsn) for dsn in cluster.state()["pg_dsns"]]  # type: ignore[attr-defined]
    started_at = time.time()
    locust = run_locust(cluster, args.users, seconds, out)
    faults = Faults(cluster, nodes, seconds, args.kill_every_s)
    faults.start()
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and locust.poll() is None:
        time.sleep(args.sample_s)
        sample = {"at_s": round(time.time() - started_at, 1), "memory_mib": memory_by_role(cluster, nodes)}
        try:
            sample["leaked_holds"] = asyncio.run(leaked_holds(dsns))
        except Exception as error:  # a shard database moving its connections: counted next time
            sample["leaked_holds"] = None
            sample["error"] = str(error)[:200]
        samples.append(sample)
        print(f"# {sample}", flush=True)
    faults.stop.set()
    locust_code = locust.wait(LOCUST_OVERHEAD_S)
    # {"ga": id, "seated": id, "small": id}: the events the scenarios sold (loadtest/locustfile.py)
    events = json.loads((out / "events.json").read_text()) if (out / "events.json").exists() else {}
    invariant_failures = []
    for event_id in events.values():
        try:
            check_database(cluster, event_id)
        except AssertionError as error:
            invariant_failures.append(f"{event_id}: {error}"[:300])
    leaks = max((s["leaked_holds"] or 0 for s in samples), default=0)
    memory = flat(samples) if len(samples) >= 4 else {}
    p99 = p99_over_time(out, started_at)
    report = {"minutes": args.minutes, "users": args.users, "faults": faults.events, "samples": samples,
              "p99_ms": p99, "memory_last_half": memory, "events_checked": len(events),
              "invariant_failures": invariant_failures, "leaked_holds_max": leaks, "locust_exit": locust_code}
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    picture = plot(out, samples, p99, faults.events)
    ok = not invariant_failures and leaks == 0 and all(v["flat"] for v in memory.values())
    print(f"# faults: {faults.events}\n# memory over the last half: {memory}\n# events checked: {len(events)}, "
          f"invariant failures: {len(invariant_failures)}, leaked holds (max): {leaks}\n# {picture}\n"
          f"# {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=30, help="Locust users, all through the run")
    parser.add_argument("--kill-every-s", type=float, default=120.0, help="seconds between shard actor kills")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory and leak samples")
    parser.add_argument("--out", default=str(OUT_DEFAULT))
    return soak(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
