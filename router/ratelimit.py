"""Rate limits (API.md Conventions: 429 RATE_LIMITED with Retry-After; DESIGN §7).

A token bucket per buyer and one per client address, both checked and charged in one Redis round
trip by `lua/token_bucket.lua` (loaded once with SCRIPT LOAD, called with EVALSHA, reloaded on
NOSCRIPT). Buyers' mutating requests are limited; reads are not (the hot read path is served from
memory and, later, from Redis snapshots), and neither are gate scanners, who must admit a crowd.
If Redis does not answer, the limiter fails open and counts it: a sale keeps selling without its
rate limits rather than stopping.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

from cluster.settings import Settings
from router.problems import ApiError

log = logging.getLogger(__name__)

SCRIPT = (Path(__file__).resolve().parent.parent / "lua" / "token_bucket.lua").read_text()
KEY_PREFIX = "ticketing:rate"

LIMITED = Counter("ticketing_rate_limited_total", "Requests refused by a rate limit.", ["scope"])
FAILED_OPEN = Counter("ticketing_rate_limit_fail_open_total", "Rate-limit checks skipped because Redis failed.")


class RateLimiter:
    def __init__(self, runtime: Any, settings: Settings) -> None:
        self.runtime = runtime  # its Redis client is made at start-up, after this object
        self.settings = settings
        self._sha: str | None = None

    async def check(self, user_id: str, client_address: str) -> None:
        """Admit the request or raise 429 RATE_LIMITED with Retry-After."""
        if self.runtime.redis is None or not self.settings.rate_limits:
            return
        settings = self.settings
        keys = [f"{KEY_PREFIX}:user:{user_id}", f"{KEY_PREFIX}:addr:{client_address}"]
        arguments = [int(time.time() * 1000), settings.rate_limit_user_per_s, settings.rate_limit_user_burst,
                     settings.rate_limit_address_per_s, settings.rate_limit_address_burst]
        try:
            admitted, retry_after_ms = await self._run(keys, arguments)
        except (RedisError, OSError, TimeoutError) as error:
            FAILED_OPEN.inc()
            log.warning("rate limit check failed open: %s", error)
            return
        if not admitted:
            LIMITED.labels("request").inc()
            retry_after_s = max(1, math.ceil(int(retry_after_ms) / 1000))
            raise ApiError(429, "RATE_LIMITED", f"too many requests; retry in {retry_after_s} s",
                           headers={"Retry-After": str(retry_after_s)})

    async def _run(self, keys: list[str], arguments: list[Any]) -> tuple[int, int]:
        redis = self.runtime.redis
        if self._sha is None:
            self._sha = await redis.script_load(SCRIPT)
        try:
            result = await redis.evalsha(self._sha, len(keys), *keys, *arguments)
        except NoScriptError:  # Redis restarted or flushed its script cache
            self._sha = await redis.script_load(SCRIPT)
            result = await redis.evalsha(self._sha, len(keys), *keys, *arguments)
        return int(result[0]), int(result[1])


def client_address(request: Any) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


async def rate_limit(request: Any, principal: Any) -> None:
    """Charge a buyer's mutating request to their bucket and their address's (429 when empty)."""
    if principal.role == "buyer":
        await request.app.state.rate_limiter.check(principal.user_id, client_address(request))
