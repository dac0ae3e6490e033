"""Durable GA-hold throughput of one shard actor, driven through Ray like many routers would.

    python -m loadtest.actor_bench [--seconds 10] [--callers 16] [--batch 64] [--repeat 3]
                                   [--data-dir D] [--profile-s N]

Starts a cluster of its own in a temp folder (or joins the running deployment in ``--data-dir``),
creates a fresh migrated database on its Postgres and an `ShardActor` actor of its own on its Ray
(exactly as `tests.actor_support` does), and one GA event whose capacity never runs out. Then
``--callers`` asyncio tasks each send one ``apply`` call after the other, every call carrying
``--batch`` GA holds of quantity 1 by distinct users (so no per-person limit bites): the shape of
many router processes' micro-batches. Every reply arrives only after its COMMIT.

Each repeat runs the batched phase and a baseline phase (one command per ``apply`` call, same
callers). Per phase it prints acknowledged holds/s, the mean commands per committed transaction
and the commit-time quantiles (from the actor's own histograms, as deltas over the phase; a
quantile is the upper bound of the bucket it falls in), the client-measured ``apply`` latency, and
the CPU seconds spent by this driver, the actor and the Postgres server during the phase, so that
a reader can tell which process saturated the machine. The summary gives the median and the
min-max spread over the repeats. At the end the holds rows are counted in Postgres: every
acknowledged hold must be there. ``--profile-s N`` runs ``py-spy record`` on the actor for N
seconds during the first batched phase and writes a flame graph and a top-functions table.

Cleans up everything it started: the actor (killed without restart), its database, and the
cluster when it started one. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ray reads these when first imported, and importing `cluster.raycluster` (or `actors.actor`)
# already imports Ray: set them first, as `cluster.raycluster.LOCAL_RAY_ENVIRONMENT` does, so that
# this driver joins the loopback-only local instance instead of the host's address.
for _name, _value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_AUTH_MODE", "disabled"),
                      ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_name, _value)

from actors.inventory.commands import HoldGeneralAdmission  # noqa: E402
from actors.inventory.results import HoldView  # noqa: E402
from actors.wire import decode_replies, encode_requests  # noqa: E402
from loadtest.isolated import create_database, drop_database, start_isolated_shard  # noqa: E402

ACTOR_NAMESPACE = "ticketing-bench"
GA_CAPACITY = 1_000_000_000
HOLD_SECONDS = 3600  # nothing expires during a run: expiry would add work that is not measured
CALL_TIMEOUT_S = 60.0


# --- cluster, database and actor of our own ---------------------------------------------------------


@dataclass
class BenchEnvironment:
    """A running cluster (ours or joined), this process joined to its Ray, and our own database."""

    data_dir: Path
    dsn: str
    cluster: Any  # tests.harness.RunningCluster, or None when joining
    temp_dir: tempfile.TemporaryDirectory[str] | None


@contextlib.contextmanager
def bench_environment(data_dir: str | None, *, environment: dict[str, str] | None = None) -> Iterator[BenchEnvironment]:
    """Start (or join) a cluster, join its Ray as a driver, create a migrated database; undo it all."""
    import ray

    from tests.harness import RunningCluster, down, start_cluster

    temp_dir = None
    cluster: RunningCluster | None = None
    if data_dir is None:
        temp_dir = tempfile.TemporaryDirectory(prefix="tkt-bench-")
        path = Path(temp_dir.name) / "data"
        # Only Postgres and Ray are used: one shard and one router worker keep idle processes few.
        cluster = start_cluster(path, environment={"TICKETING_SHARD_COUNT": "1", "TICKETING_ROUTER_WORKERS": "1",
                                                   **(environment or {})})
        print(f"# started a cluster in {path}", flush=True)
    else:
        path = Path(data_dir)
    dsn = None
    try:
        if cluster is not None:
            print(f"# cluster ready in {cluster.wait_ready():.1f} s", flush=True)
        probe = cluster or RunningCluster(path, 0, None, path / "up.log")  # type: ignore[arg-type]
        state = probe.state()
        ray.init(address=str(state["ray_address"]), namespace=ACTOR_NAMESPACE, logging_level="ERROR",
                 log_to_driver=False)
        dsn = new_database(str(state["pg_dsns"][0]))  # type: ignore[index]
        yield BenchEnvironment(path, dsn, cluster, temp_dir)
    finally:
        if dsn is not None:
            with contextlib.suppress(Exception):
                drop_database(dsn)
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            cluster.stop()
            down(path)
        if temp_dir is not None:
            temp_dir.cleanup()


def new_database(base_dsn: str) -> str:
    return create_database(base_dsn, "bench")


def start_actor(dsn: str, **bounds: Any) -> Any:
    """An `ShardActor` of our own with the same options `cluster.raycluster` gives shard actors."""
    return start_isolated_shard(dsn, namespace=ACTOR_NAMESPACE, name_prefix="bench-shard",
                                event_seats_max=2_000_000, **bounds)


def kill_actor(handle: Any) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)


def ga_event(capacity: int = GA_CAPACITY) -> Any:
    from actors.protocol import CreateEvent

    document = {"title": "bench", "category": "", "description": "", "venue": {"name": "v"},
                "starts_at": "2027-01-01T20:00:00Z", "ends_at": None, "currency": "EUR",
                "hold_seconds": HOLD_SECONDS, "per_person_limit": None, "queue": {"enabled": False},
                "sale_windows": [], "sections": [{"id": "floor", "name": "Floor", "kind": "ga",
                                                  "capacity": capacity, "price_cents": 5000}]}
    return CreateEvent(uuid.uuid4(), "organizer", document)


def apply_checked(handle: Any, commands: list[Any]) -> list[Any]:
    """Apply commands and fail loudly on anything but success."""
    import ray

    from actors.inventory.results import Rejection
    from actors.protocol import Unavailable

    replies = ray.get(handle.apply.remote(commands), timeout=600)
    bad = [reply for reply in replies if isinstance(reply, Rejection | Unavailable) or reply is None]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(replies)} commands failed, first: {bad[0]}")
    return list(replies)


# --- actor metrics and process CPU ---------------------------------------------------------------------


def histogram(text: bytes, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of one unlabelled-but-shard histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in text_string_to_metric_families(text.decode()):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == name + "_sum":
                total = sample.value
            elif sample.name == name + "_count":
                count = sample.value
    return sorted(buckets), total, count


def gauge(text: bytes, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text.decode()):
        if family.name == name:
            for sample in family.samples:
                return float(sample.value)
    return None


def histogram_delta(before: bytes, after: bytes, name: str) -> tuple[list[tuple[float, float]], float, float]:
    b_buckets, b_sum, b_count = histogram(before, name)
    a_buckets, a_sum, a_count = histogram(after, name)
    previous = dict(b_buckets)
    return [(le, value - previous.get(le, 0.0)) for le, value in a_buckets], a_sum - b_sum, a_count - b_count


def bucket_quantile(buckets: list[tuple[float, float]], quantile: float) -> float:
    """Upper bound of the bucket holding the quantile (an over-estimate by at most one bucket)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    for le, cumulative in buckets:
        if cumulative >= quantile * total:
            return le
    return float("inf")


def postgres_pids(dsn: str) -> list[int]:
    """The postmaster of the cluster's Postgres and all its children (backends, WAL writer, …)."""
    import psutil

    port = int(dsn.rsplit(":", 1)[1].split("/", 1)[0])
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            parent = psutil.Process(connection.pid)
            return [parent.pid, *(child.pid for child in parent.children(recursive=True))]
    return []


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


class CpuMeter:
    """CPU seconds of this driver, the actor and Postgres over one phase, plus the machine's load."""

    def __init__(self, actor_pid: int, dsn: str) -> None:
        self.actor_pid = actor_pid
        self.dsn = dsn

    def __enter__(self) -> CpuMeter:
        import psutil

        self.pg_pids = postgres_pids(self.dsn)  # backends come and go: list them at both ends
        self.started = (time.process_time(), cpu_seconds([self.actor_pid]), cpu_seconds(self.pg_pids))
        self.machine = psutil.cpu_times()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        wall = time.perf_counter() - self.wall
        pg_pids = sorted(set(self.pg_pids) | set(postgres_pids(self.dsn)))
        driver = time.process_time() - self.started[0]
        actor = cpu_seconds([self.actor_pid]) - self.started[1]
        postgres = cpu_seconds(pg_pids) - self.started[2]
        machine = psutil.cpu_times()
        busy = sum(getattr(machine, f) - getattr(self.machine, f) for f in ("user", "system", "nice", "irq", "softirq"))
        self.shares = {"driver": driver / wall, "actor": actor / wall, "postgres": postgres / wall,
                       "machine": busy / wall}


# --- the load -------------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    holds_per_s: float
    commands_per_commit: float
    commit_p50_ms: float
    commit_p99_ms: float
    apply_p50_ms: float
    apply_p99_ms: float
    acknowledged: int
    failed: int
    cpu: dict[str, float]


async def drive(handle: Any, event_id: uuid.UUID, prefix: str, callers: int, batch: int,
                seconds: float) -> tuple[int, int, list[float], float]:
    """Callers send apply calls back to back until the time is up; returns acks, failures, latencies."""
    from shards.slots import new_id, slot_of

    slot = slot_of(event_id)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    counts = [0, 0]

    async def caller(number: int) -> None:
        serial = 0
        while time.perf_counter() < deadline:
            commands = []
            for _ in range(batch):
                commands.append(HoldGeneralAdmission(event_id, f"{prefix}-{number}-{serial}", new_id(slot), "floor", 1))
                serial += 1
            started = time.perf_counter()
            # The router's path: the compact wire encoding (actors/wire.py), encoded and decoded here.
            wire = await asyncio.wait_for(handle.apply_wire.remote(encode_requests(commands)), CALL_TIMEOUT_S)
            replies = decode_replies(wire)
            latencies.append(time.perf_counter() - started)
            ok = sum(1 for reply in replies if type(reply) is HoldView)
            counts[0] += ok
            counts[1] += len(replies) - ok

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    return counts[0], counts[1], latencies, time.perf_counter() - started


def percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else float("nan")


def run_phase(handle: Any, event_id: uuid.UUID, prefix: str, callers: int, batch: int, seconds: float,
              actor_pid: int, dsn: str) -> PhaseResult:
    import ray

    before = ray.get(handle.metrics_text.remote(), timeout=30)
    with CpuMeter(actor_pid, dsn) as meter:
        acknowledged, failed, latencies, elapsed = asyncio.run(drive(handle, event_id, prefix, callers, batch, seconds))
    after = ray.get(handle.metrics_text.remote(), timeout=30)
    _, commands, commits = histogram_delta(before, after, "ticketing_actor_commit_commands")
    commit_buckets, _, _ = histogram_delta(before, after, "ticketing_actor_commit_seconds")
    return PhaseResult(
        holds_per_s=acknowledged / elapsed, commands_per_commit=commands / commits if commits else float("nan"),
        commit_p50_ms=bucket_quantile(commit_buckets, 0.5) * 1000,
        commit_p99_ms=bucket_quantile(commit_buckets, 0.99) * 1000,
        apply_p50_ms=percentile(latencies, 0.5) * 1000, apply_p99_ms=percentile(latencies, 0.99) * 1000,
        acknowledged=acknowledged, failed=failed, cpu=meter.shares)


def describe(label: str, result: PhaseResult) -> str:
    cpu = " ".join(f"{name}={share:.2f}" for name, share in result.cpu.items())
    return (f"{label}: actor_cpu_us_per_hold={actor_us_per_hold(result):.0f} "
            f"postgres_cpu_us_per_hold={1e6 * result.cpu['postgres'] / result.holds_per_s:.0f} "
            f"actor_ceiling_one_core_holds_per_s={1e6 / actor_us_per_hold(result):,.0f}\n  "
            f"{label}: holds_per_s={result.holds_per_s:,.0f} acked={result.acknowledged} failed={result.failed} "
            f"commands_per_commit={result.commands_per_commit:.1f} commit_ms_p50<={result.commit_p50_ms:g} "
            f"p99<={result.commit_p99_ms:g} apply_call_ms_p50={result.apply_p50_ms:.1f} "
            f"p99={result.apply_p99_ms:.1f} cpu_cores[{cpu}]")


def actor_us_per_hold(result: PhaseResult) -> float:
    """Actor CPU per acknowledged hold: robust to a shared machine, unlike holds/s."""
    return 1e6 * result.cpu["actor"] / result.holds_per_s if result.holds_per_s else float("nan")


def summary(label: str, values: list[float], unit: str = "") -> str:
    return (f"{label}: median={statistics.median(values):,.1f}{unit} min={min(values):,.1f} max={max(values):,.1f} "
            f"(n={len(values)})")


def profile_actor(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy on the actor: a raw (collapsed) profile we can summarise, plus the CPU-only view."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
                             "--format", "raw", "--nonblocking", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise_profile(path: Path, top: int = 25) -> str:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"# py-spy samples: {total}", "# self%  function"]
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    lines.append("# inclusive%  function")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    return "\n".join(lines)


def count_durable(dsn: str, event_id: uuid.UUID) -> tuple[int, int]:
    """Holds rows of the event and the distinct transactions that wrote them (xmin)."""
    import asyncpg

    async def count() -> tuple[int, int]:
        connection = await asyncpg.connect(dsn)
        try:
            row = await connection.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT xmin::text) AS tx FROM holds WHERE event_id = $1", event_id)
            return int(row["n"]), int(row["tx"])
        finally:
            await connection.close()

    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the batch=1 phases")
    parser.add_argument("--data-dir", default=None, help="join this running deployment instead of starting one")
    parser.add_argument("--profile-s", type=int, default=0, help="py-spy the actor for N s in the first batched phase")
    parser.add_argument("--profile-out", default="actor-profile.txt")
    args = parser.parse_args()

    import psutil
    import ray

    print(f"# loadavg before: {os.getloadavg()} cpus={psutil.cpu_count()}", flush=True)
    with bench_environment(args.data_dir) as env:
        handle = start_actor(env.dsn)
        try:
            actor_pid = int(ray.get(handle.health.remote(), timeout=30)["pid"])
            (document,) = apply_checked(handle, [ga_event()])
            event_id = uuid.UUID(document.document["id"])
            print(f"# actor pid={actor_pid} event={event_id}", flush=True)
            # Warm-up: connection pool, code paths, Ray worker leases.
            run_phase(handle, event_id, "warm", args.callers, args.batch, 2.0, actor_pid, env.dsn)
            batched: list[PhaseResult] = []
            single: list[PhaseResult] = []
            for repeat in range(args.repeat):
                profiler = None
                if repeat == 0 and args.profile_s:
                    profiler = profile_actor(actor_pid, args.profile_s, Path(args.profile_out + ".raw"))
                batched.append(run_phase(handle, event_id, f"b{repeat}", args.callers, args.batch, args.seconds,
                                         actor_pid, env.dsn))
                print(describe(f"run {repeat + 1} batch={args.batch}", batched[-1]), flush=True)
                if profiler is not None:
                    _, error = profiler.communicate(timeout=args.profile_s + 60)
                    raw = Path(args.profile_out + ".raw")
                    if raw.exists():
                        Path(args.profile_out).write_text(summarise_profile(raw) + "\n")
                        print(f"# profile summary in {args.profile_out}", flush=True)
                    else:
                        print(f"# py-spy failed: {error.decode()[-500:]}", flush=True)
                if not args.no_baseline:
                    single.append(run_phase(handle, event_id, f"s{repeat}", args.callers, 1, args.seconds,
                                            actor_pid, env.dsn))
                    print(describe(f"run {repeat + 1} batch=1", single[-1]), flush=True)
            rows, transactions = count_durable(env.dsn, event_id)
            acknowledged = sum(r.acknowledged for r in batched + single)
            print(f"# durable check: holds rows={rows} written by {transactions} transactions; "
                  f"acknowledged in measured phases={acknowledged} (warm-up adds more rows)", flush=True)
            if rows < acknowledged:
                raise SystemExit("FAILED: fewer holds rows than acknowledged holds")
            print(f"# loadavg after: {os.getloadavg()}")
            print(f"== callers={args.callers} batch={args.batch} seconds={args.seconds:g} repeats={args.repeat}")
            print(summary(f"batch={args.batch} holds/s", [r.holds_per_s for r in batched]))
            print(summary(f"batch={args.batch} commands/commit", [r.commands_per_commit for r in batched]))
            print(summary(f"batch={args.batch} commit p50 ms (bucket bound)", [r.commit_p50_ms for r in batched]))
            print(summary(f"batch={args.batch} commit p99 ms (bucket bound)", [r.commit_p99_ms for r in batched]))
            print(summary(f"batch={args.batch} actor CPU us/hold", [actor_us_per_hold(r) for r in batched]))
            print(summary(f"batch={args.batch} apply call p50 ms", [r.apply_p50_ms for r in batched]))
            print(summary(f"batch={args.batch} apply call p99 ms", [r.apply_p99_ms for r in batched]))
            if single:
                print(summary("batch=1 holds/s", [r.holds_per_s for r in single]))
                print(summary("batch=1 commands/commit", [r.commands_per_commit for r in single]))
                print(summary("batch=1 commit p50 ms (bucket bound)", [r.commit_p50_ms for r in single]))
                print(summary("batch=1 commit p99 ms (bucket bound)", [r.commit_p99_ms for r in single]))
                print(summary("batch=1 actor CPU us/hold", [actor_us_per_hold(r) for r in single]))
                print(summary("batch=1 apply call p50 ms", [r.apply_p50_ms for r in single]))
                print(summary("batch=1 apply call p99 ms", [r.apply_p99_ms for r in single]))
                ratio = statistics.median(r.holds_per_s for r in batched) / statistics.median(
                    r.holds_per_s for r in single)
                print(f"ratio batched/batch=1 (medians): {ratio:.1f}x")
        finally:
            kill_actor(handle)


if __name__ == "__main__":
    main()
