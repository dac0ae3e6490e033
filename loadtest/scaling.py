"""Scaling figures of the product's HTTP holds (issue 12), and their plot.

    python -m loadtest.scaling [--quick] [--json PATH] [--plot docs/bench-holds-scaling.png]
                               [--seconds 10] [--warmup-s 3]

Starts the product as `loadtest.bench` does (``ticketing up``, 2 router workers, access log off,
rate limits raised) — or runs inside ``python -m loadtest.bench --scaling`` on the cluster the
bench already has — and measures, with the same wrk script:

- GA holds/s with 1, 4 and 16 hot events spread evenly over the shards (one event per shard
  until each shard has its share): how far the shards take the load beyond one actor;
- availability reads/s (``GET /v1/events/{id}/availability``, 16 connections) while GA holds
  run at 64 connections on the same event: the hot read path under write load;
- GA holds/s at 16, 64, 128 and 256 connections (one hot event);
- p50/p99 under the open-model client (`loadtest.open_model`) at 25 %-100 % of the 64-connection
  rate, from each request's due time.

The plot (PNG, matplotlib) has holds/s against connections on the left and p99 against the
offered rate on the right. Every run's event is checked for oversell afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from loadtest.baselines.schema import EventLayout
from loadtest.wrk.driver import PidGroups, cpu_meter, start_wrk, write_lines

HOT_EVENT_COUNTS = (1, 4, 16)
CONNECTION_COUNTS = (16, 64, 128, 256)
OFFERED_FRACTIONS = (0.25, 0.5, 0.7, 0.85, 1.0)
READ_CONNECTIONS = 16
HOLD_CONNECTIONS = 64
# Scaling runs use only the GA pool: a one-seat seated section keeps event creation quick.
SCALING_LAYOUT = EventLayout(ga_capacity=1_000_000, seat_rows=1, seats_per_row=1)
EVENT_ATTEMPTS_MAX = 400
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "bench-holds-scaling.png"


def spread_events(cluster: Any, organizer: str, count: int) -> list[str]:
    """`count` new events, as evenly spread over the shards as the slot hash allows."""
    from cluster.settings import Settings
    from loadtest.bench import product_event

    shard_count = len(cluster.state()["pg_dsns"])
    shard_map = Settings(shard_count=shard_count).shard_map()
    per_shard = -(-count // shard_count)
    events: list[str] = []
    taken = [0] * shard_count
    for _ in range(EVENT_ATTEMPTS_MAX):
        if len(events) == count:
            return events
        event_id = product_event(cluster, SCALING_LAYOUT, organizer)
        shard = shard_map.shard_of(uuid.UUID(event_id))
        if taken[shard] < per_shard:
            taken[shard] += 1
            events.append(event_id)
    raise RuntimeError(f"could not spread {count} events over {shard_count} shards")


def holds_run(cluster: Any, tokens_file: Path, groups: PidGroups, events: list[str], connections: int,
              seconds: float, warmup_s: float, work: Path) -> dict[str, Any]:
    from loadtest.bench import hold_line, measure, product_check

    lines = write_lines(work / f"scaling-{len(events)}-{connections}.txt", [hold_line(e, "ga") for e in events])
    result = measure(cluster.base_url, tokens_file, lines, groups, connections=connections, seconds=seconds,
                     warmup_s=warmup_s)
    checks = [product_check(cluster, event_id) for event_id in events]
    run = {**result.summary(), "events": len(events),
           "oversold": any(check["oversold"] is not False for check in checks),
           "consistent": all(check["consistent"] for check in checks)}
    print(f"  holds: {len(events):>2} event(s) @{connections:>3} connections: {result.ok_per_s:>9,.0f} 2xx/s "
          f"p99={result.p99_ms:.1f} ms  oversold={run['oversold']}  cores={run['cores']}", flush=True)
    return run


def reads_during_holds(cluster: Any, tokens_file: Path, groups: PidGroups, event_id: str, seconds: float,
                       work: Path) -> dict[str, Any]:
    from loadtest.bench import hold_line, product_check

    holds = write_lines(work / "scaling-reads-holds.txt", [hold_line(event_id, "ga")])
    paths = write_lines(work / "scaling-reads-paths.txt", [f"/v1/events/{event_id}/availability"])
    with cpu_meter(groups) as cores:
        writer = start_wrk(cluster.base_url, tokens_file, holds, connections=HOLD_CONNECTIONS, seconds=seconds,
                           nonce=uuid.uuid4().hex[:12])
        reader = start_wrk(cluster.base_url, tokens_file, paths, connections=READ_CONNECTIONS, seconds=seconds,
                           nonce="reads", mode="reads")
        written, read = writer.finish(), reader.finish()
    run = {"holds": written.summary(), "reads": read.summary(), "cores": cores,
           "oversold": product_check(cluster, event_id)["oversold"] is not False}
    print(f"  reads while holding: holds {written.ok_per_s:,.0f}/s (p99 {written.p99_ms:.1f} ms), "
          f"availability reads {read.ok_per_s:,.0f}/s (p99 {read.p99_ms:.1f} ms)", flush=True)
    return run


def offered_rate_series(cluster: Any, organizer: str, tokens: list[str], peak: float, seconds: float,
                        warmup_s: float, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open-model runs at OFFERED_FRACTIONS of `peak`, reusing those `known` already."""
    from loadtest.bench import hold_line, print_open_model, product_check
    from loadtest.open_model import run_open_model

    measured = {round(result["fraction_of_peak"], 3): result for result in known}
    series = []
    for fraction in OFFERED_FRACTIONS:
        if round(fraction, 3) in measured:
            series.append(measured[round(fraction, 3)])
            continue
        event_id = spread_events(cluster, organizer, 1)[0]
        result = run_open_model(cluster.base_url, tokens, [hold_line(event_id, "ga").encode()],
                                rate_per_s=fraction * peak, seconds=seconds, warmup_s=warmup_s)
        result["fraction_of_peak"] = fraction
        result["check"] = product_check(cluster, event_id)
        print_open_model(f"{fraction:.0%} of peak", result)
        series.append(result)
    return series


def run_scaling(cluster: Any, tokens_file: Path, organizer: str, groups: PidGroups, seconds: float, warmup_s: float,
                work: Path, known_open_model: list[dict[str, Any]] | None = None,
                plot_path: Path | None = DEFAULT_PLOT) -> dict[str, Any]:
    print("# scaling", flush=True)
    figures: dict[str, Any] = {"hot_events": [], "connections": []}
    for count in HOT_EVENT_COUNTS:
        figures["hot_events"].append(holds_run(cluster, tokens_file, groups, spread_events(cluster, organizer, count),
                                               HOLD_CONNECTIONS, seconds, warmup_s, work))
    for connections in CONNECTION_COUNTS:
        figures["connections"].append(holds_run(cluster, tokens_file, groups, spread_events(cluster, organizer, 1),
                                                connections, seconds, warmup_s, work))
    figures["reads_during_holds"] = reads_during_holds(cluster, tokens_file, groups,
                                                       spread_events(cluster, organizer, 1)[0], seconds, work)
    peak = next(run["ok_per_s"] for run in figures["connections"] if run["connections"] == HOLD_CONNECTIONS)
    tokens = tokens_file.read_text().split()
    figures["offered_rate"] = offered_rate_series(cluster, organizer, tokens, peak, seconds, warmup_s,
                                                  known_open_model or [])
    if plot_path is not None:
        plot(figures, plot_path)
        figures["plot"] = str(plot_path)
    return figures


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = figures["connections"]
    left.plot([run["connections"] for run in runs], [run["ok_per_s"] for run in runs], marker="o")
    left.set_xscale("log", base=2)
    left.set_xticks([run["connections"] for run in runs], [str(run["connections"]) for run in runs])
    left.set_xlabel("connections (wrk, closed loop)")
    left.set_ylabel("GA holds/s (2xx)")
    left.set_ylim(bottom=0)
    left.set_title("Throughput against connections, one hot event")
    series = figures["offered_rate"]
    right.plot([r["offered_per_s"] for r in series], [r["p99_ms"] for r in series], marker="o", label="p99")
    right.plot([r["offered_per_s"] for r in series], [r["p50_ms"] for r in series], marker=".", label="p50")
    right.set_xlabel("offered holds/s (open model, constant rate)")
    right.set_ylabel("latency from due time, ms")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    right.set_title("Latency against offered rate")
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    from loadtest.bench import Options, Report, product_cluster, product_groups

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs after 1 s of warm-up")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--warmup-s", type=float, default=None)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rate-limits", choices=("raised", "off"), default="raised")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    warmup_s = args.warmup_s if args.warmup_s is not None else (1.0 if args.quick else 3.0)
    options = Options(seconds=seconds, warmup_s=warmup_s, connections=HOLD_CONNECTIONS, high_connections=256,
                      users=args.users, workers=2, pool_size=8, layout=SCALING_LAYOUT, servers=("product",),
                      ceiling_workloads=(), high_workloads=(), rate_limits=args.rate_limits,
                      open_model_seconds=seconds, scaling=True, quick=bool(args.quick))
    report = Report(options={"seconds": seconds, "warmup_s": warmup_s, "rate_limits": args.rate_limits})
    with tempfile.TemporaryDirectory(prefix="tkt-scaling-") as temp:
        work = Path(temp)
        with product_cluster(options, work, report) as cluster:
            organizer = cluster.token("bench-organizer", "organizer")
            tokens_file = write_lines(work / "tokens.txt", [cluster.token(f"user-{n}") for n in range(args.users)])
            figures = run_scaling(cluster, tokens_file, organizer, product_groups(cluster), seconds, warmup_s, work,
                                  plot_path=args.plot)
    print(f"# plot: {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps({"options": report.options, "settings": report.product_settings,
                                         **figures}, indent=2, default=str))
        print(f"# wrote {args.json}")


if __name__ == "__main__":
    main()
