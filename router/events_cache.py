"""A brief Redis cache of `GET /v1/events` pages, shared by every router worker
(docs/browse-and-stream.md "Cache").

A page is stored under a digest of its normalised query (the built text query, the filters, the
keyset position, the limit) in one Redis hash, `ticketing:{events}:pages`, beside a catalogue
version number. Creating or changing an event (router/events_api.py) bumps the version and
deletes the hash in one script, so the next listing reads the shards again. A page read from the
shards is stored only if the version is still the one read before the shards were asked: a page
computed from the catalogue as it was before a change can never be stored after it.

Bounds: the hash expires `events_cache_ttl_s` after its first page (no page is older than that,
also when an invalidation was lost), holds at most `events_cache_pages_max` pages (a store beyond
is refused, not evicting), and a page larger than `events_cache_page_bytes_max` is not stored; so
the cache takes at most pages × bytes of Redis memory. Every call is bounded by
`redis_timeout_s`, and Redis failing or slow only costs the cache: the listing reads the shards
(counted as `error`).

What it does not see: changes made without the router's create and patch handlers. Today that is
dynamic pricing, whose rounds move section prices inside the shard actors: a listing page shows a
price at most `events_cache_ttl_s` old (availability and the event itself show the current one).
An event's cancellation goes through the patch handler; the refunds after it change orders, which
the listing does not show.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import astuple
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from cluster.settings import Settings
from router.http_metrics import at_zero
from router.runtime import Runtime
from shards.queries import EventListQuery

log = logging.getLogger(__name__)

# One hash tag: the scripts touch both keys, which must live in one Redis Cluster slot.
VERSION_KEY = "ticketing:{events}:catalogue_version"
PAGES_KEY = "ticketing:{events}:pages"

# KEYS: version, pages. ARGV: field. → {version, page or false}
LOOKUP_SCRIPT = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGET', KEYS[2], ARGV[1])}
"""
# KEYS: version, pages. ARGV: version read before the shards were asked, field, page, pages max, ttl ms.
STORE_SCRIPT = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 'stale' end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
    return 'full'
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return 'stored'
"""
# KEYS: version, pages.
INVALIDATE_SCRIPT = """
redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
return 1
"""

# Each result's series exists at 0 from the start (`at_zero`); a store's results are STORE_SCRIPT's
# answers and the two the client adds (too large to offer, Redis failed).
LOOKUP_RESULTS = ("hit", "miss", "error")
STORE_RESULTS = ("stored", "stale", "full", "too_large", "error")
INVALIDATION_RESULTS = ("ok", "error")
LOOKUPS = at_zero(Counter("ticketing_events_cache_lookups_total", "GET /v1/events pages looked up in the Redis cache.",
                          ["result"]), *LOOKUP_RESULTS)
STORES = at_zero(Counter("ticketing_events_cache_stores_total", "GET /v1/events pages offered to the Redis cache.",
                         ["result"]), *STORE_RESULTS)
INVALIDATIONS = at_zero(Counter("ticketing_events_cache_invalidations_total",
                                "Catalogue version bumps after an event was created or changed.", ["result"]),
                        *INVALIDATION_RESULTS)

REDIS_FAILURES = (RedisError, OSError, TimeoutError)


def _normalised(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalised(part) for part in value]
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def query_field(query: EventListQuery) -> str:
    """The hash field of a query: 128 bits of BLAKE2b over its normalised parts (times in UTC)."""
    digest = hashlib.blake2b(orjson.dumps(_normalised(astuple(query)), default=str), digest_size=16)
    return digest.hexdigest()


class EventsCache:
    """The listing's page cache for one router worker (the Redis state is shared by all)."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self._runtime = runtime
        self._ttl_ms = int(settings.events_cache_ttl_s * 1000)
        self._pages_max = settings.events_cache_pages_max
        self._page_bytes_max = settings.events_cache_page_bytes_max
        self._timeout_s = settings.redis_timeout_s
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, text: str) -> AsyncScript | None:
        redis = self._runtime.redis
        if redis is None or self._ttl_ms <= 0:
            return None
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = redis.register_script(text)
        return script

    async def lookup(self, query: EventListQuery) -> tuple[str | None, bytes | None]:
        """(catalogue version, cached page or None); (None, None) when the cache is off or failed."""
        script = self._script(LOOKUP_SCRIPT)
        if script is None:
            return None, None
        try:
            async with asyncio.timeout(self._timeout_s):
                version, page = await script(keys=[VERSION_KEY, PAGES_KEY], args=[query_field(query)])
        except REDIS_FAILURES as error:
            LOOKUPS.labels("error").inc()
            log.warning("events cache lookup failed: %s: %s", type(error).__name__, str(error)[:200])
            return None, None
        LOOKUPS.labels("miss" if page is None else "hit").inc()
        return version.decode(), page

    async def store(self, version: str | None, query: EventListQuery, page: bytes) -> None:
        """Keep `page` for this query if the catalogue is still at `version` (see the module docstring)."""
        script = self._script(STORE_SCRIPT)
        if script is None or version is None:
            return
        if len(page) > self._page_bytes_max:
            STORES.labels("too_large").inc()
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await script(keys=[VERSION_KEY, PAGES_KEY],
                                      args=[version, query_field(query), page, self._pages_max, self._ttl_ms])
        except REDIS_FAILURES as error:
            STORES.labels("error").inc()
            log.warning("events cache store failed: %s: %s", type(error).__name__, str(error)[:200])
            return
        STORES.labels(result.decode()).inc()

    async def invalidate(self) -> None:
        """A new catalogue version: every cached page is gone. A failure is logged and counted; the
        pages then expire within `events_cache_ttl_s`."""
        script = self._script(INVALIDATE_SCRIPT)
        if script is None:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await script(keys=[VERSION_KEY, PAGES_KEY])
        except REDIS_FAILURES as error:
            INVALIDATIONS.labels("error").inc()
            log.warning("events cache invalidation failed (pages expire within the TTL): %s: %s",
                        type(error).__name__, str(error)[:200])
            return
        INVALIDATIONS.labels("ok").inc()
