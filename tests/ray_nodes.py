"""A real multi-node Ray cluster on this machine, as an operator starts one (`ray start`): a head
(no shard resource: it runs the routers' drivers) and worker nodes offering the shard resource
(docs/operations.md "Placement and node loss"). Used by tests/chaos/test_multinode.py and the soak
(loadtest/soak.py); `ticketing up` joins it through `deployment_environment`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cluster.raycluster import MULTINODE_SYSTEM_CONFIG
from cluster.runstate import free_port

SHARD_RESOURCE = "ticketing_shard"
# A multi-node Ray cluster on loopback: Ray refuses to join nodes when this is 0 (the local run's
# setting, cluster/raycluster.py), and the local run's token auth stays off.
RAY_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled",
                   "RAY_USAGE_STATS_ENABLED": "0"}
RAY_START_TIMEOUT_S = 120.0
STATUS_TIMEOUT_S = 120.0


@dataclass
class RayNodes:
    temp_dir: Path
    worker_nodes: int = 2
    port: int = field(default_factory=free_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def deployment_environment(self, pg_servers: int) -> dict[str, str]:
        """What `ticketing up` needs to join this cluster with its shards on the worker nodes."""
        return {**RAY_ENVIRONMENT, "TICKETING_RAY_ADDRESS": self.address,
                "TICKETING_SHARD_NODE_RESOURCE": SHARD_RESOURCE, "TICKETING_PG_EMBEDDED_SERVERS": str(pg_servers)}

    def _ray(self, *args: str) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        subprocess.run([ray, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
                        "--object-store-memory=80000000", *args],
                       env={**os.environ, **RAY_ENVIRONMENT}, check=True, capture_output=True,
                       timeout=RAY_START_TIMEOUT_S)

    def start(self) -> None:
        self._ray("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                  f"--system-config={json.dumps(MULTINODE_SYSTEM_CONFIG)}")
        for _ in range(self.worker_nodes):
            self._ray(f"--address={self.address}", f"--resources={json.dumps({SHARD_RESOURCE: 100})}")

    def processes(self) -> list[psutil.Process]:
        """Every process of this Ray cluster: they name its temp dir or its GCS address."""
        needles = (str(self.temp_dir), self.address)
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info.get("cmdline") or [])
            if any(needle in cmdline for needle in needles) and process.pid != os.getpid():
                found.append(process)
        return found

    def kill_node(self, node_id: str) -> int:
        """SIGKILL a node: its raylet and everything under it (workers, actors, agents)."""
        raylets = [process for process in self.processes()
                   if f"--node_id={node_id}" in " ".join(process.info.get("cmdline") or [])]
        if not raylets:
            raise LookupError(f"no raylet of node {node_id}")
        victims = [child for raylet in raylets for child in raylet.children(recursive=True)] + raylets
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        return len(victims)

    def stop(self) -> None:
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)

    def shard_nodes(self) -> set[str]:
        """The live nodes offering the shard resource, as Ray sees them (a driver in a subprocess)."""
        script = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                  "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and %r in n['Resources']]))")
        result = subprocess.run([sys.executable, "-c", script % (self.address, SHARD_RESOURCE)],
                                capture_output=True, text=True, timeout=STATUS_TIMEOUT_S,
                                env={**os.environ, **RAY_ENVIRONMENT}, check=True)
        return set(json.loads(result.stdout.strip().splitlines()[-1]))


def status(data_dir: Path) -> dict[str, Any]:
    """`ticketing status --json` of the deployment in `data_dir`."""
    result = subprocess.run([sys.executable, "-m", "cluster.cli", "status", "--data-dir", str(data_dir), "--json"],
                            capture_output=True, text=True, timeout=STATUS_TIMEOUT_S,
                            env={**os.environ, **RAY_ENVIRONMENT}, check=False)
    return dict(json.loads(result.stdout))


def shard_nodes_of(data_dir: Path) -> dict[int, str]:
    """shard → the Ray node its actor runs on (every actor must be up)."""
    shards = status(data_dir)["shards"]
    if not all(shard["actor"]["up"] for shard in shards):
        raise AssertionError(f"shard actors down: {shards}")
    return {shard["shard_id"]: shard["actor"]["node_id"] for shard in shards}
