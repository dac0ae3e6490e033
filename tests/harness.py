"""Start and stop a real cluster (`ticketing up` in a subprocess) for the integration suites."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cluster import runstate
from cluster.runstate import free_port
from cluster.secrets import ensure_queue_token_secret, read_jwt_secret
from router.auth import issue_token

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
TOKEN_TTL_S = 3600

# Settings that make the suite fast and deterministic without changing behaviour: holds may be
# as short as a second. The access log stays on, as deployed (tests/e2e/test_logs.py reads it).
TEST_ENVIRONMENT = {
    "TICKETING_MIN_HOLD_SECONDS": "1",
    "TICKETING_ROUTER_WORKERS": "2",
    # Checkout faults resolve in seconds rather than minutes.
    "TICKETING_GATEWAY_CALL_TIMEOUT_S": "2",
    "TICKETING_GATEWAY_SLOW_DELAY_S": "1",
    "TICKETING_PAYMENT_TIMEOUT_S": "3",
    "TICKETING_CHECKOUT_RESOLVER_INTERVAL_S": "0.5",
    # Tests reuse a few buyers for many requests; the rate-limit test sends more than this.
    "TICKETING_RATE_LIMIT_USER_BURST": "40",
    # The waiting-room test shows a user who stops polling losing the place in seconds, not 30.
    "TICKETING_QUEUE_IDLE_S": "3",
    # Suites read availability and seat maps right after writing and expect to see the write;
    # the snapshots that deployments serve them from are tested on their own
    # (tests/unit/test_snapshots.py).
    "TICKETING_READ_SNAPSHOT_S": "0",
    # The readiness prober's round (tests/e2e/test_readiness.py watches a component go down).
    "TICKETING_READINESS_PROBE_INTERVAL_S": "1",
    # Webhook tests deliver to a receiver on loopback over http, and see retries within seconds.
    "TICKETING_WEBHOOK_LOOPBACK_HTTP_ALLOWED": "true",
    "TICKETING_WEBHOOK_RELAY_INTERVAL_S": "0.2",
    "TICKETING_WEBHOOK_RETRY_BASE_S": "0.5",
    "TICKETING_WEBHOOK_RETRY_MAX_S": "2",
    "TICKETING_WEBHOOK_ATTEMPTS_MAX": "3",
    "TICKETING_WEBHOOK_DELIVERY_TIMEOUT_S": "2",
    # Dynamic prices move every half second by up to 20 %, so the pricing test sees a price climb
    # to its ceiling and fall back in seconds (tests/e2e/test_dynamic_pricing.py).
    "TICKETING_PRICING_INTERVAL_S": "0.5",
    "TICKETING_PRICING_STEP_MAX_PERCENT": "20",
    # The suites' buyers hold in bursts far faster than any sale: the pace signal would send every
    # dynamic price to its ceiling. tests/e2e/test_dynamic_pricing.py checks the share and the
    # waiting room; the pace is checked in tests/unit/test_inventory_pricing.py.
    "TICKETING_PRICING_VELOCITY_HORIZON_S": "0",
}


@dataclass
class RunningCluster:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, object]:
        return runstate.read_state(self.data_dir)

    def secret(self) -> str:
        return os.environ.get("TICKETING_JWT_SECRET") or read_jwt_secret(self.data_dir)

    def queue_token_secret(self) -> str:
        return os.environ.get("TICKETING_QUEUE_TOKEN_SECRET") or ensure_queue_token_secret(self.data_dir)

    def token(self, subject: str, role: str = "buyer", events: Sequence[str] = ()) -> str:
        """A bearer token; `events` is a validator's scope (the `events` claim)."""
        return issue_token(self.secret(), subject, role, TOKEN_TTL_S, events=events)

    def headers(self, subject: str, role: str = "buyer", events: Sequence[str] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, role, events)}"}

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"ticketing up exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # /readyz answers before `up` has finished its last phases (observability, the
                # demo event); `ready_at` in the run state says they are done.
                if "ready_at" in self.state() and httpx.get(self.base_url + "/readyz", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"cluster not ready within {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, characters: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            text = ""
        router_log = self.data_dir / "logs" / "router.log"
        if router_log.exists():
            text += "\n--- router.log ---\n" + router_log.read_text(errors="replace")[-characters:]
        return text

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def start_cluster(data_dir: Path, *extra_args: str, environment: dict[str, str] | None = None,
                  port: int | None = None) -> RunningCluster:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {**os.environ, **TEST_ENVIRONMENT, **(environment or {})}
    log_path = data_dir / "up.log"
    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "up", "--data-dir", str(data_dir), "--port", str(port),
             *extra_args],
            env=env, stdout=output, stderr=output, stdin=subprocess.DEVNULL,
        )
    return RunningCluster(data_dir, port, process, log_path)


@contextlib.contextmanager
def running_cluster(data_dir: Path, environment: dict[str, str] | None = None) -> Iterator[RunningCluster]:
    """A cluster of its own in `data_dir`, ready when entered, stopped and cleaned up when left."""
    running = start_cluster(data_dir, environment=environment)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        down(data_dir)


def down(data_dir: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "cluster.cli", "down", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=120, check=False)
    return result.stdout + result.stderr


def deployment_processes(data_dir: Path, ray_temp_dir: str | None) -> list[str]:
    """Command lines of live processes that belong to the deployment in `data_dir`."""
    import psutil

    needles = [str(data_dir)] + ([ray_temp_dir] if ray_temp_dir else [])
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        cmdline = " ".join(process.info.get("cmdline") or [])
        if any(needle in cmdline for needle in needles):
            found.append(f"{process.pid}: {cmdline[:200]}")
    return found


@contextlib.contextmanager
def cluster_for_measuring(data_dir: Path, environment: dict[str, str],
                          label: str = "cluster") -> Iterator[RunningCluster]:
    """A cluster started in `data_dir` for a benchmark: ready when entered (the time printed),
    stopped and cleaned up when left."""
    cluster = start_cluster(data_dir, environment=environment)
    try:
        print(f"# {label} ready in {cluster.wait_ready():.1f} s", flush=True)
        yield cluster
    finally:
        cluster.stop()
        down(data_dir)
