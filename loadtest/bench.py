"""HTTP holds against the alternatives, in one run on one machine with one load generator (issue 12).

    python -m loadtest.bench [--quick] [--json PATH] [--only NAME,...] [--scaling]
                             [--seconds 10] [--warmup-s 3] [--connections 64] [--rate-limits raised|off]

For two workloads — ``ga``: ``POST /v1/holds`` of quantity 1 on one hot GA pool; ``seats``:
best-available 2 on one seated section (``{"event_id", "section", "quantity": 2,
"best_available": true}``) — wrk (`loadtest/wrk/holds.lua`: 2 threads, ``--connections``
keep-alive connections, a fresh Idempotency-Key and a random buyer token per request) drives,
one after the other, each for ``--warmup-s`` (not measured) and then ``--seconds``:

1. ``ceiling-asgi``, ``ceiling-fastapi``: the framework ceilings (`loadtest.baselines.ceiling`);
2. ``rowlock``: the seeds' ``SELECT … FOR UPDATE`` design; 3. ``conditional``: one conditional
   ``UPDATE … RETURNING`` statement per hold; 4. ``redis-lua``: the seeds' Redis + Lua design
   (`loadtest.baselines`); all on an embedded Postgres and Redis of their own, configured as
   the product's (`cluster.embedded`), stopped before the product starts;
5. ``product``: this system through ``ticketing up`` (`tests.harness.start_cluster`: 4 shards,
   2 router workers, ``TICKETING_ACCESS_LOG=false``), with rate limits raised out of reach (all
   load comes from 127.0.0.1; the Redis check still runs per request) or, with ``--rate-limits
   off``, switched off.

Each run gets a fresh event; afterwards its database is checked for oversell. Then the product
runs again at ``--high-connections`` (256: no collapse under contention means ≥ 0.9 × the
64-connection rate) and under the open-model client (`loadtest.open_model`) at 50 %, 70 % and
100 % of its measured GA peak, p50/p99 from each request's due time. Last, the open-model client
is pointed at the bare ASGI app at that same peak rate: low latency there shows the client keeps
up. ``--scaling`` adds `loadtest.scaling`'s figures while the product is up.

Printed: per workload a table of 2xx/s, p50, p99, non-2xx answers, the oversell verdict and the
CPU cores of wrk, the servers, the actors, Postgres and Redis over the measured window; the
product's ratio to each competitor with the issue's goals; router CPU per hold. ``--json``
writes it all. ``--quick`` (under 3 minutes): 3 s runs after 1 s of warm-up, ceilings on GA only,
256 connections on GA only. Only 127.0.0.1 is used; everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.settings import Settings
from loadtest.baselines.schema import GA_SECTION, SEATED_SECTION, EventLayout
from loadtest.wrk.driver import LoadResult, PidGroups, cpu_meter, start_wrk, write_lines

CEILINGS = ("ceiling-asgi", "ceiling-fastapi")
DATABASE_BASELINES = ("rowlock", "conditional", "redis-lua")
PRODUCT = "product"
SERVERS = (*CEILINGS, *DATABASE_BASELINES, PRODUCT)
WORKLOADS = ("ga", "seats")
# The issue's goals: (workload, competitor, minimum ratio product ÷ competitor).
GOALS = (("ga", "rowlock", 5.0), ("ga", "conditional", 2.5), ("ga", "redis-lua", 2.0),
         ("ga", "ceiling-fastapi", 0.4), ("seats", "rowlock", 3.0))
HIGH_CONNECTIONS_GOAL = 0.9
OPEN_MODEL_P99_GOAL_MS = 50.0
ROUTER_CPU_PER_HOLD_GOAL_MS = 0.2
OPEN_MODEL_FRACTIONS = (0.5, 0.7, 1.0)
JWT_SECRET_BYTES = 32


@dataclass
class Options:
    seconds: float
    warmup_s: float
    connections: int
    high_connections: int
    users: int
    workers: int
    pool_size: int
    layout: EventLayout
    servers: tuple[str, ...]
    ceiling_workloads: tuple[str, ...]
    high_workloads: tuple[str, ...]
    rate_limits: str
    open_model_seconds: float
    scaling: bool
    quick: bool
    plot: Path | None = None

    def layout_for(self, workload: str) -> EventLayout:
        """A GA run needs no seat rows: one seat keeps creating its event quick."""
        if workload == "ga":
            return EventLayout(self.layout.ga_capacity, 1, 1)
        return self.layout


@dataclass
class Report:
    options: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> server -> run
    high_connections: dict[str, Any] = field(default_factory=dict)  # workload -> run
    open_model: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    product_settings: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def record(self, workload: str, server: str, run: dict[str, Any]) -> None:
        self.runs.setdefault(workload, {})[server] = run


def hold_line(event_id: str, workload: str) -> str:
    if workload == "ga":
        return json.dumps({"event_id": event_id, "section": GA_SECTION, "quantity": 1})
    return json.dumps({"event_id": event_id, "section": SEATED_SECTION, "quantity": 2, "best_available": True})


def measure(url: str, tokens_file: Path, lines_file: Path, groups: PidGroups, *, connections: int, seconds: float,
            warmup_s: float) -> LoadResult:
    """A warm-up wrk run (discarded), then the measured one with every group's CPU over it."""
    if warmup_s > 0:
        start_wrk(url, tokens_file, lines_file, connections=connections, seconds=warmup_s,
                  nonce=uuid.uuid4().hex[:12]).finish()
    with cpu_meter(groups) as cores:
        result = start_wrk(url, tokens_file, lines_file, connections=connections, seconds=seconds,
                           nonce=uuid.uuid4().hex[:12]).finish()
    result.cores = cores
    return result


def describe(label: str, result: LoadResult, check: dict[str, Any] | None) -> dict[str, Any]:
    run = {**result.summary(), "check": check}
    cores = " ".join(f"{name}={value:.2f}" for name, value in result.cores.items())
    verdict = "-" if check is None else ("OVERSOLD" if check.get("oversold") else "ok")
    print(f"  {label:<28} {result.ok_per_s:>9,.0f} 2xx/s  p50={result.p50_ms:7.1f} ms  p99={result.p99_ms:7.1f} ms  "
          f"non-2xx={result.requests - result.ok}  oversell={verdict}  wrk={result.wrk_cores:.2f} cores  [{cores}]",
          flush=True)
    refused = result.statuses.get(409, 0)
    if refused:
        print(f"  ! {refused} answers were 409: the run sold out (raise --seat-rows) or refused holds", flush=True)
    return run


# --- the baselines ----------------------------------------------------------------------------------


@contextlib.contextmanager
def baseline_services(work: Path) -> Iterator[tuple[Any, Any]]:
    """An embedded Postgres and Redis exactly as `ticketing up` starts its own (cluster.embedded)."""
    from cluster.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir = work / "baselines"
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    postgres.start()
    try:
        redis.start()
        try:
            yield postgres, redis
        finally:
            redis.stop()
    finally:
        postgres.stop()


def run_baselines(options: Options, work: Path, report: Report) -> None:
    from router.auth import issue_token

    selected = [name for name in (*CEILINGS, *DATABASE_BASELINES) if name in options.servers]
    if not selected:
        return
    secret = secrets.token_hex(JWT_SECRET_BYTES)
    tokens_file = write_lines(work / "baseline-tokens.txt",
                              [issue_token(secret, f"user-{n}", "buyer", 3600) for n in range(options.users)])
    with baseline_services(work) as (postgres, redis):
        for name in selected:
            run_baseline(name, options, work, postgres, redis, secret, tokens_file, report)


def run_baseline(name: str, options: Options, work: Path, postgres: Any, redis: Any, secret: str, tokens_file: Path,
                 report: Report) -> None:
    from cluster.runstate import free_port
    from loadtest.actor_bench import postgres_pids
    from loadtest.baselines import redis_lua, schema
    from loadtest.baselines.serve import start_baseline

    dsn = ""
    if name in DATABASE_BASELINES:
        dsn = asyncio.run(schema.create_database(postgres.dsn("postgres"), "bench_" + name.replace("-", "_")))
    environment = {"BENCH_PG_DSN": dsn, "BENCH_REDIS_URL": redis.url, "BENCH_JWT_SECRET": secret,
                   "BENCH_POOL_SIZE": str(options.pool_size)}
    server = start_baseline(name, free_port(), environment, options.workers, str(work / f"{name}.log"))
    try:
        server.wait_ready()
        redis_pid = redis.process.pid if redis.process else 0

        def groups() -> dict[str, list[int]]:
            return {"server": server.pids(), "postgres": postgres_pids(postgres.dsn("postgres")),
                    "redis": [redis_pid]}

        workloads = options.ceiling_workloads if name in CEILINGS else WORKLOADS
        print(f"# {name}", flush=True)
        for workload in workloads:
            layout = options.layout_for(workload)
            event_id = asyncio.run(schema.create_event(dsn, layout)) if dsn else uuid.uuid4()
            if name == "redis-lua":
                asyncio.run(redis_lua.seed_event(redis.url, event_id, layout))
            lines = write_lines(work / f"{name}-{workload}.txt", [hold_line(str(event_id), workload)])
            result = measure(server.base_url, tokens_file, lines, groups, connections=options.connections,
                             seconds=options.seconds, warmup_s=options.warmup_s)
            check = None
            if dsn:
                inventory = (asyncio.run(redis_lua.read_inventory(redis.url, event_id))
                             if name == "redis-lua" else None)
                check = asyncio.run(schema.check_event(dsn, event_id, layout, inventory))
            report.record(workload, name, describe(f"{workload}", result, check))
    finally:
        server.stop()


# --- the product ------------------------------------------------------------------------------------


def rate_limit_environment(mode: str) -> dict[str, str]:
    """All load comes from one address and a few thousand users: the defaults (2,000/s per address,
    10/s per user) would refuse most of it. "raised" keeps the per-request check (and its cost)
    with limits nothing reaches; "off" removes the check."""
    if mode == "off":
        return {"TICKETING_RATE_LIMITS": "false"}
    return {"TICKETING_RATE_LIMIT_USER_PER_S": "1000000", "TICKETING_RATE_LIMIT_USER_BURST": "1000000",
            "TICKETING_RATE_LIMIT_ADDRESS_PER_S": "1000000000", "TICKETING_RATE_LIMIT_ADDRESS_BURST": "1000000000"}


@contextlib.contextmanager
def product_cluster(options: Options, work: Path, report: Report) -> Iterator[Any]:
    from tests.harness import cluster_for_measuring

    # The test harness turns read snapshots off (its suites read their own writes); a deployment
    # has them on, and so does the product measured here.
    environment = {"TICKETING_ACCESS_LOG": "false", "TICKETING_ROUTER_WORKERS": str(options.workers),
                   "TICKETING_READ_SNAPSHOT_S": str(Settings.model_fields["read_snapshot_s"].default),
                   **rate_limit_environment(options.rate_limits)}
    report.product_settings = environment
    with cluster_for_measuring(work / "product", environment, "product: cluster") as cluster:
        yield cluster


def product_event(cluster: Any, layout: EventLayout, organizer_token: str) -> str:
    import httpx

    rows = [{"label": str(row + 1), "seats": layout.seats_per_row} for row in range(layout.seat_rows)]
    document = {"title": "bench", "venue": {"name": "v"}, "starts_at": "2027-01-01T20:00:00Z", "hold_seconds": 3600,
                "sections": [{"id": GA_SECTION, "name": "Floor", "kind": "ga", "capacity": layout.ga_capacity,
                              "price_cents": 5000},
                             {"id": SEATED_SECTION, "name": "Block A", "kind": "seated", "price_cents": 7500,
                              "rows": rows}]}
    response = httpx.post(cluster.base_url + "/v1/events", json=document, timeout=120,
                          headers={"Authorization": f"Bearer {organizer_token}"})
    response.raise_for_status()
    return str(response.json()["id"])


def product_groups(cluster: Any) -> PidGroups:
    """Router (master and workers), shard actors, the rest of Ray, Postgres and Redis."""
    import psutil

    from loadtest.actor_bench import postgres_pids
    from loadtest.http_holds_bench import server_pids

    state = cluster.state()
    known = server_pids(state)
    actors = set(known["actors"])
    ray_dir = str(state.get("ray_temp_dir") or "/nonexistent")
    ray_system = [process.pid for process in psutil.process_iter(["cmdline"])
                  if process.pid not in actors and ray_dir in " ".join(process.info.get("cmdline") or [])]
    redis = [int(state["redis_pid"])] if state.get("redis_pid") else []

    def groups() -> dict[str, list[int]]:
        router = psutil.Process(int(state["router_pid"]))
        return {"router": [router.pid, *(child.pid for child in router.children(recursive=True))],
                "actors": sorted(actors), "ray_system": ray_system,
                "postgres": postgres_pids(str(state["pg_dsns"][0])), "redis": redis}

    return groups


def product_check(cluster: Any, event_id: str) -> dict[str, Any]:
    """Oversold: live GA holds beyond a pool's capacity, or a seat in two live holds; consistent:
    every invariant of tests.support.check_database (counters = holds, claims = holds) holds."""
    from tests.support import check_database, fetch, shard_dsn

    pools = asyncio.run(fetch(shard_dsn(cluster, event_id), """
        SELECT p.capacity, (SELECT coalesce(sum(h.quantity), 0) FROM holds h WHERE h.event_id = p.event_id
                            AND h.section_id = p.section_id AND h.kind = 'ga'
                            AND h.status IN ('held', 'payment_pending')) AS live
        FROM ga_pools p WHERE p.event_id = $1""", uuid.UUID(event_id)))
    oversold = any(int(pool["live"]) > int(pool["capacity"]) for pool in pools)
    try:
        counts = check_database(cluster, event_id)
    except AssertionError as error:
        return {"oversold": oversold or "two live holds" in str(error), "consistent": False,
                "error": str(error)[:500]}
    return {"oversold": oversold, "consistent": True, **counts}


def run_product(options: Options, work: Path, report: Report) -> None:
    with product_cluster(options, work, report) as cluster:
        organizer = cluster.token("bench-organizer", "organizer")
        tokens = [cluster.token(f"user-{n}") for n in range(options.users)]
        tokens_file = write_lines(work / "product-tokens.txt", tokens)
        groups = product_groups(cluster)
        runs: list[tuple[str, int]] = [(workload, options.connections) for workload in WORKLOADS]
        runs += [(workload, options.high_connections) for workload in options.high_workloads]
        for workload, connections in runs:
            created = time.monotonic()
            event_id = product_event(cluster, options.layout_for(workload), organizer)
            print(f"  (event with {options.layout_for(workload).seat_count:,} seats created in "
                  f"{time.monotonic() - created:.1f} s)", flush=True)
            lines = write_lines(work / f"product-{workload}-{connections}.txt", [hold_line(event_id, workload)])
            result = measure(cluster.base_url, tokens_file, lines, groups, connections=connections,
                             seconds=options.seconds, warmup_s=options.warmup_s)
            run = describe(f"{workload} @{connections} connections", result, product_check(cluster, event_id))
            if connections == options.connections:
                report.record(workload, PRODUCT, run)
            else:
                report.high_connections[workload] = run
        peak = report.runs.get("ga", {}).get(PRODUCT, {}).get("ok_per_s", 0.0)
        if peak > 0:
            run_open_model_series(options, cluster, organizer, tokens, peak, work, report)
        if options.scaling:
            from loadtest.scaling import DEFAULT_PLOT, run_scaling

            report.scaling = run_scaling(cluster, tokens_file, organizer, groups, options.seconds, options.warmup_s,
                                         work, report.open_model, options.plot or DEFAULT_PLOT)


def run_open_model_series(options: Options, cluster: Any, organizer: str, tokens: list[str], peak: float,
                          work: Path, report: Report) -> None:
    from loadtest.open_model import run_open_model

    print(f"# product: open model at {', '.join(f'{f:.0%}' for f in OPEN_MODEL_FRACTIONS)} of {peak:,.0f}/s",
          flush=True)
    for fraction in OPEN_MODEL_FRACTIONS:
        event_id = product_event(cluster, options.layout_for("ga"), organizer)
        result = run_open_model(cluster.base_url, tokens, [hold_line(event_id, "ga").encode()],
                                rate_per_s=fraction * peak, seconds=options.open_model_seconds,
                                warmup_s=options.warmup_s)
        result["fraction_of_peak"] = fraction
        result["check"] = product_check(cluster, event_id)
        print_open_model(f"{fraction:.0%} of peak", result)
        report.open_model.append(result)


def print_open_model(label: str, result: dict[str, Any]) -> None:
    print(f"  {label:<28} offered={result['offered_per_s']:>8,.0f}/s sent={result['sent_per_s']:>8,.0f}/s "
          f"2xx={result['ok_per_s']:>8,.0f}/s p50={result['p50_ms']:7.1f} ms p99={result['p99_ms']:7.1f} ms "
          f"scheduler_lag_p99={result['scheduler_lag_p99_ms']:.1f} ms client={result['client_cores']:.2f} cores",
          flush=True)


def run_calibration(options: Options, work: Path, report: Report) -> None:
    """The open-model client against the bare ASGI app at the product's peak: if the client kept up
    there, it was not what limited the product's runs."""
    from cluster.runstate import free_port
    from loadtest.baselines.serve import start_baseline
    from loadtest.open_model import run_open_model
    from router.auth import issue_token

    peak = report.runs.get("ga", {}).get(PRODUCT, {}).get("ok_per_s", 0.0)
    if peak <= 0:
        return
    secret = secrets.token_hex(JWT_SECRET_BYTES)
    tokens = [issue_token(secret, f"user-{n}", "buyer", 3600) for n in range(min(options.users, 1000))]
    server = start_baseline("ceiling-asgi", free_port(), {"BENCH_JWT_SECRET": secret}, options.workers)
    try:
        server.wait_ready()
        result = run_open_model(server.base_url, tokens, [hold_line(str(uuid.uuid4()), "ga").encode()],
                                rate_per_s=peak, seconds=options.open_model_seconds, warmup_s=options.warmup_s)
    finally:
        server.stop()
    print("# open-model client against ceiling-asgi at the product's peak rate")
    print_open_model("calibration", result)
    report.calibration = result


# --- the report -------------------------------------------------------------------------------------


def ratios(report: Report) -> dict[str, dict[str, float]]:
    """Product 2xx/s ÷ each competitor's, per workload."""
    table: dict[str, dict[str, float]] = {}
    for workload, runs in report.runs.items():
        product = runs.get(PRODUCT, {}).get("ok_per_s")
        if not product:
            continue
        table[workload] = {server: round(product / run["ok_per_s"], 3)
                           for server, run in runs.items() if server != PRODUCT and run["ok_per_s"] > 0}
    return table


def goals(report: Report) -> list[dict[str, Any]]:
    table = ratios(report)
    checked = [{"goal": f"{workload}: product >= {minimum} x {server}", "measured": table[workload][server],
                "met": table[workload][server] >= minimum}
               for workload, server, minimum in GOALS if server in table.get(workload, {})]
    for workload, run in report.high_connections.items():
        peak = report.runs.get(workload, {}).get(PRODUCT, {}).get("ok_per_s")
        if peak:
            ratio = round(run["ok_per_s"] / peak, 3)
            checked.append({"goal": f"{workload}: {run['connections']} connections >= {HIGH_CONNECTIONS_GOAL} x "
                                    "the 64-connection rate", "measured": ratio, "met": ratio >= HIGH_CONNECTIONS_GOAL})
    for result in report.open_model:
        if result["fraction_of_peak"] == 0.7:
            checked.append({"goal": f"p99 <= {OPEN_MODEL_P99_GOAL_MS:g} ms at 70 % of peak",
                            "measured": round(result["p99_ms"], 1), "met": result["p99_ms"] <= OPEN_MODEL_P99_GOAL_MS})
    product_ga = report.runs.get("ga", {}).get(PRODUCT)
    if product_ga and product_ga["ok_per_s"] > 0:
        per_hold = round(1000 * product_ga["cores"].get("router", 0.0) / product_ga["ok_per_s"], 3)
        checked.append({"goal": f"router CPU per GA hold <= {ROUTER_CPU_PER_HOLD_GOAL_MS} ms", "measured": per_hold,
                        "met": per_hold <= ROUTER_CPU_PER_HOLD_GOAL_MS})
    every_check = [run.get("check") for runs in report.runs.values() for run in runs.values()]
    every_check += [run.get("check") for run in report.high_connections.values()]
    every_check += [result.get("check") for result in report.open_model]
    oversold = sum(1 for check in every_check if check and check.get("oversold") is not False)
    checked.append({"goal": "0 oversold in every run", "measured": oversold, "met": oversold == 0})
    return checked


def table_row(server: str, run: dict[str, Any]) -> str:
    cores = run["cores"]
    check = run.get("check")
    verdict = "-" if check is None else ("no" if check.get("oversold") is False else "YES")
    non_ok = run["requests"] - sum(v for k, v in run["statuses"].items() if k.startswith("2"))
    server_cores = cores.get("server", cores.get("router", 0.0))
    return (f"{'':<8}{server:<16} {run['ok_per_s']:>9,.0f} {run['p50_ms']:>8.1f} {run['p99_ms']:>8.1f} "
            f"{non_ok:>8} {verdict:>8} {run['wrk_cores']:>5.2f} {server_cores:>6.2f} {cores.get('actors', 0.0):>6.2f} "
            f"{cores.get('postgres', 0.0):>5.2f} {cores.get('redis', 0.0):>5.2f} {cores.get('machine', 0.0):>7.2f}")


def print_report(report: Report) -> None:
    print("\n== HTTP holds, one run (2xx/s; latency from wrk; CPU cores over the measured window)")
    for workload, runs in report.runs.items():
        print(f"\n[{workload}]  {'server':<16} {'2xx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
              f"{'oversold':>8} {'wrk':>5} {'server':>6} {'actors':>6} {'pg':>5} {'redis':>5} {'machine':>7}")
        for server in SERVERS:
            if server in runs:
                print(table_row(server, runs[server]))
    for workload, table in ratios(report).items():
        if table:
            print(f"\nproduct ÷ competitor [{workload}]: " + "  ".join(f"{k}={v:.2f}" for k, v in table.items()))
    print("\ngoals (issue 12):")
    for goal in goals(report):
        print(f"  {'met ' if goal['met'] else 'GAP '} {goal['goal']}: measured {goal['measured']}")
    ceiling = report.runs.get("ga", {}).get("ceiling-asgi")
    if ceiling and ceiling["ok_per_s"]:
        per_request_us = 1e6 * ceiling["wrk_cores"] / ceiling["ok_per_s"]
        print(f"\nload generator: wrk drove the bare ASGI app at {ceiling['ok_per_s']:,.0f}/s with "
              f"{ceiling['wrk_cores']:.2f} cores ({per_request_us:.1f} µs of CPU per request)")


def source_commit() -> str:
    """The commit measured, marked "+dirty" when the tree differs from it (others edit it too)."""
    import subprocess

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], capture_output=True, text=True, timeout=30, check=False,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                                                  else "")


def options_from(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)
    seconds = args.seconds if args.seconds is not None else (3.0 if quick else 10.0)
    warmup_s = args.warmup_s if args.warmup_s is not None else (1.0 if quick else 3.0)
    servers = tuple(args.only.split(",")) if args.only else SERVERS
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    # Enough seats that no run sells out: 2 per hold at the fastest rate we expect, with room.
    seat_rows = args.seat_rows if args.seat_rows is not None else (200 if quick else 600)
    layout = EventLayout(ga_capacity=1_000_000, seat_rows=seat_rows, seats_per_row=500)
    return Options(seconds=seconds, warmup_s=warmup_s, connections=args.connections,
                   high_connections=args.high_connections, users=args.users, workers=args.workers,
                   pool_size=args.pool_size, layout=layout, servers=servers,
                   ceiling_workloads=("ga",) if quick else WORKLOADS,
                   high_workloads=("ga",) if quick else WORKLOADS, rate_limits=args.rate_limits,
                   open_model_seconds=seconds, scaling=bool(args.scaling), quick=quick, plot=args.plot)


def main() -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs, fewer variants: under 3 minutes")
    parser.add_argument("--json", type=Path, default=None, help="write the whole report here")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--warmup-s", type=float, default=None)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--high-connections", type=int, default=256)
    parser.add_argument("--users", type=int, default=10_000, help="distinct buyer tokens")
    parser.add_argument("--workers", type=int, default=defaults.router_workers)
    parser.add_argument("--pool-size", type=int, default=defaults.db_pool_size_max,
                        help="each baseline worker's asyncpg pool (the router's db_pool_size_max)")
    parser.add_argument("--seat-rows", type=int, default=None,
                        help="rows of 500 seats in each seats run's section (600; --quick: 200)")
    parser.add_argument("--rate-limits", choices=("raised", "off"), default="raised")
    parser.add_argument("--scaling", action="store_true", help="also run loadtest.scaling's figures")
    parser.add_argument("--plot", type=Path, default=None,
                        help="with --scaling: where the PNG goes (default docs/bench-holds-scaling.png)")
    args = parser.parse_args()
    options = options_from(args)
    args_json = args.json
    report = Report(options={**{k: v for k, v in vars(options).items() if k != "layout"},
                             "layout": vars(options.layout), "cpu_count": os.cpu_count(),
                             "commit": source_commit(), "loadavg_before": os.getloadavg()})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tkt-bench-") as temp:
        work = Path(temp)
        run_baselines(options, work, report)
        if PRODUCT in options.servers:
            run_product(options, work, report)
            if "ceiling-asgi" in options.servers:
                run_calibration(options, work, report)
    report.options["loadavg_after"] = os.getloadavg()
    report.options["elapsed_s"] = round(time.monotonic() - started, 1)
    print_report(report)
    print(f"\n# commit {report.options['commit']}; {report.options['elapsed_s']} s; "
          f"load average before {report.options['loadavg_before']}, after {report.options['loadavg_after']}")
    if args_json is not None:
        document = {**vars(report), "ratios": ratios(report), "goals": goals(report)}
        args_json.write_text(json.dumps(document, indent=2, default=str))
        print(f"# wrote {args_json}")


if __name__ == "__main__":
    main()
