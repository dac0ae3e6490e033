"""`ticketing up` lifecycle: Ctrl-C stops everything, a second run reuses the data, and `down`
cleans up after a crashed supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from cluster.raycluster import ray_temp_dir
from tests.harness import deployment_processes, down, start_cluster
from tests.support import create_event, event_body, ga

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(os.environ.get("TICKETING_PG_DSNS")), reason="exercises the embedded services"),
]

PROCESS_EXIT_WAIT_S = 20.0
# An open stream ends within this of the stop signal (measured: 0.05 s; sse-starlette would cut
# it after seat_stream_shutdown_grace_s, 2 s, with an incomplete body).
STREAM_END_WAIT_S = 1.5


def wait_no_processes(data_dir: Path) -> list[str]:
    deadline = time.monotonic() + PROCESS_EXIT_WAIT_S
    while True:
        left = deployment_processes(data_dir, str(ray_temp_dir(data_dir)))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


async def write_marker(dsn: str, value: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS lifecycle_marker (value text)")
        await connection.execute("INSERT INTO lifecycle_marker VALUES ($1)", value)
    finally:
        await connection.close()


async def read_markers(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [row["value"] for row in await connection.fetch("SELECT value FROM lifecycle_marker")]
    finally:
        await connection.close()


def watch_stream(url: str, ended: dict[str, object]) -> None:
    """Read a seat-map stream to its end; record how it ended and when."""
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            ended["status"] = response.status_code
            for _ in response.iter_lines():
                pass
        ended["clean"] = True
    except httpx.HTTPError as error:
        ended["clean"] = False
        ended["error"] = repr(error)[:300]
    ended["at"] = time.monotonic()


def test_ctrl_c_stops_everything_and_second_run_reuses_data(tmp_path: Path) -> None:
    """…and an open seat-map stream ends cleanly at once (a complete chunked body), not cut."""
    data_dir = tmp_path / "data"
    first = start_cluster(data_dir)
    ended: dict[str, object] = {}
    try:
        first.wait_ready()
        dsn = str(first.state()["pg_dsns"][0])  # type: ignore[index]
        secret = first.secret()
        asyncio.run(write_marker(dsn, "first-run"))
        with httpx.Client(base_url=first.base_url, timeout=30) as http:
            event = create_event(http, first, event_body(ga("floor", 10)))
        watcher = threading.Thread(target=watch_stream, args=(
            f"{first.base_url}/v1/events/{event['id']}/seats/stream", ended), daemon=True)
        watcher.start()
        time.sleep(1.5)  # the stream is open and idle
    finally:
        stopped_at = time.monotonic()
        assert first.stop(signal.SIGINT) == 0
    watcher.join(10)
    assert ended.get("status") == 200 and ended.get("clean") is True, ended
    assert float(ended["at"]) - stopped_at < STREAM_END_WAIT_S  # type: ignore[arg-type]
    assert wait_no_processes(data_dir) == []
    assert not (data_dir / "run" / "state.json").exists()

    second = start_cluster(data_dir)
    try:
        second.wait_ready()
        dsn = str(second.state()["pg_dsns"][0])  # type: ignore[index]
        assert asyncio.run(read_markers(dsn)) == ["first-run"]
        assert second.secret() == secret  # tokens issued before the restart stay valid
    finally:
        # SIGTERM (what systemd or Kubernetes send) must stop in order too, not only Ctrl-C:
        # exit code 0 and the supervisor's last log line, not a kill after the harness's timeout.
        assert second.stop(signal.SIGTERM) == 0
    assert "stopped" in (data_dir / "up.log").read_text().splitlines()[-1]
    assert wait_no_processes(data_dir) == []


def test_down_removes_what_a_killed_supervisor_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running = start_cluster(data_dir)
    running.wait_ready()
    running.stop(signal.SIGKILL)  # the supervisor dies without stopping its children
    assert deployment_processes(data_dir, str(ray_temp_dir(data_dir))) != []
    output = down(data_dir)
    assert "removed" in output
    assert wait_no_processes(data_dir) == []
