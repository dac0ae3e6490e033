"""The CLI an operator meets: `up` says what each start-up phase took and where Prometheus is,
`status` shows each shard's events, epoch, last commit and commit queue, `down` returns only when
everything stopped and says what that was, and `--version` answers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from cluster.raycluster import ray_temp_dir
from tests.harness import deployment_processes, start_cluster
from tests.support import create_event, event_body, ga, hold

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(os.environ.get("TICKETING_PG_DSNS")), reason="exercises the embedded services"),
]

PHASES = ("postgres", "migrations", "redis", "ray", "actors", "router", "observability")
HAS_PROMETHEUS = shutil.which("prometheus") is not None


def ticketing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_version_comes_from_the_package_metadata() -> None:
    result = ticketing("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ticketing {version('ticketing')}"


def test_up_status_and_down_tell_the_operator_what_happens(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cluster = start_cluster(data_dir, "--prometheus")
    try:
        cluster.wait_ready()
        with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
            event = create_event(http, cluster, event_body(ga("floor", 10)))
            assert hold(http, cluster, "cli-buyer", {"event_id": event["id"], "section": "floor",
                                                     "quantity": 1}).status_code == 201
        up_log = wait_for_banner(cluster.log_path)
        for name in PHASES:  # each phase with its duration, in start order
            assert re.search(rf"^{name}\s+\d+\.\d s", up_log, re.MULTILINE), (name, up_log)
        assert [up_log.index(f"\n{name} ") for name in PHASES] == sorted(up_log.index(f"\n{name} ") for name in PHASES)
        if HAS_PROMETHEUS:
            url = re.search(r"prometheus\s+: (http://127\.0\.0\.1:\d+)", up_log)
            assert url, up_log
            assert httpx.get(url.group(1) + "/-/ready", timeout=10).status_code == 200
        else:
            assert "no `prometheus` binary on PATH" in up_log

        status = ticketing("status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        shard_lines = [line.split() for line in status.stdout.splitlines() if re.match(r"^\d+\s+\d+-\d+", line)]
        assert len(shard_lines) == 4, status.stdout
        # shard, slots, events, epoch, then "N s ago" or "never", then the commit queue depth.
        assert all(line[3].isdigit() and int(line[3]) >= 1 for line in shard_lines), status.stdout
        assert sum(int(line[2]) for line in shard_lines) >= 1, status.stdout
        committed = [line for line in shard_lines if line[4] != "never"]
        assert committed, status.stdout
        assert all(line[5:7] == ["s", "ago"] and line[7].isdigit() for line in committed), status.stdout
    finally:
        down = ticketing("down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    # `down` returned only after the supervisor had stopped everything in order and exited.
    assert cluster.process.poll() == 0, down.stdout
    said = down.stdout
    for part in ("stopped in", "supervisor (pid", "router (", "Ray and the shard actors (", "Redis (pid",
                 "PostgreSQL (pid", *(("Prometheus (pid",) if HAS_PROMETHEUS else ())):
        assert part in said, said
    assert deployment_processes(data_dir, str(ray_temp_dir(data_dir))) == []
    assert "nothing running" in ticketing("down", "--data-dir", str(data_dir)).stdout


def wait_for_banner(log_path: Path, timeout_s: float = 30.0) -> str:
    """The supervisor prints the banner after the demo-free start ends (readiness comes first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "Press Ctrl-C to stop." in text:
            return "\n" + text
        time.sleep(0.2)
    raise AssertionError(f"no start-up banner in {log_path}")
