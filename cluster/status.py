"""`ticketing status`: what a deployment's shards, actors, databases and Redis say right now."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from cluster import runstate
from cluster.settings import Settings
from cluster.slot_move import slot_ranges

STATUS_TIMEOUT_S = 5.0


async def _database(dsn: str) -> dict[str, Any]:
    from shards.migrate import shard_database_status

    return await shard_database_status(dsn, timeout_s=STATUS_TIMEOUT_S)


async def _redis(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_timeout=STATUS_TIMEOUT_S, socket_connect_timeout=STATUS_TIMEOUT_S)
    try:
        await client.ping()
        return {"up": True}
    except Exception as error:
        return {"up": False, "error": str(error)[:200]}
    finally:
        await client.aclose()


def _actors(address: str, shard_count: int) -> dict[int, dict[str, Any]]:
    import logging
    import socket

    host, _, port = address.rpartition(":")
    try:  # Ray's client retries an unreachable GCS for a long time; fail fast instead
        socket.create_connection((host, int(port)), timeout=STATUS_TIMEOUT_S).close()
    except (OSError, ValueError) as error:
        return {k: {"up": False, "error": f"Ray at {address}: {error}"} for k in range(shard_count)}
    from cluster.raycluster import prepare_local_ray_environment

    prepare_local_ray_environment()
    import ray

    try:
        ray.init(address=address, namespace="ticketing", logging_level=logging.ERROR, log_to_driver=False)
    except Exception as error:
        return {k: {"up": False, "error": f"Ray: {error}"[:200]} for k in range(shard_count)}
    found: dict[int, dict[str, Any]] = {}
    try:
        for shard_id in range(shard_count):
            try:
                handle = ray.get_actor(f"shard-{shard_id}", namespace="ticketing")
                health = cast(dict[str, Any], ray.get(handle.health.remote(), timeout=STATUS_TIMEOUT_S))
                found[shard_id] = {"up": True, **health}
            except Exception as error:
                found[shard_id] = {"up": False, "error": str(error)[:200]}
    finally:
        ray.shutdown()
    return found


def collect_status(settings: Settings) -> dict[str, Any]:
    state = runstate.read_state(settings.resolved_data_dir)
    dsns = list(settings.pg_dsns) or list(state.get("pg_dsns", []))
    shard_count = len(dsns) or settings.shard_count
    redis_url = settings.redis_url or state.get("redis_url", "")
    ray_address = settings.ray_address or state.get("ray_address", "")

    async def gather_io() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        databases = await asyncio.gather(*(_database(dsn) for dsn in dsns))
        redis_status = await _redis(redis_url) if redis_url else {"up": False, "error": "not running"}
        return list(databases), redis_status

    databases, redis_status = asyncio.run(gather_io())
    actors = _actors(ray_address, shard_count) if ray_address else {}
    shard_map = settings.shard_map()
    shards: list[dict[str, Any]] = []
    for shard_id in range(shard_count):
        database = databases[shard_id] if shard_id < len(databases) else {}
        recorded = database.get("owned_slots")  # what a slot move left; else the settings' map
        slots = recorded if recorded is not None else shard_map.slots_of(shard_id)
        shards.append({
            "shard_id": shard_id,
            "slots": slot_ranges(slots),
            "database": databases[shard_id] if shard_id < len(databases) else {"up": False, "error": "no DSN"},
            "actor": actors.get(shard_id, {"up": False, "error": "Ray not running"}),
        })
    healthy = bool(shards) and redis_status["up"] and all(
        shard["database"]["up"] and shard["actor"]["up"] for shard in shards
    )
    return {"healthy": healthy, "base_url": state.get("base_url"), "ray_address": ray_address,
            "prometheus_url": state.get("prometheus_url"), "redis": redis_status, "shards": shards}


def _ago(timestamp: object, now: float) -> str:
    if not isinstance(timestamp, int | float):
        return "never"
    age_s = max(0.0, now - float(timestamp))
    if age_s < 120:
        return f"{age_s:.0f} s ago"
    if age_s < 2 * 3600:
        return f"{age_s / 60:.0f} min ago"
    return f"{age_s / 3600:.0f} h ago"


def _shard_line(shard: dict[str, Any], now: float) -> str:
    actor, database = shard["actor"], shard["database"]
    if actor["up"]:
        core = str(actor.get("core", "?")).split(":")[0]  # compiled or interpreted (cluster/native.py)
        quarantined = len(actor.get("quarantined_events") or [])
        node = str(actor.get("node_id") or "?")[:8]  # the Ray node (docs/operations.md "Placement")
        actor_text = f"up pid {actor.get('pid')} node {node} ({core} core)"
        if quarantined:
            actor_text += f", {quarantined} quarantined"
        numbers = (f"{actor.get('events', '?')!s:>6} {actor.get('epoch', '?')!s:>6}  "
                   f"{_ago(actor.get('last_commit_at'), now):<12} {actor.get('commit_queue_depth', '?')!s:>5}")
    else:
        actor_text = "DOWN"
        numbers = f"{'-':>6} {'-':>6}  {'-':<12} {'-':>5}"
    database_text = (f"up schema v{database.get('schema_version')} epoch {database.get('lease_epoch')}"
                     if database["up"] else "DOWN " + database.get("error", ""))
    return f"{shard['shard_id']:<6} {shard['slots']:<8} {numbers}  {actor_text:<52} {database_text}"


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """One line per shard: its events, the actor's epoch, when it last committed and how many
    batches wait for the writer (the commit queue), then the actor and its database."""
    now = time.time() if now is None else now
    lines = [f"router     : {status['base_url'] or 'not running'}",
             f"ray        : {status['ray_address'] or 'not running'}",
             f"redis      : {'up' if status['redis']['up'] else 'DOWN ' + status['redis'].get('error', '')}"]
    if status.get("prometheus_url"):
        lines.append(f"prometheus : {status['prometheus_url']}")
    lines.append(f"{'shard':<6} {'slots':<8} {'events':>6} {'epoch':>6}  {'last commit':<12} {'queue':>5}  "
                 f"{'actor':<52} database")
    lines += [_shard_line(shard, now) for shard in status["shards"]]
    lines.append("healthy" if status["healthy"] else "NOT healthy")
    return "\n".join(lines)
