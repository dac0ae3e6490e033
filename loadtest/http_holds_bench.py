"""GA holds over HTTP: many keep-alive clients POSTing ``/v1/holds`` to one hot event.

    python -m loadtest.http_holds_bench [--seconds 10] [--concurrency 64] [--processes 2]
                                        [--client raw|httpx] [--repeat 3] [--data-dir D]

Starts a cluster of its own in a temp folder (2 router workers, access log off, 4 shards), or
targets the running deployment in ``--data-dir``. Creates one GA event (capacity 1,000,000, no
per-person limit) through the API, mints ``--users`` buyer tokens up front (``user-<n>``; each
request takes the next one, so users are distinct until the list wraps), then ``--processes``
client processes each keep ``--concurrency / --processes`` HTTP/1.1 keep-alive connections busy
POSTing holds of quantity 1, back to back. ``--client raw`` (default) is a small asyncio client
that writes one prebuilt request and parses status line, headers and a Content-Length body;
``--client httpx`` uses ``httpx.AsyncClient``. Each run discards its first ``--warmup-s`` seconds.

Printed per run: holds/s (201s), other statuses by count, client-measured latency p50/p99, the
router's ``ticketing_shard_batch_size`` (kind ``apply``) mean over the run from ``/metrics``, and
the CPU cores used by the client processes, the router workers, the shard actors and Postgres
during the run (so one can tell which side saturated); then median and min-max over the runs.
Only 127.0.0.1 is used; everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.actor_bench import cpu_seconds, histogram_delta, postgres_pids  # also sets the Ray environment

GA_CAPACITY = 1_000_000
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 30.0


# --- client processes --------------------------------------------------------------------------------


def hold_body(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "section": "floor", "quantity": 1}).encode()


async def raw_connection(port: int, event_id: str, tokens: list[str], offset: int, stride: int,
                         measure_from: float, deadline: float, statuses: Counter[int], latencies: list[float]) -> None:
    """One keep-alive connection sending holds back to back, parsing responses by hand."""
    body = hold_body(event_id)
    head = (f"POST /v1/holds HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer ").encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    serial = offset
    try:
        while time.time() < deadline:
            token = tokens[serial % len(tokens)]
            serial += stride
            started = time.perf_counter()
            writer.write(head + token.encode() + b"\r\n\r\n" + body)
            status_line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            if not status_line:
                raise ConnectionError("server closed the connection")
            length, close = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError("chunked responses are not supported by the raw client")
            await reader.readexactly(length)
            if time.time() >= measure_from:
                statuses[int(status_line.split(b" ", 2)[1])] += 1
                latencies.append(time.perf_counter() - started)
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()


async def httpx_connection(client: Any, event_id: str, tokens: list[str], offset: int, stride: int,
                           measure_from: float, deadline: float, statuses: Counter[int],
                           latencies: list[float]) -> None:
    body = hold_body(event_id)
    serial = offset
    while time.time() < deadline:
        token = tokens[serial % len(tokens)]
        serial += stride
        started = time.perf_counter()
        response = await client.post("/v1/holds", content=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        if time.time() >= measure_from:
            statuses[response.status_code] += 1
            latencies.append(time.perf_counter() - started)


async def client_main(kind: str, port: int, event_id: str, tokens: list[str], connections: int, first: int,
                      stride: int, start_at: float, measure_from: float, deadline: float) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu: list[float] = []

    async def cpu_mark() -> None:  # CPU of this process over the measured window only
        await asyncio.sleep(max(0.0, measure_from - time.time()))
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, deadline - time.time()))
        cpu.append(time.process_time())

    marker = asyncio.get_running_loop().create_task(cpu_mark())
    if kind == "raw":
        await asyncio.gather(*(raw_connection(port, event_id, tokens, first + n * stride, stride * connections,
                                              measure_from, deadline, statuses, latencies)
                               for n in range(connections)))
    else:
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits,
                                     timeout=REQUEST_TIMEOUT_S) as client:
            await asyncio.gather(*(httpx_connection(client, event_id, tokens, first + n * stride,
                                                    stride * connections, measure_from, deadline, statuses, latencies)
                                   for n in range(connections)))
    await marker
    return {"statuses": dict(statuses), "latencies": latencies, "cpu_s": cpu[1] - cpu[0]}


def client_process(arguments: tuple[Any, ...], results: Any) -> None:
    results.put(asyncio.run(client_main(*arguments)))


# --- server side: the router's metrics and the processes' CPU ------------------------------------------


def server_pids(state: dict[str, Any]) -> dict[str, list[int]]:
    """Router master + workers, shard actors (through Ray) and Postgres of the deployment."""
    import psutil
    import ray

    router = psutil.Process(int(state["router_pid"]))
    pids = {"router": [router.pid, *(child.pid for child in router.children(recursive=True))],
            "postgres": postgres_pids(str(state["pg_dsns"][0])), "actors": []}
    ray.init(address=str(state["ray_address"]), namespace="ticketing", logging_level="ERROR", log_to_driver=False)
    try:
        shard = 0
        while True:
            try:
                handle = ray.get_actor(f"shard-{shard}", namespace="ticketing")
            except ValueError:
                break
            pids["actors"].append(int(ray.get(handle.health.remote(), timeout=30)["pid"]))
            shard += 1
    finally:
        ray.shutdown()
    return pids


def batch_size_histogram(base_url: str) -> bytes:
    import httpx

    text = httpx.get(base_url + "/metrics", timeout=30).text
    # Keep only kind="apply" samples so the delta is the hold path's batches, not reads.
    lines = [line for line in text.splitlines()
             if not line.startswith("ticketing_shard_batch_size") or 'kind="apply"' in line]
    return ("\n".join(lines) + "\n").encode()


def run_once(args: argparse.Namespace, port: int, event_id: str, tokens: list[str],
             pids: dict[str, list[int]]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    per_process = max(1, args.concurrency // args.processes)
    start_at = time.time() + 3.0  # the spawned interpreters import first
    measure_from = start_at + args.warmup_s
    deadline = measure_from + args.seconds
    processes = [context.Process(target=client_process, args=(
        (args.client, port, event_id, tokens, per_process, n, args.processes, start_at, measure_from, deadline),
        results)) for n in range(args.processes)]
    for process in processes:
        process.start()
    time.sleep(max(0.0, measure_from - time.time()))
    metrics_before = batch_size_histogram(f"http://{HOST}:{port}")
    cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
    time.sleep(max(0.0, deadline - time.time()))
    cpu_after = {name: cpu_seconds(group) for name, group in pids.items()}
    metrics_after = batch_size_histogram(f"http://{HOST}:{port}")
    outcomes = [results.get(timeout=REQUEST_TIMEOUT_S + 60) for _ in processes]
    for process in processes:
        process.join(30)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    for outcome in outcomes:
        statuses.update({int(k): v for k, v in outcome["statuses"].items()})
        latencies.extend(outcome["latencies"])
    latencies.sort()
    _, batch_sum, batch_count = histogram_delta(metrics_before, metrics_after, "ticketing_shard_batch_size")
    cores = {name: (cpu_after[name] - cpu_before[name]) / args.seconds for name in pids}
    cores["client"] = sum(outcome["cpu_s"] for outcome in outcomes) / args.seconds
    return {"holds_per_s": statuses.get(201, 0) / args.seconds,
            "errors": {status: count for status, count in statuses.items() if status != 201},
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": (1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                       if latencies else float("nan")),
            "batch_mean": batch_sum / batch_count if batch_count else float("nan"), "cores": cores}


def create_event(base_url: str, organizer_token: str) -> str:
    import httpx

    document = {"title": "HTTP holds bench", "venue": {"name": "v"}, "starts_at": "2027-01-01T20:00:00Z",
                "hold_seconds": 3600, "sections": [{"id": "floor", "name": "Floor", "kind": "ga",
                                                    "capacity": GA_CAPACITY, "price_cents": 5000}]}
    response = httpx.post(base_url + "/v1/events", json=document, timeout=30,
                          headers={"Authorization": f"Bearer {organizer_token}"})
    response.raise_for_status()
    return str(response.json()["id"])


@contextlib.contextmanager
def running_cluster(data_dir: str | None) -> Any:
    from tests.harness import RunningCluster, cluster_for_measuring

    if data_dir is not None:
        path = Path(data_dir)
        yield RunningCluster(path, int(json.loads((path / "run" / "state.json").read_text())["base_url"]
                                       .rsplit(":", 1)[1]), None, path / "up.log")  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="tkt-http-bench-") as temp:
        environment = {"TICKETING_ACCESS_LOG": "false", "TICKETING_ROUTER_WORKERS": "2"}
        with cluster_for_measuring(Path(temp) / "data", environment) as cluster:
            yield cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="target this running deployment instead of starting one")
    args = parser.parse_args()

    print(f"# loadavg before: {os.getloadavg()}", flush=True)
    with running_cluster(args.data_dir) as cluster:
        state = cluster.state()
        event_id = create_event(cluster.base_url, cluster.token("bench-organizer", "organizer"))
        tokens = [cluster.token(f"user-{n}") for n in range(args.users)]
        pids = server_pids(state)
        print(f"# event {event_id}; {len(tokens)} tokens; client={args.client} processes={args.processes} "
              f"concurrency={args.concurrency}", flush=True)
        runs = []
        for repeat in range(args.repeat):
            run = run_once(args, cluster.port, event_id, tokens, pids)
            runs.append(run)
            cores = " ".join(f"{name}={value:.2f}" for name, value in run["cores"].items())
            print(f"run {repeat + 1}: holds_per_s={run['holds_per_s']:,.0f} errors={run['errors']} "
                  f"latency_ms_p50={run['p50_ms']:.1f} p99={run['p99_ms']:.1f} "
                  f"router_batch_size_mean={run['batch_mean']:.1f} cpu_cores[{cores}]", flush=True)
        print(f"# loadavg after: {os.getloadavg()}")
        print(f"== client={args.client} concurrency={args.concurrency} processes={args.processes} "
              f"seconds={args.seconds:g} repeats={args.repeat}")
        for key, label in (("holds_per_s", "holds/s (201)"), ("p50_ms", "latency p50 ms"),
                           ("p99_ms", "latency p99 ms"), ("batch_mean", "router batch size mean")):
            values = [run[key] for run in runs]
            print(f"{label}: median={statistics.median(values):,.1f} min={min(values):,.1f} max={max(values):,.1f}")
        for name in runs[0]["cores"]:
            values = [run["cores"][name] for run in runs]
            print(f"cpu cores {name}: median={statistics.median(values):.2f} min={min(values):.2f} "
                  f"max={max(values):.2f}")


if __name__ == "__main__":
    main()
