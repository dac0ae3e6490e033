"""`ticketing down`: stop a running deployment and wait until it stopped, or remove what a crashed
`ticketing up` left behind.

Only processes that belong to this deployment are touched: those whose pid the run recorded, and
Ray processes whose command line names this deployment's own Ray temp folder. Never `ray stop`,
which would kill every Ray instance on the machine, other deployments' and test runs' included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from cluster import runstate
from cluster.embedded import embedded_servers

log = logging.getLogger(__name__)

TERMINATE_WAIT_S = 5.0
# How long `down` waits for a running supervisor to stop everything: its own stop is bounded by
# the router's 20 s, Redis's 15 s and Postgres' 40 s (cluster/supervisor.py, cluster/embedded.py).
DOWN_WAIT_S = 120.0
DOWN_POLL_S = 0.25


def _alive(pid: object) -> psutil.Process | None:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        process = psutil.Process(pid)
        return process if process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def running_supervisor(data_dir: Path) -> int | None:
    process = _alive(runstate.read_state(data_dir).get("supervisor_pid"))
    if process is None:
        return None
    try:
        is_ours = any("ticketing" in part or "cluster" in part for part in process.cmdline())
    except psutil.Error:
        return None
    return process.pid if is_ours else None


def _terminate(processes: list[psutil.Process]) -> int:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=TERMINATE_WAIT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return len(processes)


def _ray_processes(ray_temp_dir: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if process.pid != os.getpid() and any(ray_temp_dir in part for part in cmdline):
            found.append(process)
    return found


@dataclass
class Component:
    """One part of a deployment and its live processes."""

    name: str
    processes: list[psutil.Process]

    def describe(self) -> str:
        if len(self.processes) == 1:
            return f"{self.name} (pid {self.processes[0].pid})"
        return f"{self.name} ({len(self.processes)} processes)"


def running_components(data_dir: Path) -> list[Component]:
    """What of the deployment in `data_dir` runs now, in stop order (newest first)."""
    state = runstate.read_state(data_dir)
    found: list[Component] = []

    def add(name: str, processes: list[psutil.Process | None]) -> None:
        alive = [process for process in processes if process is not None]
        if alive:
            found.append(Component(name, alive))

    add("Prometheus", [_alive(state.get("prometheus_pid"))])
    router = _alive(state.get("router_pid"))
    add("router", [router, *(_children(router))])
    ray_temp_dir = state.get("ray_temp_dir")
    if ray_temp_dir:
        add("Ray and the shard actors", list(_ray_processes(ray_temp_dir)))
    add("Redis", [_alive(state.get("redis_pid"))])
    add("PostgreSQL", [_alive(state.get("postgres_pid"))])
    return found


def _children(process: psutil.Process | None) -> list[psutil.Process | None]:
    if process is None:
        return []
    try:
        return list(process.children(recursive=True))
    except psutil.Error:
        return []


@dataclass
class DownReport:
    supervisor_pid: int | None
    stopped: list[Component]
    left: list[Component]
    removed: int
    elapsed_s: float


def stop_deployment(data_dir: Path, wait_s: float = DOWN_WAIT_S) -> DownReport:
    """Ask a running supervisor to stop (SIGTERM, the same as Ctrl-C) and wait, at most `wait_s`,
    until it and everything it started are gone; then remove whatever is left (a crashed run's
    leftovers, or a child the supervisor could not stop in time)."""
    started = time.monotonic()
    before = running_components(data_dir)
    watched = [process for component in before for process in component.processes]
    pid = running_supervisor(data_dir)
    if pid is not None:
        supervisor = psutil.Process(pid)
        with contextlib.suppress(psutil.Error):
            supervisor.send_signal(signal.SIGTERM)
        deadline = started + wait_s
        while any(_running(process) for process in [supervisor, *watched]) and time.monotonic() < deadline:
            time.sleep(DOWN_POLL_S)
        if _running(supervisor):  # stuck past its own bounds: what it started is removed below
            log.warning("supervisor %d still running after %.0f s: killing it", pid, wait_s)
            with contextlib.suppress(psutil.Error):
                supervisor.kill()
    removed = 0
    if pid is None or any(_running(process) for process in watched):
        removed = cleanup_crashed_run(data_dir)
    stopped = [component for component in before if not any(_running(p) for p in component.processes)]
    left = [component for component in before if component not in stopped]
    return DownReport(pid, stopped, left, removed, time.monotonic() - started)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cleanup_crashed_run(data_dir: Path) -> int:
    """Stop leftovers of a previous run in `data_dir`; returns how many processes were stopped."""
    state = runstate.read_state(data_dir)
    if not state:
        return 0
    stopped = 0
    prometheus = _alive(state.get("prometheus_pid"))
    if prometheus is not None:
        stopped += _terminate([prometheus])
    router = _alive(state.get("router_pid"))
    if router is not None:
        with contextlib.suppress(OSError):
            os.killpg(router.pid, signal.SIGTERM)
        stopped += _terminate([router, *router.children(recursive=True)])
    ray_temp_dir = state.get("ray_temp_dir")
    if ray_temp_dir:
        stopped += _terminate(_ray_processes(ray_temp_dir))
        shutil.rmtree(ray_temp_dir, ignore_errors=True)
    redis = _alive(state.get("redis_pid"))
    if redis is not None:
        stopped += _terminate([redis])
    if state.get("postgres_port"):
        for postgres in embedded_servers(data_dir, int(state.get("postgres_servers") or 1)):
            if postgres.is_running():
                postgres.stop()
                stopped += 1
    runstate.clear_state(data_dir)
    if stopped:
        log.info("removed %d leftover processes of a crashed run in %s", stopped, data_dir)
    return stopped
