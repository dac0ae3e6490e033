"""Reads under load (issue 13): does a crowd reading availability and watching the live seat map
cost the shard actor that sells?

One run, two clusters side by side (the 2-core box is noisy: compare within the run):

- **snapshots** (the deployment's defaults: `read_snapshot_s` 0.5 s) and **no snapshots**
  (`TICKETING_READ_SNAPSHOT_S=0`: every read is an actor call, the negative control);
- on each, one hot GA event: holds alone (wrk, `--connections`), then the same holds while a
  second wrk reads `GET /v1/events/{id}/availability` — paced (`--paced-readers` connections each
  pausing `--pause-ms`: a couple of thousand reads/s), then as fast as `--readers` connections go —
  and a sampler checks answers' `as_of` against the clock; reported: holds/s in both phases and
  their ratio, reads/s, the snapshot hit ratio (`ticketing_read_snapshots_total`), the actor's
  reads per second (`ticketing_shard_batch_size_sum{kind="read"}`), the actor's CPU per 1,000
  holds, and the staleness of what readers saw (max and p99 of now − `as_of`);
- on the snapshots cluster, the live seat map: the actor's CPU over `--idle-s` with no stream
  open, then with `--streams` idle streams open on the event (and the actor reads opening them
  cost), then holds with every stream receiving the changes (frames received, commit → router
  lag p99 from `ticketing_seat_feed_lag_seconds`).

    .venv/bin/python -m loadtest.read_load [--seconds 15] [--readers 32] [--streams 1000] [--json PATH]

Needs Debian's wrk (`make bench` installs it). docs/BENCHMARKS.md "Reads under load" has the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster.settings import Settings
from loadtest.baselines.schema import EventLayout
from loadtest.bench import hold_line, product_event, product_groups, rate_limit_environment, source_commit
from loadtest.wrk.driver import cpu_meter, start_wrk, write_lines

SAMPLE_INTERVAL_S = 0.02  # the staleness sampler's pace: 50 reads/s beside wrk's thousands
METRIC_LINE = re.compile(r'^(\w+)(\{[^}]*\})? ([0-9.e+-]+)$')


def metrics(base_url: str) -> dict[str, float]:
    """Every sample of the router's /metrics and the actors' /metrics/actors, by `name{labels}`."""
    import httpx

    samples: dict[str, float] = {}
    for path in ("/metrics", "/metrics/actors"):
        for line in httpx.get(base_url + path, timeout=30).text.splitlines():
            match = METRIC_LINE.match(line)
            if match:
                key = match.group(1) + (match.group(2) or "")
                samples[key] = samples.get(key, 0.0) + float(match.group(3))
    return samples


def total(samples: dict[str, float], name: str, *needles: str) -> float:
    return sum(value for key, value in samples.items()
               if key.split("{")[0] == name and all(needle in key for needle in needles))


def delta(before: dict[str, float], after: dict[str, float], name: str, *needles: str) -> float:
    return total(after, name, *needles) - total(before, name, *needles)


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float | None:
    """The q-quantile of a histogram's observations between two scrapes (upper bucket bound)."""
    buckets: dict[float, float] = {}
    for key in after:
        if key.startswith(name + "_bucket{"):
            bound = re.search(r'le="([^"]+)"', key)
            if bound:
                upper = float(bound.group(1))
                buckets[upper] = buckets.get(upper, 0.0) + after[key] - before.get(key, 0.0)
    ordered = sorted(buckets.items())
    count = ordered[-1][1] if ordered else 0.0
    if count <= 0:
        return None
    for upper, cumulative in ordered:
        if cumulative >= q * count:
            return upper
    return None


class StalenessSampler:
    """Reads availability every SAMPLE_INTERVAL_S in a thread and keeps now − as_of of each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ages: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    as_of = datetime.fromisoformat(response.json()["as_of"].replace("Z", "+00:00")).timestamp()
                    self.ages.append(time.time() - as_of)
                except Exception:
                    self.errors += 1
                time.sleep(SAMPLE_INTERVAL_S)

    def __enter__(self) -> StalenessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        ages = sorted(self.ages)
        if not ages:
            return {"samples": 0, "errors": self.errors}
        return {"samples": len(ages), "errors": self.errors, "max_s": round(ages[-1], 3),
                "p99_s": round(ages[int(0.99 * (len(ages) - 1))], 3), "p50_s": round(ages[len(ages) // 2], 3)}


@contextlib.contextmanager
def cluster(work: Path, name: str, snapshot_s: float, workers: int) -> Iterator[Any]:
    from tests.harness import cluster_for_measuring

    environment = {"TICKETING_ACCESS_LOG": "false", "TICKETING_ROUTER_WORKERS": str(workers),
                   "TICKETING_READ_SNAPSHOT_S": str(snapshot_s), **rate_limit_environment("raised")}
    with cluster_for_measuring(work / name, environment, f"{name}: cluster") as running:
        yield running


def hold_phase(running: Any, args: argparse.Namespace, work: Path, event_id: str, tokens_file: Path,
               readers: int, pause_ms: int = 0) -> dict[str, Any]:
    """Holds for args.seconds, with `readers` wrk connections reading availability beside them
    (each waiting `pause_ms` before each read: paced; 0: as fast as they go)."""
    holds_file = write_lines(work / f"holds-{event_id}.txt", [hold_line(event_id, "ga")])
    reads_file = write_lines(work / f"reads-{event_id}.txt", [f"/v1/events/{event_id}/availability"])
    groups = product_groups(running)
    before = metrics(running.base_url)
    sampler = StalenessSampler(f"{running.base_url}/v1/events/{event_id}/availability")
    with cpu_meter(groups) as cores, sampler:
        holds = start_wrk(running.base_url, tokens_file, holds_file, connections=args.connections,
                          seconds=args.seconds, nonce=uuid.uuid4().hex[:12])
        reads = (start_wrk(running.base_url, tokens_file, reads_file, connections=readers, seconds=args.seconds,
                           nonce="reads", mode="reads", threads=1, pause_ms=pause_ms) if readers else None)
        hold_result = holds.finish()
        read_result = reads.finish() if reads else None
    after = metrics(running.base_url)
    sources = {source: delta(before, after, "ticketing_read_snapshots_total", f'source="{source}"')
               for source in ("snapshot", "shared", "shard")}
    served = sum(sources.values())
    seconds = hold_result.duration_s or args.seconds
    result = {
        "holds_per_s": round(hold_result.ok_per_s, 1), "hold_p99_ms": hold_result.p99_ms,
        "hold_statuses": {str(k): v for k, v in hold_result.statuses.items()},
        "reads_per_s": round(read_result.ok_per_s, 1) if read_result else 0.0,
        "read_p99_ms": read_result.p99_ms if read_result else None,
        "snapshot_sources": sources,
        # From a snapshot; and without an actor call of its own (a snapshot, or sharing a concurrent miss's call).
        "hit_ratio": round(sources["snapshot"] / served, 4) if served else None,
        "no_own_call_ratio": round((sources["snapshot"] + sources["shared"]) / served, 4) if served else None,
        "actor_reads_per_s": round(delta(before, after, "ticketing_shard_batch_size_sum", 'kind="read"') / seconds, 1),
        "actor_cpu_ms_per_1000_holds": round(cores.get("actors", 0.0) * seconds * 1e6
                                             / max(1.0, hold_result.ok), 1),
        "cores": {name: round(value, 2) for name, value in cores.items()},
        "staleness": sampler.summary(),
    }
    print(f"  holds {result['holds_per_s']:>8,.0f}/s (p99 {hold_result.p99_ms:.1f} ms)  reads "
          f"{result['reads_per_s']:>8,.0f}/s  hit {result['hit_ratio']}  actor reads {result['actor_reads_per_s']}/s  "
          f"actor {cores.get('actors', 0.0):.2f} cores  staleness {result['staleness']}", flush=True)
    return result


def reads_comparison(running: Any, args: argparse.Namespace, work: Path, tokens_file: Path) -> dict[str, Any]:
    organizer = running.token("read-load-organizer", "organizer")
    event_id = product_event(running, EventLayout(1_000_000, 1, 1), organizer)
    print("  holds alone:", flush=True)
    alone = hold_phase(running, args, work, event_id, tokens_file, readers=0)
    print(f"  holds with {args.paced_readers} reader connections pausing {args.pause_ms} ms:", flush=True)
    paced = hold_phase(running, args, work, event_id, tokens_file, readers=args.paced_readers, pause_ms=args.pause_ms)
    print(f"  holds with {args.readers} reader connections flat out:", flush=True)
    flat_out = hold_phase(running, args, work, event_id, tokens_file, readers=args.readers)

    def ratio(run: dict[str, Any]) -> float | None:
        return round(run["holds_per_s"] / alone["holds_per_s"], 3) if alone["holds_per_s"] else None

    return {"alone": alone, "with_readers": paced, "flat_out": flat_out, "holds_ratio": ratio(paced),
            "holds_ratio_flat_out": ratio(flat_out)}


# Live seat map ---------------------------------------------------------------------------------------

def watch_streams(url: str, streams: int, seconds: float, opened: Any, results: Any) -> None:
    """In a process of its own: open `streams` streams, report when all are open, keep them `seconds`."""
    import httpx

    async def watch(client: httpx.AsyncClient, counts: list[int], ready: asyncio.Queue[None]) -> None:
        async with client.stream("GET", url, timeout=None) as response:
            response.raise_for_status()
            await ready.put(None)
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    counts[0] += 1

    async def main() -> None:
        counts = [0]
        ready: asyncio.Queue[None] = asyncio.Queue()
        limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits) as client:
            tasks = [asyncio.create_task(watch(client, counts, ready)) for _ in range(streams)]
            for _ in tasks:
                await ready.get()
            opened.set()
            await asyncio.sleep(seconds)
            results.put({"events_received": counts[0], "failed": sum(1 for task in tasks if task.done())})
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def actor_cpu(running: Any, seconds: float) -> float:
    with cpu_meter(product_groups(running)) as cores:
        time.sleep(seconds)
    return round(cores.get("actors", 0.0), 4)


def streams_comparison(running: Any, args: argparse.Namespace, work: Path, tokens_file: Path) -> dict[str, Any]:
    organizer = running.token("read-load-organizer", "organizer")
    event_id = product_event(running, EventLayout(1_000_000, 1, 1), organizer)
    url = f"{running.base_url}/v1/events/{event_id}/seats/stream"
    idle_without = actor_cpu(running, args.idle_s)
    print(f"  actor CPU idle, no streams: {idle_without:.4f} cores", flush=True)
    before_open = metrics(running.base_url)
    context = multiprocessing.get_context("spawn")
    opened, results = context.Event(), context.Queue()
    hold_s = args.seconds + args.idle_s + 30
    watcher = context.Process(target=watch_streams, args=(url, args.streams, hold_s, opened, results), daemon=True)
    started = time.monotonic()
    watcher.start()
    if not opened.wait(120):
        watcher.kill()
        raise SystemExit(f"{args.streams} streams did not open within 120 s")
    open_s = time.monotonic() - started
    after_open = metrics(running.base_url)
    reads_opening = delta(before_open, after_open, "ticketing_shard_batch_size_sum", 'kind="read"')
    idle_with = actor_cpu(running, args.idle_s)
    print(f"  {args.streams} streams open in {open_s:.1f} s costing the actor {reads_opening:.0f} reads; "
          f"actor CPU idle with them: {idle_with:.4f} cores", flush=True)
    print(f"  holds with {args.streams} streams watching:", flush=True)
    before = metrics(running.base_url)
    under_load = hold_phase(running, args, work, event_id, tokens_file, readers=0)
    after = metrics(running.base_url)
    watcher.join(hold_s + 60)
    received = results.get(timeout=30) if not results.empty() else {}
    lag_p99 = histogram_quantile(before, after, "ticketing_seat_feed_lag_seconds", 0.99)
    lag_p50 = histogram_quantile(before, after, "ticketing_seat_feed_lag_seconds", 0.5)
    print(f"  streams received {received}; feed lag p50 <= {lag_p50} s, p99 <= {lag_p99} s", flush=True)
    return {"streams": args.streams, "open_s": round(open_s, 2), "actor_reads_to_open": reads_opening,
            "actor_cores_idle_without_streams": idle_without, "actor_cores_idle_with_streams": idle_with,
            "holds_with_streams": under_load, "received": received,
            "feed_lag_p50_le_s": lag_p50, "feed_lag_p99_le_s": lag_p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="each hold phase")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections making holds")
    parser.add_argument("--readers", type=int, default=32, help="wrk connections reading availability flat out")
    parser.add_argument("--paced-readers", type=int, default=16, help="wrk connections reading, paced")
    parser.add_argument("--pause-ms", type=int, default=6, help="each paced reader's pause before each read")
    parser.add_argument("--streams", type=int, default=1000, help="idle seat-map streams")
    parser.add_argument("--idle-s", type=float, default=10.0, help="each idle CPU measurement")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=Settings().router_workers)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {"commit": source_commit(), "cpu_count": os.cpu_count(), "options": vars(args) | {
        "json": str(args.json)}, "loadavg_before": os.getloadavg()}
    snapshot_s = Settings.model_fields["read_snapshot_s"].default
    with tempfile.TemporaryDirectory(prefix="tkt-reads-") as temp:
        work = Path(temp)
        for name, seconds in (("snapshots", snapshot_s), ("no-snapshots", 0.0)):
            with cluster(work, name, seconds, args.workers) as running:
                tokens_file = write_lines(work / f"{name}-tokens.txt",
                                          [running.token(f"user-{n}") for n in range(args.users)])
                report[name] = {"read_snapshot_s": seconds,
                                "reads": reads_comparison(running, args, work, tokens_file)}
                if name == "snapshots" and args.streams:
                    report[name]["streams"] = streams_comparison(running, args, work, tokens_file)
    report["loadavg_after"] = os.getloadavg()
    for name in ("snapshots", "no-snapshots"):
        reads = report[name]["reads"]
        seen = reads["with_readers"]
        print(f"{name}: holds with paced readers ({seen['reads_per_s']:,.0f}/s) / alone = {reads['holds_ratio']}; "
              f"flat out ({reads['flat_out']['reads_per_s']:,.0f}/s): {reads['holds_ratio_flat_out']}; hit ratio "
              f"{seen['hit_ratio']}; staleness max {seen['staleness'].get('max_s')} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.json}")


if __name__ == "__main__":
    main()
