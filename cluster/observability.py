"""What Prometheus and Grafana need to watch one run, written by `ticketing up` under
`<data-dir>/observability/` and rewritten at every start, so that ports and paths are this run's:

- `prometheus.yml`: the router's `/metrics` (job `ticketing-router`), every shard actor's registry
  through the router's `/metrics/actors` (job `ticketing-actors`), Ray's metrics agent on every
  live node (job `ray`), and the project's alert rule files by absolute path.
- `grafana/provisioning/`: a Prometheus datasource and two dashboard providers with absolute
  paths, the project's `dashboards/grafana/` and Ray's own dashboards (`grafana/ray-dashboards/`).
- `prometheus-data/`: the storage of the Prometheus that `ticketing up --prometheus` starts.

Ray's metrics and dashboards without Ray's dashboard process: Ray writes its Prometheus service
discovery file and its Grafana dashboards from the dashboard head, which the local instance does
not start (`include_dashboard=False`: one process less, and no unauthenticated job-submission
API on loopback). The metrics agent that serves Ray's metrics runs on every node without it, on
the port we choose (`cluster/raycluster.py` `_metrics_port`), so the targets are read from
`ray.nodes()` at start and written as static targets, and Ray's dashboards are generated here with
the function Ray's dashboard head uses (`grafana_dashboard_factory`). A node that joins a shared
Ray cluster after `up` is not scraped until the next `up`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.runstate import sticky_port

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Rule files are found by name, so a new one is loaded without touching this module; promtool test
# files (`rule_files:` + `tests:`) match the same names and are told apart by their content.
RULE_FILE_PATTERNS = ("alerts*.yml", "alerts*.yaml", "*rules*.yml", "*rules*.yaml")
ROUTER_JOB = "ticketing-router"
ACTORS_JOB = "ticketing-actors"
RAY_JOB = "ray"
# The uid and name Grafana gives the datasource. Our dashboards and Ray's pick a Prometheus
# datasource through their `${datasource}` variable, so the default one is used without editing.
DATASOURCE_UID = "prometheus"
DATASOURCE_NAME = "Prometheus"
# What a Prometheus started by hand with only `--config.file` listens on.
PROMETHEUS_DEFAULT_URL = "http://127.0.0.1:9090"
PROMETHEUS_START_TIMEOUT_S = 30.0
PROMETHEUS_STOP_TIMEOUT_S = 10.0
EVALUATION_INTERVAL_S = 15


def observability_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "observability"


def scrape_address(host: str, port: int) -> str:
    """Where to reach a server that listens on `host`: a wildcard address is reached on loopback."""
    reachable = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"[{reachable}]:{port}" if ":" in reachable else f"{reachable}:{port}"


def rule_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The project's Prometheus rule files (`groups:` at the top), absolute, in name order."""
    folder = root / "dashboards"
    candidates = sorted({path.resolve() for pattern in RULE_FILE_PATTERNS for path in folder.glob(pattern)})
    return [path for path in candidates if _is_rule_file(path)]


def _is_rule_file(path: Path) -> bool:
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        log.warning("skipping %s: not readable as YAML (%s)", path, error)
        return False
    return isinstance(content, dict) and "groups" in content and "tests" not in content


def project_dashboards_dir(root: Path = PROJECT_ROOT) -> Path | None:
    folder = root / "dashboards" / "grafana"
    return folder.resolve() if folder.is_dir() else None


def ray_metrics_targets() -> list[str]:
    """`host:port` of the metrics agent of every live Ray node (the caller is connected to Ray)."""
    import ray

    return sorted(scrape_address(str(node["NodeManagerAddress"]), int(node["MetricsExportPort"]))
                  for node in ray.nodes() if node.get("Alive") and node.get("MetricsExportPort"))


def prometheus_config(router_address: str, ray_targets: list[str], rules: list[Path],
                      scrape_interval_s: float) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        {"job_name": ROUTER_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [router_address]}]},
        {"job_name": ACTORS_JOB, "metrics_path": "/metrics/actors",
         "static_configs": [{"targets": [router_address]}]},
    ]
    if ray_targets:
        jobs.append({"job_name": RAY_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": ray_targets}]})
    return {
        "global": {"scrape_interval": f"{scrape_interval_s:g}s", "evaluation_interval": f"{EVALUATION_INTERVAL_S}s"},
        "rule_files": [str(path) for path in rules],
        "scrape_configs": jobs,
    }


def grafana_datasources(prometheus_url: str) -> dict[str, Any]:
    return {"apiVersion": 1, "datasources": [{
        "name": DATASOURCE_NAME, "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": True,
    }]}


def grafana_dashboard_providers(folders: dict[str, Path]) -> dict[str, Any]:
    """One file provider per folder of dashboard JSON, each in a Grafana folder of its name."""
    return {"apiVersion": 1, "providers": [
        {"name": name.lower(), "folder": name, "type": "file", "disableDeletion": False,
         "updateIntervalSeconds": 30, "allowUiUpdates": False, "options": {"path": str(path)}}
        for name, path in folders.items()
    ]}


def write_ray_dashboards(folder: Path) -> bool:
    """Ray's core dashboard, generated as Ray's dashboard head would; False when this Ray has no
    generator (its internals moved): our config still scrapes Ray, only its dashboard is missing."""
    try:
        from ray.dashboard.modules.metrics.grafana_dashboard_factory import generate_default_grafana_dashboard

        content, _uid = generate_default_grafana_dashboard()
    except Exception as error:  # an internal Ray module: any failure only costs this dashboard
        log.warning("Ray's Grafana dashboard not generated: %s", error)
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    (folder / "default_grafana_dashboard.json").write_text(content)
    return True


@dataclass(frozen=True)
class ObservabilityFiles:
    folder: Path
    prometheus_config: Path
    grafana_provisioning: Path
    rules: tuple[Path, ...]
    ray_targets: tuple[str, ...]

    @property
    def prometheus_storage(self) -> Path:
        return self.folder / "prometheus-data"


def write_observability(data_dir: Path, *, router_address: str, ray_targets: list[str],
                        prometheus_url: str, scrape_interval_s: float) -> ObservabilityFiles:
    """Write `<data-dir>/observability/` for this run (replacing the last run's files)."""
    folder = observability_dir(data_dir)
    provisioning = folder / "grafana" / "provisioning"
    for sub in ("datasources", "dashboards"):
        (provisioning / sub).mkdir(parents=True, exist_ok=True)
    rules = rule_files()
    config = prometheus_config(router_address, ray_targets, rules, scrape_interval_s)
    header = (f"# Written by `ticketing up` for the run in {data_dir.resolve()}; rewritten at every start.\n"
              f"# prometheus --config.file={folder / 'prometheus.yml'}\n")
    _write(folder / "prometheus.yml", header + yaml.safe_dump(config, sort_keys=False))
    _write(provisioning / "datasources" / "prometheus.yml", yaml.safe_dump(grafana_datasources(prometheus_url)))
    dashboards: dict[str, Path] = {}
    project = project_dashboards_dir()
    if project is not None:
        dashboards["Ticketing"] = project
    else:
        log.warning("no dashboards/grafana beside the code (%s): Grafana gets Ray's dashboards only", PROJECT_ROOT)
    if write_ray_dashboards(folder / "grafana" / "ray-dashboards"):
        dashboards["Ray"] = folder / "grafana" / "ray-dashboards"
    _write(provisioning / "dashboards" / "ticketing.yml", yaml.safe_dump(grafana_dashboard_providers(dashboards)))
    return ObservabilityFiles(folder, folder / "prometheus.yml", provisioning, tuple(rules), tuple(ray_targets))


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)  # atomic: a Prometheus reloading it never reads half a file


@dataclass
class PrometheusServer:
    """The Prometheus `ticketing up --prometheus` runs: this run's config, storage under the data
    folder, a loopback port kept across runs (so bookmarks and the Grafana datasource stay true)."""

    data_dir: Path
    retention_h: int
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("prometheus")

    def reserve_port(self) -> int:
        self.port = self.port or sticky_port(self.data_dir, "prometheus")
        return self.port

    def start(self, files: ObservabilityFiles) -> None:
        binary = self.binary()
        if binary is None:
            raise RuntimeError("no prometheus binary on PATH")
        self.reserve_port()
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        command = [binary, f"--config.file={files.prometheus_config}",
                   f"--storage.tsdb.path={files.prometheus_storage}",
                   f"--storage.tsdb.retention.time={self.retention_h}h",
                   f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(logs / "prometheus.log", "ab") as output:
            # Own session, like every child: Ctrl-C reaches the supervisor, which stops it in order.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                            start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}; see logs/prometheus.log")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # not listening yet, or 503 while it replays its write-ahead log
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {PROMETHEUS_START_TIMEOUT_S} s; see logs/prometheus.log")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(PROMETHEUS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
