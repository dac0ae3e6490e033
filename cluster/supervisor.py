"""`ticketing up`: start everything in order, run in the foreground, stop everything in reverse.

Order of start: data folder → Postgres (embedded unless DSNs are set) → migrations → Redis
(embedded unless a URL is set) → Ray (local unless an address is set) → shard actors → router
workers → wait for `/readyz` → observability (`<data>/observability/`, and Prometheus with
`--prometheus`) → demo event; each phase is logged with its duration. Stop is the reverse, so
nothing writes to a database that is already gone. Every child runs in its own session: Ctrl-C
reaches only this supervisor, which then stops the children in order instead of letting them all
die at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cluster import runstate
from cluster.embedded import EmbeddedPostgres, EmbeddedRedis, embedded_dsns, embedded_servers
from cluster.logs import add_json_file
from cluster.observability import (
    PROMETHEUS_DEFAULT_URL,
    ObservabilityFiles,
    PrometheusServer,
    ray_metrics_targets,
    scrape_address,
    write_observability,
)
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


@contextlib.contextmanager
def phase(name: str) -> Iterator[list[str]]:
    """Log a start-up phase and, when it ends, its duration and the notes the body appended."""
    log.info("%s …", name)
    notes: list[str] = []
    started = time.monotonic()
    try:
        yield notes
    except BaseException:
        log.error("%s failed after %.1f s", name, time.monotonic() - started)
        raise
    log.info("%-13s %5.1f s  %s", name, time.monotonic() - started, "; ".join(notes))


@dataclass
class Deployment:
    """What this supervisor started, so that it stops exactly that and nothing else."""

    settings: Settings
    # `up --prometheus`: start a Prometheus on this run's config (when one is installed).
    with_prometheus: bool = False
    postgres: list[EmbeddedPostgres] = field(default_factory=list)
    redis: EmbeddedRedis | None = None
    ray_started: bool = False
    router: subprocess.Popen[bytes] | None = None
    prometheus: PrometheusServer | None = None
    observability: ObservabilityFiles | None = None
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
        with phase("postgres") as notes:
            notes.append(self._start_postgres())
        with phase("migrations") as notes:
            notes.append(self._migrate())
        with phase("redis") as notes:
            notes.append(self._start_redis())
        with phase("ray") as notes:
            notes.append(self._start_ray())
        with phase("actors") as notes:
            notes.append(self._start_actors())
        with phase("router") as notes:
            self._start_router()
            self._wait_ready()
            notes.append(f"{self.base_url} ready")
        with phase("observability") as notes:
            notes.extend(self._start_observability())
        if demo:
            from cluster.demo import ensure_demo_event

            with phase("demo event"):
                ensure_demo_event(self)

    def _start_postgres(self) -> str:
        settings = self.settings
        if not settings.embedded_postgres:
            self.dsns = list(settings.pg_dsns)
            return f"{len(self.dsns)} external databases"
        for server in embedded_servers(self.data_dir, settings.pg_embedded_servers):
            server.start()
            self.postgres.append(server)
        ports = [server.port for server in self.postgres]
        runstate.update_state(self.data_dir, postgres_port=ports[0], postgres_pid=self.postgres[0].pid(),
                              postgres_ports=ports, postgres_servers=len(ports))
        self.dsns = embedded_dsns(self.postgres, settings.shard_count, shard_database)
        return f"embedded on 127.0.0.1:{', '.join(map(str, ports))}"

    def _migrate(self) -> str:
        applied = asyncio.run(migrate_all(self.dsns, timeout_s=self.settings.db_call_timeout_s * 10))
        for dsn, names in applied.items():
            if names:
                log.info("migrated %s: %s", dsn.rsplit("/", 1)[-1], ", ".join(names))
        runstate.update_state(self.data_dir, pg_dsns=self.dsns)
        count = sum(len(names) for names in applied.values())
        return f"{count} applied" if count else f"{len(self.dsns)} databases up to date"

    def _start_redis(self) -> str:
        if self.settings.embedded_redis:
            self.redis = EmbeddedRedis(self.data_dir)
            self.redis.start()
            self.redis_url = self.redis.url
            pid = self.redis.process.pid if self.redis.process else None
            runstate.update_state(self.data_dir, redis_pid=pid, redis_url=self.redis_url)
            return f"embedded on 127.0.0.1:{self.redis.port}"
        self.redis_url = self.settings.redis_url
        runstate.update_state(self.data_dir, redis_url=self.redis_url)
        return "external"

    def _start_ray(self) -> str:
        from cluster.raycluster import ray_temp_dir, start_or_join_ray

        self.ray_started = self.settings.embedded_ray
        if self.ray_started:
            runstate.update_state(self.data_dir, ray_temp_dir=str(ray_temp_dir(self.data_dir)))
        self.ray_address = keeping_handlers(lambda: start_or_join_ray(self.settings))
        runstate.update_state(self.data_dir, ray_address=self.ray_address)
        return f"{'local' if self.ray_started else 'joined'} at {self.ray_address}"

    def _start_actors(self) -> str:
        from cluster.raycluster import ensure_shard_actors

        ensure_shard_actors(self.settings, self.dsns, self.redis_url)
        return f"{self.settings.shard_count} shards ready"

    def _start_observability(self) -> list[str]:
        """Write `<data>/observability/`; with `--prometheus`, start Prometheus on it."""
        server: PrometheusServer | None = None
        if self.with_prometheus and PrometheusServer.binary() is None:
            print("ticketing: --prometheus: no `prometheus` binary on PATH (Debian: apt-get install prometheus);"
                  " going on without it", file=sys.stderr, flush=True)
        elif self.with_prometheus:
            server = PrometheusServer(self.data_dir, retention_h=self.settings.prometheus_retention_h)
        prometheus_url = f"http://127.0.0.1:{server.reserve_port()}" if server else PROMETHEUS_DEFAULT_URL
        self.observability = write_observability(
            self.data_dir, router_address=scrape_address(self.settings.host, self.settings.port),
            ray_targets=ray_metrics_targets(), prometheus_url=prometheus_url,
            scrape_interval_s=self.settings.prometheus_scrape_interval_s)
        notes = [f"{self.observability.folder} ({len(self.observability.rules)} rule files, "
                 f"{len(self.observability.ray_targets)} Ray targets)"]
        if server is not None:
            self.prometheus = server
            server.start(self.observability)
            runstate.update_state(self.data_dir, prometheus_pid=server.process.pid if server.process else None,
                                  prometheus_url=server.url)
            notes.append(f"prometheus at {server.url}")
        return notes

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
            "TICKETING_DEMO": "true" if self.settings.demo else "false",
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
        if self.prometheus is not None:
            self.prometheus.stop()
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
        for server in reversed(self.postgres):
            server.stop()
        runstate.clear_state(self.data_dir)

    def _stop_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        if self.ray_started:
            from cluster.raycluster import kill_shard_actors

            kill_shard_actors(self.settings.shard_count)
        ray.shutdown()  # stops the local instance when we started it; only disconnects otherwise


def run_up(settings: Settings, *, demo: bool, prometheus: bool = False) -> int:
    """The body of `ticketing up`: returns the process exit code."""
    from cluster.cleanup import cleanup_crashed_run, running_supervisor

    data_dir = settings.resolved_data_dir
    make_data_dir(data_dir)
    (data_dir / "logs").mkdir(exist_ok=True)
    add_json_file(data_dir / "logs" / "supervisor.log")
    other = running_supervisor(data_dir)
    if other is not None:
        print(f"ticketing is already running from {data_dir} (pid {other})", file=sys.stderr)
        return 1
    cleanup_crashed_run(data_dir)
    deployment = Deployment(settings, with_prometheus=prometheus)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        started = time.monotonic()
        deployment.start(demo=demo)
        log.info("started in %.1f s", time.monotonic() - started)
        # Every phase is done (observability files included): scripts and tests wait for `ready_at`,
        # not only for /readyz, which answers before the last phases.
        runstate.update_state(data_dir, ready_at=time.time())
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
    files = deployment.observability
    lines = [
        f"\nticketing is ready at {deployment.base_url}  (API docs: {deployment.base_url}/docs)",
        f"  data folder : {data_dir}",
        f"  a token     : ticketing token --data-dir {data_dir} --sub alice --role buyer",
        f"  status      : ticketing status --data-dir {data_dir}",
        f"  stop        : Ctrl-C here, or ticketing down --data-dir {data_dir}",
        f"  logs        : {data_dir}/logs/",
    ]
    if deployment.prometheus is not None:
        lines.append(f"  prometheus  : {deployment.prometheus.url}")
    elif files is not None:
        lines.append(f"  prometheus  : prometheus --config.file={files.prometheus_config}")
    if files is not None:
        lines.append(f"  grafana     : grafana server --homepath <grafana home> "
                     f"cfg:paths.provisioning={files.grafana_provisioning}")
    print("\n".join(lines) + "\nPress Ctrl-C to stop.\n", flush=True)
