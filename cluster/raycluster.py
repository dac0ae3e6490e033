"""Ray bootstrap: start (or join) Ray and place one named, detached `ShardActor` per shard.

Every actor option is explicit because Ray's defaults surprise (STYLE §3): no restarts, no
retries and 1000-way concurrency for async actors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from actors.actor import ShardActor, ShardConfig
from cluster.settings import Settings, ShardBounds

log = logging.getLogger(__name__)

NAMESPACE = "ticketing"
# Restart forever: a shard without an actor sells nothing. Recovery rebuilds from Postgres.
ACTOR_RESTARTS_MAX = -1
# Never let Ray re-run a task on its own: the router retries only commands that carry an
# idempotency key, which the actor deduplicates. A blind retry could apply a command twice.
ACTOR_TASK_RETRIES_MAX = 0
# In-flight `apply` calls per actor. Each call applies its batch synchronously and then awaits the
# group commit, so concurrency here is what lets several batches share one transaction.
ACTOR_CONCURRENCY_MAX = 64
# The embedded Ray needs little shared memory: only batches of small commands cross it.
OBJECT_STORE_BYTES = 256 * 1024 * 1024
RAY_CPUS = 2
# What one shard actor asks of `shard_node_resource` (a node offering 100 hosts up to 10,000):
# enough to pin actors to the nodes that offer it, too little to limit how many share one.
SHARD_RESOURCE_UNITS = 0.01
# Ray's own settings for a local instance (the head hands them to every raylet, worker and
# driver that joins, so the router workers get them too).
RAY_SYSTEM_CONFIG: dict[str, Any] = {
    # A call whose actor died under it, and every call sent while the actor restarts, is held by
    # the caller "waiting for Death info from GCS" for this long before it fails (Ray's default
    # is 1000 ms, checked on a 1 s timer), although Ray has the process back in ~0.5 s: SIGKILL →
    # restarted shard actor answers took 1.3 s with the default and 0.6 s with 0 (100k-seat
    # recovery bench, docs/BENCHMARKS.md). With 0 such calls fail at once with
    # ActorUnavailableError (a RayActorError), which callers already handle: the router retries
    # what is safe to retry, with backoff. KubeRay sets 0 for Ray Serve clusters for the same reason.
    "timeout_ms_task_wait_for_death_info": 0,
}


# What a multi-node cluster's head should run with (`ray start --head --system-config '<json>'`,
# docs/operations.md "Placement and node loss"): the same, plus node-death detection in ~3 s rather
# than Ray's default ~15 s (health checks every 1 s, 3 misses), since a shard whose node died sells
# nothing until Ray declares the node dead and re-creates its actor elsewhere.
MULTINODE_SYSTEM_CONFIG: dict[str, Any] = {
    **RAY_SYSTEM_CONFIG,
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}


def actor_name(shard_id: int) -> str:
    return f"shard-{shard_id}"


def ray_temp_dir(data_dir: Path) -> Path:
    """A short, per-deployment temp dir: Ray puts unix sockets there (108-byte path limit)."""
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"tkt-ray-{digest}"


LOCAL_RAY_ENVIRONMENT = {
    # Ray reads these when it is first imported. The first keeps a local instance on loopback
    # (without it Ray binds to the host's address). The second turns off Ray's token auth for that
    # loopback-only instance, so `ticketing status` and the router workers can join it without a
    # token file; a shared Ray cluster (TICKETING_RAY_ADDRESS) keeps whatever auth it has.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def prepare_local_ray_environment() -> None:
    """Must run before the first `import ray` of the process (and is inherited by its children)."""
    if "ray" in sys.modules:
        log.warning("ray was imported before its environment was set; the local instance may not bind to loopback")
    for name, value in LOCAL_RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def start_or_join_ray(settings: Settings) -> str:
    """Start a local Ray head (default run) or join `TICKETING_RAY_ADDRESS`; returns the GCS address."""
    if not settings.ray_address:
        prepare_local_ray_environment()
    import ray

    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=NAMESPACE, logging_level=logging.WARNING)
    else:
        ray.init(
            namespace=NAMESPACE,
            num_cpus=RAY_CPUS,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            logging_level=logging.WARNING,
            _temp_dir=str(ray_temp_dir(settings.resolved_data_dir)),
            _metrics_export_port=_metrics_port(settings),
            _system_config=RAY_SYSTEM_CONFIG,
        )
    return str(ray.get_runtime_context().gcs_address)


def _metrics_port(settings: Settings) -> int:
    from cluster.runstate import sticky_port

    return sticky_port(settings.resolved_data_dir, "ray_metrics")


def ensure_shard_actors(settings: Settings, dsns: list[str], redis_url: str = "") -> dict[int, Any]:
    """Create (or find) `shard-<k>` for every shard and wait until each answers `health`;
    `redis_url`: where they publish committed seat changes (actors/seat_feed.py)."""
    import ray

    remote_class: Any = ray.remote(ShardActor)
    shard_map = settings.shard_map()
    placement = shard_placement(settings, ray.cluster_resources())
    handles = {}
    for shard_id in range(settings.shard_count):
        config = ShardConfig(
            shard_id=shard_id,
            slots=tuple(shard_map.slots_of(shard_id)),
            dsn=dsns[shard_id],
            bounds=ShardBounds.from_settings(settings),
            redis_url=redis_url,
        )
        handles[shard_id] = remote_class.options(
            name=actor_name(shard_id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=ACTOR_RESTARTS_MAX,
            max_task_retries=ACTOR_TASK_RETRIES_MAX,
            max_concurrency=ACTOR_CONCURRENCY_MAX,
            num_cpus=0,
            **placement,
        ).remote(config)
    for shard_id, handle in handles.items():
        health = ray.get(handle.start.remote(), timeout=settings.startup_timeout_s)
        log.debug("shard actor %s ready: %s", actor_name(shard_id), health)  # `up` logs the phase
    return handles


def shard_placement(settings: Settings, cluster_resources: dict[str, float]) -> dict[str, Any]:
    """Ray options that place the shard actors (docs/operations.md "Placement").

    With `shard_node_resource`, an actor asks for `SHARD_RESOURCE_UNITS` of that custom resource, so
    only nodes started with it (``ray start --resources '{"<name>": 100}'``) host shards — worker
    nodes sized for them, not the head that runs the routers — and when such a node dies Ray
    re-creates its actors on another node that has it. A resource no node offers would leave every
    actor pending forever: then the actors go anywhere, with a warning (the fallback). "spread" asks
    Ray to spread the actors over the nodes they may use, so one node's loss takes as few shards
    as possible; "default" leaves Ray's packing."""
    options: dict[str, Any] = {}
    name = settings.shard_node_resource
    if name and cluster_resources.get(name, 0.0) > 0:
        options["resources"] = {name: SHARD_RESOURCE_UNITS}
    elif name:
        log.warning("no Ray node offers the resource %r: shard actors are placed on any node", name)
    if settings.shard_placement == "spread":
        options["scheduling_strategy"] = "SPREAD"
    return options


def kill_shard_actors(shard_count: int) -> None:
    import ray

    for shard_id in range(shard_count):
        with contextlib.suppress(ValueError):  # never created, or already gone
            ray.kill(ray.get_actor(actor_name(shard_id), namespace=NAMESPACE), no_restart=True)
