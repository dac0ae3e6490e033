"""lua/token_bucket.lua on its own, against the cluster's real Redis, with the clock passed in."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.ratelimit import SCRIPT, RateLimiter
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration


def run(cluster: RunningCluster, keys: list[str], now_ms: int, *limits: float) -> list[int]:
    async def call() -> list[int]:
        client = aioredis.from_url(str(cluster.state()["redis_url"]))
        try:
            result = await client.eval(SCRIPT, len(keys), *keys, now_ms, *limits)
            return [int(value) for value in result]
        finally:
            await client.aclose()

    return asyncio.run(call())


def test_burst_then_refill(cluster: RunningCluster) -> None:
    key = f"test:bucket:{uuid.uuid4()}"
    admitted = [run(cluster, [key], 1_000_000, 2, 5)[0] for _ in range(6)]
    assert admitted == [1, 1, 1, 1, 1, 0]
    assert run(cluster, [key], 1_000_000, 2, 5) == [0, 500]  # one token at 2/s: 500 ms away
    assert run(cluster, [key], 1_000_500, 2, 5)[0] == 1  # refilled by the clock, not by waiting
    assert run(cluster, [key], 1_000_500, 2, 5)[0] == 0


def test_all_or_nothing_across_buckets(cluster: RunningCluster) -> None:
    roomy, tight = f"test:bucket:{uuid.uuid4()}", f"test:bucket:{uuid.uuid4()}"
    assert run(cluster, [roomy, tight], 0, 100, 100, 1, 1)[0] == 1
    refused = run(cluster, [roomy, tight], 0, 100, 100, 1, 1)
    assert refused == [0, 1000]
    # The refused request took nothing from the bucket that had room: its other 99 tokens fit.
    assert [run(cluster, [roomy], 0, 100, 100)[0] for _ in range(100)].count(1) == 99


def test_limiter_reloads_the_script_after_a_flush(cluster: RunningCluster) -> None:
    from cluster.settings import Settings

    async def scenario() -> None:
        client = aioredis.from_url(str(cluster.state()["redis_url"]))

        class Runtime:
            redis: Any = client

        limiter = RateLimiter(Runtime(), Settings(rate_limit_user_burst=3))
        user = f"user-{uuid.uuid4()}"
        await limiter.check(user, "127.0.0.9")
        await client.script_flush()  # as after a Redis restart: EVALSHA now answers NOSCRIPT
        await limiter.check(user, "127.0.0.9")
        await limiter.check(user, "127.0.0.9")
        from router.problems import ApiError

        with pytest.raises(ApiError) as refused:
            await limiter.check(user, "127.0.0.9")
        assert refused.value.code == "RATE_LIMITED" and int(refused.value.headers["Retry-After"]) >= 1
        await client.aclose()

    asyncio.run(scenario())
