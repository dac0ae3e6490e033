"""An open-model, constant-rate HTTP client: latency measured from when a request was due.

    python -m loadtest.open_model --url http://127.0.0.1:8000 --rate 3000 --seconds 10 \\
        --tokens TOKENS_FILE --lines BODIES_FILE [--processes 2] [--connections 128] [--warmup-s 2]

wrk (and every closed-loop client) sends the next request only when a connection is free, so a
slow server slows the client down and its latency figures leave out the requests that were never
sent: coordinated omission. Here each of ``--processes`` processes owns a schedule — request k is
due at ``start + k / rate`` (processes interleaved) — and a pool of keep-alive connections. A
scheduler puts due requests on a queue; a free connection takes the oldest. A request's latency
runs from its due time to its response, so time spent waiting for a free connection (the
server being behind) counts, as it would for a buyer. wrk2 does the same; it is not packaged here.

The request is the benchmark's (`loadtest/wrk/holds.lua`): ``POST /v1/holds`` with a random
body from ``--lines``, a random buyer token from ``--tokens`` and a fresh ``Idempotency-Key``.

Whether the client kept up is part of the report: ``scheduler_lag_p99_ms`` is how late the
scheduler put due requests on the queue (its event loop being busy: the client's own fault, should
stay around a millisecond), ``sent_per_s`` against ``offered_per_s``, and the client's CPU. The
connection wait (``queue_wait_p99_ms``) is the server's doing and is inside the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUE_DEPTH_MAX = 1_000_000  # due requests waiting for a connection; beyond it they are dropped (and reported)
DRAIN_TIMEOUT_S = 10.0  # after the last due time, answers still missing this much later count as timeouts
START_DELAY_S = 0.5  # after every process said it is connected, until the first due time
READY_TIMEOUT_S = 60.0  # for the spawned processes to import and connect


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    tokens: list[str]
    bodies: list[bytes]
    rate_per_s: float  # this process's share
    first_due_offset_s: float  # interleaves the processes' schedules
    connections: int
    warmup_s: float
    seconds: float
    nonce: str


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    async def send(self, payload: bytes) -> int:
        if self.transport is None:
            raise ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


class Recorder:
    def __init__(self, measure_from: float, measure_until: float) -> None:
        self.measure_from, self.measure_until = measure_from, measure_until
        self.statuses: collections.Counter[int] = collections.Counter()
        self.latencies_ms: list[float] = []
        self.scheduler_lags_ms: list[float] = []
        self.queue_waits_ms: list[float] = []
        self.due_in_window = 0
        self.sent = 0
        self.dropped = 0

    def counts(self, due: float) -> bool:
        return self.measure_from <= due < self.measure_until


def request_bytes(plan: Plan, serial: int) -> bytes:
    body = random.choice(plan.bodies)
    return (f"POST /v1/holds HTTP/1.1\r\nHost: {plan.host}:{plan.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {random.choice(plan.tokens)}\r\nIdempotency-Key: {plan.nonce}-{serial}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def schedule(plan: Plan, origin: float, queue: asyncio.Queue[float], recorder: Recorder) -> None:
    """Put every due time on the queue when it comes (never ahead of time)."""
    interval = 1.0 / plan.rate_per_s
    due = origin + plan.first_due_offset_s
    end = origin + plan.warmup_s + plan.seconds
    while due < end:
        now = time.perf_counter()
        while due <= now and due < end:
            if recorder.counts(due):
                recorder.due_in_window += 1
                recorder.scheduler_lags_ms.append(1000 * (now - due))
            try:
                queue.put_nowait(due)
            except asyncio.QueueFull:
                recorder.dropped += 1
            due += interval
        await asyncio.sleep(max(0.0, due - time.perf_counter()))


async def worker(plan: Plan, number: int, connection: Connection | None, queue: asyncio.Queue[float],
                 recorder: Recorder) -> None:
    loop = asyncio.get_running_loop()
    serial = number
    while True:
        due = await queue.get()
        taken = time.perf_counter()
        serial += plan.connections
        if recorder.counts(due):
            recorder.sent += 1
        try:
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(Connection, plan.host, plan.port)
            status = await connection.send(request_bytes(plan, serial))
        except (ConnectionError, OSError):
            connection, status = None, 0
        if recorder.counts(due):
            recorder.statuses[status] += 1
            recorder.latencies_ms.append(1000 * (time.perf_counter() - due))
            recorder.queue_waits_ms.append(1000 * (taken - due))
        queue.task_done()


async def run_process(plan: Plan, ready: Any, start: Any) -> dict[str, Any]:
    queue: asyncio.Queue[float] = asyncio.Queue(QUEUE_DEPTH_MAX)
    loop = asyncio.get_running_loop()
    connections = [(await loop.create_connection(Connection, plan.host, plan.port))[1]
                   for _ in range(plan.connections)]
    ready.put(True)
    start_at = await loop.run_in_executor(None, start.get, True, READY_TIMEOUT_S)
    origin = time.perf_counter() + (start_at - time.time())
    recorder = Recorder(origin + plan.warmup_s, origin + plan.warmup_s + plan.seconds)
    workers = [asyncio.create_task(worker(plan, n, connections[n], queue, recorder)) for n in range(plan.connections)]
    await asyncio.sleep(max(0.0, origin - time.perf_counter()))
    cpu_started = time.process_time()
    await schedule(plan, origin, queue, recorder)
    with contextlib.suppress(TimeoutError):  # what is still unanswered is reported as such
        await asyncio.wait_for(queue.join(), DRAIN_TIMEOUT_S)
    cpu_s = time.process_time() - cpu_started
    wall_s = time.perf_counter() - origin
    for task in workers:
        task.cancel()
    unanswered = recorder.due_in_window - sum(recorder.statuses.values()) - recorder.dropped
    return {"statuses": dict(recorder.statuses), "latencies_ms": recorder.latencies_ms,
            "scheduler_lags_ms": recorder.scheduler_lags_ms, "queue_waits_ms": recorder.queue_waits_ms,
            "due": recorder.due_in_window, "dropped": recorder.dropped, "unanswered": max(0, unanswered),
            "sent": recorder.sent, "cpu_s": cpu_s, "wall_s": wall_s}


def process_main(plan: Plan, ready: Any, start: Any, results: Any) -> None:
    import uvloop

    results.put(uvloop.run(run_process(plan, ready, start)))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_open_model(url: str, tokens: list[str], bodies: list[bytes], *, rate_per_s: float, seconds: float,
                   warmup_s: float = 2.0, processes: int = 2, connections: int = 128) -> dict[str, Any]:
    """Offer `rate_per_s` for `warmup_s + seconds`; report the last `seconds` (see the module doc)."""
    host, port = url.removeprefix("http://").split(":")
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Queue(), context.Queue()
    nonce = uuid.uuid4().hex[:12]
    plans = [Plan(host, int(port), tokens, bodies, rate_per_s / processes, n / rate_per_s,
                  max(1, connections // processes), warmup_s, seconds, f"{nonce}-{n}")
             for n in range(processes)]
    children = [context.Process(target=process_main, args=(plan, ready, start, results)) for plan in plans]
    for child in children:
        child.start()
    try:
        collect(ready, children, READY_TIMEOUT_S)
        start_at = time.time() + START_DELAY_S
        for _ in children:
            start.put(start_at)
        outcomes = collect(results, children, START_DELAY_S + warmup_s + seconds + DRAIN_TIMEOUT_S + 60)
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    return summarize(outcomes, rate_per_s, seconds)


def collect(results: Any, children: list[Any], timeout_s: float) -> list[Any]:
    """One message per child, failing early if a child died without sending it."""
    import queue

    outcomes: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(outcomes) < len(children):
        try:
            outcomes.append(results.get(timeout=0.5))
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError("open-model clients did not report in time") from None
            if sum(child.exitcode not in (None, 0) for child in children):
                raise RuntimeError("an open-model client process failed") from None
    return outcomes


def summarize(outcomes: list[dict[str, Any]], rate_per_s: float, seconds: float) -> dict[str, Any]:
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    lags: list[float] = []
    waits: list[float] = []
    for outcome in outcomes:
        statuses.update({int(k): v for k, v in outcome["statuses"].items()})
        latencies += outcome["latencies_ms"]
        lags += outcome["scheduler_lags_ms"]
        waits += outcome["queue_waits_ms"]
    unanswered = sum(outcome["unanswered"] for outcome in outcomes)
    latencies += [float("inf")] * unanswered  # a request never answered is as late as it gets
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {
        "offered_per_s": rate_per_s, "sent_per_s": round(sum(o["sent"] for o in outcomes) / seconds, 1),
        "ok_per_s": round(ok / seconds, 1), "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unanswered": unanswered, "dropped": sum(outcome["dropped"] for outcome in outcomes),
        "p50_ms": quantile(latencies, 0.50), "p99_ms": quantile(latencies, 0.99),
        "queue_wait_p99_ms": quantile(waits, 0.99), "scheduler_lag_p99_ms": quantile(lags, 0.99),
        "client_cores": round(sum(o["cpu_s"] for o in outcomes) / max(o["wall_s"] for o in outcomes), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second, all processes together")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--lines", type=Path, required=True, help="one JSON hold body per line")
    args = parser.parse_args()
    tokens = args.tokens.read_text().split()
    bodies = [line.encode() for line in args.lines.read_text().splitlines() if line]
    print(json.dumps(run_open_model(args.url, tokens, bodies, rate_per_s=args.rate, seconds=args.seconds,
                                    warmup_s=args.warmup_s, processes=args.processes,
                                    connections=args.connections)))


if __name__ == "__main__":
    main()
