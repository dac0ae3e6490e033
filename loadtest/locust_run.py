"""Run the on-sale Locust scenarios headless and keep Locust's HTML report and CSV statistics.

    python -m loadtest.locust_run [--seconds 60] [--users 20] [--shape spike|constant]
                                  [--data-dir D] [--report-dir loadtest/reports]

Starts a cluster of its own in a temp folder (`ticketing up`, as tests/harness.py does, with the
per-address rate limit raised: every Locust user connects from 127.0.0.1) and stops it afterwards,
or targets the running deployment in ``--data-dir`` (whose rate limits are whatever it was started
with). Then runs ``loadtest/locustfile.py`` headless for ``--seconds``: with ``--shape spike``
(default) ``--users`` is the baseline and the on-sale spike reaches ten times it; with
``--shape constant`` ``--users`` users run throughout. Tokens are minted from the deployment's
secret. Writes ``report.html``, ``locust_stats.csv`` (and Locust's other CSV files) and
``events.json`` (the events the run created) to ``--report-dir``. Exits with Locust's exit code:
0 when no request failed. docs/loadtesting.md explains the scenarios and how to read the report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cluster.settings import Settings

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
REPORT_DIR_DEFAULT = Path(__file__).resolve().parent / "reports"
# Locust's own start-up and the final statistics come on top of the run time.
LOCUST_OVERHEAD_S = 60.0
# The settings a load test must raise on the cluster it starts (docs/loadtesting.md): every
# simulated buyer is a distinct user, so the per-user bucket stays as deployed, but they all share
# 127.0.0.1, whose bucket (2,000/s, burst 4,000) would otherwise limit the whole crowd at once.
LOADTEST_ENVIRONMENT = {
    # The test harness turns read snapshots off (its suites read their own writes); a deployment has
    # them on, and a load test should see what a deployment does.
    "TICKETING_READ_SNAPSHOT_S": str(Settings.model_fields["read_snapshot_s"].default),
    "TICKETING_RATE_LIMIT_ADDRESS_PER_S": "1000000",
    "TICKETING_RATE_LIMIT_ADDRESS_BURST": "1000000",
    "TICKETING_ACCESS_LOG": "false",
}


@contextlib.contextmanager
def deployment(data_dir: str | None) -> Iterator[tuple[str, Path]]:
    """The router's base URL and data dir: of the running deployment in `data_dir`, or of a new one."""
    from cluster import runstate
    from tests.harness import down, start_cluster

    if data_dir is not None:
        path = Path(data_dir).resolve()
        base_url = runstate.read_state(path).get("base_url")
        if not base_url:
            raise SystemExit(f"no running deployment in {path} (no base_url in its run state)")
        print(f"# targeting {base_url}; its rate limits are the ones it was started with", flush=True)
        yield str(base_url), path
        return
    with tempfile.TemporaryDirectory(prefix="tkt-locust-") as temp:
        path = Path(temp) / "data"
        cluster = start_cluster(path, environment=LOADTEST_ENVIRONMENT)
        try:
            print(f"# cluster ready in {cluster.wait_ready():.1f} s at {cluster.base_url}", flush=True)
            yield cluster.base_url, path
        finally:
            cluster.stop()
            down(path)


def locust_command(args: argparse.Namespace, base_url: str, report_dir: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
            "--users", str(args.users), "--spawn-rate", str(max(1, args.users // 5)),
            "--run-time", f"{args.seconds}s", "--only-summary",
            "--html", str(report_dir / "report.html"), "--csv", str(report_dir / "locust")]


def run_locust(args: argparse.Namespace, base_url: str, data_dir: Path, report_dir: Path) -> int:
    environment = {**os.environ, "TICKETING_DATA_DIR": str(data_dir), "LOADTEST_SHAPE": args.shape,
                   "LOADTEST_EVENTS_OUT": str(report_dir / "events.json")}
    environment.pop("LOADTEST_EVENTS", None)  # this runner always creates fresh events
    result = subprocess.run(locust_command(args, base_url, report_dir), env=environment, check=False,
                            timeout=args.seconds + LOCUST_OVERHEAD_S)
    print(f"# locust exited with {result.returncode}; report: {report_dir / 'report.html'}", flush=True)
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--users", type=int, default=20, help="spike: the baseline (peak is 10x); constant: all")
    parser.add_argument("--shape", choices=("spike", "constant"), default="spike")
    parser.add_argument("--data-dir", default=None, help="target this running deployment instead of starting one")
    parser.add_argument("--report-dir", default=str(REPORT_DIR_DEFAULT))
    args = parser.parse_args()
    report_dir = Path(args.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "events.json").unlink(missing_ok=True)
    with deployment(args.data_dir) as (base_url, data_dir):
        return run_locust(args, base_url, data_dir, report_dir)


if __name__ == "__main__":
    sys.exit(main())
