"""`ticketing up`: start everything in order, run in the foreground, stop everything in reverse.

Order of start: data folder → Postgres (embedded unless DSNs are set) → migrations → Redis
(embedded unless a URL is set) → Ray (local unless an address is set) → shard actors → router
workers → wait for `/readyz` → demo event. Stop is the reverse, so nothing writes to a database
that is already gone. Every child runs in its own session: Ctrl-C reaches only this supervisor,
which then stops the children in order instead of letting them all die at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cluster import runstate
from cluster.embedded import EmbeddedPostgres, EmbeddedRedis
from cluster.secrets import ensure_jwt_secret, ensure_queue_token_secret
from cluster.settings import Settings
from cluster.signals import keeping_handlers
from shards.migrate import migrate_all

log = logging.getLogger("ticketing.up")

ROUTER_STOP_TIMEOUT_S = 20.0
READY_POLL_INTERVAL_S = 0.5


def shard_database(shard_id: int) -> str:
    return f"ticketing_shard_{shard_id}"


def make_data_dir(data_dir: Path) -> None:
    """Create the deployment's folder, or tighten an existing one, to 0700 (owner only).

    It holds the databases, secrets, logs and run state; the parts that hold secrets or DSNs
    (`secrets/`, `run/`, `redis/`, Postgres' own folder) are also 0700 by themselves, so a folder
    we may not chmod (someone else's) only warns. As root, the embedded Postgres runs as another
    user, which then gets traverse permission (0711, cluster/embedded.py).
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        data_dir.chmod(0o700)
    except PermissionError:
        log.warning("cannot make %s private (0700); its secrets and run state stay 0700/0600", data_dir)


@dataclass
class Deployment:
    """What this supervisor started, so that it stops exactly that and nothing else."""

    settings: Settings
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    ray_started: bool = False
    router: subprocess.Popen[bytes] | None = None
    dsns: list[str] = field(default_factory=list)
    redis_url: str = ""
    ray_address: str = ""

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self, *, demo: bool) -> None:
        make_data_dir(self.data_dir)
        runstate.update_state(self.data_dir, supervisor_pid=os.getpid(), started_at=time.time())
        self._start_postgres()
        self._start_redis()
        self._start_ray()
        self._start_router()
        self._wait_ready()
        if demo:
            from cluster.demo import ensure_demo_event

            ensure_demo_event(self)

    def _start_postgres(self) -> None:
        settings = self.settings
        if settings.embedded_postgres:
            self.postgres = EmbeddedPostgres(self.data_dir)
            self.postgres.start()
            runstate.update_state(self.data_dir, postgres_port=self.postgres.port,
                                  postgres_pid=self.postgres.pid())
            self.dsns = [self.postgres.dsn(shard_database(k)) for k in range(settings.shard_count)]
        else:
            self.dsns = list(settings.pg_dsns)
        applied = asyncio.run(migrate_all(self.dsns, timeout_s=settings.db_call_timeout_s * 10))
        for dsn, names in applied.items():
            if names:
                log.info("migrated %s: %s", dsn.rsplit("/", 1)[-1], ", ".join(names))
        runstate.update_state(self.data_dir, pg_dsns=self.dsns)

    def _start_redis(self) -> None:
        if self.settings.embedded_redis:
            self.redis = EmbeddedRedis(self.data_dir)
            self.redis.start()
            self.redis_url = self.redis.url
            pid = self.redis.process.pid if self.redis.process else None
            runstate.update_state(self.data_dir, redis_pid=pid)
        else:
            self.redis_url = self.settings.redis_url
        runstate.update_state(self.data_dir, redis_url=self.redis_url)

    def _start_ray(self) -> None:
        from cluster.raycluster import ensure_shard_actors, ray_temp_dir, start_or_join_ray

        self.ray_started = self.settings.embedded_ray
        if self.ray_started:
            runstate.update_state(self.data_dir, ray_temp_dir=str(ray_temp_dir(self.data_dir)))
        self.ray_address = keeping_handlers(lambda: start_or_join_ray(self.settings))
        runstate.update_state(self.data_dir, ray_address=self.ray_address)
        ensure_shard_actors(self.settings, self.dsns)

    def router_environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        # Created here, before the workers start, so they only ever read it (they would agree on
        # one secret anyway, see cluster/secrets.py, but a missing file at start is then a bug).
        if not self.settings.queue_token_secret:
            ensure_queue_token_secret(self.data_dir)
        multiprocess_dir = runstate.run_dir(self.data_dir) / "prometheus"
        multiprocess_dir.mkdir(exist_ok=True)
        for stale in multiprocess_dir.glob("*.db"):
            stale.unlink()
        environment.update({
            "TICKETING_DATA_DIR": str(self.data_dir),
            "TICKETING_HOST": self.settings.host,
            "TICKETING_PORT": str(self.settings.port),
            "TICKETING_SHARD_COUNT": str(self.settings.shard_count),
            "TICKETING_PG_DSNS": ",".join(self.dsns),
            "TICKETING_REDIS_URL": self.redis_url,
            "TICKETING_RAY_ADDRESS": self.ray_address,
            "TICKETING_JWT_SECRET": self.settings.jwt_secret or ensure_jwt_secret(self.data_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir),
        })
        if self.settings.router_workers:
            environment["TICKETING_ROUTER_WORKERS"] = str(self.settings.router_workers)
        return environment

    def _start_router(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "router.log", "ab") as output:
            self.router = subprocess.Popen(
                [sys.executable, "-m", "router.server"],
                env=self.router_environment(), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True,
            )
        runstate.update_state(self.data_dir, router_pid=self.router.pid, base_url=self.base_url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.router is not None and self.router.poll() is not None:
                raise RuntimeError(f"router exited with {self.router.returncode}; see {self.data_dir}/logs/router.log")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
            except Exception as error:  # 503 raises HTTPError; connection refused raises URLError
                last = str(error)
            time.sleep(READY_POLL_INTERVAL_S)
        raise RuntimeError(f"not ready within {self.settings.startup_timeout_s} s: {last}")

    def stop(self) -> None:
        """Stop what this supervisor started, newest first. Safe to call twice."""
        if self.router is not None and self.router.poll() is None:
            self.router.send_signal(signal.SIGTERM)
            try:
                self.router.wait(ROUTER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.router.pid, signal.SIGKILL)
                self.router.wait(5)
        self._stop_ray()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        runstate.clear_state(self.data_dir)

    def _stop_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        if self.ray_started:
            from cluster.raycluster import kill_shard_actors

            kill_shard_actors(self.settings.shard_count)
        ray.shutdown()  # stops the local instance when we started it; only disconnects otherwise


def run_up(settings: Settings, *, demo: bool) -> int:
    """The body of `ticketing up`: returns the process exit code."""
    from cluster.cleanup import cleanup_crashed_run, running_supervisor

    data_dir = settings.resolved_data_dir
    make_data_dir(data_dir)
    other = running_supervisor(data_dir)
    if other is not None:
        print(f"ticketing is already running from {data_dir} (pid {other})", file=sys.stderr)
        return 1
    cleanup_crashed_run(data_dir)
    deployment = Deployment(settings)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        deployment.start(demo=demo)
        _print_banner(deployment)
        while not stop_requested.wait(1.0):
            if deployment.router is not None and deployment.router.poll() is not None:
                log.error("router exited with %s; stopping", deployment.router.returncode)
                return 1
        return 0
    except Exception as error:
        log.error("start-up failed: %s", error)
        return 1
    finally:
        deployment.stop()
        log.info("stopped")


def _print_banner(deployment: Deployment) -> None:
    data_dir = deployment.data_dir
    print(
        f"\nticketing is ready at {deployment.base_url}  (API docs: {deployment.base_url}/docs)\n"
        f"  data folder : {data_dir}\n"
        f"  a token     : ticketing token --data-dir {data_dir} --sub alice --role buyer\n"
        f"  status      : ticketing status --data-dir {data_dir}\n"
        f"  logs        : {data_dir}/logs/\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
