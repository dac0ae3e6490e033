"""Run wrk with `holds.lua` and measure the CPU of everything involved while it runs.

wrk is an event-driven C client (one epoll loop per thread, LuaJIT for the per-request script):
it costs a fraction of what the servers it drives do, and its own CPU is reported with every run
(from the kernel's account of the finished process, `os.wait4`, so every thread and every cycle
is in it) so that one can tell whether the generator was close to saturating a core.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "holds.lua"
WRK = os.environ.get("WRK", "wrk")
REQUEST_TIMEOUT_S = 10
MARKER = "WRK_JSON "


@dataclass
class LoadResult:
    """One wrk run: what came back, how fast, and what wrk itself cost."""

    requests: int
    duration_s: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu_s: float
    connections: int
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {"ok_per_s": round(self.ok_per_s, 1), "requests": self.requests, "duration_s": round(self.duration_s, 3),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "socket_errors": self.socket_errors, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms, "max_ms": self.max_ms, "connections": self.connections,
                "wrk_cores": round(self.wrk_cores, 3), "cores": {k: round(v, 3) for k, v in self.cores.items()}}


@dataclass
class WrkRun:
    """A wrk process started by `start_wrk`; `finish` waits for it and parses its report."""

    process: subprocess.Popen[bytes]
    connections: int

    def finish(self) -> LoadResult:
        output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        line = next((line for line in output.splitlines() if line.startswith(MARKER)), None)
        if self.process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({self.process.returncode}):\n{output[-3000:]}")
        report = json.loads(line[len(MARKER):])
        return LoadResult(int(report["requests"]), float(report["duration_s"]),
                          {int(k): int(v) for k, v in report["statuses"].items()},
                          {k: int(v) for k, v in report["socket_errors"].items()},
                          float(report["p50_ms"]), float(report["p90_ms"]), float(report["p99_ms"]),
                          float(report["max_ms"]), usage.ru_utime + usage.ru_stime, self.connections)


def start_wrk(url: str, tokens_file: Path, lines_file: Path, *, connections: int, seconds: float,
              nonce: str, mode: str = "holds", threads: int = 2, pause_ms: int = 0) -> WrkRun:
    """`pause_ms` > 0 paces each connection: it waits that long before each request."""
    command = [WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", f"{REQUEST_TIMEOUT_S}s", "-s", str(SCRIPT), url, "--",
               str(tokens_file), str(lines_file), nonce, mode, str(pause_ms)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return WrkRun(process, connections)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- CPU of the processes under test --------------------------------------------------------------


def cpu_seconds_by_pid(pids: list[int]) -> dict[int, float]:
    import psutil

    seconds: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system
    return seconds


PidGroups = Callable[[], dict[str, list[int]]]


@contextlib.contextmanager
def cpu_meter(groups: PidGroups) -> Iterator[dict[str, float]]:
    """CPU cores used by each named group of processes over the block, plus the whole machine's
    busy cores (``machine``): what is left over is load the benchmark did not start. Groups are
    listed again at the end (Postgres backends come and go): a process born inside the block
    counts whole, one that died inside it is missing."""
    import psutil

    result: dict[str, float] = {}
    before = {name: cpu_seconds_by_pid(pids) for name, pids in groups().items()}
    machine_before = psutil.cpu_times()
    started = time.perf_counter()
    yield result
    wall = time.perf_counter() - started
    machine_after = psutil.cpu_times()
    for name, pids in groups().items():
        earlier = before.get(name, {})
        now = cpu_seconds_by_pid(pids)
        result[name] = sum(seconds - earlier.get(pid, 0.0) for pid, seconds in now.items()) / wall
    idle = (machine_after.idle + getattr(machine_after, "iowait", 0.0)
            - machine_before.idle - getattr(machine_before, "iowait", 0.0))
    result["machine"] = (psutil.cpu_count() or 1) - idle / wall
