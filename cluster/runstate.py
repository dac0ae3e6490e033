"""What a running `ticketing up` leaves under ``<data-dir>/run`` for the other CLI commands.

`ticketing token`, `status` and `down` run in other processes; they find the ports, addresses and
process ids of the deployment here. The file is rewritten atomically and removed on a clean stop,
so a file that is present while its processes are gone marks a crashed run.

`state.json` holds the database DSNs and the Redis URL with its password, so the folder is 0700
and every file in it 0600 (`ports.json` too: cheap, and one rule is easier to keep than two).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from cluster.secrets import write_private_file


def run_dir(data_dir: Path) -> Path:
    path = data_dir / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def state_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "state.json"


def read_state(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(state_path(data_dir).read_text()))
    except FileNotFoundError:
        return {}


def update_state(data_dir: Path, **fields: Any) -> dict[str, Any]:
    state = read_state(data_dir)
    state.update(fields)
    write_private_file(state_path(data_dir), json.dumps(state, indent=2, sort_keys=True))
    return state


def clear_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def sticky_port(data_dir: Path, name: str, host: str = "127.0.0.1") -> int:
    """The port this deployment used for `name` last time if it is still free, else a new one.

    Keeping ports stable across restarts makes DSNs in operators' notes and dashboards stay true.
    """
    path = run_dir(data_dir) / "ports.json"
    try:
        ports = dict(json.loads(path.read_text()))
    except FileNotFoundError:
        ports = {}
    port = ports.get(name)
    if not isinstance(port, int) or not port_is_free(port, host):
        port = free_port(host)
        ports[name] = port
        write_private_file(path, json.dumps(ports, indent=2, sort_keys=True))
    return port
