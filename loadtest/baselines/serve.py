"""Serve one baseline the way `router/server.py` serves the product, and start it from a harness.

    python -m loadtest.baselines.serve NAME --port P [--workers 2]

uvicorn with uvloop and httptools, the router's worker count, backlog, connection limit and
keep-alive (`cluster.settings.Settings` defaults), no access log (the product's bench runs with
``TICKETING_ACCESS_LOG=false`` too). The design's database, Redis, JWT secret and pool size come
from the environment (`loadtest.baselines.asgi`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

APPS = {
    "ceiling-asgi": "loadtest.baselines.ceiling:asgi_app",
    "ceiling-fastapi": "loadtest.baselines.ceiling:fastapi_app",
    "rowlock": "loadtest.baselines.rowlock:app",
    "conditional": "loadtest.baselines.conditional:app",
    "redis-lua": "loadtest.baselines.redis_lua:app",
}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def main() -> None:
    import uvicorn

    from cluster.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=Settings().router_workers)
    args = parser.parse_args()
    settings = Settings()
    uvicorn.run(APPS[args.name], host="127.0.0.1", port=args.port, workers=args.workers, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", backlog=settings.router_backlog_max,
                limit_concurrency=settings.router_connections_max, timeout_keep_alive=settings.keep_alive_s)


@dataclass
class BaselineServer:
    """A baseline running in a subprocess (its own session, so it stops with its workers)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"baseline {self.name} exited with {self.process.returncode}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"baseline {self.name} not ready within {timeout_s} s")

    def pids(self) -> list[int]:
        import psutil

        parent = psutil.Process(self.process.pid)
        return [parent.pid, *(child.pid for child in parent.children(recursive=True))]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_baseline(name: str, port: int, environment: dict[str, str], workers: int = 2,
                   log_path: str | None = None) -> BaselineServer:
    """Start `name` on 127.0.0.1:`port`; the caller waits for it (`wait_ready`) and stops it."""
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.baselines.serve", name, "--port", str(port), "--workers", str(workers)],
        env={**os.environ, **environment}, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        start_new_session=True)
    if log_path:
        output.close()  # type: ignore[union-attr]
    return BaselineServer(name, port, process)


if __name__ == "__main__":
    main()
