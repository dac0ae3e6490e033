"""The router process's connections: Ray (shard actor handles), Postgres pools (`shards/pools.py`)
and the direct reads over them (`shards/queries.py`), Redis.

One `Runtime` per worker process, created at start-up and closed at shutdown. Every connection is
made lazily and re-made after failure, so a worker that starts while a dependency is down becomes
ready by itself once the dependency is back (and `/readyz` says which one is missing meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from cluster.logs import route_ray_logging
from cluster.settings import Settings
from cluster.signals import python_handlers, restore
from shards.audit import AuditQueries
from shards.pools import ShardPools
from shards.queries import ReadQueries
from shards.reports import ReportQueries

log = logging.getLogger(__name__)

NAMESPACE = "ticketing"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.databases = ShardPools(settings.pg_dsns, settings.db_pool_size_max, settings.db_call_timeout_s)
        self.reads = ReadQueries(self.databases.pool)
        self.reports = ReportQueries(self.databases.pool)
        self.audit = AuditQueries(self.databases.pool)
        self._actors: dict[int, Any] = {}
        self._ray_ready = False
        self.redis: aioredis.Redis | None = None

    async def start(self) -> None:
        if self.settings.redis_url:
            # A blocking pool: a request that finds every connection busy waits for one (at most
            # redis_timeout_s) instead of failing with "Too many connections" — the waiting room
            # takes one per join or poll, and a flash sale sends them in bursts.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.settings.redis_url,
                max_connections=self.settings.redis_connections_max,
                timeout=self.settings.redis_timeout_s,
                socket_timeout=self.settings.redis_timeout_s,
                socket_connect_timeout=self.settings.redis_timeout_s,
                health_check_interval=30,
            )
            self.redis = aioredis.Redis(connection_pool=pool)
        await self.ensure_ray()

    async def close(self) -> None:
        self.databases.terminate()
        if self.redis is not None:
            await self.redis.aclose(close_connection_pool=True)

    # Ray ------------------------------------------------------------------------------------------

    async def ensure_ray(self) -> bool:
        """Connect to Ray off the event loop, then put uvicorn's stop handlers back in front of
        the native one `ray.init` installs (cluster/signals.py)."""
        handlers = python_handlers()
        try:
            return await asyncio.to_thread(self.connect_ray)
        finally:
            restore(handlers)

    def connect_ray(self) -> bool:
        import ray

        route_ray_logging()
        if self._ray_ready and ray.is_initialized():
            return True
        if not self.settings.ray_address:
            return False
        handlers = python_handlers()
        try:
            # configure_logging=False: Ray's lines go through the worker's JSON logging (cluster/logs.py)
            # instead of a plain-text handler of Ray's own.
            ray.init(address=self.settings.ray_address, namespace=NAMESPACE, configure_logging=False,
                     logging_level=logging.WARNING, log_to_driver=False, ignore_reinit_error=True)
            restore(handlers)  # a no-op off the main thread; ensure_ray restores there
        except Exception as error:  # Ray raises many types for "cannot connect"
            log.warning("cannot connect to Ray at %s: %s", self.settings.ray_address, error)
            return False
        self._ray_ready = True
        return True

    def actor(self, shard_id: int) -> Any:
        """The handle of `shard-<k>`, resolved by name once and cached until `forget_actor`."""
        import ray

        handle = self._actors.get(shard_id)
        if handle is None:
            if not self.connect_ray():
                raise ConnectionError("Ray is not reachable")
            handle = ray.get_actor(f"shard-{shard_id}", namespace=NAMESPACE)
            self._actors[shard_id] = handle
        return handle

    def forget_actor(self, shard_id: int) -> None:
        self._actors.pop(shard_id, None)
