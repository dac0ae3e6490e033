"""Find and remove what a crashed `ticketing up` left behind (`ticketing down`).

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
from pathlib import Path

import psutil

from cluster import runstate
from cluster.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

TERMINATE_WAIT_S = 5.0


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


def cleanup_crashed_run(data_dir: Path) -> int:
    """Stop leftovers of a previous run in `data_dir`; returns how many processes were stopped."""
    state = runstate.read_state(data_dir)
    if not state:
        return 0
    stopped = 0
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
    postgres = EmbeddedPostgres(data_dir)
    if state.get("postgres_port") and postgres.is_running():
        postgres.stop()
        stopped += 1
    runstate.clear_state(data_dir)
    if stopped:
        log.info("removed %d leftover processes of a crashed run in %s", stopped, data_dir)
    return stopped
